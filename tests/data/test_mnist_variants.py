import gzip
import hashlib
import io
import struct
import zipfile

import numpy as np
import pytest

from lamina.data import EMNIST_CLASSES, KMNIST_CLASSES, ChecksumError, load_emnist, load_kmnist
from lamina.data.datasets import fetch, mnist_variants

KMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte")


def idx_bytes(array):
    array = np.asarray(array, np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def upright_images(n, seed):
    """Random 28x28 images with a non-symmetric mark: a bright bar along the top row's left half."""
    x = np.random.default_rng(seed).integers(0, 100, size=(n, 28, 28), dtype=np.uint8)
    x[:, 0, :14] = 255
    return x


# -- KMNIST ----------------------------------------------------------------------------

def fake_kmnist(seed=0, counts=(5, 3)):
    rng = np.random.default_rng(seed)
    arrays = {}
    for (images, labels), n in zip((KMNIST_FILES[:2], KMNIST_FILES[2:]), counts, strict=True):
        arrays[images] = upright_images(n, seed)
        arrays[labels] = rng.integers(0, 10, size=n, dtype=np.uint8)
    return {k: gzip.compress(idx_bytes(v), mtime=0) for k, v in arrays.items()}, arrays


def write_kmnist(directory, gz_files, compress=True):
    directory.mkdir(parents=True, exist_ok=True)
    for base, data in gz_files.items():
        if compress:
            (directory / f"{base}.gz").write_bytes(data)
        else:
            (directory / base).write_bytes(gzip.decompress(data))


def check_kmnist(result, arrays):
    (x_train, y_train), (x_test, y_test) = result
    assert x_train.shape == (5, 28, 28, 1) and x_test.shape == (3, 28, 28, 1) and x_train.dtype == np.uint8
    assert y_train.dtype == np.int64
    np.testing.assert_array_equal(x_train[..., 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(x_test[..., 0], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])


@pytest.fixture
def kmnist_small(monkeypatch):
    """Known digests and counts made those of the fake files."""
    gz_files, arrays = fake_kmnist()
    monkeypatch.setattr(mnist_variants, "_KMNIST_GZ_MD5", {k: hashlib.md5(v).hexdigest() for k, v in gz_files.items()})
    monkeypatch.setattr(mnist_variants, "_KMNIST_SPLITS", ((*KMNIST_FILES[:2], 5), (*KMNIST_FILES[2:], 3)))
    return gz_files, arrays


def test_kmnist_loads_gz_and_uncompressed_files(tmp_path, isolated, kmnist_small):
    gz_files, arrays = kmnist_small
    write_kmnist(tmp_path / "gz", gz_files)
    check_kmnist(load_kmnist(tmp_path / "gz", download=False), arrays)
    write_kmnist(tmp_path / "raw", gz_files, compress=False)
    check_kmnist(load_kmnist(tmp_path / "raw", download=False), arrays)
    assert len(KMNIST_CLASSES) == 10 and KMNIST_CLASSES[0] == "o"


def test_kmnist_refuses_corrupt_and_truncated_files(tmp_path, isolated, kmnist_small):
    gz_files, _ = kmnist_small
    write_kmnist(tmp_path, gz_files)
    recompressed = gzip.compress(gzip.decompress(gz_files["t10k-labels-idx1-ubyte"]), mtime=1)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(recompressed)
    with pytest.raises(ChecksumError, match="t10k-labels-idx1-ubyte.gz: MD5 mismatch"):
        load_kmnist(tmp_path, download=False)
    truncated = idx_bytes(np.zeros((3, 28, 28)))[:-7]
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(truncated))
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz: IDX header says .* truncated"):
        load_kmnist(tmp_path, download=False, verify=False)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gz_files["t10k-labels-idx1-ubyte"])
    with pytest.raises(ValueError, match="magic number 2049, expected 2051"):
        load_kmnist(tmp_path, download=False, verify=False)


def test_kmnist_search_order_and_offline_error(tmp_path, isolated, monkeypatch):
    env = tmp_path / "env"
    places = (tmp_path / "given", env / "kmnist", env, isolated / ".cache" / "lamina" / "kmnist")
    expected = {}
    for seed, directory in enumerate(places):
        gz_files, expected[seed] = fake_kmnist(seed)
        write_kmnist(directory, gz_files)
    monkeypatch.setenv("LAMINA_DATA", str(env))
    check_kmnist(load_kmnist(tmp_path / "given", download=False, verify=False), expected[0])
    check_kmnist(load_kmnist(download=False, verify=False), expected[1])
    for path in (env / "kmnist").iterdir():
        path.unlink()
    check_kmnist(load_kmnist(download=False, verify=False), expected[2])
    monkeypatch.delenv("LAMINA_DATA")
    check_kmnist(load_kmnist(download=False, verify=False), expected[3])
    for path in places[3].iterdir():
        path.unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_kmnist(tmp_path / "nowhere", download=False)
    message = str(info.value)
    for text in (*KMNIST_FILES, "KMNIST", str(tmp_path / "nowhere"), str(places[3]), "download=False"):
        assert text in message
    with pytest.raises(FileNotFoundError, match="(?s)t10k-labels.*Download into .* failed.*network disabled"):
        load_kmnist(tmp_path / "nowhere")


def test_kmnist_download_checks_md5(tmp_path, isolated, monkeypatch, kmnist_small):
    gz_files, arrays = kmnist_small
    urls = []

    def serve(url, timeout=None):
        urls.append(url)
        return io.BytesIO(gz_files[url.rsplit("/", 1)[1].removesuffix(".gz")])

    monkeypatch.setattr(fetch, "urlopen", serve)
    check_kmnist(load_kmnist(tmp_path / "dl"), arrays)
    assert sorted(urls) == sorted(f"https://codh.rois.ac.jp/kmnist/dataset/kmnist/{f}.gz" for f in KMNIST_FILES)
    monkeypatch.setattr(fetch, "urlopen", lambda url, timeout=None: io.BytesIO(gzip.compress(b"junk")))
    with pytest.raises(ChecksumError):
        load_kmnist(tmp_path / "dl2")
    assert list((tmp_path / "dl2").iterdir()) == []


# -- EMNIST ----------------------------------------------------------------------------

def emnist_names(split):
    return [f"emnist-{split}-{part}-{kind}-ubyte.gz" for part in ("train", "test")
            for kind in ("images-idx3", "labels-idx1")]


def fake_emnist(split, seed=0, counts=(4, 2), stored_labels=None):
    """{member name: gz bytes} with images stored transposed, as EMNIST does; and the upright arrays."""
    rng = np.random.default_rng(seed)
    names = emnist_names(split)
    files, upright = {}, {}
    for (images, labels), n in zip((names[:2], names[2:]), counts, strict=True):
        x = upright_images(n, seed)
        y = rng.integers(0, len(EMNIST_CLASSES[split]), size=n) if stored_labels is None else stored_labels[:n]
        files[images] = gzip.compress(idx_bytes(x.transpose(0, 2, 1)), mtime=0)
        files[labels] = gzip.compress(idx_bytes(y), mtime=0)
        upright[images], upright[labels] = x, np.asarray(y)
    return files, upright


def make_zip(path, files, folder="gzip"):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(f"{folder}/{name}", data)
        zf.writestr(f"{folder}/emnist-balanced-mapping.txt", "0 48\n")
    return path


def check_emnist(result, split, upright, label_offset=0):
    names = emnist_names(split)
    (x_train, y_train), (x_test, y_test) = result
    assert x_train.shape == (4, 28, 28, 1) and x_test.shape == (2, 28, 28, 1)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64
    np.testing.assert_array_equal(x_train[..., 0], upright[names[0]])
    assert np.all(x_train[:, 0, :14, 0] == 255)  # upright: the mark is on the top row, not the left column
    np.testing.assert_array_equal(y_train, upright[names[1]] - label_offset)
    np.testing.assert_array_equal(x_test[..., 0], upright[names[2]])
    np.testing.assert_array_equal(y_test, upright[names[3]] - label_offset)


@pytest.fixture
def emnist_small_counts(monkeypatch):
    monkeypatch.setattr(mnist_variants, "_EMNIST_COUNTS", dict.fromkeys(EMNIST_CLASSES, (4, 2)))


def test_emnist_from_zip_is_upright_and_checked(tmp_path, isolated, monkeypatch, emnist_small_counts):
    files, upright = fake_emnist("balanced")
    archive = make_zip(tmp_path / "gzip.zip", files)
    monkeypatch.setattr(mnist_variants, "_EMNIST_ZIP_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    check_emnist(load_emnist("balanced", tmp_path, download=False), "balanced", upright)
    assert not (tmp_path / "gzip").exists()
    monkeypatch.setattr(mnist_variants, "_EMNIST_ZIP_MD5", "0" * 32)
    with pytest.raises(ChecksumError, match="gzip.zip: MD5 mismatch"):
        load_emnist("balanced", tmp_path, download=False)
    with pytest.raises(ValueError, match="archive lacks"):
        load_emnist("digits", tmp_path, download=False, verify=False)


def test_emnist_letters_labels_are_shifted_to_zero(tmp_path, isolated):
    files, upright = fake_emnist("letters", stored_labels=[1, 26, 5, 13])
    directory = tmp_path / "gzip"
    directory.mkdir()
    for name, data in files.items():
        (directory / name).write_bytes(data)
    result = load_emnist("letters", tmp_path, download=False, verify=False)
    check_emnist(result, "letters", upright, label_offset=1)
    assert result[0][1].tolist() == [0, 25, 4, 12]
    assert [EMNIST_CLASSES["letters"][i] for i in result[0][1]] == ["a", "z", "e", "m"]
    with pytest.raises(ValueError, match="4 samples, expected 124800"):  # verify checks the canonical counts
        load_emnist("letters", tmp_path, download=False)
    files, _ = fake_emnist("letters", stored_labels=[0, 3, 4, 5])
    (directory / "emnist-letters-train-labels-idx1-ubyte.gz").write_bytes(
        files["emnist-letters-train-labels-idx1-ubyte.gz"])
    with pytest.raises(ValueError, match="labels must be 1..26; found 0..5"):
        load_emnist("letters", tmp_path, download=False, verify=False)


def test_emnist_class_tables():
    sizes = {split: len(names) for split, names in EMNIST_CLASSES.items()}
    assert sizes == {"byclass": 62, "bymerge": 47, "balanced": 47, "letters": 26, "digits": 10, "mnist": 10}
    assert EMNIST_CLASSES["balanced"][36:] == tuple("abdefghnqrt")


def test_emnist_mixes_extracted_files_and_zip(tmp_path, isolated, emnist_small_counts):
    files, upright = fake_emnist("digits", seed=3)
    names = emnist_names("digits")
    make_zip(tmp_path / "gzip.zip", {n: files[n] for n in names[2:]})
    (tmp_path / names[0].removesuffix(".gz")).write_bytes(gzip.decompress(files[names[0]]))  # uncompressed
    (tmp_path / names[1]).write_bytes(files[names[1]])
    check_emnist(load_emnist("digits", tmp_path, download=False, verify=False), "digits", upright)


def test_emnist_refuses_corrupt_files(tmp_path, isolated):
    files, _ = fake_emnist("mnist")
    (tmp_path / "gzip.zip").write_bytes(make_zip(tmp_path / "tmp.zip", files).read_bytes()[:200])
    with pytest.raises(ValueError, match="gzip.zip: unreadable zip archive"):
        load_emnist("mnist", tmp_path, download=False, verify=False)
    broken = dict(files)
    broken["emnist-mnist-test-images-idx3-ubyte.gz"] = files["emnist-mnist-test-images-idx3-ubyte.gz"][:-20]
    (tmp_path / "gzip.zip").unlink()
    make_zip(tmp_path / "gzip.zip", broken)
    with pytest.raises(ValueError, match="emnist-mnist-test-images-idx3-ubyte.gz: corrupt gzip data"):
        load_emnist("mnist", tmp_path, download=False, verify=False)


def test_emnist_split_is_checked_and_offline_error(tmp_path, isolated):
    with pytest.raises(ValueError, match="split must be one of"):
        load_emnist("uppercase", tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        load_emnist("byclass", tmp_path / "nowhere", download=False)
    message = str(info.value)
    for text in (*emnist_names("byclass"), "gzip.zip", str(tmp_path / "nowhere"),
                 str(isolated / ".cache" / "lamina" / "emnist")):
        assert text in message
    with pytest.raises(FileNotFoundError, match="(?s)Download into .* failed.*network disabled"):
        load_emnist("byclass", tmp_path / "nowhere")


def test_emnist_download_extracts_the_split(tmp_path, isolated, monkeypatch, emnist_small_counts):
    files, upright = fake_emnist("bymerge", seed=4)
    payload = make_zip(tmp_path / "served.zip", files).read_bytes()
    monkeypatch.setattr(mnist_variants, "_EMNIST_ZIP_MD5", hashlib.md5(payload).hexdigest())
    monkeypatch.setattr(fetch, "urlopen", lambda url, timeout=None: io.BytesIO(payload))
    check_emnist(load_emnist("bymerge", tmp_path / "dl"), "bymerge", upright)
    assert (tmp_path / "dl" / "gzip.zip").read_bytes() == payload
    assert sorted(p.name for p in (tmp_path / "dl" / "gzip").iterdir()) == sorted(files)
    monkeypatch.setattr(fetch, "urlopen", lambda url, timeout=None: io.BytesIO(payload[:-1]))
    with pytest.raises(ChecksumError):
        load_emnist("bymerge", tmp_path / "dl2")
