"""What a run learns to predict: a class (`--target label`, the default) or a number (`--target
rating`: IMDb's 1-10 stars from its file names, or a labeled file's numeric label column).

A rating run is a classifier with one output, `rating`: the same families, loop and run folders, with
a squared-error (or Huber) loss instead of cross-entropy. Its model's output is the rating itself:
the head's bias starts at the training ratings' mean and the loss divides each error by their
standard deviation, so training sees standardized errors while every inference form (numpy, look-up,
torch, the exact explanations) reads the rating straight off the head. Answers are clipped to the
training range. `Rating` is what config.json keeps of it.

Imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from sentiment.errors import SentimentError

TARGETS = ("label", "rating")
RATING_LOSSES = ("mse", "huber")
RATING_CLASSES = ["rating"]  # a rating run's one output, where a classifier has its classes
RATING_SELECT = ("mae", "spearman", "loss")  # what "best on validation" may mean for a rating run


@dataclass(frozen=True)
class Rating:
    """The training ratings' range (answers are clipped to it), mean and standard deviation."""

    low: float
    high: float
    mean: float
    std: float

    @classmethod
    def of(cls, values: Sequence[float], where: str = "the training data") -> Rating:
        v = np.asarray(values, dtype=np.float64)
        if not len(v):
            raise SentimentError(f"{where} holds no ratings")
        if v.min() == v.max():
            raise SentimentError(
                f"every rating in {where} is {v[0]:g}: a rating model needs at least two different values"
            )
        return cls(low=float(v.min()), high=float(v.max()), mean=float(v.mean()), std=float(v.std()))

    @classmethod
    def of_run(cls, meta: dict) -> Rating | None:
        """A run's rating, from its config.json; None for a classifier (and every older run)."""
        saved = meta.get("rating")
        return cls(**saved) if isinstance(saved, dict) else None

    def record(self) -> dict:
        return asdict(self)

    def clip(self, values):
        """`values` (numpy array or torch tensor) within the training range."""
        return values.clip(self.low, self.high)


def described(classes: Sequence[str]) -> str:
    """What a data line says the model predicts: "2 classes", or "a rating"."""
    return "a rating" if list(classes) == RATING_CLASSES else f"{len(classes)} classes"


def rating_of(target: str, train_labels) -> Rating | None:
    """A run's `Rating` from its training split's labels when `target` is "rating"; else None."""
    return Rating.of(train_labels, "the training split") if target == "rating" else None


def parse_rating(value, where: str) -> float:
    """A rating as a labeled file spells it (a number, or a string holding one)."""
    if isinstance(value, bool):
        raise SentimentError(f"{where}: rating {value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SentimentError(f"{where}: rating {value!r} is not a number") from None
    if not np.isfinite(number):
        raise SentimentError(f"{where}: rating {value!r} is not a finite number")
    return number


def select_for(target: str, select: str) -> str:
    """What `--select` means for `target`: `auto` is acc for labels and mae for ratings; a choice
    that does not apply is a user error."""
    if select == "auto":
        return "mae" if target == "rating" else "acc"
    if target == "rating" and select not in RATING_SELECT:
        raise SentimentError(f"--select {select} is for labels; a rating run selects by {', '.join(RATING_SELECT)}")
    if target == "label" and select in ("mae", "spearman"):
        raise SentimentError(f"--select {select} is for --target rating; a classifier selects by acc, f1 or loss")
    return select


def evaluate_ratings(predicted, corpus) -> dict:
    """A rating run's `evaluate`: `rating_report` of its answers on `corpus.test` (read as ratings)."""
    if getattr(corpus, "target", "label") != "rating":
        raise SentimentError(f"{corpus.source} was read as classes, not ratings")
    actual = np.array([ex.rating for ex in corpus.test], dtype=np.float64)
    return {"target": "rating", **rating_report(np.asarray(predicted, dtype=np.float64), actual)}


def rating_report(predicted: np.ndarray, actual: np.ndarray) -> dict:
    """MAE, RMSE and Spearman's rank correlation of predicted against actual ratings."""
    from scipy.stats import spearmanr

    p, y = np.asarray(predicted, dtype=np.float64).ravel(), np.asarray(actual, dtype=np.float64).ravel()
    err = p - y
    rho = float(spearmanr(p, y).statistic) if len(y) > 1 and p.std() > 0 and y.std() > 0 else float("nan")
    return {
        "examples": len(y),
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "spearman": rho,
        "mean_rating": float(y.mean()),
        "mean_prediction": float(p.mean()),
    }
