"""STL-10 from its binary archive (``stl10_binary.tar.gz``).

Under ``stl10_binary/`` the archive holds ``train_X.bin`` (5,000 images), ``train_y.bin``,
``test_X.bin`` (8,000), ``test_y.bin``, ``unlabeled_X.bin`` (100,000) and
``class_names.txt``. An ``*_X.bin`` file is raw uint8: each 96x96 colour image is 3
planes (red, green, blue), each plane stored column by column (MATLAB's column-major
order); ``*_y.bin`` holds one byte per image, the class 1..10.

Integrity: the MD5s of the archive and of the five ``.bin`` files are those published
with torchvision's STL-10 loader (the dataset's page lists none); every file is also
checked structurally (sizes, matching counts, labels in 1..10).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lamina.data.datasets.archives import ArchiveSource, locate_in_archive, read_tar_members
from lamina.data.datasets.fetch import check_file_md5

__all__ = ["STL10_CLASSES", "load_stl10", "read_stl10_images"]

STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")

_SIDE = 96
_IMAGE_BYTES = 3 * _SIDE * _SIDE
_FILES = {"train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin"),
          "unlabeled": ("unlabeled_X.bin", None)}
_MD5 = {
    "train_X.bin": "918c2871b30a85fa023e0c44e0bee87f",
    "train_y.bin": "5a34089d4802c674881badbb80307741",
    "test_X.bin": "7f263ba9f9e0b06b93213547f721ac82",
    "test_y.bin": "36f9794fa4beb8a2c72628de14fa638e",
    "unlabeled_X.bin": "5242ba1fed5e4be9e1e742405eb56ca4",
}

SOURCE = ArchiveSource(
    title="STL-10", name="stl10", archive="stl10_binary.tar.gz",
    urls=("http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",),
    md5="91f7769df0f17e558f3565bffb0c7dfb", folder="stl10_binary",
    members=(*_MD5, "class_names.txt"),
    max_member_bytes=100000 * _IMAGE_BYTES,
)


def read_stl10_images(data: bytes, what: str = "STL-10 images") -> np.ndarray:
    """Decode an STL-10 ``*_X.bin`` content: uint8 ``(N, 96, 96, 3)``, upright.

    The file's order per image is (channel, column, row), so the array read as
    ``(N, 3, 96, 96)`` is indexed ``[n, c, x, y]`` and is transposed to ``[n, y, x, c]``.
    """
    if len(data) == 0 or len(data) % _IMAGE_BYTES:
        raise ValueError(f"{what}: {len(data)} bytes is not a positive multiple of the "
                         f"{_IMAGE_BYTES}-byte STL-10 image; the file is truncated or not STL-10")
    stored = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3, _SIDE, _SIDE)
    return np.ascontiguousarray(stored.transpose(0, 3, 2, 1))


def _read(name: str, path: Path | None, archive_contents: dict[str, bytes], archive: Path | None,
          verify: bool) -> tuple[bytes, str]:
    if path is not None:
        if verify:
            check_file_md5(path, _MD5[name], str(path))
        return path.read_bytes(), str(path)
    return archive_contents[name], f"{archive}:{name}"


def load_stl10(split: str = "train", data_dir: str | os.PathLike | None = None, download: bool = True,
               verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One STL-10 split (``'train'``, ``'test'`` or ``'unlabeled'``): ``(images, labels)``.

    Images uint8 NHWC ``(N, 96, 96, 3)``, upright; labels int64 0..9 (the files' 1..10
    minus one; names in :data:`STL10_CLASSES`), all -1 for ``'unlabeled'`` (as in
    torchvision). Files are looked for as ``<dir>/stl10_binary/<file>`` or ``<dir>/<file>``
    in ``data_dir``, ``$LAMINA_DATA/stl10``, ``$LAMINA_DATA``, ``~/.cache/lamina/stl10``;
    those not found are read out of a ``stl10_binary.tar.gz`` found there, or the archive
    (2.6 GB) is downloaded (``download``) and its files extracted beside it; otherwise
    FileNotFoundError names the missing files and the directories searched. ``verify``
    checks MD5s (of the archive when read, of each extracted file used).
    """
    if split not in _FILES:
        raise ValueError(f"load_stl10: split must be one of {sorted(_FILES)}, got {split!r}")
    images_name, labels_name = _FILES[split]
    names = [n for n in (images_name, labels_name) if n is not None]
    paths, archive = locate_in_archive(SOURCE, names, data_dir, download, verify)
    from_archive: dict[str, bytes] = {}
    if archive is not None:
        from_archive = read_tar_members(archive, SOURCE.folder, set(names) - set(paths), SOURCE.max_member_bytes)
    data, where = _read(images_name, paths.get(images_name), from_archive, archive, verify)
    images = read_stl10_images(data, f"STL-10 {images_name} ({where})")
    if labels_name is None:
        return images, np.full(len(images), -1, dtype=np.int64)
    data, where = _read(labels_name, paths.get(labels_name), from_archive, archive, verify)
    labels = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
    if len(labels) != len(images):
        raise ValueError(f"STL-10 {split}: {len(images)} images but {len(labels)} labels ({where})")
    if len(labels) and (labels.min() < 1 or labels.max() > 10):
        raise ValueError(f"STL-10 {labels_name} ({where}): labels must be 1..10; "
                         f"found {int(labels.min())}..{int(labels.max())}")
    return images, labels - 1
