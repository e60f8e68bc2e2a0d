"""Seeded, class-balanced subsets (`--limit-train`, `--limit-test`) for text and images alike."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sentiment.errors import SentimentError


def balanced_indices(labels: Sequence[int] | np.ndarray, n: int, num_classes: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random choice of `n` items, the classes as even as the data allows.

    Slots are dealt to the classes in turn, skipping a class once it has nothing left, so a rare
    class gives all it has and the others fill the rest.
    """
    if n <= 0:
        raise SentimentError(f"a limit must be positive, got {n}")
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]
    sizes = np.array([len(idx) for idx in by_class])
    share = np.zeros(num_classes, dtype=np.int64)
    remaining = n
    while remaining:  # each round gives every class with examples left one more slot
        open_ = np.flatnonzero(share < sizes)[:remaining]
        share[open_] += 1
        remaining -= len(open_)
    return np.sort(np.concatenate([idx[:k] for idx, k in zip(by_class, share, strict=True)]))


def stratified_indices(labels: Sequence[int], fraction: float, seed: int) -> np.ndarray:
    """A stratified, seeded choice of rows to hold out (a test or validation split): `fraction` of
    each class, at least one of a class with two or more, sorted."""
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    picked = []
    for c in np.unique(labels_arr):
        idx = np.flatnonzero(labels_arr == c)
        k = max(1, round(len(idx) * fraction)) if len(idx) > 1 else 0
        picked.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(picked))
