import numpy as np
import pytest

import lamina
from lamina.data import ArrayDataset, DataLoader, Dataset


def _data(n=23):
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    y = np.arange(n, dtype=np.int64)
    return x, y


def _epoch(loader):
    return [(xb.copy(), yb.copy()) for xb, yb in loader]


class ListDataset:
    """A plain (non-array) dataset: the loader's per-sample path."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.full((3,), i, dtype=np.float64), i


# -- ArrayDataset ---------------------------------------------------------------------

def test_array_dataset_indexing():
    x, y = _data(10)
    ds = ArrayDataset(x, y)
    assert isinstance(ds, Dataset) and len(ds) == 10
    xi, yi = ds[3]
    np.testing.assert_array_equal(xi, x[3])
    assert yi == 3
    xb, yb = ds[np.array([1, 4, 7])]
    np.testing.assert_array_equal(xb, x[[1, 4, 7]])
    np.testing.assert_array_equal(yb, [1, 4, 7])
    xb, yb = ds[[]]
    assert xb.shape == (0, 2) and yb.shape == (0,)
    np.testing.assert_array_equal(ArrayDataset(x)[2], x[2])


def test_array_dataset_length_mismatch_names_both_lengths():
    with pytest.raises(ValueError, match=r"len\(x\) = 5, len\(y\) = 4"):
        ArrayDataset(np.zeros((5, 2)), np.zeros(4))


def test_array_dataset_rejects_float_index():
    with pytest.raises(TypeError, match="index"):
        ArrayDataset(np.zeros((5, 2)))[np.array([0.5])]


# -- DataLoader -----------------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [1, 5, 23, 40])
def test_every_sample_once_per_epoch(batch_size):
    x, y = _data()
    loader = DataLoader(ArrayDataset(x, y), batch_size=batch_size, seed=1)
    for _ in range(2):
        batches = _epoch(loader)
        assert len(batches) == len(loader) == -(-23 // batch_size)
        assert all(len(yb) == batch_size for _, yb in batches[:-1])
        seen = np.concatenate([yb for _, yb in batches])
        np.testing.assert_array_equal(np.sort(seen), np.arange(23))
        for xb, yb in batches:
            np.testing.assert_array_equal(xb, x[yb])


def test_reshuffles_each_epoch_and_seed_reproduces():
    x, y = _data(50)
    a = DataLoader(ArrayDataset(x, y), batch_size=50, seed=7)
    first, second = _epoch(a)[0][1], _epoch(a)[0][1]
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, np.arange(50))
    b = DataLoader(ArrayDataset(x, y), batch_size=50, seed=7)
    np.testing.assert_array_equal(_epoch(b)[0][1], first)
    np.testing.assert_array_equal(_epoch(b)[0][1], second)
    c = DataLoader(ArrayDataset(x, y), batch_size=50, seed=8)
    assert not np.array_equal(_epoch(c)[0][1], first)


def test_manual_seed_makes_unseeded_loader_reproducible():
    x, y = _data(40)
    orders = []
    for _ in range(2):
        lamina.manual_seed(123)
        loader = DataLoader(ArrayDataset(x, y), batch_size=40)
        orders.append(np.concatenate([yb for _, yb in loader]))
    np.testing.assert_array_equal(orders[0], orders[1])


def test_no_shuffle_keeps_order():
    x, y = _data()
    loader = DataLoader(ArrayDataset(x, y), batch_size=4, shuffle=False)
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in loader]), y)


def test_drop_last():
    x, y = _data(23)
    loader = DataLoader(ArrayDataset(x, y), batch_size=5, drop_last=True, seed=0)
    batches = _epoch(loader)
    assert len(loader) == len(batches) == 4
    assert all(len(yb) == 5 for _, yb in batches)
    assert len(np.unique(np.concatenate([yb for _, yb in batches]))) == 20
    assert len(DataLoader(ArrayDataset(x, y), batch_size=30, drop_last=True)) == 0
    assert list(DataLoader(ArrayDataset(x, y), batch_size=30, drop_last=True)) == []


def test_transform_applies_to_inputs_per_batch():
    x, y = _data()
    calls = []

    def double(xb):
        calls.append(len(xb))
        return xb * 2

    loader = DataLoader(ArrayDataset(x, y), batch_size=10, transform=double, seed=0)
    for xb, yb in loader:
        np.testing.assert_array_equal(xb, x[yb] * 2)
    assert calls == [10, 10, 3]


def test_unlabelled_dataset_yields_inputs_only():
    x, _ = _data(9)
    batches = list(DataLoader(ArrayDataset(x), batch_size=4, shuffle=False))
    assert [b.shape for b in batches] == [(4, 2), (4, 2), (1, 2)]


def test_generic_dataset_is_stacked():
    loader = DataLoader(ListDataset(7), batch_size=3, seed=0, transform=lambda xb: xb + 1)
    batches = list(loader)
    assert [xb.shape for xb, _ in batches] == [(3, 3), (3, 3), (1, 3)]
    for xb, yb in batches:
        np.testing.assert_array_equal(xb[:, 0], yb + 1)
    assert sorted(np.concatenate([yb for _, yb in batches]).tolist()) == list(range(7))


def test_bad_arguments():
    ds = ArrayDataset(np.zeros((3, 1)))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            DataLoader(ds, batch_size=bad)
    with pytest.raises(TypeError, match="__len__"):
        DataLoader(object())


def test_state_dict_resume_between_epochs_is_identical():
    x, y = _data(31)
    ref = DataLoader(ArrayDataset(x, y), batch_size=4, seed=3)
    _epoch(ref)
    state = ref.state_dict()
    expected = [_epoch(ref) for _ in range(2)]
    fresh = DataLoader(ArrayDataset(x, y), batch_size=4, seed=999)
    fresh.load_state_dict(state)
    assert fresh.epoch == 1
    got = [_epoch(fresh) for _ in range(2)]
    for e_epoch, g_epoch in zip(expected, got, strict=True):
        for (ex, ey), (gx, gy) in zip(e_epoch, g_epoch, strict=True):
            np.testing.assert_array_equal(ex, gx)
            np.testing.assert_array_equal(ey, gy)
    assert fresh.epoch == ref.epoch == 3


def test_state_dict_resume_mid_epoch():
    x, y = _data(31)
    ref = DataLoader(ArrayDataset(x, y), batch_size=4, seed=5)
    _epoch(ref)
    it = iter(ref)
    head = [next(it)[1].copy() for _ in range(3)]
    state = ref.state_dict()
    assert state["position"] == 3
    tail = [yb.copy() for _, yb in it]
    following = [yb for _, yb in ref]
    fresh = DataLoader(ArrayDataset(x, y), batch_size=4, seed=0)
    fresh.load_state_dict(state)
    got_tail = [yb for _, yb in fresh]
    assert len(got_tail) == len(tail) == len(ref) - 3
    for a, b in zip(tail, got_tail, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.sort(np.concatenate(head + got_tail)), np.arange(31))
    for a, b in zip(following, [yb for _, yb in fresh], strict=True):
        np.testing.assert_array_equal(a, b)
    assert fresh.epoch == ref.epoch


def test_state_after_last_batch_counts_epoch_done():
    x, y = _data(8)
    ref = DataLoader(ArrayDataset(x, y), batch_size=4, seed=2)
    it = iter(ref)
    next(it), next(it)
    state = ref.state_dict()
    assert state["epoch"] == 1 and state["position"] == 0
    list(it)
    fresh = DataLoader(ArrayDataset(x, y), batch_size=4, seed=0)
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in fresh]),
                                  np.concatenate([yb for _, yb in ref]))


def test_load_state_dict_rejects_other_data():
    ref = DataLoader(ArrayDataset(np.zeros((10, 1))), batch_size=2, seed=0)
    other = DataLoader(ArrayDataset(np.zeros((11, 1))), batch_size=2, seed=0)
    with pytest.raises(ValueError, match="num_samples"):
        other.load_state_dict(ref.state_dict())
    with pytest.raises(KeyError, match="generator"):
        ref.load_state_dict({"epoch": 0, "position": 0})


@pytest.mark.parametrize("num_workers", [0, 2])
def test_state_after_leaving_an_epoch_early_resumes_as_the_loader_does(num_workers):
    x, y = _data(12)
    ref = DataLoader(ArrayDataset(x, y), batch_size=3, seed=0, num_workers=num_workers)
    for i, _ in enumerate(ref):
        if i == 1:
            break
    state = ref.state_dict()
    assert state["position"] == 0 and state["epoch"] == 0
    fresh = DataLoader(ArrayDataset(x, y), batch_size=3, seed=0)
    fresh.load_state_dict(state)
    for _ in range(2):                                   # the abandoned epoch's successor, then the next
        expected, got = [yb for _, yb in ref], [yb for _, yb in fresh]
        assert len(expected) == len(got) == 4
        for a, b in zip(expected, got, strict=True):
            np.testing.assert_array_equal(a, b)
    assert fresh.epoch == ref.epoch == 2
