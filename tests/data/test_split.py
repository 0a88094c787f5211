import numpy as np
import pytest

from lamina.data import one_hot, train_val_test_split


def _labelled(counts):
    y = np.concatenate([np.full(c, k) for k, c in enumerate(counts)])
    x = np.arange(len(y) * 3).reshape(len(y), 3)
    return x, y


def _ids(split):
    return split[0][:, 0] // 3


def test_sizes_disjoint_and_complete():
    x, y = _labelled([100, 50, 30, 20])
    train, val, test = train_val_test_split(x, y, val=0.15, test=0.2, seed=1)
    assert len(test[0]) == 40 and len(val[0]) == 30 and len(train[0]) == 130
    ids = [_ids(s) for s in (train, val, test)]
    all_ids = np.concatenate(ids)
    assert len(np.unique(all_ids)) == len(all_ids) == 200
    for (xs, ys), i in zip((train, val, test), ids, strict=True):
        np.testing.assert_array_equal(ys, y[i])
        np.testing.assert_array_equal(xs, x[i])


def test_stratified_proportions():
    x, y = _labelled([100, 50, 30, 20])
    train, val, test = train_val_test_split(x, y, val=0.1, test=0.2, seed=0)
    np.testing.assert_array_equal(np.bincount(test[1]), [20, 10, 6, 4])
    np.testing.assert_array_equal(np.bincount(val[1]), [10, 5, 3, 2])
    np.testing.assert_array_equal(np.bincount(train[1]), [70, 35, 21, 14])


def test_stratified_rounding_keeps_totals():
    x, y = _labelled([7, 7, 7, 3, 1])
    train, val, test = train_val_test_split(x, y, val=0.1, test=0.1, seed=3)
    # 10% of 25 is 2.5, rounded half up.
    assert len(test[1]) == 3 and len(val[1]) == 3 and len(train[1]) == 19
    # Each class gets within one sample of its proportional share.
    for split, frac in ((test, 0.1), (val, 0.1)):
        counts = np.bincount(split[1], minlength=5)
        assert np.all(np.abs(counts - frac * np.array([7, 7, 7, 3, 1])) < 1)


def test_splits_are_shuffled_not_class_sorted():
    x, y = _labelled([50, 50])
    train, _, _ = train_val_test_split(x, y, seed=0)
    assert not np.all(np.diff(train[1]) >= 0)


def test_unstratified_sizes():
    x, y = _labelled([90, 10])
    train, val, test = train_val_test_split(x, y, val=0.25, test=0.05, stratify=False, seed=0)
    assert (len(train[1]), len(val[1]), len(test[1])) == (70, 25, 5)


def test_deterministic_by_seed():
    x, y = _labelled([40, 40, 20])
    a = train_val_test_split(x, y, seed=11)
    b = train_val_test_split(x, y, seed=11)
    c = train_val_test_split(x, y, seed=12)
    for sa, sb in zip(a, b, strict=True):
        np.testing.assert_array_equal(sa[0], sb[0])
    assert not np.array_equal(a[0][0], c[0][0])


def test_zero_fractions():
    x, y = _labelled([5, 5])
    train, val, test = train_val_test_split(x, y, val=0, test=0)
    assert len(train[0]) == 10 and len(val[0]) == 0 and len(test[0]) == 0
    assert val[0].shape == (0, 3)


@pytest.mark.parametrize(("val", "test", "match"), [
    (-0.1, 0.1, "val must be >= 0"),
    (0.1, -0.5, "test must be >= 0"),
    (0.5, 0.5, "val \\+ test must be < 1"),
    (0.7, 0.4, "val \\+ test must be < 1"),
    (float("nan"), 0.1, "val must be a finite number"),
    ("0.1", 0.1, "val must be a finite number"),
])
def test_fraction_errors(val, test, match):
    x, y = _labelled([5, 5])
    with pytest.raises(ValueError, match=match):
        train_val_test_split(x, y, val=val, test=test)


def test_length_mismatch():
    with pytest.raises(ValueError, match=r"len\(x\) = 4, len\(y\) = 3"):
        train_val_test_split(np.zeros((4, 2)), np.zeros(3))


# -- one_hot --------------------------------------------------------------------------

def test_one_hot_basic():
    out = one_hot([2, 0, 1])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.eye(3)[[2, 0, 1]])
    out = one_hot(np.array([[1, 3]]), num_classes=5, dtype=np.int64)
    assert out.shape == (1, 2, 5) and out.dtype == np.int64
    np.testing.assert_array_equal(out[0], np.eye(5, dtype=np.int64)[[1, 3]])
    np.testing.assert_array_equal(one_hot(np.array([1.0, 0.0])), [[0, 1], [1, 0]])


def test_one_hot_out_of_range_names_values():
    with pytest.raises(ValueError, match=r"\[0, 3\).*\[-1, 3, 7\]"):
        one_hot([0, 3, -1, 7, 3], num_classes=3)


def test_one_hot_other_errors():
    with pytest.raises(ValueError, match="non-integral values \\[0.5\\]"):
        one_hot([0.5, 1.0])
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        one_hot([0], num_classes=0)
    with pytest.raises(ValueError, match="cannot infer num_classes"):
        one_hot(np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="integers"):
        one_hot(np.array(["a"]))
