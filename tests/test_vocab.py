from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentiment.errors import SentimentError
from sentiment.text.vocab import PAD_ID, UNK_ID, Vocab


def test_specials_first_then_by_count_then_alphabet():
    c = Counter({"b": 5, "a": 5, "c": 9, "rare": 2, "d": 5})
    v = Vocab.build(c, min_freq=5)
    assert v.itos == ["<unk>", "<pad>", "c", "a", "b", "d"]
    assert v["<unk>"] == UNK_ID == 0 and v["<pad>"] == PAD_ID == 1
    assert v["rare"] == UNK_ID and v["never-seen"] == UNK_ID
    assert len(v) == 6 and "c" in v and "rare" not in v


def test_max_size_counts_ordinary_tokens():
    v = Vocab.build(Counter({"a": 3, "b": 2, "c": 1}), min_freq=1, max_size=2)
    assert v.itos == ["<unk>", "<pad>", "a", "b"]


def test_lookup_both_ways():
    v = Vocab.build(Counter("the cat the hat".split()), min_freq=1)
    ids = v.lookup_indices(["the", "hat", "dog"])
    assert v.itos == ["<unk>", "<pad>", "the", "cat", "hat"] and ids == [2, 4, 0]
    assert v.lookup_tokens(ids) == ["the", "hat", "<unk>"]
    assert v.encode(["the", "dog"]).tolist() == [v["the"], UNK_ID]
    with pytest.raises(SentimentError):
        v.lookup_tokens([len(v)])


def test_specials_in_the_counter_are_not_duplicated():
    v = Vocab.build(Counter({"<pad>": 100, "<unk>": 50, "x": 7}), min_freq=1)
    assert v.itos == ["<unk>", "<pad>", "x"]


def test_bad_vocab_files(tmp_path):
    with pytest.raises(SentimentError, match="no vocabulary file"):
        Vocab.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SentimentError, match="bad.json"):
        Vocab.load(bad)
    bad.write_text('{"itos": ["a", "b"]}')
    with pytest.raises(SentimentError, match="must start with"):
        Vocab.load(bad)
    with pytest.raises(SentimentError, match="min_freq"):
        Vocab.build(Counter(), min_freq=0)


tokens = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=6)


@given(st.dictionaries(tokens, st.integers(min_value=1, max_value=50), max_size=40), st.integers(1, 10))
def test_properties_and_round_trip(tmp_path_factory, counts, min_freq):
    c = Counter(counts)
    v = Vocab.build(c, min_freq=min_freq)
    assert v.itos[:2] == ["<unk>", "<pad>"]
    ordinary = v.itos[2:]
    assert len(set(ordinary)) == len(ordinary)
    assert set(ordinary) == {t for t, n in c.items() if n >= min_freq and t not in ("<unk>", "<pad>")}
    keys = [(-c[t], t) for t in ordinary]
    assert keys == sorted(keys)
    for i, t in enumerate(v.itos):
        assert v[t] == i and v.stoi[t] == i
    path = tmp_path_factory.mktemp("v") / "vocab.json"
    v.save(path)
    again = Vocab.load(path)
    assert again == v and again.stoi == v.stoi
