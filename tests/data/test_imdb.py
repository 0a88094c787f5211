import dataclasses
import hashlib
import io
import tarfile

import numpy as np
import pytest

from lamina.data import ChecksumError, load_imdb
from lamina.data.datasets import fetch, imdb

REVIEWS = {  # member path under aclImdb/ -> text; ids chosen so that string order differs from numeric order
    "train/pos/10_9.txt": "A great film.<br /><br />Loved it.",
    "train/pos/2_8.txt": "Très bien, naïve and charming.",
    "train/neg/7_1.txt": "Dull.",
    "train/neg/11_3.txt": "Too long.",
    "train/neg/100_2.txt": "Bad acting.",
    "test/pos/3_10.txt": "Masterpiece.",
    "test/neg/20_4.txt": "Meh.",
    "test/neg/4_2.txt": "Awful.",
    "train/unsup/9_0.txt": "Saw it on a plane.",
    "train/unsup/12_0.txt": "Watched twice.",
}
EXTRAS = {"imdb.vocab": "the\na\n", "README": "Large Movie Review Dataset", "train/labeledBow.feat": "0 0:1\n",
          "train/urls_pos.txt": "http://www.imdb.com/title/tt0000001/usercomments\n"}
COUNTS = {("train", "neg"): 3, ("train", "pos"): 2, ("test", "neg"): 2, ("test", "pos"): 1, ("train", "unsup"): 2}


def make_archive(path, reviews=REVIEWS, extras=EXTRAS):
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, text in (extras | reviews).items():
            data = text.encode() if isinstance(text, str) else text
            info = tarfile.TarInfo(f"aclImdb/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def check(result, unsup=False):
    assert len(result) == (3 if unsup else 2)
    (train_texts, train_labels), (test_texts, test_labels) = result[:2]
    assert train_texts == ["Dull.", "Too long.", "Bad acting.", "Très bien, naïve and charming.",
                           "A great film.<br /><br />Loved it."]
    assert train_labels.dtype == np.int64 and train_labels.tolist() == [0, 0, 0, 1, 1]
    assert test_texts == ["Awful.", "Meh.", "Masterpiece."] and test_labels.tolist() == [0, 0, 1]
    if unsup:
        assert result[2] == ["Saw it on a plane.", "Watched twice."]


@pytest.fixture
def small_counts(monkeypatch):
    monkeypatch.setattr(imdb, "_COUNTS", COUNTS)


def test_reads_the_archive_in_place_in_a_fixed_order(tmp_path, isolated, monkeypatch, small_counts):
    archive = make_archive(tmp_path / "aclImdb_v1.tar.gz")
    monkeypatch.setattr(imdb, "SOURCE", dataclasses.replace(imdb.SOURCE, md5=hashlib.md5(archive.read_bytes())
                                                            .hexdigest()))
    check(load_imdb(tmp_path, download=False))
    check(load_imdb(tmp_path, download=False, unsup=True), unsup=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aclImdb_v1.tar.gz", "home"]  # nothing extracted


def test_reads_an_extracted_directory(tmp_path, isolated):
    for name, text in (EXTRAS | REVIEWS).items():
        path = tmp_path / "aclImdb" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode())
    check(load_imdb(tmp_path, download=False, unsup=True, verify=False), unsup=True)
    with pytest.raises(ValueError, match="2 reviews in test/neg, expected 12500"):
        load_imdb(tmp_path, download=False)


def test_corrupt_archives_are_refused(tmp_path, isolated, monkeypatch, small_counts):
    archive = make_archive(tmp_path / "aclImdb_v1.tar.gz")
    with pytest.raises(ChecksumError, match="aclImdb_v1.tar.gz: MD5 mismatch: expected 7c2ac02c03563afcf9b574c"):
        load_imdb(tmp_path, download=False)
    archive.write_bytes(archive.read_bytes()[:400])
    with pytest.raises(ValueError, match="unreadable tar archive"):
        load_imdb(tmp_path, download=False, verify=False)
    make_archive(archive, REVIEWS | {"test/pos/5_9.txt": b"\xff\xfe bad bytes"})
    with pytest.raises(ValueError, match="test/pos/5_9.txt: not UTF-8 text"):
        load_imdb(tmp_path, download=False, verify=False)
    make_archive(archive, {k: v for k, v in REVIEWS.items() if not k.startswith("test/pos")})
    with pytest.raises(ValueError, match=r"no reviews found in \['test/pos'\]"):
        load_imdb(tmp_path, download=False, verify=False)
    digest = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(imdb, "SOURCE", dataclasses.replace(imdb.SOURCE, md5=digest))
    with pytest.raises(ValueError, match="0 reviews in test/pos, expected 1"):
        load_imdb(tmp_path, download=False)


def test_search_order(tmp_path, isolated, monkeypatch):
    env = tmp_path / "env"
    places = (tmp_path / "given", env / "imdb", env, isolated / ".cache" / "lamina" / "imdb")
    for i, directory in enumerate(places):
        make_archive(directory / "aclImdb_v1.tar.gz", REVIEWS | {"test/pos/3_10.txt": f"copy {i}"})
    monkeypatch.setenv("LAMINA_DATA", str(env))

    def first_positive_test_review(*args):
        return load_imdb(*args, download=False, verify=False)[1][0][-1]

    assert first_positive_test_review(tmp_path / "given") == "copy 0"
    assert first_positive_test_review() == "copy 1"
    (env / "imdb" / "aclImdb_v1.tar.gz").unlink()
    assert first_positive_test_review() == "copy 2"
    monkeypatch.delenv("LAMINA_DATA")
    assert first_positive_test_review() == "copy 3"


def test_offline_error_names_archive_and_directories(tmp_path, isolated):
    with pytest.raises(FileNotFoundError) as info:
        load_imdb(tmp_path / "nowhere", download=False)
    message = str(info.value)
    for text in ("IMDB", "aclImdb_v1.tar.gz", "aclImdb/", str(tmp_path / "nowhere"),
                 str(isolated / ".cache" / "lamina" / "imdb"), "download=False"):
        assert text in message
    with pytest.raises(FileNotFoundError, match="(?s)Download into .* failed.*network disabled"):
        load_imdb(tmp_path / "nowhere")


def test_download_keeps_the_archive(tmp_path, isolated, monkeypatch, small_counts):
    payload = make_archive(tmp_path / "served.tar.gz").read_bytes()
    monkeypatch.setattr(imdb, "SOURCE", dataclasses.replace(imdb.SOURCE, md5=hashlib.md5(payload).hexdigest()))
    urls = []
    monkeypatch.setattr(fetch, "urlopen", lambda url, timeout=None: urls.append(url) or io.BytesIO(payload))
    check(load_imdb(tmp_path / "dl", unsup=True), unsup=True)
    assert urls == ["https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"]
    assert [p.name for p in (tmp_path / "dl").iterdir()] == ["aclImdb_v1.tar.gz"]
    monkeypatch.setattr(fetch, "urlopen", lambda url, timeout=None: io.BytesIO(payload[:-3]))
    with pytest.raises(ChecksumError):
        load_imdb(tmp_path / "dl2")
    assert list((tmp_path / "dl2").iterdir()) == []
