"""DataLoader over an IterableDataset: batching a stream, sharding it across worker threads."""

import json
import threading

import numpy as np
import pytest

from lamina import backend
from lamina.data import DataLoader, IterableDataset, get_worker_info


class Numbers(IterableDataset):
    """Samples (i as a vector, i % 3), sharded by worker when ``shard`` is set."""

    def __init__(self, n, shard=True):
        self.n, self.shard = n, shard

    def __iter__(self):
        info = get_worker_info()
        first, step = (0, 1) if info is None or not self.shard else (info.id, info.num_workers)
        for i in range(first, self.n, step):
            yield np.full(2, i, np.float32), i % 3


class SizedNumbers(Numbers):
    def __len__(self):
        return self.n


def _firsts(loader):
    return [xb[:, 0].astype(int).tolist() for xb, _ in loader]


def _worker_threads():
    return [t for t in threading.enumerate() if t.name.startswith("lamina-loader-worker")]


def test_a_stream_is_batched_in_order():
    assert _firsts(DataLoader(Numbers(10), batch_size=4)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert _firsts(DataLoader(Numbers(10), batch_size=4, drop_last=True)) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    xb, yb = next(iter(DataLoader(Numbers(10), batch_size=4)))
    assert xb.shape == (4, 2) and yb.tolist() == [0, 1, 2, 0]


def test_a_plain_generator_object_with_iter_is_a_stream_too():
    class Squares:
        def __iter__(self):
            return iter(np.arange(5.0) ** 2)

    batches = list(DataLoader(Squares(), batch_size=2))
    np.testing.assert_array_equal(np.concatenate(batches), np.arange(5.0) ** 2)


def test_len_needs_the_dataset_to_define_len():
    with pytest.raises(TypeError, match="DataLoader: len\\(\\) of a loader over an iterable dataset needs the "
                                        "dataset to define __len__; Numbers does not"):
        len(DataLoader(Numbers(10), batch_size=4))
    assert len(DataLoader(SizedNumbers(10), batch_size=4)) == 3
    assert len(DataLoader(SizedNumbers(10), batch_size=4, drop_last=True)) == 2


def test_shuffle_and_samplers_are_refused():
    with pytest.raises(ValueError, match="DataLoader: shuffle=True needs a dataset with __getitem__ .* Numbers is "
                                         "an iterable dataset"):
        DataLoader(Numbers(10), shuffle=True)
    from lamina.data import SequentialSampler
    with pytest.raises(ValueError, match="DataLoader: a sampler needs a dataset with __getitem__"):
        DataLoader(Numbers(10), sampler=SequentialSampler())


def test_workers_shard_the_stream_with_get_worker_info():
    batches = _firsts(DataLoader(Numbers(11), batch_size=2, num_workers=2))
    # worker 0 reads 0, 2, 4, ...; worker 1 reads 1, 3, 5, ...; their batches are taken in turn
    assert batches == [[0, 2], [1, 3], [4, 6], [5, 7], [8, 10], [9]]
    assert sorted(sum(batches, [])) == list(range(11))
    assert not _worker_threads()


def test_without_sharding_every_worker_reads_the_whole_stream():
    batches = _firsts(DataLoader(Numbers(4, shard=False), batch_size=2, num_workers=2))
    assert sorted(sum(batches, [])) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_random_transforms_of_a_stream_do_not_depend_on_the_worker_thread():
    def jitter(xb):
        return xb + backend.rng().normal(size=xb.shape).astype(np.float32)

    def run(workers):
        loader = DataLoader(Numbers(9, shard=False), batch_size=2, seed=4, transform=jitter, num_workers=workers)
        return [xb for xb, _ in loader] + [xb for xb, _ in loader]

    for a, b in zip(run(0), run(1), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_stream_resumes_mid_epoch(num_workers):
    def loader():
        return DataLoader(Numbers(13), batch_size=2, num_workers=num_workers)

    expected = _firsts(loader()) * 2
    interrupted = loader()
    epoch = iter(interrupted)
    got = [next(epoch)[0][:, 0].astype(int).tolist() for _ in range(3)]
    state = json.loads(json.dumps(interrupted.state_dict()))
    del epoch
    restored = loader()
    restored.load_state_dict(state)
    assert got + _firsts(restored) + _firsts(restored) == expected
    assert restored.epoch == 2


class Broken(IterableDataset):
    def __iter__(self):
        yield np.zeros(2)
        yield np.zeros(2)
        yield np.zeros(2)
        raise OSError("stream closed")


def test_a_failing_stream_names_the_worker_and_its_batch():
    with pytest.raises(OSError, match="DataLoader worker [01] failed on its batch 1: OSError: stream closed"):
        list(DataLoader(Broken(), batch_size=2, num_workers=2))
    with pytest.raises(OSError, match="^stream closed$"):
        list(DataLoader(Broken(), batch_size=2))
    assert not _worker_threads()


def test_leaving_a_stream_early_stops_the_workers():
    for k, _ in enumerate(DataLoader(Numbers(10_000, shard=False), batch_size=2, num_workers=2)):
        if k == 3:
            break
    assert not _worker_threads()


def test_the_base_class_asks_for_iter():
    with pytest.raises(NotImplementedError, match="IterableDataset must define __iter__"):
        list(DataLoader(IterableDataset()))
