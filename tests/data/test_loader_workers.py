"""DataLoader(num_workers=N): the same batches as in the training thread, in order, resumable,
with errors named and threads stopped; collate functions."""

import gc
import json
import threading
import time

import numpy as np
import pytest

from lamina import backend
from lamina.data import (
    ArrayDataset,
    CutMix,
    DataLoader,
    MixUp,
    WeightedRandomSampler,
    default_collate,
    get_worker_info,
)


def _images(n=29, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 6, 6, 1)).astype(np.float32), rng.integers(0, 3, n)


def _flip_and_noise(xb):
    """A random NumPy transform drawing from lamina's generator, as augmentations do."""
    rng = backend.rng()
    flip = rng.random(len(xb)) < 0.5
    out = np.where(flip[:, None, None, None], xb[:, :, ::-1], xb)
    return out + rng.normal(0, 0.1, xb.shape).astype(np.float32)


class _Samples:
    """A dataset indexed sample by sample, whose samples draw from lamina's generator."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i] + np.float32(backend.rng().random()), self.y[i]


def _worker_threads():
    return [t for t in threading.enumerate() if t.name.startswith("lamina-loader-worker")]


def _batches(loader):
    return [tuple(np.array(part) for part in batch) for batch in loader]


def _assert_same(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert len(a) == len(b)
        for part_a, part_b in zip(a, b):
            np.testing.assert_array_equal(part_a, part_b)


CASES = {
    "plain": lambda x, y: dict(dataset=ArrayDataset(x, y), shuffle=False),
    "shuffled": lambda x, y: dict(dataset=ArrayDataset(x, y)),
    "random transform": lambda x, y: dict(dataset=ArrayDataset(x, y), transform=_flip_and_noise),
    "random samples": lambda x, y: dict(dataset=_Samples(x, y), transform=_flip_and_noise),
    "sampler": lambda x, y: dict(dataset=ArrayDataset(x, y),
                                 sampler=WeightedRandomSampler(np.linspace(1, 2, len(x)), num_samples=20)),
    "mixup": lambda x, y: dict(dataset=ArrayDataset(x, y), transform=_flip_and_noise,
                               batch_transform=MixUp(0.4, num_classes=3, seed=5)),
    "cutmix": lambda x, y: dict(dataset=_Samples(x, y), batch_transform=CutMix(1.0, num_classes=3, seed=5)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_workers_give_the_batches_of_the_training_thread(case):
    x, y = _images()

    def run(num_workers, persistent=False):
        loader = DataLoader(batch_size=4, seed=3, num_workers=num_workers, persistent_workers=persistent,
                            **CASES[case](x, y))
        return _batches(loader) + _batches(loader)          # two epochs: new permutation, new draws

    reference = run(0)
    _assert_same(reference, run(2))
    _assert_same(reference, run(1, persistent=True))
    assert len(reference) == (10 if case == "sampler" else 16)
    assert not _worker_threads()


def test_epochs_differ_and_each_batch_has_its_own_draws():
    x, y = _images()
    loader = DataLoader(ArrayDataset(x, y), batch_size=4, shuffle=False, seed=3, transform=_flip_and_noise,
                        num_workers=2)
    first, second = _batches(loader), _batches(loader)
    assert not np.array_equal(first[0][0], second[0][0])
    assert not np.array_equal(first[0][0] - x[:4], first[1][0] - x[4:8])


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("handed_out", [3, 8])             # 8 = every batch of the epoch handed out
def test_a_mid_epoch_state_resumes_with_workers_exactly(num_workers, handed_out):
    x, y = _images()

    def loader(seed, workers):
        return DataLoader(_Samples(x, y), batch_size=4, seed=seed, transform=_flip_and_noise, num_workers=workers,
                          batch_transform=MixUp(0.4, num_classes=3, seed=seed))

    reference = loader(1, 0)
    expected = _batches(reference) + _batches(reference)  # two uninterrupted epochs
    assert len(expected) == 16

    interrupted = loader(1, num_workers)
    epoch = iter(interrupted)
    got = [tuple(np.array(p) for p in next(epoch)) for _ in range(handed_out)]
    state = json.loads(json.dumps(interrupted.state_dict()))
    del epoch                                             # batches made ahead are discarded
    restored = loader(99, 2)                              # other seeds: everything comes from the state
    restored.load_state_dict(state)
    got += _batches(restored) + _batches(restored)
    _assert_same(expected, got[:16])
    assert not _worker_threads()


class _Failing:
    def __len__(self):
        return 12

    def __getitem__(self, i):
        if i == 9:
            raise ValueError(f"sample {i} is corrupt")
        return np.float32(i)


def test_a_worker_exception_names_the_worker_and_batch():
    loader = DataLoader(_Failing(), batch_size=2, shuffle=False, num_workers=2)
    seen = []
    with pytest.raises(ValueError, match=r"DataLoader worker 0 failed on batch 4: ValueError: sample 9 is corrupt") \
            as caught:
        for xb in loader:
            seen.append(xb)
    assert len(seen) == 4 and isinstance(caught.value.__cause__, ValueError)
    assert not _worker_threads()


def test_leaving_the_loop_early_stops_the_workers():
    x, y = _images(200)
    loader = DataLoader(ArrayDataset(x, y), batch_size=2, num_workers=3, transform=_flip_and_noise)
    for k, _ in enumerate(loader):
        assert len(_worker_threads()) == 3
        if k == 2:
            break
    assert not _worker_threads()
    epoch = iter(loader)
    next(epoch)
    assert len(_worker_threads()) == 3
    del epoch                                             # a dropped iterator stops them too
    gc.collect()
    assert not _worker_threads()


def test_persistent_workers_live_until_the_loader_is_collected():
    x, y = _images(12)
    loader = DataLoader(ArrayDataset(x, y), batch_size=4, num_workers=2, persistent_workers=True)
    for _ in range(2):
        list(loader)
        threads = _worker_threads()
        assert len(threads) == 2
    next(iter(loader))                                    # an abandoned epoch: the next one is whole
    assert len(list(loader)) == 3 and _worker_threads() == threads
    del loader
    gc.collect()
    for thread in threads:
        thread.join(timeout=5)
    assert not _worker_threads()


class _Counting:
    def __init__(self, n):
        self.n, self.calls = n, 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.calls += 1
        return np.float32(i)


def test_prefetch_factor_bounds_the_batches_made_ahead():
    dataset = _Counting(40)
    epoch = iter(DataLoader(dataset, batch_size=1, shuffle=False, num_workers=2, prefetch_factor=3))
    next(epoch)
    time.sleep(0.2)
    assert dataset.calls == 6                              # prefetch_factor * num_workers
    next(epoch)
    time.sleep(0.2)
    assert dataset.calls == 7
    del epoch


def test_worker_init_fn_and_worker_info():
    seen = {}

    def init(worker_id):
        seen[worker_id] = (threading.current_thread().name, get_worker_info())

    class Recording(_Counting):
        def __getitem__(self, i):
            info = get_worker_info()
            assert info is not None and info.dataset is self and 0 <= info.id < 2
            return super().__getitem__(i)

    x = Recording(8)
    assert len(list(DataLoader(x, batch_size=2, num_workers=2, worker_init_fn=init))) == 4
    assert sorted(seen) == [0, 1]
    infos = [info for _, info in seen.values()]
    assert {info.num_workers for info in infos} == {2} and infos[0].seed != infos[1].seed
    assert get_worker_info() is None

    def broken(worker_id):
        raise RuntimeError("no device")

    with pytest.raises(RuntimeError, match="DataLoader worker [01] failed on batch 0: RuntimeError: no device"):
        list(DataLoader(x, batch_size=2, num_workers=2, worker_init_fn=broken))
    assert not _worker_threads()


def test_bad_worker_arguments():
    x, y = _images(4)
    with pytest.raises(ValueError, match="DataLoader: num_workers must be an integer >= 0; got -1"):
        DataLoader(ArrayDataset(x, y), num_workers=-1)
    with pytest.raises(ValueError, match="DataLoader: prefetch_factor must be an integer >= 1; got 0"):
        DataLoader(ArrayDataset(x, y), num_workers=2, prefetch_factor=0)
    with pytest.raises(TypeError, match="DataLoader: worker_init_fn must be callable; got int"):
        DataLoader(ArrayDataset(x, y), worker_init_fn=3)
    with pytest.raises(TypeError, match="DataLoader: collate_fn must be callable; got str"):
        DataLoader(ArrayDataset(x, y), collate_fn="stack")


# -- collate functions ------------------------------------------------------------

class _Records:
    def __len__(self):
        return 5

    def __getitem__(self, i):
        return {"image": np.full((2, 2, 1), i, np.float32), "meta": {"id": i, "box": np.arange(4) + i}}, i % 2


def test_dict_samples_collate_into_dict_batches():
    batches = list(DataLoader(_Records(), batch_size=3, shuffle=False, num_workers=2))
    (inputs, labels), (last_inputs, _) = batches
    assert inputs["image"].shape == (3, 2, 2, 1) and last_inputs["image"].shape == (2, 2, 2, 1)
    np.testing.assert_array_equal(inputs["meta"]["id"], [0, 1, 2])
    np.testing.assert_array_equal(inputs["meta"]["box"], np.arange(4) + np.arange(3)[:, None])
    np.testing.assert_array_equal(labels, [0, 1, 0])
    plain = default_collate([{"a": np.ones(2), "b": 1}, {"a": np.zeros(2), "b": 2}])
    np.testing.assert_array_equal(plain["a"], [[1, 1], [0, 0]])
    np.testing.assert_array_equal(plain["b"], [1, 2])


def test_default_collate_matches_the_stacking_of_nested_inputs():
    samples = [((np.full(2, i), np.float32(i)), i) for i in range(3)]
    (first, second), labels = default_collate(samples)
    assert first.shape == (3, 2) and second.dtype == np.float32
    np.testing.assert_array_equal(labels, [0, 1, 2])
    assert default_collate([[1, 2], [3, 4]]).shape == (2, 2)     # a list of numbers is one array
    with pytest.raises(ValueError, match=r"default_collate: sample 0 has keys \['a'\] but sample 1 is a dict "
                                         r"with keys \['b'\]"):
        default_collate([{"a": 1}, {"b": 2}])
    with pytest.raises(ValueError, match="default_collate: sample 0 has 2 components but sample 1 is a tuple of 3"):
        default_collate([(1, 2), (1, 2, 3)])


def test_a_collate_fn_makes_the_batches_of_any_dataset():
    x, y = _images(10)

    def pad_labels(samples):
        images = np.stack([s[0] for s in samples])
        return images, np.array([s[1] for s in samples]) + 100

    for workers in (0, 2):
        batches = list(DataLoader(ArrayDataset(x, y), batch_size=4, shuffle=False, collate_fn=pad_labels,
                                  num_workers=workers, transform=lambda xb: xb * 2))
        np.testing.assert_array_equal(batches[0][1], y[:4] + 100)
        np.testing.assert_array_equal(batches[2][0], x[8:] * 2)
    with pytest.raises(ValueError, match="DataLoader: batch_transform needs \\(x, y\\) samples; the dataset's "
                                         "samples are dicts"):
        list(DataLoader(_Records(), batch_size=2, collate_fn=lambda s: {"x": 1}, batch_transform=MixUp(0.2)))
