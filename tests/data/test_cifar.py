import io
import tarfile

import numpy as np
import pytest

from lamina.data import ChecksumError, extract_cifar10_archive, load_cifar10, read_cifar10_bin

TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
NAMES = TRAIN + ["test_batch.bin"]


def records(images_nhwc, labels):
    """CIFAR-10 binary records: label byte, then the R, G and B planes row by row."""
    chw = np.asarray(images_nhwc, dtype=np.uint8).transpose(0, 3, 1, 2).reshape(len(labels), -1)
    return np.column_stack([np.asarray(labels, np.uint8), chw]).tobytes()


def fake_cifar(n=3, seed=0):
    rng = np.random.default_rng(seed)
    files, arrays = {}, {}
    for name in NAMES:
        x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, size=n)
        files[name] = records(x, y)
        arrays[name] = (x, y)
    return files, arrays


def check(result, arrays, n=3):
    (x_train, y_train), (x_test, y_test) = result
    assert x_train.shape == (5 * n, 32, 32, 3) and x_test.shape == (n, 32, 32, 3)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64 and y_test.dtype == np.int64
    np.testing.assert_array_equal(x_train, np.concatenate([arrays[f][0] for f in TRAIN]))
    np.testing.assert_array_equal(y_train, np.concatenate([arrays[f][1] for f in TRAIN]))
    np.testing.assert_array_equal(x_test, arrays["test_batch.bin"][0])
    np.testing.assert_array_equal(y_test, arrays["test_batch.bin"][1])


def make_archive(path, members):
    """A tar.gz with the given {member name: bytes}."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_record_layout_is_chw_to_nhwc():
    red = np.zeros((32, 32), np.uint8)
    red[0, 1] = 200  # row 0, column 1 of the red plane
    blue = np.full((32, 32), 7, np.uint8)
    data = bytes([4]) + red.tobytes() + np.zeros(1024, np.uint8).tobytes() + blue.tobytes()
    x, y = read_cifar10_bin(data)
    assert x.shape == (1, 32, 32, 3) and y.tolist() == [4]
    assert x[0, 0, 1, 0] == 200 and x[0, 1, 0, 0] == 0
    assert np.all(x[0, :, :, 2] == 7) and np.all(x[0, :, :, 1] == 0)
    assert x.flags.c_contiguous


@pytest.mark.parametrize(("data", "match"), [
    (b"", "not a positive multiple"),
    (b"\x00" * 3072, "not a positive multiple"),
    (bytes([11]) + b"\x00" * 3072, "label bytes must be 0..9; found 11"),
])
def test_read_bin_errors(data, match):
    with pytest.raises(ValueError, match=match):
        read_cifar10_bin(data)


@pytest.mark.parametrize("nested", [True, False])
def test_load_from_bin_files(tmp_path, isolated, nested):
    files, arrays = fake_cifar()
    directory = tmp_path / "cifar-10-batches-bin" if nested else tmp_path
    directory.mkdir(exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    check(load_cifar10(tmp_path, download=False, verify=False), arrays)
    with pytest.raises(ChecksumError, match="data_batch_1.bin"):
        load_cifar10(tmp_path, download=False)


def test_load_from_tar_gz(tmp_path, isolated):
    files, arrays = fake_cifar(seed=1)
    make_archive(tmp_path / "cifar-10-binary.tar.gz",
                 {f"cifar-10-batches-bin/{k}": v for k, v in files.items()}
                 | {"cifar-10-batches-bin/readme.html": b"<html>"})
    check(load_cifar10(tmp_path, download=False, verify=False), arrays)
    assert not (tmp_path / "cifar-10-batches-bin").exists()  # read in memory, nothing written
    with pytest.raises(ChecksumError, match="cifar-10-binary.tar.gz"):
        load_cifar10(tmp_path, download=False)


def test_extract_archive_safely(tmp_path):
    files, _ = fake_cifar()
    archive = tmp_path / "a.tar.gz"
    make_archive(archive, {f"cifar-10-batches-bin/{k}": v for k, v in files.items()}
                 | {"cifar-10-batches-bin/batches.meta.txt": b"airplane\n", "evil.sh": b"rm -rf"})
    out = extract_cifar10_archive(archive, tmp_path / "dest")
    assert sorted(p.name for p in out.iterdir()) == sorted(NAMES)
    assert (out / "test_batch.bin").read_bytes() == files["test_batch.bin"]


def test_extract_refuses_links_and_path_tricks(tmp_path):
    files, _ = fake_cifar()
    link = tmp_path / "link.tar.gz"
    with tarfile.open(link, "w:gz") as tar:
        for name, data in files.items():
            if name == "data_batch_1.bin":
                info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
                info.type = tarfile.SYMTYPE
                info.linkname = "/etc/passwd"
                tar.addfile(info)
            else:
                info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match="not a regular file"):
        extract_cifar10_archive(link, tmp_path / "out1")
    traversal = tmp_path / "traversal.tar.gz"
    make_archive(traversal, {"../" + k: v for k, v in files.items()})
    with pytest.raises(ValueError, match="unsafe member path"):
        extract_cifar10_archive(traversal, tmp_path / "out2")
    assert not any((tmp_path / "out2").rglob("*.bin"))
    incomplete = tmp_path / "incomplete.tar.gz"
    make_archive(incomplete, {"cifar-10-batches-bin/data_batch_1.bin": files["data_batch_1.bin"]})
    with pytest.raises(ValueError, match="archive lacks"):
        extract_cifar10_archive(incomplete, tmp_path / "out3")
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar file")
    with pytest.raises(ValueError, match="unreadable tar archive"):
        extract_cifar10_archive(tmp_path / "junk.tar.gz", tmp_path / "out4")


def test_missing_cifar_names_files_and_directories(tmp_path, isolated):
    with pytest.raises(FileNotFoundError) as info:
        load_cifar10(tmp_path / "nowhere", download=False)
    message = str(info.value)
    for name in NAMES + ["cifar-10-binary.tar.gz"]:
        assert name in message
    for directory in (tmp_path / "nowhere", isolated / ".cache" / "lamina" / "cifar-10"):
        assert str(directory) in message
    with pytest.raises(FileNotFoundError, match="Download into .* failed"):
        load_cifar10(tmp_path / "nowhere", download=True)


def test_download_extracts_and_verifies(tmp_path, isolated, monkeypatch):
    import hashlib

    from lamina.data.datasets import cifar, fetch

    files, arrays = fake_cifar(seed=2)
    archive = tmp_path / "served.tar.gz"
    make_archive(archive, {f"cifar-10-batches-bin/{k}": v for k, v in files.items()})
    payload = archive.read_bytes()
    monkeypatch.setattr(cifar, "_ARCHIVE_SHA256", hashlib.sha256(payload).hexdigest())
    monkeypatch.setattr(cifar, "_BIN_SHA256", {k: hashlib.sha256(v).hexdigest() for k, v in files.items()})
    monkeypatch.setattr(cifar, "_RECORDS_PER_FILE", 3)
    monkeypatch.setattr(fetch, "urlopen", lambda url, timeout=None: io.BytesIO(payload))
    target = tmp_path / "dl"
    check(load_cifar10(target, download=True), arrays)
    assert (target / "cifar-10-binary.tar.gz").is_file()
    assert sorted(p.name for p in (target / "cifar-10-batches-bin").iterdir()) == sorted(NAMES)
    # A server handing out something else is refused and leaves no archive behind.
    monkeypatch.setattr(fetch, "urlopen", lambda url, timeout=None: io.BytesIO(b"x" * 100))
    with pytest.raises(ChecksumError):
        load_cifar10(tmp_path / "dl2", download=True)
    assert list((tmp_path / "dl2").iterdir()) == []
