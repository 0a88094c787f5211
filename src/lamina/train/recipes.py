"""Ready-made data preparation for the command line and the benchmarks.

``prepare_dataset(name)`` loads a dataset, holds out a test set (the one given with the
dataset, a stratified tenth for digits, a stratified fifth for an image folder), splits a
validation set off the training data, scales pixels to [0, 1], pads the images to the
model's input size and fits a per-channel :class:`~lamina.data.Standardizer` on the
training split only.
:func:`image_to_input` applies the same steps to an image file at prediction time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from lamina import data as D
from lamina.data.preprocessing import Preprocessor

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "folder")

FOLDER_IMAGE_SIZE = (32, 32)

_DIGIT_NAMES = [str(i) for i in range(10)]


@dataclass
class PreparedData:
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    preprocessing: Preprocessor
    info: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train[0].shape[1:])


def _pad_images(x: np.ndarray, pad: int) -> np.ndarray:
    if pad == 0:
        return x
    return np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def _read_folder(root, workers: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every image of the class folders under ``root`` as RGB resized to 32x32 (uint8 NHWC),
    decoded in ``workers`` threads, with the labels and the class names."""
    if root is None:
        raise FileNotFoundError("prepare_dataset: the folder dataset needs data_dir, the folder holding one "
                                "subfolder of images per class (--data-dir DIR)")
    folder = D.ImageFolder(root, transform=D.transforms.Resize(FOLDER_IMAGE_SIZE))
    batches = list(D.DataLoader(folder, batch_size=64, shuffle=False, num_workers=workers))
    x = np.concatenate([xb for xb, _ in batches])
    y = np.concatenate([yb for _, yb in batches])
    return x, y, folder.classes


def _raw(name: str, data_dir, download: bool, seed: int, workers: int = 0):
    """((x_train, y_train), (x_test, y_test)) as uint8 NHWC, and image facts."""
    if name == "folder":
        x, y, classes = _read_folder(data_dir, workers)
        (xtr, ytr), _, (xte, yte) = D.train_val_test_split(x, y, val=0.0, test=0.2, stratify=True, seed=seed)
        return (xtr, ytr), (xte, yte), {"content_size": list(FOLDER_IMAGE_SIZE), "pad": 0, "channels": 3,
                                        "class_names": classes, "data_dir": os.path.abspath(data_dir)}
    if name == "digits":
        x, y = D.load_digits(size=32)
        (xtr, ytr), _, (xte, yte) = D.train_val_test_split(x, y, val=0.0, test=0.1, stratify=True, seed=seed)
        return (xtr, ytr), (xte, yte), {"content_size": [24, 24], "pad": 4, "channels": 1,
                                        "class_names": _DIGIT_NAMES}
    if name in ("mnist", "fashion_mnist"):
        loader = D.load_mnist if name == "mnist" else D.load_fashion_mnist
        train, test = loader(data_dir=data_dir, download=download)
        names = _DIGIT_NAMES if name == "mnist" else list(D.FASHION_MNIST_CLASSES)
        return train, test, {"content_size": [28, 28], "pad": 2, "channels": 1, "class_names": names}
    if name == "cifar10":
        train, test = D.load_cifar10(data_dir=data_dir, download=download)
        return train, test, {"content_size": [32, 32], "pad": 0, "channels": 3,
                             "class_names": list(D.CIFAR10_CLASSES)}
    raise ValueError(f"prepare_dataset: unknown dataset {name!r}; expected one of {DATASETS}")


def prepare_dataset(name: str, data_dir: str | os.PathLike | None = None, download: bool = True,
                    seed: int = 0, val_fraction: float = 0.1, limit: int | None = None,
                    workers: int = 0) -> PreparedData:
    """Load, split (train / validation / held-out test), scale, pad to 32x32 and standardise.

    ``limit`` keeps only the first ``limit`` training samples (quick runs and tests).
    ``name='folder'`` reads the images of ``data_dir``, one subfolder per class (see
    :class:`~lamina.data.ImageFolder`), as RGB resized to 32x32, decoding them in
    ``workers`` threads.
    """
    (xtr, ytr), (xte, yte), info = _raw(name, data_dir, download, seed, workers)
    (xtr, ytr), (xva, yva), _ = D.train_val_test_split(xtr, ytr, val=val_fraction, test=0.0, stratify=True,
                                                      seed=seed)
    if limit is not None:
        xtr, ytr = xtr[:limit], ytr[:limit]
    pad = max(0, (32 - xtr.shape[1]) // 2)  # LeNet-5's 32x32 input (the digits loader pads already)
    scale = np.float32(1 / 255)
    xtr, xva, xte = (_pad_images(x.astype(np.float32) * scale, pad) for x in (xtr, xva, xte))
    standardizer = D.Standardizer(per="channel").fit(xtr)
    info = {"dataset": name, **info}
    return PreparedData(
        train=(standardizer.transform(xtr), ytr),
        val=(standardizer.transform(xva), yva),
        test=(standardizer.transform(xte), yte),
        preprocessing=standardizer,
        info=info,
    )


def image_to_input(path: str | os.PathLike, info: dict, preprocessing: Preprocessor | None) -> np.ndarray:
    """An image file as a (1, H, W, C) model input, prepared exactly as the training data."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("L" if info.get("channels", 1) == 1 else "RGB")
        height, width = info["content_size"]
        image = image.resize((width, height), Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.float32) / 255
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    x = _pad_images(pixels[None], int(info.get("pad", 0)))
    return preprocessing.transform(x) if preprocessing is not None else x
