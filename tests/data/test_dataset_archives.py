import io
import tarfile

import pytest

from lamina.data.datasets.archives import extract_tar_members, iter_tar_members, read_tar_members


def make_tar(path, regular=None, links=()):
    """A tar.gz with regular files ``{name: bytes}`` and symbolic links ``[(name, target)]``."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (regular or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


def test_read_members_at_root_or_in_folder(tmp_path):
    archive = make_tar(tmp_path / "a.tar.gz", {"data/a.bin": b"aa", "b.bin": b"b", "other/a.bin": b"no",
                                               "data/deeper/b.bin": b"no", "data/c.txt": b"c"})
    assert read_tar_members(archive, "data", {"a.bin", "b.bin"}, 100) == {"a.bin": b"aa", "b.bin": b"b"}
    with pytest.raises(ValueError, match=r"archive lacks \['z.bin'\]"):
        read_tar_members(archive, "data", {"a.bin", "z.bin"}, 100)


def test_iter_members_keeps_archive_order(tmp_path):
    archive = make_tar(tmp_path / "a.tar.gz", {"x/2.txt": b"2", "x/1.txt": b"1", "y/3.txt": b"3"})
    found = [(str(path), data) for path, data in iter_tar_members(archive, lambda p: p.parts[0] == "x", 10)]
    assert found == [("x/2.txt", b"2"), ("x/1.txt", b"1")]


def test_unsafe_members_are_refused(tmp_path):
    link = make_tar(tmp_path / "link.tar.gz", {"data/b.bin": b"b"}, links=[("data/a.bin", "/etc/passwd")])
    with pytest.raises(ValueError, match="'data/a.bin' is not a regular file"):
        read_tar_members(link, "data", {"a.bin", "b.bin"}, 100)
    traversal = make_tar(tmp_path / "traversal.tar.gz", {"../a.bin": b"a"})
    with pytest.raises(ValueError, match="unsafe member path '../a.bin'"):
        list(iter_tar_members(traversal, lambda p: p.name == "a.bin", 100))
    large = make_tar(tmp_path / "large.tar.gz", {"a.bin": b"x" * 50})
    with pytest.raises(ValueError, match="implausibly large"):
        read_tar_members(large, "data", {"a.bin"}, 10)
    twice = make_tar(tmp_path / "twice.tar.gz", {"a.bin": b"1", "data/a.bin": b"2"})
    with pytest.raises(ValueError, match="duplicate member 'a.bin'"):
        read_tar_members(twice, "data", {"a.bin"}, 10)
    (tmp_path / "junk.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ValueError, match="junk.tar.gz: unreadable tar archive"):
        read_tar_members(tmp_path / "junk.tar.gz", "data", {"a.bin"}, 10)


def test_extract_writes_only_the_named_files(tmp_path):
    archive = make_tar(tmp_path / "a.tar.gz", {"data/a.bin": b"aa", "data/b.bin": b"bb", "evil.sh": b"rm"})
    out = extract_tar_members(archive, "data", {"a.bin", "b.bin"}, tmp_path / "dest", 100)
    assert out == tmp_path / "dest" / "data"
    assert sorted(p.name for p in out.iterdir()) == ["a.bin", "b.bin"]
    assert (out / "b.bin").read_bytes() == b"bb"
    assert not (tmp_path / "dest" / "evil.sh").exists()
