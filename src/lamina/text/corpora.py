"""Text corpora for language modelling: a list of first names and Tiny Shakespeare.

Found like every lamina dataset (``data_dir``, ``$LAMINA_DATA/<name>``, ``$LAMINA_DATA``,
``~/.cache/lamina/<name>``; see :mod:`lamina.data.datasets.fetch`), checked against the
SHA-256 of the canonical file, and downloaded from a pinned commit only when allowed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lamina.data.datasets.fetch import (
    check_sha256,
    download,
    download_dir,
    find_file,
    missing_files_error,
    search_dirs,
)

__all__ = ["load_names", "load_tiny_shakespeare"]


@dataclass(frozen=True)
class _Corpus:
    title: str
    name: str                      # directory name under $LAMINA_DATA and ~/.cache/lamina
    files: tuple[str, ...]         # accepted file names, the first is the one downloaded
    url: str
    sha256: str


_NAMES = _Corpus(
    "names", "names", ("names.txt",),
    "https://raw.githubusercontent.com/karpathy/makemore/988aa59e4d8fefa526d06f3b453ad116258398d4/names.txt",
    "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d",
)
_SHAKESPEARE = _Corpus(
    "tiny_shakespeare", "tiny_shakespeare", ("tinyshakespeare.txt", "input.txt"),
    "https://raw.githubusercontent.com/karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/"
    "data/tinyshakespeare/input.txt",
    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
)


def _read(corpus: _Corpus, data_dir, download_allowed: bool) -> str:
    dirs = search_dirs(corpus.name, data_dir)
    path = find_file(corpus.files, dirs)
    if path is None:
        if not download_allowed:
            raise missing_files_error(corpus.title, corpus.files[:1], dirs, "download=False")
        dest = download_dir(corpus.name, data_dir) / corpus.files[0]
        try:
            path = download([corpus.url], dest, check=lambda p: check_sha256(p.read_bytes(), corpus.sha256, str(p)))
        except OSError as exc:
            raise missing_files_error(corpus.title, corpus.files[:1], dirs, f"download failed: {exc}") from exc
    data = Path(path).read_bytes()
    check_sha256(data, corpus.sha256, str(path))
    return data.decode("utf-8")


def load_names(data_dir: str | os.PathLike | None = None, download: bool = True) -> list[str]:
    """The 32,033 lowercase first names of ``names.txt`` (one per line), in file order."""
    return _read(_NAMES, data_dir, download).split()


def load_tiny_shakespeare(data_dir: str | os.PathLike | None = None, download: bool = True) -> str:
    """The 1,115,394 characters of Tiny Shakespeare (``tinyshakespeare.txt`` or ``input.txt``)."""
    return _read(_SHAKESPEARE, data_dir, download)
