"""Dataset files shipped in a tar archive: finding them, fetching the archive, reading it safely.

Member files are looked for extracted (``<dir>/<folder>/<file>`` or ``<dir>/<file>``) in
the directories of :func:`lamina.data.datasets.fetch.search_dirs`; those not found are
read straight out of the archive found there, and failing that the archive is
downloaded (checked against the publisher's MD5) and its files extracted beside it.

Only regular files are ever read; a wanted member that is a link, a device or a
directory is refused, as is any member path that is absolute or climbs out with
``..``. Nothing is written to disk except by :func:`extract_tar_members`, which writes
each file atomically under a name of its own choosing, never the member's path.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lamina.data.datasets.fetch import (
    check_file_md5,
    download,
    download_dir,
    find_file,
    missing_files_error,
    search_dirs,
)
from lamina.io.atomic import write_bytes_atomic

__all__ = ["ArchiveSource", "download_archive", "extract_tar_members", "iter_tar_members", "locate_in_archive",
           "read_tar_members"]


def iter_tar_members(archive: Path, accept: Callable[[PurePosixPath], bool],
                     max_bytes: int) -> Iterator[tuple[PurePosixPath, bytes]]:
    """Yield ``(member path, content)`` for every member whose path ``accept`` takes, in archive order.

    Raises ValueError naming the archive for an unsafe path, a wanted member that is not a
    regular file or is larger than ``max_bytes``, or an unreadable (corrupt, truncated) archive.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                path = PurePosixPath(member.name)
                if member.isdir() or not accept(path):
                    continue
                if path.is_absolute() or ".." in path.parts:
                    raise ValueError(f"{archive}: unsafe member path {member.name!r}")
                if not member.isreg():
                    raise ValueError(f"{archive}: member {member.name!r} is not a regular file")
                if member.size > max_bytes:
                    raise ValueError(f"{archive}: member {member.name!r} is implausibly large "
                                     f"({member.size} bytes, at most {max_bytes} expected)")
                stream = tar.extractfile(member)
                assert stream is not None
                yield path, stream.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ValueError(f"{archive}: unreadable tar archive ({exc}); it is corrupt or truncated") from exc


def _named_members(archive: Path, folder: str, names: set[str], max_bytes: int) -> Iterator[tuple[str, bytes]]:
    def accept(path: PurePosixPath) -> bool:
        return path.name in names and (len(path.parts) == 1 or path.parts[:-1] == (folder,))

    seen: set[str] = set()
    for path, data in iter_tar_members(archive, accept, max_bytes):
        if path.name in seen:
            raise ValueError(f"{archive}: duplicate member {path.name!r}")
        seen.add(path.name)
        yield path.name, data
    missing = sorted(names - seen)
    if missing:
        raise ValueError(f"{archive}: archive lacks {missing} (looked at the root and {folder}/)")


def read_tar_members(archive: Path, folder: str, names: set[str], max_bytes: int) -> dict[str, bytes]:
    """The named files of a tar archive, each at its root or under ``folder/``: ``{name: content}``.

    Raises ValueError when a name is missing or appears twice.
    """
    return dict(_named_members(archive, folder, names, max_bytes))


def extract_tar_members(archive: Path, folder: str, names: set[str], dest_dir: str | os.PathLike,
                        max_bytes: int) -> Path:
    """Write the named files of ``archive`` (see :func:`read_tar_members`) to ``dest_dir/folder/<name>``.

    Each file is written atomically as it is read; returns ``dest_dir/folder``.
    """
    out_dir = Path(dest_dir) / folder
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in _named_members(archive, folder, names, max_bytes):
        write_bytes_atomic(out_dir / name, data)
    return out_dir


@dataclass(frozen=True)
class ArchiveSource:
    """Where a dataset's files come from: an archive, its mirrors and its published MD5."""

    title: str  # used in messages, e.g. "CIFAR-100"
    name: str  # directory name under $LAMINA_DATA and ~/.cache/lamina
    archive: str  # file name of the archive
    urls: tuple[str, ...]
    md5: str | None  # of the archive, as its publisher (or a loader citing it) documents
    folder: str  # the archive's top folder holding the files
    members: tuple[str, ...]  # files extracted after a download (none: the archive is read in place)
    max_member_bytes: int

    def check_archive(self, path: Path) -> None:
        check_file_md5(path, self.md5, f"{self.title} archive {path}")


def download_archive(source: ArchiveSource, data_dir, dirs: Sequence[Path], described: Sequence[str],
                     download_allowed: bool, verify: bool) -> Path:
    """Download ``source.archive`` into the download directory (checked against ``source.md5``
    with ``verify``); when not allowed or failing, FileNotFoundError names ``described`` and ``dirs``."""
    if not download_allowed:
        raise missing_files_error(source.title, described, dirs, "download=False: not downloading.")
    target = download_dir(source.name, data_dir)
    try:
        return download(source.urls, target / source.archive, check=source.check_archive if verify else None)
    except OSError as exc:
        raise missing_files_error(source.title, described, dirs, f"Download into {target} failed: {exc}") from exc


def locate_in_archive(source: ArchiveSource, wanted: Sequence[str], data_dir: str | os.PathLike | None,
                      download_allowed: bool, verify: bool,
                      system_dirs: Sequence[str] = ()) -> tuple[dict[str, Path], Path | None]:
    """Find ``wanted`` files: ``({name: extracted file}, archive holding the others or None)``.

    With ``verify`` an archive found or downloaded must match ``source.md5``
    (:class:`~lamina.data.datasets.fetch.ChecksumError` otherwise). Offline or with
    ``download_allowed=False``, FileNotFoundError names the missing files and every
    directory searched.
    """
    dirs = search_dirs(source.name, data_dir, system_dirs)
    found = {n: find_file([f"{source.folder}/{n}", n], dirs) for n in wanted}
    missing = [n for n, path in found.items() if path is None]
    extracted = {n: path for n, path in found.items() if path is not None}
    if not missing:
        return extracted, None
    archive = find_file([source.archive], dirs)
    if archive is not None:
        if verify:
            source.check_archive(archive)
        return extracted, archive
    described = [f"{source.folder}/{m}" for m in missing] + [f"(or the archive {source.archive})"]
    archive = download_archive(source, data_dir, dirs, described, download_allowed, verify)
    if not source.members:
        return extracted, archive
    out_dir = extract_tar_members(archive, source.folder, set(source.members), archive.parent, source.max_member_bytes)
    return extracted | {n: out_dir / n for n in missing}, None
