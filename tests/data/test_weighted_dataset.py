"""ArrayDataset of (x, y, w): samples with weights, batched whole by the loader."""

import numpy as np
import pytest

from lamina.data import ArrayDataset, ConcatDataset, DataLoader, MixUp, Subset


def arrays(n=10):
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    return x, np.arange(n) % 3, np.linspace(0.5, 2.0, n)


def test_samples_and_batches_carry_their_weights():
    x, y, w = arrays()
    dataset = ArrayDataset(x, y, w)
    sample = dataset[3]
    assert len(sample) == 3 and sample[2] == w[3]
    batches = list(DataLoader(dataset, batch_size=4, shuffle=True, seed=0))
    order = np.concatenate([xb[:, 0] for xb, _, _ in batches]).astype(int) // 2
    np.testing.assert_array_equal(np.concatenate([wb for _, _, wb in batches]), w[order])
    np.testing.assert_array_equal(np.concatenate([yb for _, yb, _ in batches]), y[order])
    assert "w=(10,) float64" in repr(dataset)


def test_subsets_and_concatenations_keep_the_weights():
    x, y, w = arrays()
    (xb, yb, wb), = DataLoader(Subset(ArrayDataset(x, y, w), [7, 2]), batch_size=2, shuffle=False)
    np.testing.assert_array_equal(wb, w[[7, 2]])
    joined = ConcatDataset([ArrayDataset(x, y, w), ArrayDataset(x, y, 2 * w)])
    weights = np.concatenate([b[2] for b in DataLoader(joined, batch_size=7, shuffle=False)])
    np.testing.assert_array_equal(weights, np.r_[w, 2 * w])
    with pytest.raises(ValueError, match="same structure"):
        ConcatDataset([ArrayDataset(x, y, w), ArrayDataset(x, y)])


def test_bad_weights_and_a_batch_transform_are_refused():
    x, y, w = arrays()
    with pytest.raises(ValueError, match=r"w must hold one weight per sample, shape \(10,\); got shape \(9,\)"):
        ArrayDataset(x, y, w[:9])
    with pytest.raises(ValueError, match="sample weights w need labels y"):
        ArrayDataset(x, None, w)
    loader = DataLoader(ArrayDataset(x, y, w), batch_size=4, batch_transform=MixUp(alpha=0.4, num_classes=3))
    with pytest.raises(ValueError, match=r"batch_transform needs \(x, y\) samples.*\(x, y, w\) triples"):
        next(iter(loader))
