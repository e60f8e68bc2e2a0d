"""Streamed preparation gives exactly what tokenizing every text in memory gives, and a bad row
anywhere in a file leaves nothing behind."""

import json
import random

import numpy as np
import pytest

from conftest import imdb_files, write_tar
from sentiment.config import text_config
from sentiment.errors import SentimentError
from sentiment.text import prepared
from sentiment.text.batching import encode
from sentiment.text.corpus import load_subsets
from sentiment.text.prepared import prepare_text
from sentiment.text.tokenize import get_tokenizer
from sentiment.text.vocab import Vocab

WORDS = "good bad fine awful great dull plot acting film  movie it's don't 7/10 ! ... the a of".split(" ")


def _reference(cfg):
    """The preparation as a list of token lists per split: what streaming must reproduce."""
    corpus, train, val, test = load_subsets(cfg)
    tokenize = get_tokenizer(cfg.tokenizer)
    train_tokens = [tokenize(ex.text) for ex in train]
    vocab = Vocab.from_tokens(train_tokens, min_freq=cfg.min_freq)
    splits = {
        "train": encode(train_tokens, vocab, cfg.max_len),
        "val": encode((tokenize(ex.text) for ex in val), vocab, cfg.max_len),
        "test": encode((tokenize(ex.text) for ex in test), vocab, cfg.max_len),
    }
    labels = {split: corpus.targets(examples) for split, examples in zip(splits, (train, val, test), strict=True)}
    return vocab, splits, labels, sum(map(len, train_tokens))


def _check(cfg):
    vocab, splits, labels, train_tokens = _reference(cfg)
    got = prepare_text(cfg)
    assert got.vocab == vocab and got.train_tokens == train_tokens
    for split, enc in splits.items():
        mine = getattr(got, split)
        for name in ("ids", "offsets", "lengths"):
            assert np.array_equal(getattr(mine, name), getattr(enc, name)), (split, name)
        assert np.array_equal(getattr(got, f"{split}_labels"), labels[split]), split
    return got


def _text(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


@pytest.fixture(params=[1 << 22, 5], ids=["one-block", "many-blocks"])
def blocks(request, monkeypatch):
    monkeypatch.setattr(prepared, "BLOCK_TOKENS", request.param)


def _cfg(data, **kw):
    return text_config("textcnn", None, {"data": str(data), "min_freq": 1, **kw})


@pytest.mark.parametrize("cache", [True, False])
def test_imdb_archive(tiny_imdb_tar, blocks, cache):
    # the archive holds positive reviews before negative ones, the splits the other way round
    _check(_cfg(tiny_imdb_tar, val_fraction=0.34, max_len=3, cache=cache))
    _check(_cfg(tiny_imdb_tar, val_fraction=0.0, tokenizer="basic", target="rating", cache=cache))


@pytest.mark.parametrize("in_memory", [True, False], ids=["small-source", "two-passes"])
def test_subsets(tmp_path, monkeypatch, blocks, in_memory):
    if not in_memory:  # a big source: one pass for the labels, a second tokenizes the chosen texts
        monkeypatch.setattr(prepared, "IN_MEMORY_BYTES", 0)
    rng = random.Random(1)
    files = imdb_files()
    for i in range(40):
        files[f"aclImdb/train/{'pos' if i % 2 else 'neg'}/{i + 10}_{9 if i % 2 else 2}.txt"] = _text(rng, 9).encode()
    path = write_tar(tmp_path / "more.tar.gz", files)
    _check(_cfg(path, limit_train=12, limit_test=4, val_fraction=0.25, max_len=6, min_freq=2))
    csv = tmp_path / "r.csv"
    csv.write_text("text,label\n" + "".join(f'"{_text(rng, 1 + i % 7)}",{"ab"[i % 2]}\n' for i in range(60)))
    _check(_cfg(csv, limit_train=20, limit_test=6, test_fraction=0.3))


def test_labeled_files(tmp_path, blocks):
    rng = random.Random(0)
    rows = [(_text(rng, rng.randrange(0, 12)), ["neg", "pos", "mixed"][i % 3]) for i in range(90)]
    rows[5] = ("", "pos")  # an empty text: one <unk>
    csv = tmp_path / "reviews.csv"
    csv.write_text("text,label\n" + "".join(f'"{t}",{lab}\n' for t, lab in rows), encoding="utf-8")
    _check(_cfg(csv, test_fraction=0.25, val_fraction=0.2, tokenizer="basic", min_freq=2, max_len=5))

    def jsonl(name, n, label):
        path = tmp_path / name
        path.write_text("".join(json.dumps({"text": _text(rng, 6), "label": label(i)}) + "\n" for i in range(n)))
        return path

    stars = [jsonl(f"{name}.jsonl", n, lambda i: 1 + i % 10) for name, n in (("train", 50), ("test", 20), ("val", 15))]
    _check(_cfg(stars[0], test_data=str(stars[1]), val_data=str(stars[2]), target="rating"))
    tags = [jsonl(f"tags-{name}.jsonl", n, lambda i: ["x", "y", "z"][: 1 + i % 3]) for name, n in (("a", 40), ("b", 9))]
    _check(_cfg(tags[0], test_data=str(tags[1]), val_fraction=0.25, target="multilabel"))


def test_a_bad_row_deep_in_a_file_leaves_nothing(tmp_path):
    csv = tmp_path / "big.csv"
    lines = [f"review number {i} was {'good' if i % 2 else 'bad'},{'ab'[i % 2]}\n" for i in range(3000)]
    lines[2498] = "a review without its label,\n"  # line 2500 of the file, after its header
    csv.write_text("text,label\n" + "".join(lines))
    with pytest.raises(SentimentError, match=r"big\.csv, line 2500: empty label"):
        prepare_text(_cfg(csv))
    cache = tmp_path / "data" / "cache"
    assert not cache.exists() or not list(cache.iterdir())


def test_a_full_disk_leaves_no_entry_and_the_run_goes_on(tiny_imdb_tar, tmp_path, monkeypatch):
    real = prepared._write_split
    calls = []

    def full(folder, *args):
        calls.append(folder)
        if len(calls) == 2 and "cache" in str(folder):  # the cache entry's validation split
            raise OSError(28, "No space left on device")
        return real(folder, *args)

    monkeypatch.setattr(prepared, "_write_split", full)
    data = prepare_text(_cfg(tiny_imdb_tar, val_fraction=0.34))
    assert not list((tmp_path / "data" / "cache").iterdir())  # nothing half-written
    assert len(data.train) == 4 and not isinstance(data.train.ids, np.memmap)  # built outside the cache
