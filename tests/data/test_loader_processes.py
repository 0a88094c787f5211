"""DataLoader(worker_mode="process"): the batches of the training process, in order, resumable,
with errors and dead workers reported and the processes stopped."""

import gc
import json
import multiprocessing
import os
import signal
import threading
import time

import numpy as np
import pytest

import lamina
from lamina import backend, nn
from lamina.data import ArrayDataset, DataLoader, IterableDataset, MixUp, WeightedRandomSampler, get_worker_info

FORK = dict(worker_mode="process", multiprocessing_context="fork")


def _images(n=29, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 6, 6, 1)).astype(np.float32), rng.integers(0, 3, n)


def _noise(xb):
    """A random transform drawing from lamina's generator, as augmentations do."""
    return xb + backend.rng().normal(0, 0.1, xb.shape).astype(np.float32)


class _Samples:
    """A dataset indexed sample by sample, whose samples draw from lamina's generator."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i] + np.float32(backend.rng().random()), self.y[i]


class _Stream(IterableDataset):
    """Samples (i + noise, i % 3), sharded by worker."""

    def __init__(self, n):
        self.n = n

    def __iter__(self):
        info = get_worker_info()
        first, step = (0, 1) if info is None else (info.id, info.num_workers)
        for i in range(first, self.n, step):
            yield np.full(2, i, np.float32) + np.float32(backend.rng().random()), i % 3


def _batches(loader):
    return [tuple(np.array(part) for part in batch) for batch in loader]


def _assert_same(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert len(a) == len(b)
        for part_a, part_b in zip(a, b):
            np.testing.assert_array_equal(part_a, part_b)


def _no_children():
    """The loader's processes are gone (joined, so no zombies either)."""
    return not [p for p in multiprocessing.active_children() if p.name.startswith("lamina-loader-worker")]


CASES = {
    "shuffled, random transform": lambda x, y: dict(dataset=ArrayDataset(x, y), transform=_noise),
    "random samples": lambda x, y: dict(dataset=_Samples(x, y), transform=_noise),
    "sampler": lambda x, y: dict(dataset=ArrayDataset(x, y),
                                 sampler=WeightedRandomSampler(np.linspace(1, 2, len(x)), num_samples=20)),
    "mixup": lambda x, y: dict(dataset=_Samples(x, y), batch_transform=MixUp(0.4, num_classes=3, seed=5)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_processes_give_the_batches_of_the_training_process(case):
    x, y = _images()

    def run(**workers):
        loader = DataLoader(batch_size=4, seed=3, **CASES[case](x, y), **workers)
        return _batches(loader) + _batches(loader)          # two epochs: new permutation, new draws

    reference = run()
    _assert_same(reference, run(num_workers=2, **FORK))
    _assert_same(reference, run(num_workers=1, persistent_workers=True, **FORK))
    assert _no_children()


def test_a_stream_is_sharded_as_with_threads():
    def run(**workers):
        return _batches(DataLoader(_Stream(11), batch_size=2, seed=4, num_workers=2, **workers))

    threads = run()
    assert [b[0][:, 0].astype(int).tolist() for b in threads] == [[0, 2], [1, 3], [4, 6], [5, 7], [8, 10], [9]]
    _assert_same(threads, run(**FORK))
    _assert_same(threads, run(prefetch_factor=1, **FORK))
    assert _no_children()


def test_a_mid_epoch_state_resumes_with_processes_exactly():
    x, y = _images()

    def loader(seed, **workers):
        return DataLoader(_Samples(x, y), batch_size=4, seed=seed, transform=_noise,
                          batch_transform=MixUp(0.4, num_classes=3, seed=seed), **workers)

    reference = loader(1)
    expected = _batches(reference) + _batches(reference)
    interrupted = loader(1, num_workers=2, **FORK)
    epoch = iter(interrupted)
    got = [tuple(np.array(p) for p in next(epoch)) for _ in range(3)]
    state = json.loads(json.dumps(interrupted.state_dict()))
    del epoch
    restored = loader(99, num_workers=2, persistent_workers=True, **FORK)
    list(restored)                                        # its processes started with the other seed
    restored.load_state_dict(state)
    got += _batches(restored) + _batches(restored)
    _assert_same(expected, got[:16])
    del restored
    gc.collect()
    assert _no_children()


def _mark_worker(worker_id):
    os.environ["LAMINA_TEST_WORKER"] = f"initialised {worker_id}"


class _WhoMadeIt:
    """Each sample: (worker id, number of workers, worker seed, pid, whether worker_init_fn ran,
    whether the worker's dataset is this object's copy)."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        info = get_worker_info()
        initialised = os.environ.get("LAMINA_TEST_WORKER") == f"initialised {info.id}"
        return np.array([info.id, info.num_workers, info.seed, os.getpid(), initialised, info.dataset is self])


def test_worker_init_fn_and_worker_info_in_the_processes():
    batches = list(DataLoader(_WhoMadeIt(), batch_size=2, shuffle=False, num_workers=2,
                              worker_init_fn=_mark_worker, **FORK))
    ids, counts, seeds, pids, initialised, own = np.concatenate(batches).T
    np.testing.assert_array_equal(ids, [0, 0, 1, 1, 0, 0, 1, 1])     # batch b is made by worker b % 2
    assert set(counts) == {2} and initialised.all() and own.all()
    assert seeds[0] != seeds[2] and len(set(seeds)) == 2
    assert len(set(pids)) == 2 and os.getpid() not in pids
    assert get_worker_info() is None and "LAMINA_TEST_WORKER" not in os.environ


class _Failing:
    def __len__(self):
        return 12

    def __getitem__(self, i):
        if i == 9:
            _read_corrupt_sample(i)
        return np.float32(i)


def _read_corrupt_sample(i):
    raise ValueError(f"sample {i} is corrupt")


class _OddError(Exception):
    def __init__(self, sample, reason):                   # does not unpickle: its args hold one message
        super().__init__(f"sample {sample}: {reason}")


class _FailingOddly(_Failing):
    def __getitem__(self, i):
        if i == 5:
            raise _OddError(i, "odd")
        return np.float32(i)


def test_a_worker_exception_names_the_worker_and_batch_with_its_traceback():
    loader = DataLoader(_Failing(), batch_size=2, shuffle=False, num_workers=2, **FORK)
    seen = []
    with pytest.raises(ValueError, match=r"DataLoader worker 0 failed on batch 4: ValueError: sample 9 is corrupt") \
            as caught:
        for xb in loader:
            seen.append(xb)
    assert len(seen) == 4 and isinstance(caught.value.__cause__, ValueError)
    message = str(caught.value)
    assert "Traceback in the worker process:" in message and "in _read_corrupt_sample" in message
    with pytest.raises(RuntimeError, match=r"DataLoader worker 0 failed on batch 2: RuntimeError: _OddError: "
                                           r"sample 5: odd(.|\n)*raise _OddError"):
        list(DataLoader(_FailingOddly(), batch_size=2, shuffle=False, num_workers=2, **FORK))

    def broken(worker_id):
        raise OSError("no device")

    with pytest.raises(OSError, match="DataLoader worker [01] failed on batch [01]: OSError: no device"):
        list(DataLoader(_Samples(*_images(8)), batch_size=2, num_workers=2, worker_init_fn=broken, **FORK))
    assert _no_children()


class _Unsendable:
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return {"x": np.float32(i), "reader": (lambda: i) if i == 3 else None}


def test_a_batch_that_cannot_be_pickled_is_a_clear_error():
    with pytest.raises(TypeError, match=r"DataLoader worker 1 failed on batch 1: TypeError: the dict it made "
                                        r"cannot be pickled to be sent to the main process"):
        list(DataLoader(_Unsendable(), batch_size=2, shuffle=False, num_workers=2,
                        collate_fn=lambda samples: samples[-1], **FORK))


class _Dying:
    def __init__(self, how):
        self.how = how

    def __len__(self):
        return 12

    def __getitem__(self, i):
        if i == 7 and get_worker_info() is not None:
            if self.how == "exit":
                os._exit(3)
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
        return np.float32(i)


@pytest.mark.parametrize("how, reported", [("exit", r"exit code 3"), ("kill", r"killed by signal SIGKILL")])
def test_a_worker_process_that_dies_is_reported_not_waited_for(how, reported):
    loader = DataLoader(_Dying(how), batch_size=2, shuffle=False, num_workers=2, persistent_workers=True, **FORK)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=rf"DataLoader: worker process 1 \(pid \d+\) ended unexpectedly "
                                           rf"\({reported}\) while making batch 3"):
        list(loader)
    assert time.monotonic() - started < 10 and _no_children()
    loader.dataset.how = "none"                           # the next epoch starts fresh processes
    assert len(list(loader)) == 6
    del loader
    gc.collect()
    assert _no_children()


def test_leaving_the_loop_early_and_persistent_workers_leave_no_processes():
    x, y = _images(200)
    loader = DataLoader(ArrayDataset(x, y), batch_size=2, num_workers=2, transform=_noise, **FORK)
    for k, _ in enumerate(loader):
        assert len(multiprocessing.active_children()) >= 2
        if k == 2:
            break
    assert _no_children()
    epoch = iter(loader)
    next(epoch)
    del epoch                                             # a dropped iterator stops them too
    gc.collect()
    assert _no_children()

    persistent = DataLoader(ArrayDataset(x[:12], y[:12]), batch_size=4, num_workers=2, persistent_workers=True,
                            **FORK)
    list(persistent)
    pids = persistent._pool.pids
    next(iter(persistent))                                # an abandoned epoch: the next one is whole
    assert len(list(persistent)) == 3 and persistent._pool.pids == pids
    assert all(p.is_alive() for p in multiprocessing.active_children() if p.pid in pids)
    del persistent
    gc.collect()
    assert _no_children()


class _Slow:
    """Logs each sample it makes; sample 30 waits until the file ``gate`` exists."""

    def __init__(self, log, gate=None):
        self.log, self.gate = log, gate

    def __len__(self):
        return 40

    def __getitem__(self, i):
        with open(self.log, "a") as log:
            log.write(f"{i}\n")
        waited = time.monotonic()
        while i == 30 and not self.gate.exists() and time.monotonic() - waited < 10:
            time.sleep(0.01)
        return np.float32(i)


def test_prefetch_factor_and_timeout(tmp_path):
    log = tmp_path / "made.txt"
    epoch = iter(DataLoader(_Slow(log), batch_size=1, shuffle=False, num_workers=2, prefetch_factor=3, **FORK))
    next(epoch)
    waited = time.monotonic()
    while len(log.read_text().split()) < 6 and time.monotonic() - waited < 10:
        time.sleep(0.05)
    time.sleep(0.2)                                        # time to make more, were they not bounded
    assert len(log.read_text().split()) == 6               # prefetch_factor * num_workers
    del epoch
    for k, mode in enumerate((FORK, dict(worker_mode="thread"))):
        gate = tmp_path / f"gate{k}"
        loader = DataLoader(_Slow(log, gate), batch_size=10, shuffle=False, num_workers=2, timeout=1, **mode)
        opener = threading.Timer(1.5, gate.touch)            # lets the stopping worker finish
        opener.start()
        with pytest.raises(TimeoutError, match=r"DataLoader: timeout=1 s passed without worker 1 delivering "
                                               r"batch 3"):
            list(loader)
        opener.join()
    assert _no_children()


class _TensorSamples:
    """A dataset holding a lamina Tensor and Module: sample i is row i of the table, through
    the layer, plus a random draw."""

    def __init__(self):
        self.table = lamina.tensor(np.arange(12, dtype=np.float32).reshape(6, 2))
        self.layer = nn.Dense(3)
        with lamina.no_grad():
            self.layer(self.table)                        # built: its weights exist

    def __len__(self):
        return 6

    def __getitem__(self, i):
        with lamina.no_grad():
            row = self.layer(self.table[i:i + 1]).data[0]
        return row + np.float32(backend.rng().random())


def test_lamina_tensors_and_modules_travel_to_and_from_processes():
    dataset = _TensorSamples()

    def as_tensor(xb):
        return lamina.tensor(xb)

    expected = list(DataLoader(dataset, batch_size=2, seed=1, transform=as_tensor))
    batches = list(DataLoader(dataset, batch_size=2, seed=1, transform=as_tensor, num_workers=2, **FORK))
    assert all(isinstance(b, lamina.Tensor) for b in batches) and len(batches) == 3
    for got, want in zip(batches, expected):
        np.testing.assert_array_equal(got.data, want.data)


def test_spawn_needs_picklable_datasets_and_functions():
    x, y = _images(8)
    with pytest.raises(TypeError, match=r"DataLoader: worker_mode='process' with multiprocessing_context='spawn' "
                                        r"pickles the dataset, transforms or collate_fn .* cannot be pickled"):
        list(DataLoader(ArrayDataset(x, y), num_workers=1, transform=lambda xb: xb, worker_mode="process",
                        multiprocessing_context="spawn"))
    assert _no_children()


def test_bad_process_arguments():
    x, y = _images(4)
    dataset = ArrayDataset(x, y)
    with pytest.raises(ValueError, match=r"DataLoader: worker_mode must be one of \('thread', 'process'\); "
                                         r"got 'processes'"):
        DataLoader(dataset, num_workers=2, worker_mode="processes")
    with pytest.raises(ValueError, match="DataLoader: multiprocessing_context='fork' needs worker_mode='process'"):
        DataLoader(dataset, num_workers=2, multiprocessing_context="fork")
    with pytest.raises(ValueError, match="DataLoader: multiprocessing_context must be None, a multiprocessing "
                                         "context or one of"):
        DataLoader(dataset, num_workers=2, worker_mode="process", multiprocessing_context="clone")
    with pytest.raises(ValueError, match="DataLoader: timeout must be a number of seconds >= 0"):
        DataLoader(dataset, timeout=-1)
    assert "worker_mode='process'" in repr(DataLoader(dataset, num_workers=2, worker_mode="process"))


def test_spawned_processes_give_the_same_batches():
    dataset = _TensorSamples()                            # its Tensor and Module are pickled for the process

    def run(**workers):
        return _batches(DataLoader(dataset, batch_size=4, seed=2, transform=_noise, **workers))

    _assert_same(run(), run(num_workers=1, worker_mode="process", multiprocessing_context="spawn"))
    assert _no_children()
