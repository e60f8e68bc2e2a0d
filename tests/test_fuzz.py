"""Fuzzing: random bytes and strings into the tokenizers, the vocabulary lookup and the readers of
archives, labeled files and vector files. The answer is a valid result or a `SentimentError`, never
any other exception."""

import gzip
import io
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentiment.errors import SentimentError
from sentiment.text.batching import encode
from sentiment.text.imdb import read_imdb_splits
from sentiment.text.labeled import read_labeled_rows
from sentiment.text.tokenize import get_tokenizer
from sentiment.text.vectors import Vectors
from sentiment.text.vocab import UNK_ID, Vocab

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TEXT = st.text(st.characters(codec="utf-8"), max_size=300) | st.binary(max_size=300).map(
    lambda b: b.decode("utf-8", "replace")
)


@FUZZ
@given(TEXT, st.sampled_from(["basic", "words"]))
def test_tokenizers_take_any_text(text, name):
    tokens = get_tokenizer(name)(text)
    assert isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)
    if name == "words":
        assert all(t and not t.isspace() for t in tokens)


@FUZZ
@given(st.lists(st.lists(TEXT, max_size=20), max_size=20), st.integers(1, 5), st.integers(1, 30))
def test_vocab_build_and_lookup_take_any_tokens(token_lists, min_freq, max_len):
    vocab = Vocab.build(Counter(t for ts in token_lists for t in ts), min_freq=min_freq)
    enc = encode(token_lists, vocab, max_len)
    assert len(enc) == len(token_lists)
    for i, tokens in enumerate(token_lists):
        expected = [vocab.stoi.get(t, UNK_ID) for t in tokens[:max_len]] or [UNK_ID]
        assert enc.row(i).tolist() == expected
    assert enc.ids.dtype == np.int32 and (enc.ids < len(vocab)).all()


def _check(read, payload: bytes, name: str):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(payload)
        try:
            read(path)
        except SentimentError as e:
            assert "\n" not in str(e)


def _tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


MEMBER = st.tuples(
    st.sampled_from(
        ["aclImdb/train/pos/1_9.txt", "aclImdb/test/neg/2_1.txt", "aclImdb/train/neg/x.txt", "aclImdb/train/pos/"]
    )
    | st.text(max_size=30),
    st.binary(max_size=60),
)


@FUZZ
@given(st.binary(max_size=400) | st.lists(MEMBER, max_size=5).map(_tar_bytes))
def test_imdb_archive_reader_takes_any_bytes(payload):
    _check(read_imdb_splits, payload, "aclImdb_v1.tar.gz")


@FUZZ
@given(st.binary(max_size=400), st.sampled_from(["d.csv", "d.tsv", "d.jsonl"]))
def test_labeled_readers_take_any_bytes(payload, name):
    _check(read_labeled_rows, payload, name)


@FUZZ
@given(st.sampled_from(["d.csv", "d.tsv", "d.jsonl"]), st.lists(st.tuples(TEXT, TEXT), max_size=6))
def test_labeled_readers_take_any_rows(name, rows):
    sep = "\t" if name.endswith(".tsv") else ","
    if name.endswith(".jsonl"):
        import json

        body = "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows)
    else:
        body = "text" + sep + "label\n" + "".join(f"{t}{sep}{lab}\n" for t, lab in rows)
    _check(read_labeled_rows, body.encode(), name)


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["v.txt", "v.txt.gz"]))
def test_vector_file_reader_takes_any_bytes(payload, name):
    if name.endswith(".gz") and payload[:1] == b"g":  # sometimes a valid gzip of the random bytes
        payload = gzip.compress(payload)
    _check(Vectors.from_text, payload, name)
