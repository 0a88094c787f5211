"""Finding dataset files on disk, downloading them atomically, checking their digests.

Search order for every file of a dataset called ``name``:

1. ``data_dir`` (the loader's argument), when given;
2. ``$LAMINA_DATA/<name>``, then ``$LAMINA_DATA`` itself, when the variable is set;
3. ``~/.cache/lamina/<name>``;
4. system copies (e.g. ``/usr/share/datasets/fashion-mnist`` from Debian's
   ``dataset-fashion-mnist`` package), per dataset.

Downloads (only when the loader is allowed to and a file is missing) go to the first of
``data_dir``, ``$LAMINA_DATA/<name>``, ``~/.cache/lamina/<name>``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from urllib.request import urlopen

__all__ = [
    "ChecksumError",
    "cache_dir",
    "check_file_md5",
    "check_sha256",
    "download",
    "download_dir",
    "find_file",
    "maybe_gunzip",
    "md5_file",
    "missing_files_error",
    "read_maybe_gzip",
    "search_dirs",
    "sha256_file",
    "sha256_hex",
]

_DOWNLOAD_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A file's SHA-256 (or MD5) digest differs from the known digest of the canonical file."""


def cache_dir(name: str) -> Path:
    """``~/.cache/lamina/<name>``."""
    return Path.home() / ".cache" / "lamina" / name


def search_dirs(name: str, data_dir: str | os.PathLike | None = None,
                system_dirs: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """The directories searched for dataset ``name``, in order (see the module docstring)."""
    dirs: list[Path] = []
    if data_dir is not None:
        dirs.append(Path(data_dir).expanduser())
    env = os.environ.get("LAMINA_DATA")
    if env:
        root = Path(env).expanduser()
        dirs += [root / name, root]
    dirs.append(cache_dir(name))
    dirs += [Path(d) for d in system_dirs]
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def download_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Where a download of dataset ``name`` is stored (see the module docstring)."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get("LAMINA_DATA")
    if env:
        return Path(env).expanduser() / name
    return cache_dir(name)


def find_file(candidates: Sequence[str], dirs: Sequence[Path]) -> Path | None:
    """The first existing regular file ``dir / candidate``, directories in order, then candidates."""
    for d in dirs:
        for candidate in candidates:
            path = d / candidate
            if path.is_file():
                return path
    return None


def missing_files_error(dataset: str, missing: Sequence[str], dirs: Sequence[Path],
                        reason: str = "") -> FileNotFoundError:
    """A FileNotFoundError naming every missing file and every directory searched."""
    lines = [f"{dataset}: missing file(s): {', '.join(missing)}",
             "searched (in order): " + ", ".join(str(d) for d in dirs)]
    if reason:
        lines.append(reason)
    lines.append("Put the files in one of these directories (or pass data_dir=...), set "
                 "$LAMINA_DATA, or call the loader with download=True while online.")
    return FileNotFoundError("\n".join(lines))


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _file_digest(path: str | os.PathLike, digest) -> str:
    """Hex ``digest`` (a hashlib object) of a file, read in chunks."""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_DOWNLOAD_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    return _file_digest(path, hashlib.sha256())


def md5_file(path: str | os.PathLike) -> str:
    """Hex MD5 of a file, read in chunks (for publishers that document only an MD5)."""
    return _file_digest(path, hashlib.md5(usedforsecurity=False))


def check_file_md5(path: str | os.PathLike, expected: str | None, what: str | None = None) -> None:
    """Raise :class:`ChecksumError` unless the file's MD5 is ``expected`` (no-op when None)."""
    if expected is None:
        return
    actual = md5_file(path)
    if actual != expected.lower():
        raise ChecksumError(f"{what or path}: MD5 mismatch: expected {expected.lower()}, got {actual}. "
                            f"The file is corrupt, truncated or not the canonical one; delete it "
                            f"and fetch it again.")


def check_sha256(data: bytes, expected: str | None, what: str) -> None:
    """Raise :class:`ChecksumError` unless ``sha256(data) == expected`` (no-op when None)."""
    if expected is None:
        return
    actual = sha256_hex(data)
    if actual != expected.lower():
        raise ChecksumError(f"{what}: SHA-256 mismatch: expected {expected.lower()}, got {actual}. "
                            f"The file is corrupt, truncated or not the canonical one; delete it "
                            f"and fetch it again.")


def maybe_gunzip(data: bytes, what: str) -> tuple[bytes, bool]:
    """Decompress ``data`` when it is gzip data (by its magic bytes): ``(content, was_gzip)``.

    A corrupt gzip stream raises ValueError naming ``what``.
    """
    if data[:2] != b"\x1f\x8b":
        return data, False
    try:
        return gzip.decompress(data), True
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{what}: corrupt gzip data ({exc})") from exc


def read_maybe_gzip(path: Path) -> tuple[bytes, bool]:
    """Read ``path``; decompress it when it is gzip data (by its magic bytes, not its name).

    Returns ``(content, was_gzip)``; a corrupt gzip stream raises ValueError naming the file.
    """
    return maybe_gunzip(path.read_bytes(), str(path))


def download(urls: Sequence[str], dest: Path, check: Callable[[Path], None] | None = None,
             timeout: float = 60.0) -> Path:
    """Download the first URL that works to ``dest``, atomically.

    The data is streamed to a temporary file beside ``dest``; ``check(tmp_path)`` (e.g. a
    digest check) runs on it, and only then is it renamed to ``dest``, so an interrupted
    or corrupt download never leaves a file under the final name. Mirrors are tried in
    order; if all fail, the last :class:`ChecksumError` is raised when a mirror served
    wrong data, otherwise an ``OSError`` listing every failure.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    checksum_error: ChecksumError | None = None
    for url in urls:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, out, _DOWNLOAD_CHUNK)
                out.flush()
                os.fsync(out.fileno())
            if check is not None:
                check(tmp)
            os.replace(tmp, dest)
            return dest
        except ChecksumError as exc:
            checksum_error = exc
            failures.append(f"{url}: {exc}")
        except (OSError, ValueError) as exc:
            failures.append(f"{url}: {exc}")
        finally:
            if tmp.exists():
                tmp.unlink()
    if checksum_error is not None:
        raise checksum_error
    raise OSError(f"could not download {dest.name}: " + "; ".join(failures))
