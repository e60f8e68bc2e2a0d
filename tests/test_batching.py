from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sentiment.errors import SentimentError
from sentiment.text.batching import BucketBatchSampler, collate, encode, pad_batch, pad_or_truncate
from sentiment.text.vocab import Vocab


def test_pad_or_truncate_like_the_reference():
    assert pad_or_truncate([5, 6], max_len=4) == [5, 6, 1, 1]
    assert pad_or_truncate(list(range(10)), max_len=3) == [0, 1, 2]
    assert pad_or_truncate([7], max_len=1) == [7]
    assert len(pad_or_truncate([], max_len=500)) == 500


def test_encode_truncates_and_keeps_empty_reviews_readable():
    vocab = Vocab.build(Counter("a b c a".split()), min_freq=1)
    enc = encode([["a", "b", "zzz"], [], ["c"] * 10], vocab, max_len=4)
    assert enc.lengths.tolist() == [3, 1, 4]
    assert enc.row(0).tolist() == [vocab["a"], vocab["b"], 0]
    assert enc.row(1).tolist() == [0]
    assert enc.row(2).tolist() == [vocab["c"]] * 4
    with pytest.raises(SentimentError):
        encode([["a"]], vocab, max_len=0)


def test_pad_batch_pads_to_the_longest_in_the_batch():
    vocab = Vocab.build(Counter("a b c".split()), min_freq=1)
    enc = encode([["a"], ["a", "b", "c"], ["b", "c"]], vocab, max_len=500)
    ids, lengths = pad_batch(enc, np.array([0, 2]))
    assert ids.shape == (2, 2) and ids.dtype == torch.int64
    assert lengths.tolist() == [1, 2]
    assert ids.tolist() == [[vocab["a"], 1], [vocab["b"], vocab["c"]]]
    ids, _ = pad_batch(enc, np.array([0]), min_len=5)
    assert ids.shape == (1, 5) and ids[0, 1:].tolist() == [1, 1, 1, 1]


def test_collate():
    ids, lengths = collate([[4, 5, 6], [7], []], max_len=2)
    assert ids.tolist() == [[4, 5], [7, 1], [0, 1]]
    assert lengths.tolist() == [2, 1, 1]


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(1, 600), min_size=1, max_size=300),
    st.integers(1, 40),
    st.integers(0, 2**31),
    st.booleans(),
)
def test_every_index_once_per_epoch(lengths, batch_size, seed, shuffle):
    sampler = BucketBatchSampler(lengths, batch_size, shuffle=shuffle, seed=seed, pool_batches=3)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        seen = np.concatenate(batches)
        assert sorted(seen.tolist()) == list(range(len(lengths)))
        assert all(1 <= len(b) <= batch_size for b in batches)


def test_buckets_group_similar_lengths_and_are_seeded():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 500, size=2000)
    sampler = BucketBatchSampler(lengths, 32, seed=7)
    batches = list(sampler)
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    random_spread = np.mean([np.ptp(lengths[rng.permutation(2000)[:32]]) for _ in range(20)])
    assert spread < random_spread / 5
    assert all(np.array_equal(a, b) for a, b in zip(batches, BucketBatchSampler(lengths, 32, seed=7), strict=True))
    sampler.set_epoch(1)
    assert not all(np.array_equal(a, b) for a, b in zip(batches, sampler, strict=True))


def test_unshuffled_batches_are_in_length_order():
    lengths = [5, 1, 3, 2, 4]
    batches = list(BucketBatchSampler(lengths, 2, shuffle=False))
    assert [b.tolist() for b in batches] == [[1, 3], [2, 4], [0]]


def test_drop_last_and_replicas():
    lengths = list(range(1, 102))
    s = BucketBatchSampler(lengths, 10, drop_last=True, pool_batches=100)
    assert len(list(s)) == len(s) == 10
    shards = [list(BucketBatchSampler(lengths, 10, num_replicas=2, rank=r, seed=1)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1])
    a = set(np.concatenate(shards[0]).tolist())
    b = set(np.concatenate(shards[1]).tolist())
    assert not a & b
    with pytest.raises(SentimentError):
        BucketBatchSampler(lengths, 0)
