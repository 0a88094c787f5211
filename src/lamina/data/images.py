"""Datasets of image files: :class:`ImageFolder` (one subfolder per class, as torchvision's)
and :class:`ImageFiles` (a plain list of paths), read with Pillow into uint8 HWC arrays."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "ImageFiles", "ImageFolder", "UnreadableImageError", "find_classes", "read_image"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")

_MODES = ("RGB", "L")


class UnreadableImageError(ValueError):
    """A file could not be decoded as an image."""


def _check_mode(mode: str, where: str) -> str:
    if mode not in _MODES:
        raise ValueError(f"{where}: mode must be one of {_MODES}; got {mode!r}")
    return mode


def read_image(path: str | os.PathLike, mode: str = "RGB") -> np.ndarray:
    """The image file at ``path`` as a uint8 array of shape (h, w, 3) for ``mode='RGB'`` or
    (h, w, 1) for ``mode='L'`` (grey level, ITU-R BT.601 as Pillow converts). Palette,
    grey, alpha and 16-bit images are converted by Pillow's ``Image.convert``."""
    from PIL import Image, UnidentifiedImageError

    _check_mode(mode, "read_image")
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert(mode), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise UnreadableImageError(f"read_image: cannot decode {os.fspath(path)!r} as an image "
                                   f"({type(exc).__name__}: {exc})") from exc
    return pixels[..., None] if pixels.ndim == 2 else pixels


def find_classes(root: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
    """The class names, the sorted names of the subfolders of ``root`` (hidden ones left
    out), and the map from name to index 0, 1, ..."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"find_classes: {os.fspath(root)!r} is not a folder")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"find_classes: {os.fspath(root)!r} has no class subfolders; expected one "
                                "subfolder of images per class, as root/cat/1.png, root/dog/2.png")
    return classes, {name: index for index, name in enumerate(classes)}


def _has_extension(path: str, extensions: tuple[str, ...]) -> bool:
    return path.lower().endswith(extensions)


class ImageFiles:
    """Images read from a list of files: ``dataset[i]`` is ``(x, y)``, or ``x`` without labels.

    ``x`` is the image as a uint8 HWC array (see :func:`read_image`; ``mode`` 'RGB' or 'L'),
    passed through ``transform(x)`` when given (e.g. a :class:`~lamina.data.transforms.Compose`);
    ``y`` is ``labels[i]`` passed through ``target_transform(y)``. ``loader(path)`` replaces
    :func:`read_image` to read a file some other way. Files are read when indexed, so the
    :class:`~lamina.data.DataLoader`'s worker threads decode them in parallel; for batches
    the transform must give every image the same shape.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], labels: Sequence[int] | None = None,
                 transform: Callable[[np.ndarray], Any] | None = None,
                 target_transform: Callable[[int], Any] | None = None,
                 loader: Callable[[str], Any] | None = None, mode: str = "RGB") -> None:
        self.paths = [os.fspath(p) for p in paths]
        if labels is not None and len(labels) != len(self.paths):
            raise ValueError(f"ImageFiles: got {len(self.paths)} paths but {len(labels)} labels; "
                             "expected one label per path")
        for name, function in (("transform", transform), ("target_transform", target_transform),
                               ("loader", loader)):
            if function is not None and not callable(function):
                raise TypeError(f"{type(self).__name__}: {name} must be callable; got {type(function).__name__}")
        self.labels = None if labels is None else [int(label) for label in labels]
        self.transform = transform
        self.target_transform = target_transform
        self.loader = loader
        self.mode = _check_mode(mode, type(self).__name__)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Any:
        """The image ``index`` as read from its file, before the transform."""
        path = self.paths[index]
        if self.loader is not None:
            return self.loader(path)
        return read_image(path, self.mode)

    def __getitem__(self, index: int) -> Any:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"{type(self).__name__}: index must be an integer; got {type(index).__name__}")
        x = self.load(int(index))
        if self.transform is not None:
            x = self.transform(x)
        if self.labels is None:
            return x
        y = self.labels[index]
        return x, (self.target_transform(y) if self.target_transform is not None else y)

    def _extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({len(self)} images{self._extra_repr()}, mode={self.mode!r}"]
        if self.transform is not None:
            lines.append(f"  transform={self.transform!r}".replace("\n", "\n  "))
        return ",\n".join(lines) + ")"


class ImageFolder(ImageFiles):
    """Labelled images stored one subfolder per class: ``root/<class name>/<file>``.

    ``classes`` are the sorted subfolder names (:func:`find_classes`), ``class_to_idx`` maps
    each to its index, and ``samples`` lists every ``(path, class index)``, class by class,
    the files of a class in sorted order, searched recursively. A file is kept when its name
    ends in one of ``extensions`` (case-insensitive) or, instead, when ``is_valid_file(path)``
    is true. ``dataset[i]`` is ``(x, y)`` as for :class:`ImageFiles`.
    """

    def __init__(self, root: str | os.PathLike, transform: Callable[[np.ndarray], Any] | None = None,
                 target_transform: Callable[[int], Any] | None = None,
                 extensions: Sequence[str] | None = IMAGE_EXTENSIONS,
                 loader: Callable[[str], Any] | None = None,
                 is_valid_file: Callable[[str], bool] | None = None, mode: str = "RGB") -> None:
        if (extensions is None) == (is_valid_file is None):
            raise ValueError("ImageFolder: give either extensions or is_valid_file (pass extensions=None "
                             "with is_valid_file)")
        self.root = os.fspath(root)
        self.classes, self.class_to_idx = find_classes(self.root)
        self.extensions = None if extensions is None else tuple(e.lower() for e in extensions)
        self.samples = self._find_samples(is_valid_file)
        super().__init__([path for path, _ in self.samples], [label for _, label in self.samples],
                         transform=transform, target_transform=target_transform, loader=loader, mode=mode)
        self.targets = list(self.labels)

    def _find_samples(self, is_valid_file: Callable[[str], bool] | None) -> list[tuple[str, int]]:
        def valid(path: str) -> bool:
            return is_valid_file(path) if is_valid_file is not None else _has_extension(path, self.extensions)

        samples, empty = [], []
        for name in self.classes:
            folder = os.path.join(self.root, name)
            found = [os.path.join(top, file) for top, _, files in sorted(os.walk(folder, followlinks=True))
                     for file in sorted(files) if valid(os.path.join(top, file))]
            if not found:
                empty.append(name)
            samples.extend((path, self.class_to_idx[name]) for path in found)
        if empty:
            kinds = f"extensions {', '.join(self.extensions)}" if self.extensions else "is_valid_file"
            raise FileNotFoundError(f"ImageFolder: no image files in the class folder(s) {empty} of "
                                    f"{self.root!r} (looked for {kinds})")
        return samples

    def _extra_repr(self) -> str:
        return f" in {len(self.classes)} classes, root={self.root!r}"
