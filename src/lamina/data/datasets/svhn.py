"""SVHN (Street View House Numbers), cropped digits, from the publisher's MATLAB files.

``train_32x32.mat`` (73,257 digits), ``test_32x32.mat`` (26,032) and ``extra_32x32.mat``
(531,131) each hold ``X``, uint8 of shape ``(32, 32, 3, N)`` (row, column, channel,
sample), and ``y``, of shape ``(N, 1)`` with values 1..10 where 10 stands for the digit 0.
The files are MATLAB v5 files read with :func:`scipy.io.loadmat` (plain arrays; no
code is run).

Integrity: the MD5 of each file is the one published with torchvision's SVHN loader
(the dataset's page lists none); every file is also checked structurally (keys,
shapes, dtype, labels in 1..10).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lamina.data.datasets.fetch import (
    check_file_md5,
    download_dir,
    find_file,
    missing_files_error,
    search_dirs,
)
from lamina.data.datasets.fetch import download as fetch_download

__all__ = ["load_svhn", "read_svhn_mat"]

_NAME = "svhn"
_BASE_URL = "http://ufldl.stanford.edu/housenumbers/"
_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}
_MD5 = {
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
    "extra_32x32.mat": "a93ce644f1a588dc4d68dda5feec44a7",
}


def read_svhn_mat(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one SVHN ``*_32x32.mat`` file: ``(images uint8 (N, 32, 32, 3), labels int64 (N,) in 0..9)``.

    The stored label 10 (the digit 0) becomes 0, so label ``d`` is the digit ``d``.
    """
    from scipy.io import loadmat

    path = Path(path)
    try:
        mat = loadmat(path, variable_names=("X", "y"))
    except Exception as exc:  # scipy raises several types for damaged files
        raise ValueError(f"{path}: not a readable MATLAB file ({type(exc).__name__}: {exc}); "
                         f"it is corrupt, truncated or not an SVHN file") from exc
    if "X" not in mat or "y" not in mat:
        raise ValueError(f"{path}: SVHN files hold variables 'X' and 'y'; found {sorted(mat)}")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise ValueError(f"{path}: X is {x.dtype} {x.shape}, expected uint8 (32, 32, 3, N)")
    if x.shape[3] != len(y):
        raise ValueError(f"{path}: {x.shape[3]} images but {len(y)} labels")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise ValueError(f"{path}: labels must be 1..10 (10 = digit 0); found {int(y.min())}..{int(y.max())}")
    images = np.ascontiguousarray(x.transpose(3, 0, 1, 2))
    return images, (y.astype(np.int64) % 10)


def load_svhn(split: str = "train", data_dir: str | os.PathLike | None = None, download: bool = True,
              verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One SVHN split (``'train'``, ``'test'`` or ``'extra'``): ``(images, labels)``.

    Images uint8 NHWC ``(N, 32, 32, 3)``; labels int64, the digit shown (0..9; the
    files' label 10 is mapped to 0, as torchvision does). The file
    (``train_32x32.mat``, ``test_32x32.mat`` or ``extra_32x32.mat``) is searched in
    ``data_dir``, ``$LAMINA_DATA/svhn``, ``$LAMINA_DATA``, ``~/.cache/lamina/svhn``;
    when missing it is downloaded (``download``) or FileNotFoundError names it and the
    directories searched. ``verify`` checks the file's MD5 (:class:`ChecksumError`).
    """
    if split not in _FILES:
        raise ValueError(f"load_svhn: split must be one of {sorted(_FILES)}, got {split!r}")
    name = _FILES[split]
    dirs = search_dirs(_NAME, data_dir)
    path = find_file([name], dirs)
    expected = _MD5[name] if verify else None
    if path is None:
        if not download:
            raise missing_files_error("SVHN", [name], dirs, "download=False: not downloading.")
        target = download_dir(_NAME, data_dir)
        try:
            path = fetch_download([_BASE_URL + name], target / name,
                                  check=lambda p: check_file_md5(p, expected, f"SVHN {name}"))
        except OSError as exc:
            raise missing_files_error("SVHN", [name], dirs, f"Download into {target} failed: {exc}") from exc
    else:
        check_file_md5(path, expected, str(path))
    return read_svhn_mat(path)
