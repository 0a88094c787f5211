"""Kuzushiji-MNIST and EMNIST: MNIST-format (IDX) datasets of other characters.

Both use the IDX files of :mod:`lamina.data.datasets.idx` (images magic 2051, labels 2049).

- KMNIST ships the four MNIST-named ``.gz`` files. Their MD5s (of the ``.gz`` files as
  distributed) are the ones published with torchvision's KMNIST loader; an uncompressed
  copy has no published digest and is checked structurally only.
- EMNIST ships one ``gzip.zip`` holding ``gzip/emnist-<split>-{train,test}-{images-idx3,
  labels-idx1}-ubyte.gz`` for six splits. The zip's MD5 is the one torchvision's EMNIST
  loader publishes; no digest of the member files is published, so extracted files are
  checked structurally (magic numbers, sizes, label range and, with ``verify``, counts).
  EMNIST images are stored transposed (column by column); they are returned upright.
"""

from __future__ import annotations

import os
import string
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from lamina.data.datasets.fetch import (
    check_file_md5,
    download_dir,
    find_file,
    maybe_gunzip,
    missing_files_error,
    read_maybe_gzip,
    search_dirs,
)
from lamina.data.datasets.fetch import download as fetch_download
from lamina.data.datasets.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, read_idx
from lamina.io.atomic import write_bytes_atomic

__all__ = ["EMNIST_CLASSES", "KMNIST_CLASSES", "load_emnist", "load_kmnist"]

Split = tuple[np.ndarray, np.ndarray]

KMNIST_CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")

_MERGED_LOWERCASE = "abdefghnqrt"  # lower-case letters kept apart from their capitals in bymerge / balanced
EMNIST_CLASSES: dict[str, tuple[str, ...]] = {
    "byclass": tuple(string.digits + string.ascii_uppercase + string.ascii_lowercase),
    "bymerge": tuple(string.digits + string.ascii_uppercase + _MERGED_LOWERCASE),
    "balanced": tuple(string.digits + string.ascii_uppercase + _MERGED_LOWERCASE),
    "letters": tuple(string.ascii_lowercase),
    "digits": tuple(string.digits),
    "mnist": tuple(string.digits),
}
_EMNIST_COUNTS = {  # (train, test), from the EMNIST paper (Cohen et al., 2017)
    "byclass": (697932, 116323), "bymerge": (697932, 116323), "balanced": (112800, 18800),
    "letters": (124800, 20800), "digits": (240000, 40000), "mnist": (60000, 10000),
}

_KMNIST_NAME = "kmnist"
_KMNIST_MIRRORS = ("https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
                   "http://codh.rois.ac.jp/kmnist/dataset/kmnist/")
_KMNIST_GZ_MD5 = {
    "train-images-idx3-ubyte": "bdb82020997e1d708af4cf47b453dcf7",
    "train-labels-idx1-ubyte": "e144d726b3acfaa3e44228e80efcd344",
    "t10k-images-idx3-ubyte": "5c965bf0a639b31b8f53240b1b52f4d7",
    "t10k-labels-idx1-ubyte": "7320c461ea6c1c855c0b718fb2a4b134",
}
_KMNIST_SPLITS = (("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
                  ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000))

_EMNIST_NAME = "emnist"
_EMNIST_ZIP = "gzip.zip"
_EMNIST_FOLDER = "gzip"
_EMNIST_URLS = ("https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip",
                "https://www.itl.nist.gov/iaui/vip/cs_links/EMNIST/gzip.zip")
_EMNIST_ZIP_MD5 = "58c8d27c78d21e728a6bc7b3cc06412e"
_MAX_MEMBER_BYTES = 1 << 30


def _decode_pair(images_data: bytes, labels_data: bytes, images_what: str, labels_what: str,
                 num_classes: int, label_offset: int = 0) -> Split:
    """IDX image and label bytes -> ``(uint8 (N, 28, 28, 1), int64 (N,) in 0..num_classes-1)``."""
    arrays = {}
    for data, what, magic in ((images_data, images_what, IDX_IMAGES_MAGIC), (labels_data, labels_what,
                                                                              IDX_LABELS_MAGIC)):
        found, array = read_idx(data, what)
        if found != magic:
            kind = "images" if magic == IDX_IMAGES_MAGIC else "labels"
            raise ValueError(f"{what}: magic number {found}, expected {magic} for {kind}")
        arrays[magic] = array
    images, labels = arrays[IDX_IMAGES_MAGIC], arrays[IDX_LABELS_MAGIC].astype(np.int64) - label_offset
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{images_what}: images are {images.shape[1:]}, expected (28, 28)")
    if len(images) != len(labels):
        raise ValueError(f"{images_what}: {len(images)} images but {len(labels)} labels in {labels_what}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        low, high = label_offset, num_classes - 1 + label_offset
        raise ValueError(f"{labels_what}: labels must be {low}..{high}; found "
                         f"{int(labels.min()) + label_offset}..{int(labels.max()) + label_offset}")
    return images.reshape(-1, 28, 28, 1), labels


# -- KMNIST ----------------------------------------------------------------------------

def _read_kmnist_file(path: Path, base: str, verify: bool) -> bytes:
    content, was_gzip = read_maybe_gzip(path)
    if verify and was_gzip:
        check_file_md5(path, _KMNIST_GZ_MD5[base], str(path))
    return content


def load_kmnist(data_dir: str | os.PathLike | None = None, download: bool = True,
                verify: bool = True) -> tuple[Split, Split]:
    """Kuzushiji-MNIST (10 cursive hiragana): ``((x_train, y_train), (x_test, y_test))``.

    Same layout as :func:`~lamina.data.load_mnist`: uint8 NHWC ``(60000, 28, 28, 1)`` /
    ``(10000, 28, 28, 1)`` and int64 labels 0..9, whose romanized names are
    :data:`KMNIST_CLASSES`. The four files (``train-images-idx3-ubyte.gz`` ... each also
    accepted uncompressed) are searched in ``data_dir``, ``$LAMINA_DATA/kmnist``,
    ``$LAMINA_DATA``, ``~/.cache/lamina/kmnist``; missing ones are downloaded when
    ``download``, else FileNotFoundError names them and the directories searched.
    ``verify`` checks the MD5 of each ``.gz`` file and the sample counts.
    """
    dirs = search_dirs(_KMNIST_NAME, data_dir)
    bases = [base for images, labels, _ in _KMNIST_SPLITS for base in (images, labels)]
    paths = {base: find_file([base + ".gz", base], dirs) for base in bases}
    missing = [base for base, path in paths.items() if path is None]
    if missing:
        described = [f"{m}.gz (or uncompressed {m})" for m in missing]
        if not download:
            raise missing_files_error("KMNIST", described, dirs, "download=False: not downloading.")
        target = download_dir(_KMNIST_NAME, data_dir)
        for base in missing:
            expected = _KMNIST_GZ_MD5[base] if verify else None
            try:
                paths[base] = fetch_download([m + base + ".gz" for m in _KMNIST_MIRRORS], target / (base + ".gz"),
                                       check=lambda p, e=expected, b=base: check_file_md5(p, e, f"KMNIST {b}.gz"))
            except OSError as exc:
                raise missing_files_error("KMNIST", described, dirs,
                                          f"Download into {target} failed: {exc}") from exc
    result = []
    for images, labels, count in _KMNIST_SPLITS:
        x, y = _decode_pair(_read_kmnist_file(paths[images], images, verify),
                            _read_kmnist_file(paths[labels], labels, verify),
                            str(paths[images]), str(paths[labels]), 10)
        if verify and len(y) != count:
            raise ValueError(f"KMNIST {images}: {len(y)} samples, expected {count}")
        result.append((x, y))
    return result[0], result[1]


# -- EMNIST ----------------------------------------------------------------------------

def _emnist_files(split: str) -> list[str]:
    return [f"emnist-{split}-{part}-{kind}-ubyte.gz" for part in ("train", "test")
            for kind in ("images-idx3", "labels-idx1")]


def _read_zip_members(archive: Path, names: set[str]) -> dict[str, bytes]:
    """The named (gzip) members of an EMNIST zip, at its root or under ``gzip/``; never extracted by path."""
    found: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                path = PurePosixPath(info.filename)
                if info.is_dir() or path.name not in names:
                    continue
                if len(path.parts) > 2 or (len(path.parts) == 2 and path.parts[0] != _EMNIST_FOLDER):
                    continue
                if info.file_size > _MAX_MEMBER_BYTES:
                    raise ValueError(f"{archive}: member {info.filename!r} is implausibly large")
                found[path.name] = zf.read(info)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise ValueError(f"{archive}: unreadable zip archive ({exc}); it is corrupt or truncated") from exc
    missing = sorted(names - set(found))
    if missing:
        raise ValueError(f"{archive}: archive lacks {missing} (looked at the root and {_EMNIST_FOLDER}/)")
    return found


def _emnist_contents(split: str, data_dir, download_allowed: bool, verify: bool) -> dict[str, tuple[bytes, str]]:
    """``{file name (.gz): (decompressed IDX content, where it came from)}`` for one split."""
    names = _emnist_files(split)
    dirs = search_dirs(_EMNIST_NAME, data_dir)
    contents: dict[str, tuple[bytes, str]] = {}
    missing = []
    for name in names:
        raw = name.removesuffix(".gz")
        path = find_file([f"{_EMNIST_FOLDER}/{name}", name, f"{_EMNIST_FOLDER}/{raw}", raw], dirs)
        if path is None:
            missing.append(name)
        else:
            contents[name] = (read_maybe_gzip(path)[0], str(path))
    if not missing:
        return contents
    archive = find_file([_EMNIST_ZIP], dirs)
    if archive is None:
        described = [f"{_EMNIST_FOLDER}/{m}" for m in missing] + [f"(or the archive {_EMNIST_ZIP})"]
        if not download_allowed:
            raise missing_files_error("EMNIST", described, dirs, "download=False: not downloading.")
        target = download_dir(_EMNIST_NAME, data_dir)
        expected = _EMNIST_ZIP_MD5 if verify else None
        try:
            archive = fetch_download(_EMNIST_URLS, target / _EMNIST_ZIP,
                               check=lambda p: check_file_md5(p, expected, f"EMNIST {_EMNIST_ZIP}"))
        except OSError as exc:
            raise missing_files_error("EMNIST", described, dirs, f"Download into {target} failed: {exc}") from exc
        members = _read_zip_members(archive, set(missing))
        for name, data in members.items():  # this split's files, extracted for the next call
            write_bytes_atomic(target / _EMNIST_FOLDER / name, data)
    else:
        if verify:
            check_file_md5(archive, _EMNIST_ZIP_MD5, str(archive))
        members = _read_zip_members(archive, set(missing))
    for name, data in members.items():
        where = f"{archive}:{name}"
        contents[name] = (maybe_gunzip(data, where)[0], where)
    return contents


def load_emnist(split: str = "balanced", data_dir: str | os.PathLike | None = None, download: bool = True,
                verify: bool = True) -> tuple[Split, Split]:
    """EMNIST handwritten characters: ``((x_train, y_train), (x_test, y_test))`` for one split.

    ``split``: ``'balanced'`` (47 classes), ``'byclass'`` (62), ``'bymerge'`` (47),
    ``'digits'`` (10), ``'letters'`` (26) or ``'mnist'`` (10). Images uint8 NHWC
    ``(N, 28, 28, 1)``, upright (the files store them transposed); labels int64,
    label ``i`` being the character ``EMNIST_CLASSES[split][i]``. For ``'letters'``,
    stored as 1..26, the labels returned are 0..25 (stored label - 1): 0 is a/A ... 25 is
    z/Z (upper and lower case share a class).

    The split's four ``emnist-<split>-*-ubyte.gz`` files (or uncompressed) are looked for
    in ``<dir>/gzip/`` or ``<dir>`` for ``data_dir``, ``$LAMINA_DATA/emnist``,
    ``$LAMINA_DATA``, ``~/.cache/lamina/emnist``; files not found are read out of a
    ``gzip.zip`` found there, or the zip is downloaded (``download``) and the split's
    files extracted to ``gzip/`` beside it. Otherwise FileNotFoundError names the
    missing files and the directories searched. ``verify`` checks the zip's MD5 and the
    sample counts.
    """
    if split not in EMNIST_CLASSES:
        raise ValueError(f"load_emnist: split must be one of {sorted(EMNIST_CLASSES)}, got {split!r}")
    contents = _emnist_contents(split, data_dir, download, verify)
    names = _emnist_files(split)
    offset = 1 if split == "letters" else 0
    result = []
    for (images, labels), count in zip((names[:2], names[2:]), _EMNIST_COUNTS[split], strict=True):
        (images_data, images_where), (labels_data, labels_where) = contents[images], contents[labels]
        x, y = _decode_pair(images_data, labels_data, images_where, labels_where, len(EMNIST_CLASSES[split]),
                            offset)
        if verify and len(y) != count:
            raise ValueError(f"EMNIST {images} ({images_where}): {len(y)} samples, expected {count}")
        result.append((np.ascontiguousarray(x.transpose(0, 2, 1, 3)), y))
    return result[0], result[1]
