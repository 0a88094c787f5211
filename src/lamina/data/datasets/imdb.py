"""The IMDB Large Movie Review dataset (Maas et al., 2011) from ``aclImdb_v1.tar.gz``.

The archive holds one UTF-8 text file per review, ``aclImdb/<split>/<group>/<id>_<rating>.txt``
with split ``train`` or ``test`` and group ``pos`` (rating >= 7), ``neg`` (rating <= 4)
or, for ``train`` only, ``unsup`` (unlabelled). Reviews are read straight from the
archive (or from an extracted ``aclImdb/`` directory); nothing needs extracting.

Integrity: the archive's MD5 ``7c2ac02c03563afcf9b574c7e56c153a`` is the one published
by other loaders of this archive (the dataset's page lists none); with ``verify`` the
review counts (12,500 per group and split, 50,000 unlabelled) are checked too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import numpy as np

from lamina.data.datasets.archives import ArchiveSource, download_archive, iter_tar_members
from lamina.data.datasets.fetch import find_file, search_dirs

__all__ = ["load_imdb"]

SOURCE = ArchiveSource(
    title="IMDB", name="imdb", archive="aclImdb_v1.tar.gz",
    urls=("https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",),
    md5="7c2ac02c03563afcf9b574c7e56c153a", folder="aclImdb", members=(),
    max_member_bytes=1 << 20,
)
_LABELS = {"neg": 0, "pos": 1}
_COUNTS = {("train", "neg"): 12500, ("train", "pos"): 12500, ("test", "neg"): 12500, ("test", "pos"): 12500,
           ("train", "unsup"): 50000}
_REVIEW_FILE = re.compile(r"(\d+)_(\d+)\.txt")

TextSplit = tuple[list[str], np.ndarray]


def _review_order(name: str) -> tuple[int, str]:
    """Reviews sort by their numeric id (``123_8.txt`` -> 123), not as strings."""
    match = _REVIEW_FILE.fullmatch(name)
    return (int(match.group(1)) if match else -1), name


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{where}: not UTF-8 text ({exc})") from exc


def _from_archive(archive: Path, groups: set[tuple[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
    def accept(path: PurePosixPath) -> bool:
        return (len(path.parts) == 4 and path.parts[0] == SOURCE.folder and tuple(path.parts[1:3]) in groups
                and path.suffix == ".txt")

    reviews: dict[tuple[str, str], dict[str, str]] = {g: {} for g in groups}
    for path, data in iter_tar_members(archive, accept, SOURCE.max_member_bytes):
        reviews[(path.parts[1], path.parts[2])][path.name] = _decode(data, f"{archive}:{path}")
    return reviews


def _from_directory(root: Path, groups: set[tuple[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
    reviews: dict[tuple[str, str], dict[str, str]] = {}
    for split, group in groups:
        folder = root / split / group
        files = folder.glob("*.txt") if folder.is_dir() else []
        reviews[(split, group)] = {f.name: _decode(f.read_bytes(), str(f)) for f in files if f.is_file()}
    return reviews


def _locate(data_dir, download_allowed: bool, verify: bool) -> tuple[Path, bool]:
    """``(path, is_directory)``: an extracted ``aclImdb/`` directory, else the archive."""
    dirs = search_dirs(SOURCE.name, data_dir)
    for d in dirs:
        if (d / SOURCE.folder / "train").is_dir() and (d / SOURCE.folder / "test").is_dir():
            return d / SOURCE.folder, True
    archive = find_file([SOURCE.archive], dirs)
    if archive is not None:
        if verify:
            SOURCE.check_archive(archive)
        return archive, False
    described = [SOURCE.archive, f"(or an extracted {SOURCE.folder}/ with train/ and test/)"]
    return download_archive(SOURCE, data_dir, dirs, described, download_allowed, verify), False


def _texts(reviews: dict[str, str]) -> list[str]:
    return [reviews[name] for name in sorted(reviews, key=_review_order)]


def _labelled(reviews, split: str) -> TextSplit:
    texts: list[str] = []
    labels: list[np.ndarray] = []
    for group, label in _LABELS.items():
        group_texts = _texts(reviews[(split, group)])
        texts += group_texts
        labels.append(np.full(len(group_texts), label, dtype=np.int64))
    return texts, np.concatenate(labels)


def _check_counts(reviews, groups: Iterable[tuple[str, str]], source: Path) -> None:
    for key in groups:
        if len(reviews[key]) != _COUNTS[key]:
            raise ValueError(f"IMDB {source}: {len(reviews[key])} reviews in {'/'.join(key)}, "
                             f"expected {_COUNTS[key]}; the archive is incomplete or not aclImdb v1")


def load_imdb(data_dir: str | os.PathLike | None = None, download: bool = True, unsup: bool = False,
              verify: bool = True) -> tuple[TextSplit, TextSplit] | tuple[TextSplit, TextSplit, list[str]]:
    """IMDB movie reviews for sentiment: ``((train_texts, train_labels), (test_texts, test_labels))``.

    Texts are the reviews as written (``str``, HTML line breaks ``<br />`` kept); labels
    int64, 0 negative and 1 positive, 25,000 per split. Order is deterministic: the
    negative reviews, then the positive ones, each by increasing review id. With
    ``unsup=True`` a third element is added: the 50,000 unlabelled training reviews
    (``train/unsup``), by id.

    Searched in ``data_dir``, ``$LAMINA_DATA/imdb``, ``$LAMINA_DATA``,
    ``~/.cache/lamina/imdb``: an extracted ``aclImdb/`` directory, else the archive
    ``aclImdb_v1.tar.gz`` (read in place); failing both, the archive is downloaded when
    ``download``, else FileNotFoundError names it and the directories searched.
    ``verify`` checks the archive's MD5 and the review counts.
    """
    groups = {(split, group) for split in ("train", "test") for group in _LABELS}
    if unsup:
        groups.add(("train", "unsup"))
    source, is_directory = _locate(data_dir, download, verify)
    reviews = _from_directory(source, groups) if is_directory else _from_archive(source, groups)
    if verify:
        _check_counts(reviews, sorted(groups), source)
    else:
        empty = sorted("/".join(key) for key in groups if not reviews[key])
        if empty:
            raise ValueError(f"IMDB {source}: no reviews found in {empty}")
    train, test = _labelled(reviews, "train"), _labelled(reviews, "test")
    if unsup:
        return train, test, _texts(reviews[("train", "unsup")])
    return train, test
