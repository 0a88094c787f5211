from pathlib import Path

import numpy as np
import pytest

from lamina.data import load_digits, load_fashion_mnist

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not FASHION_DIR.is_dir(),
                    reason=f"{FASHION_DIR} absent (install Debian package dataset-fashion-mnist)")
def test_real_fashion_mnist_from_system_copy(isolated):
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(download=False)  # checksums verified
    assert x_train.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    assert x_train.dtype == np.uint8 and x_test.dtype == np.uint8
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert y_train.min() == 0 and y_train.max() == 9 and y_test.min() == 0 and y_test.max() == 9
    np.testing.assert_array_equal(np.bincount(y_train), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(y_test), np.full(10, 1000))
    assert x_train.max() == 255 and x_train.min() == 0


def test_load_digits_32():
    x, y = load_digits()
    assert x.shape == (1797, 32, 32, 1) and x.dtype == np.uint8
    assert y.shape == (1797,) and y.dtype == np.int64
    assert set(np.unique(y).tolist()) == set(range(10))
    assert x.max() == 255
    assert np.all(x[:, :4] == 0) and np.all(x[:, -4:] == 0)
    assert np.all(x[:, :, :4] == 0) and np.all(x[:, :, -4:] == 0)


def test_load_digits_8_matches_sklearn_and_upsampling():
    from sklearn.datasets import load_digits as sk

    raw, y8 = load_digits(size=8)
    assert raw.shape == (1797, 8, 8, 1) and raw.dtype == np.uint8
    bunch = sk()
    np.testing.assert_array_equal(raw[..., 0], np.rint(bunch.images * 255 / 16).astype(np.uint8))
    np.testing.assert_array_equal(y8, bunch.target)
    big, _ = load_digits(size=32)
    # Each raw pixel becomes a 3x3 block of the 24x24 centre.
    np.testing.assert_array_equal(big[:, 4:28:3, 4:28:3], raw)
    np.testing.assert_array_equal(big[:, 6:30:3, 6:30:3], raw)
    with pytest.raises(ValueError, match="size must be 8"):
        load_digits(size=28)
