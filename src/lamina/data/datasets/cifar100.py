"""CIFAR-100 from its binary version (``cifar-100-binary.tar.gz``); no pickle involved.

``train.bin`` (50,000 records) and ``test.bin`` (10,000) are runs of 3074-byte records:
the coarse label byte (0..19, one of 20 superclasses), the fine label byte (0..99), then
the 32x32 image as 1024 red, 1024 green and 1024 blue bytes (CHW, rows in order). The
class names are the lines of ``fine_label_names.txt`` and ``coarse_label_names.txt``.
All four files sit in the archive under ``cifar-100-binary/``.

Integrity: the archive's MD5 ``03b5dce01913d631647c71ecec9e9cb8`` is the one the dataset's
page lists. No digest of the extracted files is published, so extracted files are
checked structurally only: record size, label ranges and (with ``verify``) the record counts.
"""

from __future__ import annotations

import os

import numpy as np

from lamina.data.datasets.archives import ArchiveSource, locate_in_archive, read_tar_members

__all__ = ["load_cifar100", "load_cifar100_classes", "read_cifar100_bin"]

_RECORD_BYTES = 2 + 3 * 32 * 32
_COUNTS = {"train.bin": 50000, "test.bin": 10000}
_LABEL_FILES = {"fine": "fine_label_names.txt", "coarse": "coarse_label_names.txt"}
_NUM_CLASSES = {"fine": 100, "coarse": 20}

SOURCE = ArchiveSource(
    title="CIFAR-100", name="cifar-100", archive="cifar-100-binary.tar.gz",
    urls=("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",),
    md5="03b5dce01913d631647c71ecec9e9cb8", folder="cifar-100-binary",
    members=("train.bin", "test.bin", "fine_label_names.txt", "coarse_label_names.txt"),
    max_member_bytes=2 * _RECORD_BYTES * _COUNTS["train.bin"],
)

Split = tuple[np.ndarray, np.ndarray]


def _check_label_mode(label_mode: str, caller: str) -> None:
    if label_mode not in _LABEL_FILES:
        raise ValueError(f"{caller}: label_mode must be 'fine' or 'coarse', got {label_mode!r}")


def read_cifar100_bin(data: bytes, label_mode: str = "fine", what: str = "CIFAR-100 file") -> Split:
    """Decode CIFAR-100 binary records: ``(images uint8 (N, 32, 32, 3), labels int64 (N,))``.

    ``label_mode='fine'`` returns the 100-class labels, ``'coarse'`` the 20 superclasses.
    """
    _check_label_mode(label_mode, "read_cifar100_bin")
    if len(data) == 0 or len(data) % _RECORD_BYTES:
        raise ValueError(f"{what}: {len(data)} bytes is not a positive multiple of the "
                         f"{_RECORD_BYTES}-byte CIFAR-100 record; the file is truncated or not CIFAR-100")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _RECORD_BYTES)
    for column, mode in enumerate(("coarse", "fine")):
        top = int(records[:, column].max())
        if top >= _NUM_CLASSES[mode]:
            raise ValueError(f"{what}: {mode} label bytes must be 0..{_NUM_CLASSES[mode] - 1}; found {top}")
    labels = records[:, 0 if label_mode == "coarse" else 1].astype(np.int64)
    images = records[:, 2:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _contents(names: list[str], data_dir, download: bool, verify: bool) -> dict[str, tuple[bytes, str]]:
    """``{file: (content, where it came from)}``, from extracted files or the archive."""
    paths, archive = locate_in_archive(SOURCE, names, data_dir, download, verify)
    contents = {n: (p.read_bytes(), str(p)) for n, p in paths.items()}
    if archive is not None:
        wanted = set(names) - set(paths)
        for name, data in read_tar_members(archive, SOURCE.folder, wanted, SOURCE.max_member_bytes).items():
            contents[name] = (data, f"{archive}:{name}")
    return contents


def load_cifar100(data_dir: str | os.PathLike | None = None, download: bool = True, label_mode: str = "fine",
                  verify: bool = True) -> tuple[Split, Split]:
    """CIFAR-100: ``((x_train, y_train), (x_test, y_test))``, uint8 NHWC + int64 labels.

    Shapes ``(50000, 32, 32, 3)`` / ``(10000, 32, 32, 3)``. ``label_mode='fine'`` gives
    the 100 classes (0..99), ``'coarse'`` the 20 superclasses (0..19); their names come
    from :func:`load_cifar100_classes`. ``train.bin`` and ``test.bin`` are looked for as
    ``<dir>/cifar-100-binary/<file>`` or ``<dir>/<file>`` in ``data_dir``,
    ``$LAMINA_DATA/cifar-100``, ``$LAMINA_DATA`` and ``~/.cache/lamina/cifar-100``; files
    not found are read out of a ``cifar-100-binary.tar.gz`` found there, and failing
    that the archive is downloaded (when ``download``) and extracted beside it;
    otherwise FileNotFoundError names the missing files and the directories searched.
    ``verify`` checks the archive's MD5 and the 50,000 / 10,000 record counts;
    ``verify=False`` keeps only the structural checks.
    """
    _check_label_mode(label_mode, "load_cifar100")
    contents = _contents(list(_COUNTS), data_dir, download, verify)
    splits = []
    for name, count in _COUNTS.items():
        data, source = contents[name]
        x, y = read_cifar100_bin(data, label_mode, f"CIFAR-100 {name} ({source})")
        if verify and len(y) != count:
            raise ValueError(f"CIFAR-100 {name} ({source}): {len(y)} records, expected {count}")
        splits.append((x, y))
    return splits[0], splits[1]


def load_cifar100_classes(data_dir: str | os.PathLike | None = None, download: bool = True,
                          label_mode: str = "fine", verify: bool = True) -> tuple[str, ...]:
    """The CIFAR-100 class names, read from the archive's ``fine_label_names.txt`` (100 names)
    or ``coarse_label_names.txt`` (20 names, ``label_mode='coarse'``); label ``i`` is name ``i``.

    Files are found as for :func:`load_cifar100`.
    """
    _check_label_mode(label_mode, "load_cifar100_classes")
    name = _LABEL_FILES[label_mode]
    data, source = _contents([name], data_dir, download, verify)[name]
    names = tuple(line.strip() for line in data.decode("ascii").splitlines() if line.strip())
    if len(names) != _NUM_CLASSES[label_mode]:
        raise ValueError(f"CIFAR-100 {name} ({source}): {len(names)} names, expected {_NUM_CLASSES[label_mode]}")
    return names
