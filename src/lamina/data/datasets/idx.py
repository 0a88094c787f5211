"""MNIST and Fashion-MNIST from their IDX files.

The IDX format: a 4-byte big-endian magic number ``0x00 0x00 <type> <ndim>``, then
``ndim`` big-endian uint32 dimension sizes, then the values in C order, big-endian.
MNIST images are ``0x00000803`` (2051: unsigned bytes, 3 dims ``N x 28 x 28``) and labels
``0x00000801`` (2049: unsigned bytes, 1 dim ``N``).

Integrity: each file is checked against the SHA-256 of its *decompressed* IDX content,
so the same digest holds for the ``.gz`` as distributed, for a re-compressed copy (the
Debian package ``dataset-fashion-mnist`` re-gzips the upstream files: different ``.gz``
bytes, identical content) and for an uncompressed file.

- Fashion-MNIST digests: computed here from the files of Debian's ``dataset-fashion-mnist``
  (0.0~git20200523.55506a9-1) under ``/usr/share/datasets/fashion-mnist``; they agree
  with digests of the decompressed upstream (Zalando) files published independently.
- MNIST digests: the SHA-256 of the decompressed canonical files, as published by many
  independent projects (the ``.gz`` archives served by the ossci-datasets / cvdf mirrors
  have SHA-256 440fcabf..., 3552534a..., 8d422c7b..., f7ae60f9...; MD5 as in torchvision).

Whatever the digest, every file is also checked structurally: magic number, dimensions,
exact length, matching image/label counts and labels in 0..9.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lamina.data.datasets.fetch import (
    check_sha256,
    download,
    download_dir,
    find_file,
    missing_files_error,
    read_maybe_gzip,
    search_dirs,
)

__all__ = ["IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC", "load_fashion_mnist", "load_mnist", "read_idx",
           "read_idx_file"]

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049

_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

Split = tuple[np.ndarray, np.ndarray]


def read_idx(data: bytes, what: str = "IDX data") -> tuple[int, np.ndarray]:
    """Parse IDX bytes; returns ``(magic, array)`` with the array in native byte order.

    Raises ValueError (naming ``what``) for a bad magic number, an unknown type code or a
    length that does not match the header's dimensions.
    """
    if len(data) < 4:
        raise ValueError(f"{what}: too short for an IDX header ({len(data)} bytes)")
    zero0, zero1, type_code, ndim = data[0], data[1], data[2], data[3]
    magic = int.from_bytes(data[:4], "big")
    if zero0 != 0 or zero1 != 0 or type_code not in _IDX_TYPES or ndim == 0:
        raise ValueError(f"{what}: not an IDX file (magic number {magic:#010x} = {magic}; expected "
                         f"0x0000TTDD with a known type code TT and DD >= 1 dimensions)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{what}: truncated IDX header ({len(data)} bytes, need {header})")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_TYPES[type_code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{what}: IDX header says dims {dims} ({expected} bytes in all) but the "
                         f"content is {len(data)} bytes; the file is truncated or corrupt")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return magic, array.astype(dtype.newbyteorder("="))


def read_idx_file(path: str | os.PathLike, sha256: str | None = None) -> tuple[int, np.ndarray]:
    """Read an IDX file (gzip'd or not); check the content's SHA-256 when ``sha256`` is given."""
    path = Path(path)
    content, _ = read_maybe_gzip(path)
    check_sha256(content, sha256, str(path))
    return read_idx(content, str(path))


_SPLITS = (("train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
           ("test", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))

_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
_FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


@dataclass(frozen=True)
class _IdxDataset:
    title: str
    name: str  # directory name under $LAMINA_DATA and ~/.cache/lamina
    mirrors: tuple[str, ...]
    sha256: dict[str, str]
    system_dirs: tuple[str, ...] = ()
    counts: tuple[int, int] = (60000, 10000)  # train, test


MNIST = _IdxDataset(
    title="MNIST", name="mnist",
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
             "https://storage.googleapis.com/cvdf-datasets/mnist/",
             "http://yann.lecun.com/exdb/mnist/"),
    sha256=_MNIST_SHA256,
)
FASHION_MNIST = _IdxDataset(
    title="Fashion-MNIST", name="fashion-mnist",
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
             "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
    sha256=_FASHION_MNIST_SHA256,
    system_dirs=("/usr/share/datasets/fashion-mnist",),
)


def _content_checker(expected: str | None, what: str):
    def check(path: Path) -> None:
        content, _ = read_maybe_gzip(path)
        check_sha256(content, expected, what)
        read_idx(content, what)

    return check


def _locate(spec: _IdxDataset, data_dir, download_allowed: bool, verify: bool) -> dict[str, Path]:
    dirs = search_dirs(spec.name, data_dir, spec.system_dirs)
    files = [base for _, images, labels in _SPLITS for base in (images, labels)]
    found: dict[str, Path] = {}
    missing: list[str] = []
    for base in files:
        path = find_file([base + ".gz", base], dirs)
        if path is None:
            missing.append(base)
        else:
            found[base] = path
    if not missing:
        return found
    names = [m + ".gz (or uncompressed " + m + ")" for m in missing]
    if not download_allowed:
        raise missing_files_error(spec.title, names, dirs, "download=False: not downloading.")
    target = download_dir(spec.name, data_dir)
    for base in missing:
        expected = spec.sha256.get(base) if verify else None
        try:
            found[base] = download([m + base + ".gz" for m in spec.mirrors], target / (base + ".gz"),
                                   check=_content_checker(expected, f"{spec.title} {base}.gz"))
        except OSError as exc:
            raise missing_files_error(spec.title, names, dirs,
                                      f"Download into {target} failed: {exc}") from exc
    return found


def _load(spec: _IdxDataset, data_dir, download_allowed: bool, verify: bool) -> tuple[Split, Split]:
    paths = _locate(spec, data_dir, download_allowed, verify)
    result = []
    for (split, images_name, labels_name), count in zip(_SPLITS, spec.counts, strict=True):
        arrays = {}
        for base, magic in ((images_name, IDX_IMAGES_MAGIC), (labels_name, IDX_LABELS_MAGIC)):
            path = paths[base]
            found_magic, array = read_idx_file(path, spec.sha256.get(base) if verify else None)
            if found_magic != magic:
                raise ValueError(f"{path}: magic number {found_magic}, expected {magic} for "
                                 f"{'images' if magic == IDX_IMAGES_MAGIC else 'labels'}")
            arrays[magic] = array
        images, labels = arrays[IDX_IMAGES_MAGIC], arrays[IDX_LABELS_MAGIC]
        if images.shape[1:] != (28, 28):
            raise ValueError(f"{paths[images_name]}: images are {images.shape[1:]}, expected (28, 28)")
        if len(images) != len(labels):
            raise ValueError(f"{spec.title} {split}: {len(images)} images but {len(labels)} labels "
                             f"({paths[images_name]}, {paths[labels_name]})")
        if verify and len(images) != count:
            raise ValueError(f"{spec.title} {split}: {len(images)} samples, expected {count}")
        if labels.size and labels.max() > 9:
            raise ValueError(f"{paths[labels_name]}: labels must be 0..9; found {int(labels.max())}")
        result.append((images.reshape(-1, 28, 28, 1), labels.astype(np.int64)))
    return result[0], result[1]


def load_mnist(data_dir: str | os.PathLike | None = None, download: bool = True,
               verify: bool = True) -> tuple[Split, Split]:
    """MNIST handwritten digits: ``((x_train, y_train), (x_test, y_test))``.

    Images are uint8 NHWC ``(60000, 28, 28, 1)`` / ``(10000, 28, 28, 1)`` with values
    0-255; labels int64 in 0..9. Files (``train-images-idx3-ubyte.gz``,
    ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
    ``t10k-labels-idx1-ubyte.gz``, each also accepted uncompressed) are searched in
    ``data_dir``, ``$LAMINA_DATA/mnist``, ``$LAMINA_DATA``, ``~/.cache/lamina/mnist``;
    missing ones are downloaded when ``download`` is true, else FileNotFoundError names
    the missing files and the directories searched. With ``verify`` (default) every
    file's SHA-256 is checked (:class:`ChecksumError` on mismatch) and the sample counts
    must be the canonical ones; ``verify=False`` keeps only the structural checks.
    """
    return _load(MNIST, data_dir, download, verify)


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, download: bool = True,
                       verify: bool = True) -> tuple[Split, Split]:
    """Fashion-MNIST (Zalando): ``((x_train, y_train), (x_test, y_test))``.

    Same format and behaviour as :func:`load_mnist`; searched in ``data_dir``,
    ``$LAMINA_DATA/fashion-mnist``, ``$LAMINA_DATA``, ``~/.cache/lamina/fashion-mnist`` and
    the system copy ``/usr/share/datasets/fashion-mnist`` (Debian package
    ``dataset-fashion-mnist``). Labels: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress,
    4 Coat, 5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot.
    """
    return _load(FASHION_MNIST, data_dir, download, verify)
