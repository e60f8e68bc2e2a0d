"""A linear head fitted in closed form on frozen features, kept near the head it started from.

The head minimises the summed cross-entropy of the training features plus `||W - W0||² + ||b - b0||²`
over `2C`: a penalty on how far it moves from its start (W0, b0), not from zero. Started from rows of
a pretrained classifier, the head keeps what that classifier knew wherever the training photos say
nothing, and learns only the correction they ask for (the L2-SP idea of regularising towards the
starting point, applied to the head). With a zero start it is ordinary L2-regularised logistic regression.

`C` is chosen by stratified k-fold cross-validation on the training examples with the one-standard-
error rule: the smallest `C` (the head closest to its start) whose mean accuracy is within one
standard error of the best, since on a few dozen photos the best mean is itself mostly noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

C_GRID = tuple(float(c) for c in np.logspace(-3, 2, 11))


@dataclass
class HeadFit:
    weight: torch.Tensor  # [classes, features]
    bias: torch.Tensor  # [classes]
    c: float
    folds: int  # 0: too few examples of a class to cross-validate; C is the grid's middle
    cv_accuracy: dict[str, float]  # mean accuracy over the folds, per C (as written by f"{C:g}")
    cv_error: float  # one standard error of the best mean


def fit(x: torch.Tensor, y: torch.Tensor, w0: torch.Tensor, b0: torch.Tensor, c: float) -> tuple:
    """`(weight, bias)` minimising the summed cross-entropy of `x @ W.T + b` on `y` plus
    `(||W - w0||² + ||b - b0||²) / (2c)`, by L-BFGS in float64 (the problem is convex)."""
    x, w0, b0 = x.double(), w0.double(), b0.double()
    w = w0.clone().requires_grad_(True)
    b = b0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=500, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")  # fmt: skip

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.T + b, y, reduction="sum")
        loss = loss + ((w - w0).square().sum() + (b - b0).square().sum()) / (2 * c)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().float(), b.detach().float()


def stratified_folds(y: np.ndarray, groups: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """`k` folds of example indices, each group (all views of one photo) in one fold, every class
    spread evenly over the folds."""
    rng = np.random.default_rng(seed)
    fold_of_group: dict[int, int] = {}
    for cls in np.unique(y):
        members = np.unique(groups[y == cls])
        rng.shuffle(members)
        for i, g in enumerate(members):
            fold_of_group[int(g)] = i % k
    fold = np.array([fold_of_group[int(g)] for g in groups])
    return [np.flatnonzero(fold == f) for f in range(k)]


def choose_and_fit(
    x: torch.Tensor,
    y: torch.Tensor,
    w0: torch.Tensor,
    b0: torch.Tensor,
    *,
    groups: torch.Tensor | None = None,
    scored: torch.Tensor | None = None,
    grid: tuple[float, ...] = C_GRID,
    max_folds: int = 5,
    seed: int = 0,
) -> HeadFit:
    """`C` by cross-validation (one-standard-error rule), then the head fitted on every example.
    `groups` labels examples that are views of one original (they stay in one fold); `scored` (a
    mask) says which held-out examples a fold is scored on (say, the plain view of each photo)."""
    y_np = y.numpy()
    g_np = groups.numpy() if groups is not None else np.arange(len(y_np))
    per_class = min(len(np.unique(g_np[y_np == cls])) for cls in np.unique(y_np))
    k = min(max_folds, per_class)
    if k < 2:
        c = grid[len(grid) // 2]
        w, b = fit(x, y, w0, b0, c)
        return HeadFit(w, b, c, 0, {}, 0.0)
    folds = stratified_folds(y_np, g_np, k, seed)
    scores = np.zeros((len(grid), k))
    scored_np = scored.numpy() if scored is not None else np.ones(len(y_np), dtype=bool)
    for j, held in enumerate(folds):
        train = np.setdiff1d(np.arange(len(y_np)), held)
        held = held[scored_np[held]]
        for i, c in enumerate(grid):
            w, b = fit(x[train], y[train], w0, b0, c)
            scores[i, j] = float(((x[held] @ w.T + b).argmax(1) == y[held]).float().mean())
    means = scores.mean(1)
    best = int(means.argmax())
    error = float(scores[best].std(ddof=1) / np.sqrt(k))
    chosen = next(i for i in range(len(grid)) if means[i] >= means[best] - error - 1e-12)
    c = grid[chosen]
    w, b = fit(x, y, w0, b0, c)
    return HeadFit(w, b, c, k, {f"{c_:g}": round(float(m), 4) for c_, m in zip(grid, means, strict=True)}, error)
