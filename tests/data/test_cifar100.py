import dataclasses
import hashlib
import io
import tarfile

import numpy as np
import pytest

from lamina.data import ChecksumError, load_cifar100, load_cifar100_classes, read_cifar100_bin
from lamina.data.datasets import cifar100, fetch

FOLDER = "cifar-100-binary"
FINE_NAMES = [f"fine{i}" for i in range(100)]
COARSE_NAMES = [f"coarse{i}" for i in range(20)]


def records(images_nhwc, coarse, fine):
    """CIFAR-100 binary records: coarse byte, fine byte, then the R, G, B planes row by row."""
    chw = np.asarray(images_nhwc, np.uint8).transpose(0, 3, 1, 2).reshape(len(fine), -1)
    return np.column_stack([np.asarray(coarse, np.uint8), np.asarray(fine, np.uint8), chw]).tobytes()


def fake_cifar100(seed=0, counts=(4, 3)):
    rng = np.random.default_rng(seed)
    files, arrays = {}, {}
    for name, n in zip(("train.bin", "test.bin"), counts, strict=True):
        x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        fine = rng.integers(0, 100, size=n)
        coarse = rng.integers(0, 20, size=n)
        files[name] = records(x, coarse, fine)
        arrays[name] = (x, fine, coarse)
    files["fine_label_names.txt"] = ("\n".join(FINE_NAMES) + "\n").encode()
    files["coarse_label_names.txt"] = ("\n".join(COARSE_NAMES) + "\n").encode()
    return files, arrays


def make_archive(path, files, folder=FOLDER):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def check(result, arrays, label_mode="fine"):
    column = 1 if label_mode == "fine" else 2
    (x_train, y_train), (x_test, y_test) = result
    assert x_train.shape == (4, 32, 32, 3) and x_test.shape == (3, 32, 32, 3)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64 and y_test.dtype == np.int64
    np.testing.assert_array_equal(x_train, arrays["train.bin"][0])
    np.testing.assert_array_equal(y_train, arrays["train.bin"][column])
    np.testing.assert_array_equal(x_test, arrays["test.bin"][0])
    np.testing.assert_array_equal(y_test, arrays["test.bin"][column])


@pytest.fixture
def small_counts(monkeypatch):
    monkeypatch.setattr(cifar100, "_COUNTS", {"train.bin": 4, "test.bin": 3})


def test_record_layout_orientation_and_label_modes():
    image = np.zeros((32, 32, 3), np.uint8)
    image[0, 5, 0] = 200  # red, top row, sixth column
    image[31, 0, 2] = 90  # blue, bottom-left corner
    data = records(image[None], [7], [42])
    x, fine = read_cifar100_bin(data)
    _, coarse = read_cifar100_bin(data, label_mode="coarse")
    assert fine.tolist() == [42] and coarse.tolist() == [7]
    assert x[0, 0, 5, 0] == 200 and x[0, 5, 0, 0] == 0 and x[0, 31, 0, 2] == 90 and x[0, 0, 31, 2] == 0
    np.testing.assert_array_equal(x[0], image)
    assert x.flags.c_contiguous


@pytest.mark.parametrize(("data", "match"), [
    (b"", "not a positive multiple of the 3074-byte"),
    (b"\x00" * 3073, "not a positive multiple"),
    (bytes([3, 100]) + b"\x00" * 3072, "fine label bytes must be 0..99; found 100"),
    (bytes([20, 1]) + b"\x00" * 3072, "coarse label bytes must be 0..19; found 20"),
])
def test_read_bin_errors(data, match):
    with pytest.raises(ValueError, match=match):
        read_cifar100_bin(data)


def test_label_mode_is_checked(tmp_path, isolated):
    with pytest.raises(ValueError, match="label_mode must be 'fine' or 'coarse', got 'medium'"):
        load_cifar100(tmp_path, label_mode="medium")


@pytest.mark.parametrize("nested", [True, False])
def test_load_extracted_files(tmp_path, isolated, nested):
    files, arrays = fake_cifar100()
    directory = tmp_path / FOLDER if nested else tmp_path
    directory.mkdir(exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    check(load_cifar100(tmp_path, download=False, verify=False), arrays)
    check(load_cifar100(tmp_path, download=False, label_mode="coarse", verify=False), arrays, "coarse")
    assert load_cifar100_classes(tmp_path, download=False) == tuple(FINE_NAMES)
    assert load_cifar100_classes(tmp_path, download=False, label_mode="coarse") == tuple(COARSE_NAMES)
    with pytest.raises(ValueError, match="4 records, expected 50000"):  # verify checks the canonical counts
        load_cifar100(tmp_path, download=False)


def test_load_from_archive_checks_md5(tmp_path, isolated, monkeypatch, small_counts):
    files, arrays = fake_cifar100(seed=1)
    archive = make_archive(tmp_path / "cifar-100-binary.tar.gz", files | {"README": b"readme"})
    digest = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(cifar100, "SOURCE", dataclasses.replace(cifar100.SOURCE, md5=digest))
    check(load_cifar100(tmp_path, download=False), arrays)
    assert load_cifar100_classes(tmp_path, download=False, label_mode="coarse") == tuple(COARSE_NAMES)
    assert not (tmp_path / FOLDER).exists()  # read in memory, nothing extracted
    monkeypatch.setattr(cifar100, "SOURCE", dataclasses.replace(cifar100.SOURCE, md5="0" * 32))
    with pytest.raises(ChecksumError, match="cifar-100-binary.tar.gz: MD5 mismatch"):
        load_cifar100(tmp_path, download=False)


def test_truncated_archive_and_file_are_refused(tmp_path, isolated):
    files, _ = fake_cifar100()
    (tmp_path / "a").mkdir()
    archive = make_archive(tmp_path / "a" / "cifar-100-binary.tar.gz", files)
    archive.write_bytes(archive.read_bytes()[:300])
    with pytest.raises(ValueError, match="unreadable tar archive"):
        load_cifar100(tmp_path / "a", download=False, verify=False)
    (tmp_path / "b").mkdir()
    for name, data in files.items():
        (tmp_path / "b" / name).write_bytes(data[:-10] if name == "test.bin" else data)
    with pytest.raises(ValueError, match=r"test.bin .*not a positive multiple.*truncated"):
        load_cifar100(tmp_path / "b", download=False, verify=False)


def test_search_order(tmp_path, isolated, monkeypatch):
    env = tmp_path / "env"
    for directory, seed in ((tmp_path / "given", 0), (env / "cifar-100", 1), (env, 2),
                            (isolated / ".cache" / "lamina" / "cifar-100", 3)):
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in fake_cifar100(seed)[0].items():
            (directory / name).write_bytes(data)
    monkeypatch.setenv("LAMINA_DATA", str(env))
    expected = {seed: fake_cifar100(seed)[1] for seed in range(4)}
    check(load_cifar100(tmp_path / "given", download=False, verify=False), expected[0])
    check(load_cifar100(download=False, verify=False), expected[1])
    for name in fake_cifar100()[0]:
        (env / "cifar-100" / name).unlink()
    check(load_cifar100(download=False, verify=False), expected[2])
    monkeypatch.delenv("LAMINA_DATA")
    check(load_cifar100(download=False, verify=False), expected[3])


def test_missing_files_name_files_and_directories(tmp_path, isolated):
    with pytest.raises(FileNotFoundError) as info:
        load_cifar100(tmp_path / "nowhere", download=False)
    message = str(info.value)
    for name in ("cifar-100-binary/train.bin", "cifar-100-binary/test.bin", "cifar-100-binary.tar.gz",
                 str(tmp_path / "nowhere"), str(isolated / ".cache" / "lamina" / "cifar-100"), "download=False"):
        assert name in message
    with pytest.raises(FileNotFoundError, match="(?s)train.bin.*Download into .* failed.*network disabled"):
        load_cifar100(tmp_path / "nowhere", download=True)


def test_download_extracts_and_verifies(tmp_path, isolated, monkeypatch, small_counts):
    files, arrays = fake_cifar100(seed=2)
    payload = make_archive(tmp_path / "served.tar.gz", files).read_bytes()
    monkeypatch.setattr(cifar100, "SOURCE",
                        dataclasses.replace(cifar100.SOURCE, md5=hashlib.md5(payload).hexdigest()))
    urls = []
    monkeypatch.setattr(fetch, "urlopen", lambda url, timeout=None: urls.append(url) or io.BytesIO(payload))
    check(load_cifar100(tmp_path / "dl"), arrays)
    assert urls == ["https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"]
    assert sorted(p.name for p in (tmp_path / "dl" / FOLDER).iterdir()) == sorted(files)
    check(load_cifar100(tmp_path / "dl", download=False, verify=False), arrays)  # now from the extracted files
    monkeypatch.setattr(fetch, "urlopen", lambda url, timeout=None: io.BytesIO(payload[:-5]))
    with pytest.raises(ChecksumError, match="MD5 mismatch"):
        load_cifar100(tmp_path / "dl2")
    assert list((tmp_path / "dl2").iterdir()) == []
