import dataclasses
import gzip
import hashlib
import io
import struct

import numpy as np
import pytest

from lamina.data import ChecksumError, load_fashion_mnist, load_mnist, read_idx, read_idx_file
from lamina.data.datasets import fetch, idx

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")


def idx_bytes(array, type_code=0x08, dtype=">u1"):
    array = np.asarray(array)
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def fake_mnist(seed=0, n_train=6, n_test=4):
    """IDX contents of a tiny MNIST-format dataset: {file base name: bytes}, plus arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    return {k: idx_bytes(v) for k, v in arrays.items()}, arrays


def write(directory, contents, compress=True, only=None):
    directory.mkdir(parents=True, exist_ok=True)
    for base, data in contents.items():
        if only is not None and base not in only:
            continue
        if compress:
            (directory / (base + ".gz")).write_bytes(gzip.compress(data))
        else:
            (directory / base).write_bytes(data)


def check_against(result, arrays):
    (x_train, y_train), (x_test, y_test) = result
    assert x_train.shape == (6, 28, 28, 1) and x_test.shape == (4, 28, 28, 1)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64 and y_test.dtype == np.int64
    np.testing.assert_array_equal(x_train[..., 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(x_test[..., 0], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])


def patched_spec(monkeypatch, contents):
    """Make MNIST's known digests and counts those of the fake files."""
    digests = {k: hashlib.sha256(v).hexdigest() for k, v in contents.items()}
    monkeypatch.setattr(idx, "MNIST", dataclasses.replace(idx.MNIST, sha256=digests, counts=(6, 4)))


# -- the IDX format -------------------------------------------------------------------

def test_read_idx_dtypes_and_magic():
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    magic, out = read_idx(idx_bytes(a))
    assert magic == 0x00000803 == 2051
    np.testing.assert_array_equal(out, a)
    magic, out = read_idx(idx_bytes(np.arange(5), type_code=0x08))
    assert magic == 2049
    f = np.array([[1.5, -2.0]], dtype=np.float32)
    magic, out = read_idx(idx_bytes(f, type_code=0x0D, dtype=">f4"))
    assert out.dtype == np.float32 and out.dtype.isnative
    np.testing.assert_array_equal(out, f)
    s = np.array([-300, 300], dtype=np.int16)
    np.testing.assert_array_equal(read_idx(idx_bytes(s, type_code=0x0B, dtype=">i2"))[1], s)


@pytest.mark.parametrize(("data", "match"), [
    (b"\x00\x00", "too short"),
    (b"\x01\x00\x08\x01" + b"\x00" * 8, "not an IDX file"),
    (b"\x00\x00\x07\x01" + b"\x00" * 8, "not an IDX file"),
    (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
    (idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-5], "truncated or corrupt"),
    (idx_bytes(np.zeros(4, np.uint8)) + b"\x00", "truncated or corrupt"),
])
def test_read_idx_corrupt(data, match):
    with pytest.raises(ValueError, match=match):
        read_idx(data, "thing")


def test_read_idx_file_gzip_and_plain(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(a)))
    (tmp_path / "a").write_bytes(idx_bytes(a))
    for name in ("a.gz", "a"):
        np.testing.assert_array_equal(read_idx_file(tmp_path / name)[1], a)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(idx_bytes(a))[:-10])
    with pytest.raises(ValueError, match="corrupt gzip"):
        read_idx_file(tmp_path / "bad.gz")


# -- load_mnist / load_fashion_mnist on small files -------------------------------------

@pytest.mark.parametrize("compress", [True, False])
def test_load_mnist_from_data_dir(tmp_path, isolated, compress):
    contents, arrays = fake_mnist()
    write(tmp_path / "d", contents, compress=compress)
    check_against(load_mnist(tmp_path / "d", download=False, verify=False), arrays)


def test_load_fashion_mnist_same_format(tmp_path, isolated):
    contents, arrays = fake_mnist(seed=3)
    write(tmp_path / "f", contents)
    check_against(load_fashion_mnist(tmp_path / "f", download=False, verify=False), arrays)


def test_checksum_mismatch_raises(tmp_path, isolated):
    contents, _ = fake_mnist()
    write(tmp_path, contents)
    with pytest.raises(ChecksumError, match="SHA-256 mismatch: expected ba891046"):
        load_mnist(tmp_path, download=False)


def test_checksum_match_passes_for_gz_and_plain(tmp_path, isolated, monkeypatch):
    contents, arrays = fake_mnist()
    patched_spec(monkeypatch, contents)
    write(tmp_path / "gz", contents, compress=True)
    write(tmp_path / "plain", contents, compress=False)
    check_against(load_mnist(tmp_path / "gz", download=False), arrays)
    check_against(load_mnist(tmp_path / "plain", download=False), arrays)
    # A single flipped pixel is caught.
    tampered = dict(contents)
    data = bytearray(tampered["t10k-images-idx3-ubyte"])
    data[-1] ^= 1
    tampered["t10k-images-idx3-ubyte"] = bytes(data)
    write(tmp_path / "bad", tampered)
    with pytest.raises(ChecksumError, match="t10k-images"):
        load_mnist(tmp_path / "bad", download=False)


def test_wrong_magic_and_count_mismatch(tmp_path, isolated):
    contents, _ = fake_mnist()
    swapped = dict(contents)
    swapped["train-labels-idx1-ubyte"] = contents["train-images-idx3-ubyte"]
    write(tmp_path / "a", swapped)
    with pytest.raises(ValueError, match="magic number 2051, expected 2049"):
        load_mnist(tmp_path / "a", download=False, verify=False)
    short = dict(contents)
    short["t10k-labels-idx1-ubyte"] = idx_bytes(np.zeros(3, np.uint8))
    write(tmp_path / "b", short)
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        load_mnist(tmp_path / "b", download=False, verify=False)
    bad_label = dict(contents)
    bad_label["t10k-labels-idx1-ubyte"] = idx_bytes(np.array([1, 2, 10, 3], np.uint8))
    write(tmp_path / "c", bad_label)
    with pytest.raises(ValueError, match="labels must be 0..9; found 10"):
        load_mnist(tmp_path / "c", download=False, verify=False)


def test_missing_files_error_names_files_and_directories(tmp_path, isolated, monkeypatch):
    contents, _ = fake_mnist()
    write(tmp_path / "d", contents, only={"train-images-idx3-ubyte", "train-labels-idx1-ubyte"})
    monkeypatch.setenv("LAMINA_DATA", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(tmp_path / "d", download=False)
    message = str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message
    assert "train-images" not in message
    for directory in (tmp_path / "d", tmp_path / "env" / "mnist", tmp_path / "env",
                      isolated / ".cache" / "lamina" / "mnist"):
        assert str(directory) in message
    assert "download=False" in message


def test_offline_download_fails_with_file_not_found(tmp_path, isolated):
    with pytest.raises(FileNotFoundError, match="(?s)train-images-idx3-ubyte.gz.*Download into .* failed"):
        load_mnist(tmp_path / "d", download=True)


def test_search_order(tmp_path, isolated, monkeypatch):
    first, first_arrays = fake_mnist(seed=1)
    second, second_arrays = fake_mnist(seed=2)
    write(tmp_path / "env" / "mnist", first)
    write(isolated / ".cache" / "lamina" / "mnist", second)
    monkeypatch.setenv("LAMINA_DATA", str(tmp_path / "env"))
    check_against(load_mnist(download=False, verify=False), first_arrays)  # $LAMINA_DATA/mnist
    monkeypatch.delenv("LAMINA_DATA")
    check_against(load_mnist(download=False, verify=False), second_arrays)  # ~/.cache/lamina/mnist
    write(tmp_path / "explicit", first)
    check_against(load_mnist(tmp_path / "explicit", download=False, verify=False), first_arrays)
    # Files are searched one by one: a directory with only some files is completed by the next.
    mixed = tmp_path / "mixed"
    write(mixed, first, only={"train-images-idx3-ubyte"})
    (x_train, _), _ = load_mnist(mixed, download=False, verify=False)
    np.testing.assert_array_equal(x_train[..., 0], first_arrays["train-images-idx3-ubyte"])


class FakeServer:
    """Stands in for urllib's urlopen: serves bytes by URL and records requests."""

    def __init__(self, files):
        self.files = files
        self.requested = []

    def __call__(self, url, timeout=None):
        self.requested.append(url)
        if url not in self.files:
            raise OSError(f"404 {url}")
        return io.BytesIO(self.files[url])


def test_download_verifies_and_writes_atomically(tmp_path, isolated, monkeypatch):
    contents, arrays = fake_mnist()
    patched_spec(monkeypatch, contents)
    second_mirror = idx.MNIST.mirrors[1]
    server = FakeServer({second_mirror + k + ".gz": gzip.compress(v) for k, v in contents.items()})
    monkeypatch.setattr(fetch, "urlopen", server)
    target = tmp_path / "dl"
    check_against(load_mnist(target, download=True), arrays)
    assert sorted(p.name for p in target.iterdir()) == sorted(f + ".gz" for f in FILES)
    assert len(server.requested) == 8  # first mirror fails, second serves each file
    # Now present: no further requests.
    check_against(load_mnist(target, download=True), arrays)
    assert len(server.requested) == 8


def test_download_default_location_is_cache(tmp_path, isolated, monkeypatch):
    contents, arrays = fake_mnist()
    patched_spec(monkeypatch, contents)
    mirror = idx.MNIST.mirrors[0]
    monkeypatch.setattr(fetch, "urlopen", FakeServer(
        {mirror + k + ".gz": gzip.compress(v) for k, v in contents.items()}))
    check_against(load_mnist(download=True), arrays)
    assert (isolated / ".cache" / "lamina" / "mnist" / "t10k-labels-idx1-ubyte.gz").is_file()


def test_download_with_bad_checksum_leaves_nothing(tmp_path, isolated, monkeypatch):
    contents, _ = fake_mnist()
    patched_spec(monkeypatch, contents)
    wrong, _ = fake_mnist(seed=9)
    monkeypatch.setattr(fetch, "urlopen", FakeServer(
        {m + k + ".gz": gzip.compress(v) for m in idx.MNIST.mirrors for k, v in wrong.items()}))
    target = tmp_path / "dl"
    with pytest.raises(ChecksumError, match="SHA-256 mismatch"):
        load_mnist(target, download=True)
    assert list(target.iterdir()) == []
