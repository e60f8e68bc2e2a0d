"""The prepared-data cache: a hit gives exactly what a fresh build gives; anything that changed misses."""

import dataclasses

import numpy as np
import pytest

from conftest import imdb_files, write_tar
from sentiment.config import text_config
from sentiment.text import prepared
from sentiment.text.batching import Encoded
from sentiment.text.prepared import prepare_text


@pytest.fixture
def reads(monkeypatch):
    """Counts how often the corpus is actually read (a cache hit reads nothing)."""
    calls = []
    real = prepared.load_corpus

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(prepared, "load_corpus", counting)
    return calls


def _cfg(data, **kw):
    return text_config("textcnn", None, {"data": str(data), "min_freq": 1, "val_fraction": 0.0, **kw})


def _same(a, b):
    assert a.vocab == b.vocab and a.classes == b.classes and a.train_tokens == b.train_tokens
    for split in ("train", "test"):
        x, y = getattr(a, split), getattr(b, split)
        for name in ("ids", "offsets", "lengths"):
            assert np.array_equal(getattr(x, name), getattr(y, name)), (split, name)
        assert np.array_equal(getattr(a, f"{split}_labels"), getattr(b, f"{split}_labels"))


def _in_memory(data):
    """A copy of prepared data whose arrays no longer map the cache entry's files."""
    copied = {split: Encoded(*(np.array(getattr(getattr(data, split), n)) for n in ("ids", "offsets", "lengths")))
              for split in ("train", "val", "test")}  # fmt: skip
    labels = {f"{split}_labels": np.array(getattr(data, f"{split}_labels")) for split in ("train", "val", "test")}
    return dataclasses.replace(data, **copied, **labels)


def _entries(tmp_path):
    return sorted(p.name for p in (tmp_path / "data" / "cache").iterdir())


def test_second_run_reads_nothing_and_matches(tiny_imdb_tar, tmp_path, reads):
    first = prepare_text(_cfg(tiny_imdb_tar))
    assert len(reads) == 1 and len(_entries(tmp_path)) == 1
    second = prepare_text(_cfg(tiny_imdb_tar))
    assert len(reads) == 1  # from the cache
    _same(first, second)
    _same(second, prepare_text(_cfg(tiny_imdb_tar, cache=False)))
    assert isinstance(second.train.ids, np.memmap)


@pytest.mark.parametrize(
    "change", [{"min_freq": 2}, {"tokenizer": "basic"}, {"max_len": 3}, {"limit_train": 4}, {"val_fraction": 0.25}]
)
def test_a_changed_setting_misses(tiny_imdb_tar, tmp_path, reads, change):
    prepare_text(_cfg(tiny_imdb_tar))
    prepare_text(_cfg(tiny_imdb_tar, **change))
    assert len(reads) == 2 and len(_entries(tmp_path)) == 2


def test_the_seed_only_matters_when_it_picks_examples(tiny_imdb_tar, reads):
    prepare_text(_cfg(tiny_imdb_tar, seed=1))
    prepare_text(_cfg(tiny_imdb_tar, seed=2))
    assert len(reads) == 1
    prepare_text(_cfg(tiny_imdb_tar, seed=1, limit_test=2))
    prepare_text(_cfg(tiny_imdb_tar, seed=2, limit_test=2))
    assert len(reads) == 3
    prepare_text(_cfg(tiny_imdb_tar, seed=1, val_fraction=0.25))  # the validation split is drawn by seed
    prepare_text(_cfg(tiny_imdb_tar, seed=2, val_fraction=0.25))
    assert len(reads) == 5


def test_a_changed_archive_misses(tmp_path, reads):
    path = write_tar(tmp_path / "a.tar.gz", imdb_files())
    first = prepare_text(_cfg(path))
    files = imdb_files()
    files["aclImdb/train/pos/0_8.txt"] = b"an entirely different review"
    write_tar(path, files)
    second = prepare_text(_cfg(path))
    assert len(reads) == 2 and first.vocab != second.vocab


@pytest.mark.parametrize("damage", ["truncate", "delete", "garbage_meta"])
def test_a_damaged_entry_is_rebuilt(tiny_imdb_tar, tmp_path, reads, damage):
    good = _in_memory(prepare_text(_cfg(tiny_imdb_tar)))  # the entry's own arrays are memory-mapped
    (entry,) = (tmp_path / "data" / "cache").iterdir()
    target = entry / "train_ids.npy"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:-7])
    elif damage == "delete":
        target.unlink()
    else:
        (entry / "meta.json").write_text("{not json")
    again = prepare_text(_cfg(tiny_imdb_tar))
    assert len(reads) == 2
    _same(good, again)
    _same(good, prepare_text(_cfg(tiny_imdb_tar)))  # and the rebuilt entry is good again
    assert len(reads) == 2


def test_labeled_files_are_cached_too(tmp_path, reads):
    csv = tmp_path / "r.csv"
    csv.write_text("text,label\n" + "".join(f"review {i},{'a' if i % 2 else 'b'}\n" for i in range(20)))
    a = prepare_text(_cfg(csv))
    b = prepare_text(_cfg(csv))
    assert len(reads) == 1
    _same(a, b)
    prepare_text(_cfg(csv, test_fraction=0.3))
    assert len(reads) == 2


def test_under_torchrun_one_process_prepares_and_the_others_map_its_entry(tiny_imdb_tar, tmp_path, reads, monkeypatch):
    """Only a machine's first process reads the corpus, before the others pass the barrier; they map
    the entry it wrote, and read the corpus themselves (into memory, writing nothing) only where
    there is none."""
    from sentiment import distributed

    waits, ranks = [], [0]
    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(distributed, "local_rank", lambda: ranks[0])
    monkeypatch.setattr(distributed, "barrier", lambda: waits.append((ranks[0], len(reads))))
    first = prepare_text(_cfg(tiny_imdb_tar))
    assert waits == [(0, 1)]  # read, then the others are let go
    ranks[0] = 1
    mapped = prepare_text(_cfg(tiny_imdb_tar))
    assert waits[-1] == (1, 1) and len(reads) == 1  # rank 1 read nothing
    assert isinstance(mapped.train.ids, np.memmap)
    _same(first, mapped)
    entries = _entries(tmp_path)
    alone = prepare_text(_cfg(tiny_imdb_tar, min_freq=2))  # the first process wrote no entry for this
    assert waits[-1] == (1, 1) and len(reads) == 2 and _entries(tmp_path) == entries
    assert not isinstance(alone.train.ids, np.memmap)
