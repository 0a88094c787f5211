import hashlib
import io

import numpy as np
import pytest
from scipy.io import savemat

from lamina.data import ChecksumError, load_svhn, read_svhn_mat
from lamina.data.datasets import fetch, svhn


def upright_images(n, seed=0):
    """Random images with a non-symmetric mark: a bright top-left corner, dark elsewhere on row 31."""
    x = np.random.default_rng(seed).integers(0, 200, size=(n, 32, 32, 3), dtype=np.uint8)
    x[:, 0, :3, 0] = 255
    x[:, 31, :, :] = 0
    return x


def write_svhn(path, images_nhwc, stored_labels):
    """A .mat file in SVHN's layout: X (32, 32, 3, N) uint8, y (N, 1) with 10 for the digit 0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"X": np.ascontiguousarray(images_nhwc.transpose(1, 2, 3, 0)),
                   "y": np.asarray(stored_labels, np.uint8).reshape(-1, 1)})
    return path


def test_layout_orientation_and_label_10_is_zero(tmp_path):
    images = upright_images(4)
    path = write_svhn(tmp_path / "train_32x32.mat", images, [10, 1, 9, 10])
    x, y = read_svhn_mat(path)
    assert x.shape == (4, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(x, images)
    assert np.all(x[:, 0, 0, 0] == 255) and np.all(x[:, 31, 0, 0] == 0)
    assert y.tolist() == [0, 1, 9, 0]
    assert x.flags.c_contiguous


@pytest.mark.parametrize(("contents", "match"), [
    ({"X": np.zeros((2, 32, 32, 3), np.uint8), "y": np.ones((2, 1), np.uint8)}, r"expected uint8 \(32, 32, 3, N\)"),
    ({"X": np.zeros((32, 32, 3, 2), np.float64), "y": np.ones((2, 1), np.uint8)}, "X is float64"),
    ({"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((3, 1), np.uint8)}, "2 images but 3 labels"),
    ({"X": np.zeros((32, 32, 3, 1), np.uint8), "y": np.zeros((1, 1), np.uint8)}, "labels must be 1..10"),
    ({"images": np.zeros((32, 32, 3, 1), np.uint8)}, "hold variables 'X' and 'y'"),
])
def test_structure_errors(tmp_path, contents, match):
    savemat(tmp_path / "bad.mat", contents)
    with pytest.raises(ValueError, match=match):
        read_svhn_mat(tmp_path / "bad.mat")


def test_checksums_and_truncation(tmp_path, isolated, monkeypatch):
    images = upright_images(3, seed=1)
    path = write_svhn(tmp_path / "test_32x32.mat", images, [1, 2, 3])
    monkeypatch.setitem(svhn._MD5, "test_32x32.mat", hashlib.md5(path.read_bytes()).hexdigest())
    x, y = load_svhn("test", tmp_path, download=False)
    np.testing.assert_array_equal(x, images)
    assert y.tolist() == [1, 2, 3]
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ChecksumError, match="test_32x32.mat: MD5 mismatch"):
        load_svhn("test", tmp_path, download=False)
    with pytest.raises(ValueError, match="test_32x32.mat: not a readable MATLAB file"):
        load_svhn("test", tmp_path, download=False, verify=False)


def test_split_is_checked(tmp_path, isolated):
    with pytest.raises(ValueError, match=r"split must be one of \['extra', 'test', 'train'\], got 'valid'"):
        load_svhn("valid", tmp_path)


def test_search_order(tmp_path, isolated, monkeypatch):
    env = tmp_path / "env"
    places = (tmp_path / "given", env / "svhn", env, isolated / ".cache" / "lamina" / "svhn")
    for label, directory in enumerate(places, start=1):
        write_svhn(directory / "extra_32x32.mat", upright_images(1), [label])
    monkeypatch.setenv("LAMINA_DATA", str(env))
    assert load_svhn("extra", tmp_path / "given", download=False, verify=False)[1].tolist() == [1]
    assert load_svhn("extra", download=False, verify=False)[1].tolist() == [2]
    (env / "svhn" / "extra_32x32.mat").unlink()
    assert load_svhn("extra", download=False, verify=False)[1].tolist() == [3]
    monkeypatch.delenv("LAMINA_DATA")
    assert load_svhn("extra", download=False, verify=False)[1].tolist() == [4]


def test_missing_file_names_file_and_directories(tmp_path, isolated):
    with pytest.raises(FileNotFoundError) as info:
        load_svhn("train", tmp_path / "nowhere", download=False)
    message = str(info.value)
    for text in ("SVHN", "train_32x32.mat", str(tmp_path / "nowhere"), str(isolated / ".cache" / "lamina" / "svhn")):
        assert text in message
    with pytest.raises(FileNotFoundError, match="(?s)train_32x32.mat.*Download into .* failed.*network disabled"):
        load_svhn("train", tmp_path / "nowhere")


def test_download_checks_md5(tmp_path, isolated, monkeypatch):
    images = upright_images(2, seed=2)
    payload = write_svhn(tmp_path / "served.mat", images, [5, 10]).read_bytes()
    monkeypatch.setitem(svhn._MD5, "train_32x32.mat", hashlib.md5(payload).hexdigest())
    urls = []
    monkeypatch.setattr(fetch, "urlopen", lambda url, timeout=None: urls.append(url) or io.BytesIO(payload))
    x, y = load_svhn("train", tmp_path / "dl")
    np.testing.assert_array_equal(x, images)
    assert y.tolist() == [5, 0] and urls == ["http://ufldl.stanford.edu/housenumbers/train_32x32.mat"]
    assert (tmp_path / "dl" / "train_32x32.mat").read_bytes() == payload
    monkeypatch.setattr(fetch, "urlopen", lambda url, timeout=None: io.BytesIO(payload + b"x"))
    with pytest.raises(ChecksumError):
        load_svhn("train", tmp_path / "dl2")
    assert list((tmp_path / "dl2").iterdir()) == []
