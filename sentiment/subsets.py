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


def validation_indices(
    labels: Sequence[int], classes: list[str], fraction: float, seed: int, *, what: str = "example", hint: str = ""
) -> np.ndarray:
    """The rows of a validation split (`stratified_indices`), after the checks a user needs: the
    fraction below 1, and every class with at least two training `what`s, one for each side."""
    if not fraction < 1:
        raise SentimentError(f"--val-fraction must be below 1 (0 = no validation split), got {fraction}")
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    for c, n in enumerate(counts):
        if n < 2:
            raise SentimentError(
                f"--val-fraction {fraction} leaves class {classes[c]!r} without {what}s on one side: it has "
                f"{n} training {what}{'s' if n != 1 else ''}; {hint or 'use --val-fraction 0'}"
            )
    return stratified_indices(labels, fraction, seed)
