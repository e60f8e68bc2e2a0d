import gzip

import pytest

from conftest import imdb_files, serve_bytes, write_tar, write_tree
from sentiment.errors import SentimentError
from sentiment.text import imdb
from sentiment.text.corpus import balanced_subset, load_corpus
from sentiment.text.imdb import find_imdb, read_imdb, read_imdb_splits


def _check_tiny(examples):
    assert len(examples) == 6
    assert [ex.label for ex in examples] == [0, 0, 0, 1, 1, 1]
    assert all(ex.rating >= 7 for ex in examples if ex.label == 1)
    assert all(ex.rating <= 4 for ex in examples if ex.label == 0)
    ids = [int(ex.id) for ex in examples]
    assert ids[:3] == sorted(ids[:3]) and ids[3:] == sorted(ids[3:])


def test_folder_and_its_parent(tiny_imdb_dir):
    train = read_imdb(tiny_imdb_dir, "train")
    _check_tiny(train)
    assert train == read_imdb(tiny_imdb_dir.parent, "train")
    assert "loved it" in train[3].text


def test_labeled_tar_gz_matches_folder(tiny_imdb_dir, tiny_imdb_tar):
    assert read_imdb_splits(tiny_imdb_tar) == read_imdb_splits(tiny_imdb_dir)


def test_official_layout_with_unsup_and_extras(tmp_path, tiny_imdb_dir):
    files = imdb_files()
    files["aclImdb/train/unsup/0_0.txt"] = b"unlabeled review"
    files["aclImdb/train/labeledBow.feat"] = b"0 0:1\n"
    files["aclImdb/train/urls_pos.txt"] = b"http://example/\n"
    path = write_tar(tmp_path / "aclImdb_v1.tar.gz", files)
    out = read_imdb_splits(path)
    assert out == read_imdb_splits(tiny_imdb_dir)
    assert all("unlabeled" not in ex.text for ex in out["train"])


def test_tar_without_compression_too(tmp_path, tiny_imdb_dir):
    path = write_tar(tmp_path / "imdb.tar", imdb_files(), mode="w")
    assert read_imdb(path, "test") == read_imdb(tiny_imdb_dir, "test")


def test_missing_path():
    with pytest.raises(SentimentError, match="no IMDb data at /nowhere"):
        read_imdb("/nowhere", "train")


def test_folder_without_layout(tmp_path):
    write_tree(tmp_path / "x", {"aclImdb/train/pos/0_9.txt": b"good"})
    with pytest.raises(SentimentError, match="no train/neg folder"):
        read_imdb(tmp_path / "x", "train")


def test_empty_split(tmp_path):
    files = {k: v for k, v in imdb_files().items() if "/test/" not in k}
    path = write_tar(tmp_path / "a.tar.gz", files)
    with pytest.raises(SentimentError, match="no reviews for the 'test' split"):
        read_imdb(path, "test")


def test_truncated_archive(tmp_path, tiny_imdb_tar):
    data = tiny_imdb_tar.read_bytes()
    bad = tmp_path / "trunc.tar.gz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(SentimentError, match="trunc.tar.gz is not a readable tar archive") as e:
        read_imdb(bad, "train")
    assert "\n" not in str(e.value)


def test_not_a_tar(tmp_path):
    bad = tmp_path / "notes.tar.gz"
    bad.write_bytes(gzip.compress(b"just some text, not a tar archive" * 50))
    with pytest.raises(SentimentError, match="notes.tar.gz is not a readable tar archive"):
        read_imdb(bad, "train")
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"\x00\x01garbage")
    with pytest.raises(SentimentError, match="plain.bin"):
        read_imdb(plain, "train")


def test_non_utf8_review_names_the_file(tmp_path):
    files = imdb_files()
    files["aclImdb/train/pos/7_10.txt"] = b"caf\xe9 ok"
    with pytest.raises(SentimentError, match=r"aclImdb/train/pos/7_10.txt is not UTF-8"):
        read_imdb(write_tar(tmp_path / "a.tar.gz", files), "train")
    with pytest.raises(SentimentError, match=r"7_10.txt is not UTF-8"):
        read_imdb(write_tree(tmp_path / "d", files), "train")


def test_unknown_split(tiny_imdb_dir):
    with pytest.raises(SentimentError, match="unknown IMDb split"):
        read_imdb(tiny_imdb_dir, "dev")


def test_where_data_comes_from(tmp_path, monkeypatch, tiny_imdb_tar):
    monkeypatch.delenv("SENTIMENT_IMDB", raising=False)
    assert find_imdb(tiny_imdb_tar) == tiny_imdb_tar
    with pytest.raises(SentimentError, match="--data"):
        find_imdb(tmp_path / "missing")
    monkeypatch.setenv("SENTIMENT_IMDB", str(tiny_imdb_tar))
    assert find_imdb() == tiny_imdb_tar
    monkeypatch.setenv("SENTIMENT_IMDB", str(tmp_path / "gone.tar.gz"))
    with pytest.raises(SentimentError, match=r"\$SENTIMENT_IMDB"):
        find_imdb()
    monkeypatch.delenv("SENTIMENT_IMDB")
    data = tmp_path / "data"
    monkeypatch.setenv("SENTIMENT_DATA_DIR", str(data))
    write_tree(data, imdb_files())
    assert find_imdb() == data / "aclImdb"


def test_download_when_nothing_is_found(tmp_path, monkeypatch, tiny_imdb_tar):
    monkeypatch.delenv("SENTIMENT_IMDB", raising=False)
    calls = []

    def fake_download(url, dest, **kw):
        calls.append((url, dest, kw))
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(tiny_imdb_tar.read_bytes())
        return dest

    monkeypatch.setattr(imdb.hub, "download", fake_download)
    path = find_imdb()
    ((url, dest, kw),) = calls
    assert url == imdb.IMDB_URL and kw["md5"] == "7c2ac02c03563afcf9b574c7e56c153a"
    assert path == dest == tmp_path / "data" / "aclImdb_v1.tar.gz"
    with pytest.raises(SentimentError):
        find_imdb(tmp_path / "nope")


def test_corpus_and_balanced_subset(tiny_imdb_tar):
    corpus = load_corpus(tiny_imdb_tar)
    assert corpus.classes == ["negative", "positive"]
    assert corpus.counts("train") == {"neg": 3, "pos": 3}
    sub = balanced_subset(corpus.train, 4, 2, seed=1)
    assert sorted(ex.label for ex in sub) == [0, 0, 1, 1]
    assert sub == balanced_subset(corpus.train, 4, 2, seed=1)
    assert balanced_subset(corpus.train, None, 2, 0) == corpus.train
    assert balanced_subset(corpus.train, 5, 2, 0).__len__() == 5
    with pytest.raises(SentimentError):
        balanced_subset(corpus.train, 0, 2, 0)


@pytest.mark.real_data
def test_real_archive_sizes(real_imdb):
    out = read_imdb_splits(real_imdb)
    for split in ("train", "test"):
        examples = out[split]
        assert len(examples) == 25_000
        assert sum(ex.label for ex in examples) == 12_500
        assert all(1 <= ex.rating <= 4 for ex in examples if ex.label == 0)
        assert all(7 <= ex.rating <= 10 for ex in examples if ex.label == 1)
    assert len({(ex.label, ex.id) for ex in out["train"]}) == 25_000


def test_download_from_a_server_then_read(tmp_path, monkeypatch, tiny_imdb_tar):
    """The whole first-run path against a real HTTP server on 127.0.0.1: download, verify, read."""
    import hashlib

    payload = tiny_imdb_tar.read_bytes()
    with serve_bytes(payload) as base:
        monkeypatch.delenv("SENTIMENT_IMDB", raising=False)
        monkeypatch.setattr(imdb, "IMDB_URL", f"{base}/aclImdb_v1.tar.gz")
        monkeypatch.setattr(imdb, "IMDB_MD5", hashlib.md5(payload).hexdigest())
        corpus = load_corpus()
        assert corpus.counts("train") == {"neg": 3, "pos": 3}
        assert (tmp_path / "data" / "aclImdb_v1.tar.gz").read_bytes() == payload
        monkeypatch.setattr(imdb, "IMDB_MD5", "0" * 32)
        (tmp_path / "data" / "aclImdb_v1.tar.gz").unlink()
        with pytest.raises(SentimentError, match="aclImdb_v1.tar.gz"):
            load_corpus()
        assert list((tmp_path / "data").iterdir()) == []  # nothing half-written
