"""lamina.keras.datasets: Keras's load_data shapes, dtypes and splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lamina.data.datasets import load_digits
from lamina.keras import datasets
from lamina.keras.datasets import cifar10, digits, fashion_mnist, mnist

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def no_data(monkeypatch, tmp_path):
    """A fresh HOME and no $LAMINA_DATA, so only the given path (and system copies) are searched."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("LAMINA_DATA", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    return empty


def test_digits_shapes_dtypes_and_deterministic_split():
    (x_train, y_train), (x_test, y_test) = digits.load_data()
    assert x_train.shape == (1438, 8, 8) and x_test.shape == (359, 8, 8)
    assert y_train.shape == (1438,) and y_test.shape == (359,)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.uint8
    assert set(np.unique(y_test).tolist()) == set(range(10))
    (again, _), (again_test, _) = digits.load_data()
    np.testing.assert_array_equal(again, x_train)
    np.testing.assert_array_equal(again_test, x_test)
    (other, _), _ = digits.load_data(seed=1)
    assert not np.array_equal(other, x_train)


def test_digits_split_is_a_partition_of_all_samples():
    x, y = load_digits(size=8)
    (x_train, y_train), (x_test, y_test) = digits.load_data(test_split=0.25)
    assert len(x_test) == round(len(x) * 0.25) and len(x_train) + len(x_test) == len(x)
    everything = np.concatenate([x_train, x_test]).reshape(len(x), -1)
    labels = np.concatenate([y_train, y_test])
    order = np.lexsort(everything.T[::-1])
    expected = np.lexsort(x.reshape(len(x), -1).T[::-1])
    np.testing.assert_array_equal(everything[order], x.reshape(len(x), -1)[expected])
    np.testing.assert_array_equal(np.bincount(labels), np.bincount(y))


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1e-6])
def test_digits_rejects_a_split_leaving_an_empty_set(bad):
    with pytest.raises(ValueError, match="digits.load_data: test_split"):
        digits.load_data(test_split=bad)


@pytest.mark.skipif(not FASHION_DIR.is_dir(),
                    reason=f"{FASHION_DIR} absent (install Debian package dataset-fashion-mnist)")
@pytest.mark.parametrize("path", [None, str(FASHION_DIR)])
def test_fashion_mnist_is_keras_shaped(no_data, path):
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data(path, download=False)
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert {a.dtype for a in (x_train, y_train, x_test, y_test)} == {np.dtype(np.uint8)}
    assert y_train.min() == 0 and y_train.max() == 9 and y_test.max() == 9
    assert x_train.max() == 255


@pytest.mark.parametrize("module", [mnist, cifar10])
def test_missing_files_name_the_dataset_and_the_directory(no_data, module):
    with pytest.raises(FileNotFoundError, match=str(no_data)):
        module.load_data(no_data, download=False)


def test_cifar10_labels_are_a_column_as_keras(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    fake = [(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)) for n in (5, 3)]
    seen = {}

    def fake_loader(data_dir, download=True):
        seen["dir"], seen["download"] = data_dir, download
        return fake[0], fake[1]

    monkeypatch.setattr(cifar10, "load_cifar10", fake_loader)
    (x_train, y_train), (x_test, y_test) = datasets.cifar10.load_data(tmp_path, download=False)
    assert seen == {"dir": tmp_path, "download": False}
    assert x_train.shape == (5, 32, 32, 3) and y_train.shape == (5, 1) and y_test.shape == (3, 1)
    assert y_train.dtype == np.uint8
    np.testing.assert_array_equal(y_test[:, 0], fake[1][1])
    np.testing.assert_array_equal(x_test, fake[1][0])
