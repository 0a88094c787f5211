import dataclasses
import hashlib
import io
import tarfile

import numpy as np
import pytest

from lamina.data import STL10_CLASSES, ChecksumError, load_stl10, read_stl10_images
from lamina.data.datasets import fetch, stl10

FOLDER = "stl10_binary"


def upright_images(n, seed):
    """Random 96x96 images with a non-symmetric mark: a red bar along the top row's left part."""
    x = np.random.default_rng(seed).integers(0, 100, size=(n, 96, 96, 3), dtype=np.uint8)
    x[:, 0, :30, 0] = 255
    return x


def stored(images_nhwc):
    """STL-10's layout: per image the 3 planes, each written column by column."""
    return np.ascontiguousarray(images_nhwc.transpose(0, 3, 2, 1)).tobytes()


def fake_stl10(seed=0, counts=(3, 2, 4)):
    rng = np.random.default_rng(seed)
    arrays, files = {}, {}
    for split, n in zip(("train", "test", "unlabeled"), counts, strict=True):
        x = upright_images(n, seed)
        files[f"{split}_X.bin"] = stored(x)
        arrays[split] = x
        if split != "unlabeled":
            y = rng.integers(1, 11, size=n, dtype=np.uint8)
            files[f"{split}_y.bin"] = y.tobytes()
            arrays[f"{split}_y"] = y
    files["class_names.txt"] = ("\n".join(STL10_CLASSES) + "\n").encode()
    return files, arrays


def make_archive(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{FOLDER}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def check(split, result, arrays):
    x, y = result
    assert x.dtype == np.uint8 and y.dtype == np.int64 and x.shape[1:] == (96, 96, 3) and x.flags.c_contiguous
    np.testing.assert_array_equal(x, arrays[split])
    if split == "unlabeled":
        assert y.tolist() == [-1] * len(x)
    else:
        np.testing.assert_array_equal(y, arrays[f"{split}_y"].astype(np.int64) - 1)


def with_md5(monkeypatch, files, archive=None):
    monkeypatch.setattr(stl10, "_MD5", {k: hashlib.md5(v).hexdigest() for k, v in files.items()})
    if archive is not None:
        digest = hashlib.md5(archive.read_bytes()).hexdigest()
        monkeypatch.setattr(stl10, "SOURCE", dataclasses.replace(stl10.SOURCE, md5=digest))


def test_column_major_layout_comes_back_upright():
    image = np.zeros((1, 96, 96, 3), np.uint8)
    image[0, 0, 1, 0] = 9  # red, row 0, column 1
    image[0, 2, 0, 2] = 7  # blue, row 2, column 0
    plane_red = np.zeros((96, 96), np.uint8)
    plane_red[1, 0] = 9  # column-major: the (column, row) order of the file
    plane_blue = np.zeros((96, 96), np.uint8)
    plane_blue[0, 2] = 7
    data = plane_red.tobytes() + np.zeros(96 * 96, np.uint8).tobytes() + plane_blue.tobytes()
    np.testing.assert_array_equal(read_stl10_images(data), image)
    with pytest.raises(ValueError, match="not a positive multiple of the 27648-byte"):
        read_stl10_images(data[:-1])


@pytest.mark.parametrize("split", ["train", "test", "unlabeled"])
def test_load_extracted_files_checks_md5(tmp_path, isolated, monkeypatch, split):
    files, arrays = fake_stl10()
    (tmp_path / FOLDER).mkdir()
    for name, data in files.items():
        (tmp_path / FOLDER / name).write_bytes(data)
    with_md5(monkeypatch, files)
    check(split, load_stl10(split, tmp_path, download=False), arrays)
    name = f"{split}_X.bin"
    (tmp_path / FOLDER / name).write_bytes(files[name][:-1000])
    with pytest.raises(ChecksumError, match=f"{name}: MD5 mismatch"):
        load_stl10(split, tmp_path, download=False)
    with pytest.raises(ValueError, match=f"{name} .*not a positive multiple.*truncated"):
        load_stl10(split, tmp_path, download=False, verify=False)


def test_load_from_archive(tmp_path, isolated, monkeypatch):
    files, arrays = fake_stl10(seed=1)
    archive = make_archive(tmp_path / "stl10_binary.tar.gz", files | {"fold_indices.txt": b"0 1\n"})
    with_md5(monkeypatch, files, archive)
    for split in ("train", "test", "unlabeled"):
        check(split, load_stl10(split, tmp_path, download=False), arrays)
    assert not (tmp_path / FOLDER).exists()
    monkeypatch.setattr(stl10, "SOURCE", dataclasses.replace(stl10.SOURCE, md5="f" * 32))
    with pytest.raises(ChecksumError, match="stl10_binary.tar.gz: MD5 mismatch"):
        load_stl10("test", tmp_path, download=False)
    archive.write_bytes(archive.read_bytes()[:500])
    with pytest.raises(ValueError, match="unreadable tar archive"):
        load_stl10("test", tmp_path, download=False, verify=False)


def test_label_checks(tmp_path, isolated):
    files, _ = fake_stl10()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "test_y.bin").write_bytes(bytes([1, 11]))
    with pytest.raises(ValueError, match="labels must be 1..10; found 1..11"):
        load_stl10("test", tmp_path, download=False, verify=False)
    (tmp_path / "test_y.bin").write_bytes(bytes([1, 2, 3]))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        load_stl10("test", tmp_path, download=False, verify=False)
    with pytest.raises(ValueError, match="split must be one of"):
        load_stl10("train+unlabeled", tmp_path)


def test_search_order_and_offline_error(tmp_path, isolated, monkeypatch):
    env = tmp_path / "env"
    places = (tmp_path / "given", env / "stl10", env, isolated / ".cache" / "lamina" / "stl10")
    expected = {}
    for seed, directory in enumerate(places):
        files, expected[seed] = fake_stl10(seed)
        directory.mkdir(parents=True, exist_ok=True)
        for name in ("test_X.bin", "test_y.bin"):
            (directory / name).write_bytes(files[name])
    monkeypatch.setenv("LAMINA_DATA", str(env))
    check("test", load_stl10("test", tmp_path / "given", download=False, verify=False), expected[0])
    check("test", load_stl10("test", download=False, verify=False), expected[1])
    for name in ("test_X.bin", "test_y.bin"):
        (env / "stl10" / name).unlink()
    check("test", load_stl10("test", download=False, verify=False), expected[2])
    monkeypatch.delenv("LAMINA_DATA")
    check("test", load_stl10("test", download=False, verify=False), expected[3])
    with pytest.raises(FileNotFoundError) as info:
        load_stl10("train", tmp_path / "nowhere", download=False)
    message = str(info.value)
    for text in ("STL-10", "stl10_binary/train_X.bin", "stl10_binary/train_y.bin", "stl10_binary.tar.gz",
                 str(tmp_path / "nowhere"), str(places[3])):
        assert text in message
    with pytest.raises(FileNotFoundError, match="(?s)Download into .* failed.*network disabled"):
        load_stl10("train", tmp_path / "nowhere")


def test_download_extracts_every_file(tmp_path, isolated, monkeypatch):
    files, arrays = fake_stl10(seed=2)
    archive = make_archive(tmp_path / "served.tar.gz", files)
    with_md5(monkeypatch, files, archive)
    payload = archive.read_bytes()
    monkeypatch.setattr(fetch, "urlopen", lambda url, timeout=None: io.BytesIO(payload))
    check("train", load_stl10("train", tmp_path / "dl"), arrays)
    assert sorted(p.name for p in (tmp_path / "dl" / FOLDER).iterdir()) == sorted(files)
    monkeypatch.setattr(fetch, "urlopen", lambda url, timeout=None: io.BytesIO(b"not the archive"))
    check("unlabeled", load_stl10("unlabeled", tmp_path / "dl"), arrays)  # no second download
    with pytest.raises(ChecksumError):
        load_stl10("train", tmp_path / "dl2")
