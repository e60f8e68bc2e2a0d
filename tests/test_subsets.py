import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentiment.errors import SentimentError
from sentiment.subsets import balanced_indices


def test_a_rare_class_gives_all_it_has():
    labels = [0] * 2 + [1] * 10 + [2] * 10
    idx = balanced_indices(labels, 8, 3, seed=0)
    assert np.bincount(np.asarray(labels)[idx], minlength=3).tolist() == [2, 3, 3]
    assert idx.tolist() == sorted(idx.tolist())


@given(st.lists(st.integers(0, 3), min_size=1, max_size=80), st.integers(1, 100), st.integers(0, 10**6))
def test_size_balance_and_seed(labels, n, seed):
    idx = balanced_indices(labels, n, 4, seed)
    assert len(idx) == min(n, len(labels)) and len(set(idx.tolist())) == len(idx)
    counts = np.bincount(np.asarray(labels)[idx], minlength=4)
    available = np.bincount(labels, minlength=4)
    short = counts < available  # classes that could have given more are within one of each other
    if short.any():
        assert counts[short].max() - counts[short].min() <= 1
        assert (counts[~short] <= counts[short].max() + 1).all()  # a used-up class got no more than a turn
    assert np.array_equal(idx, balanced_indices(labels, n, 4, seed))


def test_limit_must_be_positive():
    with pytest.raises(SentimentError):
        balanced_indices([0, 1], 0, 2, 0)
