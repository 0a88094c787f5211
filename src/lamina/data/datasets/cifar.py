"""CIFAR-10 from its binary version (``cifar-10-binary.tar.gz``); no pickle involved.

Each ``.bin`` file is a run of 3073-byte records: one label byte (0..9), then the 32x32
image as 1024 red, 1024 green and 1024 blue bytes (CHW, rows in order). The five
training files ``data_batch_1.bin`` .. ``data_batch_5.bin`` and ``test_batch.bin`` hold
10,000 records each, in the archive under ``cifar-10-batches-bin/``.

Known digests: the archive's MD5 ``c32a1d4ab5d03f1284b67883e8d87530`` is the one the
dataset's page publishes; its SHA-256 and those of the six ``.bin`` files are the values
published by other projects that load this archive (not recomputed here: the data is not
on this machine).
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

import numpy as np

from lamina.data.datasets.fetch import (
    ChecksumError,
    check_sha256,
    download_dir,
    find_file,
    missing_files_error,
    search_dirs,
    sha256_file,
)
from lamina.data.datasets.fetch import download as fetch_download

__all__ = ["CIFAR10_CLASSES", "extract_cifar10_archive", "load_cifar10", "read_cifar10_bin"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")

_NAME = "cifar-10"
_BIN_DIR = "cifar-10-batches-bin"
_ARCHIVE = "cifar-10-binary.tar.gz"
_URLS = ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",)
_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_TEST_FILES = ("test_batch.bin",)
_RECORD_BYTES = 1 + 3 * 32 * 32
_RECORDS_PER_FILE = 10000
_MAX_MEMBER_BYTES = 4 * _RECORD_BYTES * _RECORDS_PER_FILE
_ARCHIVE_SHA256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
_BIN_SHA256 = {
    "data_batch_1.bin": "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
    "data_batch_2.bin": "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
    "data_batch_3.bin": "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
    "data_batch_4.bin": "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
    "data_batch_5.bin": "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
    "test_batch.bin": "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
}

Split = tuple[np.ndarray, np.ndarray]


def read_cifar10_bin(data: bytes, what: str = "CIFAR-10 batch") -> Split:
    """Decode CIFAR-10 binary records: ``(images uint8 (N, 32, 32, 3), labels int64 (N,))``."""
    if len(data) == 0 or len(data) % _RECORD_BYTES:
        raise ValueError(f"{what}: {len(data)} bytes is not a positive multiple of the "
                         f"{_RECORD_BYTES}-byte CIFAR-10 record; the file is truncated or not CIFAR-10")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise ValueError(f"{what}: label bytes must be 0..9; found {int(labels.max())}")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _archive_members(archive: Path, wanted: set[str]) -> dict[str, bytes]:
    """The contents of the wanted ``.bin`` members of a CIFAR-10 tar archive.

    Members are matched by file name at the archive root or under
    ``cifar-10-batches-bin/``; they must be regular files of sane size. Nothing is
    written to disk here and member paths are never used as output paths.
    """
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                path = PurePosixPath(member.name)
                if path.name not in wanted:
                    continue
                if path.is_absolute() or ".." in path.parts:
                    raise ValueError(f"{archive}: unsafe member path {member.name!r}")
                if len(path.parts) > 2 or (len(path.parts) == 2 and path.parts[0] != _BIN_DIR):
                    continue
                if not member.isreg():
                    raise ValueError(f"{archive}: member {member.name!r} is not a regular file")
                if member.size > _MAX_MEMBER_BYTES:
                    raise ValueError(f"{archive}: member {member.name!r} is implausibly large "
                                     f"({member.size} bytes)")
                if path.name in found:
                    raise ValueError(f"{archive}: duplicate member {path.name!r}")
                stream = tar.extractfile(member)
                assert stream is not None
                found[path.name] = stream.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ValueError(f"{archive}: unreadable tar archive ({exc})") from exc
    missing = sorted(wanted - set(found))
    if missing:
        raise ValueError(f"{archive}: archive lacks {missing} (looked at the root and {_BIN_DIR}/)")
    return found


def extract_cifar10_archive(archive: str | os.PathLike, dest_dir: str | os.PathLike) -> Path:
    """Safely extract the six ``.bin`` files of a CIFAR-10 binary archive.

    Only regular members named ``data_batch_1.bin`` .. ``data_batch_5.bin`` and
    ``test_batch.bin`` are extracted, each written (atomically) to
    ``dest_dir/cifar-10-batches-bin/<name>``; links, devices, other members and path
    tricks are never written. Returns the ``cifar-10-batches-bin`` directory.
    """
    out_dir = Path(dest_dir) / _BIN_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in _archive_members(Path(archive), set(_TRAIN_FILES + _TEST_FILES)).items():
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=out_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, out_dir / name)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return out_dir


def _decode(name: str, data: bytes, source: str, verify: bool) -> Split:
    what = f"CIFAR-10 {name} ({source})"
    if verify:
        check_sha256(data, _BIN_SHA256[name], what)
    x, y = read_cifar10_bin(data, what)
    if verify and len(y) != _RECORDS_PER_FILE:
        raise ValueError(f"{what}: {len(y)} records, expected {_RECORDS_PER_FILE}")
    return x, y


def _check_archive(path: Path) -> None:
    actual = sha256_file(path)
    if actual != _ARCHIVE_SHA256:
        raise ChecksumError(f"{path}: SHA-256 mismatch: expected {_ARCHIVE_SHA256}, got {actual}. "
                            f"The archive is corrupt, truncated or not the canonical one.")


def load_cifar10(data_dir: str | os.PathLike | None = None, download: bool = True,
                 verify: bool = True) -> tuple[Split, Split]:
    """CIFAR-10: ``((x_train, y_train), (x_test, y_test))``, uint8 NHWC + int64 labels.

    Shapes ``(50000, 32, 32, 3)`` / ``(10000, 32, 32, 3)``; class names in
    :data:`CIFAR10_CLASSES`. Each ``.bin`` file is looked for as
    ``<dir>/cifar-10-batches-bin/<file>`` or ``<dir>/<file>`` in ``data_dir``,
    ``$LAMINA_DATA/cifar-10``, ``$LAMINA_DATA``, ``~/.cache/lamina/cifar-10``; files not
    found are read straight out of a ``cifar-10-binary.tar.gz`` found in those
    directories. Failing both, the archive is downloaded (when ``download``), checked and
    its ``.bin`` files extracted beside it; otherwise FileNotFoundError names the missing
    files and the directories searched. ``verify`` checks SHA-256 digests (archive and
    batches) and the 10,000-records-per-file count; ``verify=False`` keeps only the
    structural checks.
    """
    dirs = search_dirs(_NAME, data_dir)
    names = _TRAIN_FILES + _TEST_FILES
    paths = {n: find_file([f"{_BIN_DIR}/{n}", n], dirs) for n in names}
    missing = [n for n in names if paths[n] is None]
    contents: dict[str, tuple[bytes, str]] = {
        n: (p.read_bytes(), str(p)) for n, p in paths.items() if p is not None
    }
    if missing:
        archive = find_file([_ARCHIVE], dirs)
        if archive is None:
            described = [f"{_BIN_DIR}/{m}" for m in missing] + [f"(or the archive {_ARCHIVE})"]
            if not download:
                raise missing_files_error("CIFAR-10", described, dirs, "download=False: not downloading.")
            target = download_dir(_NAME, data_dir)
            try:
                archive = fetch_download(_URLS, target / _ARCHIVE,
                                         check=_check_archive if verify else None)
            except OSError as exc:
                raise missing_files_error("CIFAR-10", described, dirs,
                                          f"Download into {target} failed: {exc}") from exc
            extract_cifar10_archive(archive, target)
        elif verify:
            _check_archive(archive)
        for name, data in _archive_members(archive, set(missing)).items():
            contents[name] = (data, f"{archive}:{name}")
    splits = []
    for group in (_TRAIN_FILES, _TEST_FILES):
        parts = [_decode(n, *contents[n], verify) for n in group]
        splits.append((np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])))
    return splits[0], splits[1]
