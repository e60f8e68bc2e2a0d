"""Pictures of runs: loss and accuracy per epoch, one run or several side by side."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from sentiment.fsutil import atomic_path

if TYPE_CHECKING:
    from sentiment.runs import Run


def plot_runs(
    runs: list[Run], out: str | os.PathLike, *, title: str | None = None, labels: list[str] | None = None
) -> Path:
    """Loss and accuracy per epoch, train (dashed) vs validation (solid), and test (dotted) where
    it was scored every epoch; one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = figure(runs, title=title, labels=labels)
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out


def figure(runs: list[Run], *, title: str | None = None, labels: list[str] | None = None):
    """The matplotlib figure `plot_runs` saves. The legend names each run by its colour and shows
    the two line styles once, in black, long enough that the dashes read as dashes."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    # rating runs (--target rating) draw their mean absolute error where classifiers draw accuracy
    # and multi-label runs (--multi-label) their micro-F1 (at thresholds of 0.5)
    rated = all(any("train_mae" in m or "val_mae" in m for m in run.metrics) for run in runs)
    multi = all(any("val_micro_f1" in m or "train_micro_f1" in m for m in run.metrics) for run in runs)
    figure_key, figure_name = ("mae", "mean absolute error") if rated else ("acc", "accuracy")
    if multi and not rated:
        figure_key, figure_name = "micro_f1", "micro-F1 (thresholds 0.5)"
    handles = []
    drawn: set[str] = set()
    styles = (("train", "--"), ("val", "-"), ("test", ":"))
    for i, run in enumerate(runs):
        colour = f"C{i}"
        label = labels[i] if labels else (run.path.name if len(runs) > 1 else None)
        if label:
            handles.append(Line2D([], [], color=colour, linewidth=4, label=label))
        epochs = [m["epoch"] for m in run.metrics]
        for ax, key in ((ax_loss, "loss"), (ax_acc, figure_key)):
            for split, style in styles:
                points = [
                    (e, m[f"{split}_{key}"])
                    for e, m in zip(epochs, run.metrics, strict=True)
                    if m.get(f"{split}_{key}") is not None
                ]
                if points:
                    xs, ys = zip(*points, strict=True)
                    ax.plot(xs, ys, style, color=colour, marker="o", markersize=3)
                    drawn.add(split)
    names = {"train": "train", "val": "validation", "test": "test"}
    handles += [Line2D([], [], color="black", linestyle=st, label=names[sp]) for sp, st in styles if sp in drawn]
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel=figure_name, title=figure_name)
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(handles=handles, fontsize=7, handlelength=4)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
