"""Calibrated probabilities: how far a model's confidence is from how often it is right, and
temperature scaling to bring the two together.

Expected calibration error (ECE): the examples in 15 equal-width bins of their top probability;
the mean over bins, weighted by their share of examples, of |accuracy - mean confidence| in the bin.

Temperature scaling divides a model's logits by one number T fitted to the validation split: T > 1
makes an overconfident model less sure, T < 1 an underconfident one surer; no prediction changes.
T minimises the validation cross-entropy under a heavy-tailed prior centred on 1 (log T
Cauchy-distributed with scale `PRIOR`): on a few hundred examples the cross-entropy alone lets T
wander 0.1-0.2 from the one a larger held-out set gives, and the prior draws such small departures
back towards 1, while a large one (a logistic regression's T of 0.4, say) stands, as it does on
thousands of examples (docs/validation.md has the figures). The logits of every family here are
the output of a linear head, so dividing them by T is dividing the head's weight and bias by T: the
run folder's weights are calibrated once, and everything that reads them (predict, serve, explain,
evaluate and the quick numpy forms) gives calibrated probabilities with no change.
`calibration.json` records T (and the maximum-likelihood T) and the validation figures before and
after.

Imports numpy only; scipy (with scikit-learn) when a temperature is fitted.
"""

from __future__ import annotations

import numpy as np

BINS = 15
MIN_EXAMPLES = 100  # fewer validation examples than this fit a temperature to noise
PRIOR = 0.2  # scale of the Cauchy prior on log T
FILE = "calibration.json"


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _bin_of(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Each confidence's bin: bin i holds (i/bins, (i+1)/bins]; a confidence of exactly 0 goes to the first."""
    return np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> list[dict]:
    """Per bin of the top probability (equal width over [0, 1]): its range, examples, mean
    confidence and accuracy (empty bins included, with `examples` 0)."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    confidence = probs.max(axis=1)
    right = probs.argmax(axis=1) == labels
    which = _bin_of(confidence, bins)
    out = []
    for i in range(bins):
        inside = which == i
        n = int(inside.sum())
        out.append(
            {
                "low": i / bins,
                "high": (i + 1) / bins,
                "examples": n,
                "confidence": float(confidence[inside].mean()) if n else None,
                "accuracy": float(right[inside].mean()) if n else None,
            }
        )
    return out


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error over `bins` equal-width bins of the top probability."""
    table = reliability(probs, labels, bins)
    total = sum(b["examples"] for b in table)
    if total == 0:
        return float("nan")
    return float(sum(b["examples"] * abs(b["accuracy"] - b["confidence"]) for b in table if b["examples"]) / total)


def summary(probs: np.ndarray, labels: np.ndarray) -> dict:
    """ECE, its floor (see `floor`), mean top probability and accuracy: the figures `evaluate`
    reports."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    return {
        "ece": ece(probs, labels),
        "ece_floor": floor(probs),
        "mean_confidence": float(probs.max(axis=1).mean()),
        "accuracy": float((probs.argmax(axis=1) == labels).mean()),
    }


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, prior: float | None = PRIOR) -> float:
    """The temperature in [0.05, 20] that minimises the summed cross-entropy of `logits / T` plus
    log(1 + (log T / prior)^2): the most probable T given the examples when log T is Cauchy with
    scale `prior` beforehand (`prior` None: the maximum-likelihood T). Searched over log T."""
    from scipy.optimize import minimize_scalar

    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)

    def objective(log_t: float) -> float:
        fit = len(labels) * nll(logits, labels, float(np.exp(log_t)))
        return fit if prior is None else fit + float(np.log1p((log_t / prior) ** 2))

    # the Cauchy term can give the objective a second minimum near 1: a grid finds the deepest,
    # a bounded search between its neighbours refines it
    grid = np.linspace(np.log(0.05), np.log(20.0), 241)
    best = int(np.argmin([objective(x) for x in grid]))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    found = minimize_scalar(objective, bounds=(low, high), method="bounded", options={"xatol": 1e-5})
    return float(np.exp(found.x))


def floor(probs: np.ndarray, draws: int = 100, seed: int = 0) -> float:
    """The ECE a perfectly calibrated model with these probabilities would show on this many
    examples, from sampling alone: the mean over `draws` label sets drawn from `probs` themselves.
    An ECE near it is as close as a test set of this size can tell."""
    probs = np.asarray(probs, dtype=np.float64)
    if len(probs) == 0:
        return float("nan")
    confidence = probs.max(axis=1)
    which = _bin_of(confidence, BINS)
    expected = np.bincount(which, weights=confidence, minlength=BINS)  # right answers per bin, on average
    # a calibrated model's top class is right with probability `confidence`; only that matters to ECE
    right = np.random.default_rng(seed).random((draws, len(probs))) < confidence
    hits = np.stack([np.bincount(which, weights=r, minlength=BINS) for r in right])
    return float(np.abs(hits - expected).sum(axis=1).mean() / len(probs))


def head_keys(state: dict, head: str | None, num_classes: int) -> tuple[str, str] | None:
    """The weight and bias of the linear head under the parameter prefix `head`, if the model has
    one whose rows are the classes (the logits are then its output)."""
    if not head:
        return None
    weight, bias = f"{head}.weight", f"{head}.bias"
    if weight in state and bias in state and tuple(state[weight].shape)[:1] == (num_classes,):
        if len(state[weight].shape) == 2 and tuple(state[bias].shape) == (num_classes,):
            return weight, bias
    return None


def plot(table: list[dict], out, *, title: str | None = None, figures: dict | None = None):
    """A reliability diagram: accuracy per bin of confidence against the diagonal of perfect
    calibration, with the share of examples per bin beneath."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sentiment.fsutil import atomic_path

    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(5.2, 6), height_ratios=(3, 1), sharex=True)
    width = table[0]["high"] - table[0]["low"]
    filled = [b for b in table if b["examples"]]
    total = sum(b["examples"] for b in table) or 1
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfectly calibrated")
    ax.bar(
        [b["low"] for b in filled],
        [b["accuracy"] for b in filled],
        width=width,
        align="edge",
        edgecolor="black",
        color="C0",
        alpha=0.8,
        label="accuracy in the bin",
    )
    ax.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], "o", color="C3", markersize=4,
            label="(mean confidence, accuracy)")  # fmt: skip
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    if figures:
        ax.set_title(", ".join(f"{k} {v:.3f}" for k, v in figures.items()), fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    ax_n.bar([b["low"] for b in table], [b["examples"] / total for b in table], width=width, align="edge",
             edgecolor="black", color="C7")  # fmt: skip
    ax_n.set(xlabel="confidence (top probability)", ylabel="share of examples")
    ax_n.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out
