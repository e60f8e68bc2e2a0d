"""What a run learns to predict: a class (`--target label`, the default), a number (`--target
rating`: IMDb's 1-10 stars from its file names, or a labeled file's numeric label column), or any
number of labels per text (`--multi-label`, i.e. `--target multilabel`: a labeled file whose label
column holds lists or `|`-separated names).

A rating run is a classifier with one output, `rating`: the same families, loop and run folders, with
a squared-error (or Huber) loss instead of cross-entropy. Its model's output is the rating itself:
the head's bias starts at the training ratings' mean and the loss divides each error by their
standard deviation, so training sees standardized errors while every inference form (numpy, look-up,
torch, the exact explanations) reads the rating straight off the head. Answers are clipped to the
training range. `Rating` is what config.json keeps of it.

A multi-label run is a classifier with an output per label, each a sigmoid trained with binary
cross-entropy: a text may have none, one or several. Which probability counts as "yes" is tuned per
label on the validation split once training ends (`tune_thresholds`), and `thresholds.json` keeps it
(`MultiLabel`).

Imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from sentiment.errors import SentimentError

TARGETS = ("label", "rating", "multilabel")
RATING_LOSSES = ("mse", "huber")
RATING_CLASSES = ["rating"]  # a rating run's one output, where a classifier has its classes
RATING_SELECT = ("mae", "spearman", "loss")  # what "best on validation" may mean for a rating run
MULTILABEL_SELECT = ("f1", "loss")  # and for a multi-label run (f1: micro-F1 with every threshold at 0.5)
LABEL_SEPARATOR = "|"  # between the labels of a text in a CSV/TSV label column
THRESHOLDS = "thresholds.json"  # a multi-label run's tuned thresholds, beside its weights
DEFAULT_THRESHOLD = 0.5  # a label's threshold before tuning, or when validation cannot tune it
THRESHOLD_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))  # the candidates tuning compares


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


def described(classes: Sequence[str], target: str = "label") -> str:
    """What a data line says the model predicts: "2 classes", "a rating" or "5 labels (any number per text)"."""
    if target == "multilabel":
        return f"{len(classes)} labels (any number per text)"
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
    """What `--select` means for `target`: `auto` is acc for labels, mae for ratings and f1 (micro)
    for multi-label runs; a choice that does not apply is a user error."""
    if select == "auto":
        return {"rating": "mae", "multilabel": "f1"}.get(target, "acc")
    if target == "rating" and select not in RATING_SELECT:
        raise SentimentError(f"--select {select} is for labels; a rating run selects by {', '.join(RATING_SELECT)}")
    if target == "multilabel" and select not in MULTILABEL_SELECT:
        raise SentimentError(
            f"--select {select} does not apply to a multi-label run; it selects by {', '.join(MULTILABEL_SELECT)}"
        )
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


# -- multi-label runs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MultiLabel:
    """A multi-label run's labels and each one's threshold: a text has every label whose probability
    is at least its threshold."""

    classes: list[str]
    thresholds: list[float]

    @classmethod
    def of_run(cls, run, meta: dict | None = None) -> MultiLabel | None:
        """A run's labels and thresholds (its `thresholds.json`; 0.5 each where it has none yet, as
        while training); None for a run of another target. `meta`: its config.json, if read already."""
        meta = run.read_json("config.json") if meta is None else meta
        if meta.get("target") != "multilabel":
            return None
        classes = list(meta["classes"])
        path = run.file(THRESHOLDS)
        saved = run.read_json(THRESHOLDS).get("thresholds", {}) if path.exists() else {}
        return cls(classes, [float(saved.get(c, DEFAULT_THRESHOLD)) for c in classes])

    def decide(self, probs) -> np.ndarray:
        """`[n, labels]` booleans: which labels each text has."""
        return np.asarray(probs, dtype=np.float64) >= np.asarray(self.thresholds)

    def labels_of(self, probs_row) -> list[str]:
        """One text's labels, most probable first."""
        row = np.asarray(probs_row, dtype=np.float64)
        chosen = [i for i in np.argsort(-row, kind="stable") if row[i] >= self.thresholds[i]]
        return [self.classes[i] for i in chosen]


def parse_labels(value, where: str) -> tuple[str, ...]:
    """A multi-label file's label cell: a JSON list of names (or integers), or a `|`-separated
    string; names in the order first given, each once. An empty list is an error."""
    if isinstance(value, str):
        items = value.split(LABEL_SEPARATOR)
    elif isinstance(value, list):
        items = value
    elif value is None:
        items = []
    else:
        raise SentimentError(f"{where}: labels {value!r} are neither a list nor '{LABEL_SEPARATOR}'-separated names")
    names = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise SentimentError(f"{where}: label {item!r} is not a name or an integer")
        name = str(item).strip()
        if name and name not in names:
            names.append(name)
    if not names:
        raise SentimentError(f"{where}: empty label list; a text needs at least one label")
    return tuple(names)


def multi_hot(label_sets: Sequence[Sequence[int]], n: int) -> np.ndarray:
    """`[texts, n]` float32 0/1: which of the `n` labels each text has."""
    out = np.zeros((len(label_sets), n), dtype=np.float32)
    for row, labels in enumerate(label_sets):
        out[row, list(labels)] = 1.0
    return out


def _f1(tp, fp, fn):
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=tp + fp > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=tp + fn > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=precision + recall > 0)
    return precision, recall, f1


def tune_thresholds(probs: np.ndarray, actual: np.ndarray) -> list[float]:
    """Per label, the threshold of THRESHOLD_GRID with the highest F1 on (`probs`, `actual`), the one
    nearest 0.5 among equals; a label the split never has keeps DEFAULT_THRESHOLD."""
    probs, actual = np.asarray(probs, dtype=np.float64), np.asarray(actual) > 0.5
    grid = np.asarray(THRESHOLD_GRID)
    out = []
    for j in range(probs.shape[1]):
        if not actual[:, j].any():
            out.append(DEFAULT_THRESHOLD)
            continue
        said = probs[:, j][:, None] >= grid[None, :]  # [texts, candidates]
        yes = actual[:, j][:, None]
        _, _, f1 = _f1((said & yes).sum(0), (said & ~yes).sum(0), (~said & yes).sum(0))
        best = np.flatnonzero(f1 >= f1.max() - 1e-12)
        out.append(float(grid[best[np.argmin(np.abs(grid[best] - DEFAULT_THRESHOLD))]]))
    return out


def multilabel_report(probs: np.ndarray, actual: np.ndarray, classes: Sequence[str], thresholds) -> dict:
    """Micro and macro precision/recall/F1, the share of texts whose label set is exactly right
    (`exact_match`), and per label precision, recall, F1, support and threshold, of `probs` decided
    at `thresholds` against `actual` (`[texts, labels]` 0/1)."""
    said = np.asarray(probs, dtype=np.float64) >= np.asarray(thresholds, dtype=np.float64)
    yes = np.asarray(actual) > 0.5
    tp, fp, fn = (said & yes).sum(0), (said & ~yes).sum(0), (~said & yes).sum(0)
    precision, recall, f1 = _f1(tp, fp, fn)
    micro_p, micro_r, micro_f1 = (float(x) for x in _f1(tp.sum(), fp.sum(), fn.sum()))
    per_label = {
        name: {
            "precision": float(precision[j]),
            "recall": float(recall[j]),
            "f1": float(f1[j]),
            "support": int(yes[:, j].sum()),
            "threshold": float(thresholds[j]),
        }  # fmt: skip
        for j, name in enumerate(classes)
    }
    return {
        "target": "multilabel",
        "examples": int(len(yes)),
        "micro_precision": micro_p,
        "micro_recall": micro_r,
        "micro_f1": micro_f1,
        "macro_f1": float(f1.mean()) if len(classes) else 0.0,
        "exact_match": float((said == yes).all(1).mean()) if len(yes) else 0.0,
        "labels_per_text": float(yes.sum(1).mean()) if len(yes) else 0.0,
        "predicted_per_text": float(said.sum(1).mean()) if len(yes) else 0.0,
        "per_label": per_label,
        "classes": list(classes),
    }
