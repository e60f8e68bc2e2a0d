"""Time and memory against the number of reviews: each family prepared and trained once on 25,000 to
1,000,000 synthetic reviews made from IMDb, its wall time and the peak memory of its process tree.

    python -m benchmarks.scale [--data IMDB] [--sizes 25000,100000,400000,1000000]
        [--models linear,fasttext,textcnn,birnn] [--work DIR] [--readme] [--table-only]
        [--answer-sizes 100000,1000000] [--answer-models linear,textcnn]
        [--stopped-sizes 100000,1000000] [--stopped-models transformer] [--train-seconds 300]

The reviews: IMDb's 25,000 training reviews taken in turn, each copy with 10% of its words dropped
at random (seeded), its label kept, written as one CSV per size into `--work` (kept there, so a
rerun does not write them again). The test file is 5,000 balanced IMDb test reviews, the same for
every size. Each run is `sentiment train --model M --data train-N.csv --test-data test.csv` as a
user would type it (one epoch for the families the loop trains, `--epochs 1`), with an empty data
folder (`SENTIMENT_DATA_DIR` in `--work`), so preparing the data is part of what is measured.
Peak memory is the largest resident set of the run's process tree (sampled every 0.2 s, and the
process's own peak from the kernel). The transformer is left out of these: one epoch over a million
reviews would take it about a day on a CPU.

Answering at scale: a run of each `--answer-models` family trained on the 25,000-review file, then
`sentiment evaluate --data train-N.csv --json` and `sentiment predict --file reviews-N.txt` (the same
texts, one per line; the answers written to /dev/null) for each `--answer-sizes` N: wall time and
peak memory of each command.

Training at scale, stopped: for the families whose epoch over a million reviews takes that long
(`--stopped-models`), the same `sentiment train`, interrupted as Ctrl-C interrupts it once it has
trained `--train-seconds`: the seconds until it started training (preparing the data and loading the
model; the run's `run:` line) and the peak memory of its process tree until then, the examples a
second it trained, the peak memory of its process tree over both, and the hours its epoch would take
at that speed.

Results are kept per (model, reviews) in benchmarks/results/scale.json (`--again` reruns). Writes
the tables between the `bench-scale`, `bench-scale-answers` and `bench-scale-stopped` markers in
docs/results.md with `--readme`, and the log-log picture benchmarks/results/scale.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.accuracy import cpu_model
from benchmarks.child import run_measured
from benchmarks.readme import link, replace_section

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "scale.json"
PICTURE = HERE / "results" / "scale.png"
TEST_SIZE, TEST_SEED, DROP = 5000, 2026, 0.1
LOOP = {"fasttext", "textcnn", "birnn", "transformer"}  # trained by the loop: one epoch
NAMES = {"linear": "linear", "fasttext": "fastText", "textcnn": "TextCNN", "birnn": "BiRNN"}


def write_sets(data: str | None, work: Path, sizes: list[int]) -> dict:
    """`train-<N>.csv` for each size and `test.csv` in `work`, each written once."""
    from sentiment.text.corpus import balanced_subset, load_corpus

    files = {"test": work / "test.csv", **{n: work / f"train-{n}.csv" for n in sizes}}
    if all(path.is_file() for path in files.values()):
        return files
    corpus = load_corpus(data)
    classes = corpus.classes
    if not files["test"].is_file():
        _write(
            files["test"],
            ((ex.text, classes[ex.label]) for ex in balanced_subset(corpus.test, TEST_SIZE, 2, TEST_SEED)),
        )
    for n in sizes:
        if not files[n].is_file():
            _write(files[n], synthetic(corpus.train, n, classes))
    return files


def synthetic(reviews, n: int, classes):
    """`n` (text, label) rows: the reviews in turn, every copy with DROP of its words dropped."""
    rng = np.random.default_rng(n)
    for i in range(n):
        ex = reviews[i % len(reviews)]
        words = ex.text.split(" ")
        keep = rng.random(len(words)) >= DROP
        yield " ".join(w for w, k in zip(words, keep, strict=True) if k), classes[ex.label]


def _write(path: Path, rows) -> None:
    part = path.with_suffix(".part")
    with open(part, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["text", "label"])
        out.writerows(rows)
    os.replace(part, path)


def train_command(model: str, data: Path, files: dict, out: Path) -> list[str]:
    """`sentiment train` of `model` on `data` as a user would type it, tested on the test file (one
    epoch for the loop's families)."""
    args = [sys.executable, "-m", "sentiment", "train", "--model", model, "--data", str(data),
            "--test-data", str(files["test"]), "--seed", "0", "--out", str(out)]  # fmt: skip
    return args + (["--epochs", "1"] if model in LOOP else [])


def machines(rows: list[dict]) -> str:
    """The machines `rows` were measured on (this one where there are none)."""
    return ", ".join(sorted({f"{r['cpu']}, {r['threads']} threads" for r in rows})) or cpu_model()


def timed(argv: list[str], what: str, env: dict | None = None) -> tuple[str, float, int]:
    """`argv` run and measured: `(stdout, wall seconds, peak MB of its process tree)`; a failure
    stops the benchmark with `what` and the command's last error line."""
    started = time.perf_counter()
    code, stdout, err, peak_mb = run_measured(argv, env=env, tree=True)
    if code != 0:
        raise SystemExit(f"{what}: {(err.strip().splitlines() or ['failed'])[-1]}")
    return stdout, round(time.perf_counter() - started, 1), peak_mb


def fresh_folders(work: Path) -> tuple[Path, Path]:
    """An empty data folder and no run folder in `work`, for a training measured from scratch."""
    data_dir, out = work / "data", work / "runs"
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    data_dir.mkdir(parents=True)
    return data_dir, out


def run_one(model: str, n: int, files: dict, work: Path) -> dict:
    data_dir, out = fresh_folders(work)
    args = train_command(model, files[n], files, out)
    stdout, wall, peak_mb = timed(args, f"{model} at {n:,}", {**os.environ, "SENTIMENT_DATA_DIR": str(data_dir)})
    summary = json.loads(((out / "latest").resolve() / "summary.json").read_text())
    data_line = next((line for line in stdout.splitlines() if line.startswith("data: ")), "")
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    return {
        "model": model,
        "reviews": n,
        "wall_s": wall,
        "peak_rss_mb": peak_mb,
        "test_acc": summary["test_acc"],
        "train_examples": summary["train_examples"],
        "hashed": bool(summary.get("hashed")),
        "precision": summary.get("precision"),
        "data_line": data_line,
        "cpu": cpu_model(),
        "threads": os.cpu_count(),
    }


def stopped_one(model: str, n: int, files: dict, work: Path, seconds: float) -> dict:
    """`sentiment train` of `model` on N reviews as `run_one` runs it, stopped as Ctrl-C stops it once
    it has trained `seconds`: how long it took to start training (preparing the data, loading the
    model), how fast it trained, the peak memory of its process tree over both, and how long the
    whole epoch would have taken at that speed."""
    data_dir, out = fresh_folders(work)
    began, marks = time.perf_counter(), {}

    def stop(stdout: str, peak_mb: int) -> bool:
        if "training" not in marks and "\nrun: " in "\n" + stdout:
            marks["training"], marks["start_peak_mb"] = time.perf_counter(), peak_mb
        if "training" in marks and time.perf_counter() - marks["training"] >= seconds:
            marks["stopped"] = time.perf_counter()
            return True
        return False

    env = {**os.environ, "SENTIMENT_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}  # lines as they come
    _, stdout, err, peak_mb = run_measured(train_command(model, files[n], files, out), env=env, tree=True, stop=stop)
    step = re.search(r"^interrupted: checkpoint at step (\d+) of epoch 1", stdout, re.M)
    if "stopped" not in marks or step is None:
        raise SystemExit(f"{model} at {n:,} was not stopped while training: {(err.strip().splitlines() or [''])[-1]}")
    run = next(p for p in out.iterdir() if p.is_dir() and not p.is_symlink())
    summary = json.loads((run / "summary.json").read_text())
    examples = int(step.group(1)) * json.loads((run / "config.json").read_text())["config"]["batch_size"]
    rate = examples / (marks["stopped"] - marks["training"])
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    return {
        "model": model,
        "reviews": n,
        "start_s": round(marks["training"] - began, 1),
        "trained_s": round(marks["stopped"] - marks["training"], 1),
        "examples_per_s": round(rate, 2),
        "epoch_h": round(summary["train_examples"] / rate / 3600, 1),
        "start_peak_mb": marks["start_peak_mb"],
        "peak_rss_mb": peak_mb,
        "data_line": next((line for line in stdout.splitlines() if line.startswith("data: ")), ""),
        "cpu": cpu_model(),
        "threads": os.cpu_count(),
    }


def stopped_table(results: list[dict], sizes: list[int], models: list[str]) -> str:
    by = {(r["model"], r["reviews"]): r for r in results}
    heading = "start s / peak MB at start / train examples/s / peak MB / an epoch, h"
    lines = ["| reviews | " + " | ".join(f"{NAMES.get(m, m)}: {heading}" for m in models) + " |",
             "|---" * (len(models) + 1) + "|"]  # fmt: skip
    for n in sizes:
        cells = [f"{r['start_s']:,.0f} / {r['start_peak_mb']:,} / {r['examples_per_s']:.1f} / {r['peak_rss_mb']:,} / "
                 f"{r['epoch_h']:,.1f}" if (r := by.get((m, n))) else "—" for m in models]  # fmt: skip
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def answer_runs(models: list[str], files: dict, work: Path) -> dict[str, Path]:
    """A run of each family trained on the 25,000-review file (kept in `work`, made once)."""
    runs = {}
    for model in models:
        out = work / "answer-runs" / model
        if not (out / "latest").exists():
            shutil.rmtree(out, ignore_errors=True)
            args = train_command(model, files[25_000], files, out)
            code, _, err, _ = run_measured(args, env={**os.environ, "SENTIMENT_DATA_DIR": str(work / "data")})
            if code != 0:
                raise SystemExit(f"training {model}: {(err.strip().splitlines() or ['failed'])[-1]}")
        runs[model] = (out / "latest").resolve()
    return runs


def review_lines(csv_file: Path) -> Path:
    """The texts of a review CSV, one per line (written once, beside it)."""
    path = csv_file.with_name(csv_file.name.replace("train-", "reviews-").replace(".csv", ".txt"))
    if not path.is_file():
        part = path.with_suffix(".part")
        with open(csv_file, newline="", encoding="utf-8") as f, open(part, "w", encoding="utf-8") as out:
            for row in csv.DictReader(f):
                out.write(" ".join(row["text"].split()) + "\n")
        os.replace(part, path)
    return path


def answer_one(model: str, n: int, run: Path, files: dict) -> dict:
    """evaluate and predict of `run` on N reviews: each command's wall time and peak memory."""
    out = {"model": model, "reviews": n, "cpu": cpu_model(), "threads": os.cpu_count()}
    commands = {
        "evaluate": f"exec {sys.executable} -m sentiment evaluate --run {run} --data {files[n]} --json",
        "predict": f"exec {sys.executable} -m sentiment predict --run {run} --file {review_lines(files[n])} "
        f"> /dev/null",
    }
    for name, command in commands.items():
        stdout, wall, peak_mb = timed(["sh", "-c", command], f"{name} with {model} on {n:,}")
        out |= {f"{name}_wall_s": wall, f"{name}_peak_rss_mb": peak_mb}
        if name == "evaluate":
            out["evaluate_examples"] = json.loads(stdout)["examples"]
    return out


def answer_table(results: list[dict], sizes: list[int], models: list[str]) -> str:
    by = {(r["model"], r["reviews"]): r for r in results}
    head = "| reviews | " + " | ".join(f"{NAMES.get(m, m)} {c}: wall s / peak MB" for m in models
                                       for c in ("evaluate", "predict")) + " |"  # fmt: skip
    lines = [head, "|---" * (2 * len(models) + 1) + "|"]
    for n in sizes:
        cells = []
        for m in models:
            r = by.get((m, n))
            for c in ("evaluate", "predict"):
                cells.append(f"{r[c + '_wall_s']:,.0f} / {r[c + '_peak_rss_mb']:,}" if r else "—")
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(results: list[dict], sizes: list[int], models: list[str]) -> str:
    by = {(r["model"], r["reviews"]): r for r in results}
    head = "| reviews | " + " | ".join(f"{NAMES.get(m, m)}: wall s / peak MB / test acc" for m in models) + " |"
    lines = [head, "|---" * (len(models) + 1) + "|"]
    for n in sizes:
        cells = []
        for m in models:
            r = by.get((m, n))
            mark = " (hashed)" if r and r["hashed"] else ""
            cells.append(f"{r['wall_s']:,.0f} / {r['peak_rss_mb']:,} / {r['test_acc']:.3f}{mark}" if r else "—")
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    growth = []
    for m in models:
        a, b = by.get((m, 100_000)), by.get((m, 1_000_000))
        if a and b:
            time_x, memory_x = b["wall_s"] / a["wall_s"], b["peak_rss_mb"] / a["peak_rss_mb"]
            growth.append(f"{NAMES.get(m, m)} {time_x:.1f}x time, {memory_x:.1f}x memory")
    if growth:
        lines += ["", "From 100,000 to 1,000,000 reviews (10x): " + "; ".join(growth) + "."]
    return "\n".join(lines)


def plot(results: list[dict], models: list[str], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.6, 4.0))
    for i, m in enumerate(models):
        rows = sorted((r for r in results if r["model"] == m), key=lambda r: r["reviews"])
        if not rows:
            continue
        n = [r["reviews"] for r in rows]
        axes[0].plot(n, [r["wall_s"] for r in rows], "-o", color=f"C{i}", label=NAMES.get(m, m), markersize=4)
        axes[1].plot(n, [r["peak_rss_mb"] / 1024 for r in rows], "-o", color=f"C{i}", label=NAMES.get(m, m),
                     markersize=4)  # fmt: skip
    for ax, what in zip(axes, ("wall time of the whole run, s", "peak memory of the process tree, GB"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set(xlabel="training reviews (log scale)", ylabel=what)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("preparing and training once, against the number of reviews")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def listed(text: str, kind=str) -> list:
    """A comma-separated option's items (an empty option: none)."""
    return [kind(item) for item in text.split(",") if item]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="IMDb folder or archive (default: as sentiment finds it)")
    ap.add_argument("--sizes", default="25000,100000,400000,1000000")
    ap.add_argument("--models", default="linear,fasttext,textcnn,birnn")
    ap.add_argument("--work", default="/tmp/sentiment-scale", help="where the review files and runs go")
    ap.add_argument("--again", action="store_true", help="rerun what the results file already holds")
    ap.add_argument("--readme", action="store_true")
    ap.add_argument("--table-only", action="store_true", help="run nothing: the table and plot from the results")
    ap.add_argument("--answer-sizes", default="100000,1000000", help="reviews evaluate and predict answer")
    ap.add_argument("--answer-models", default="linear,textcnn")
    ap.add_argument("--stopped-sizes", default="100000,1000000", help="reviews the stopped trainings read")
    ap.add_argument("--stopped-models", default="transformer", help="families trained a while, then stopped")
    ap.add_argument("--train-seconds", type=float, default=300, help="how long a stopped training trains")
    args = ap.parse_args()
    sizes, models = listed(args.sizes, int), listed(args.models)
    answer_sizes, answer_models = listed(args.answer_sizes, int), listed(args.answer_models)
    stopped_sizes, stopped_models = listed(args.stopped_sizes, int), listed(args.stopped_models)
    saved = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": []}
    done = {(r["model"], r["reviews"]): r for r in saved["runs"]}
    answered = {(r["model"], r["reviews"]): r for r in saved.get("answers", [])}
    stopped = {(r["model"], r["reviews"]): r for r in saved.get("stopped", [])}

    def save() -> None:
        everything = {"runs": list(done.values()), "answers": list(answered.values()),
                      "stopped": list(stopped.values())}  # fmt: skip
        RESULTS.write_text(json.dumps(everything, indent=1) + "\n")

    if not args.table_only:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        files = write_sets(args.data, work, sorted({*sizes, *answer_sizes, *stopped_sizes, 25_000}))

        def measure(kept: dict, pairs: list, doing: str, one) -> None:
            for m, n in pairs:
                if (m, n) in kept and not args.again:
                    continue
                print(f"== {m} {doing} {n:,} reviews", flush=True)
                kept[m, n] = one(m, n)
                print(json.dumps(kept[m, n]), flush=True)
                save()

        measure(done, [(m, n) for n in sizes for m in models], "at", lambda m, n: run_one(m, n, files, work))
        todo = [(m, n) for n in answer_sizes for m in answer_models if (m, n) not in answered or args.again]
        runs = answer_runs(sorted({m for m, _ in todo}), files, work) if todo else {}
        measure(answered, todo, "answering", lambda m, n: answer_one(m, n, runs[m], files))
        pairs = [(m, n) for n in stopped_sizes for m in stopped_models]
        measure(stopped, pairs, "stopped", lambda m, n: stopped_one(m, n, files, work, args.train_seconds))

    def section(kept: dict, chosen: list[str], counts: list[int], draw, says: str) -> tuple[list[dict], str]:
        """The kept rows of `chosen` families at `counts` reviews, and their table (`draw`) with `says`
        and the machines beneath; printed."""
        rows = [r for r in kept.values() if r["model"] in chosen and r["reviews"] in counts]
        command = "`python -m benchmarks.scale --readme`"
        text = f"{draw(rows, counts, chosen)}\n\n{says} Machine: {machines(rows)}; {command}."
        print(text)
        return rows, text

    results, body = section(
        done, models, sizes, table,
        f"Each cell: one `sentiment train` on that many synthetic reviews (IMDb's training reviews in turn, 10% of "
        f"each copy's words dropped), with the family's defaults and one epoch for the loop's families, from an "
        f"empty data folder: wall time of the whole command, peak memory of its process tree, and accuracy on "
        f"{TEST_SIZE:,} IMDb test reviews. (hashed): the linear family chose hashed features by itself.",
    )  # fmt: skip
    if results:
        plot(results, models, PICTURE)
        body += f"\n\n![time and memory against reviews]({link(PICTURE, 'bench-scale')})"
    answers, answer_body = section(
        answered, answer_models, answer_sizes, answer_table,
        "Each cell: one command answering that many synthetic reviews with a run trained on 25,000 of them: "
        "`sentiment evaluate --data train-N.csv --json` (texts and labels) and `sentiment predict --file "
        "reviews-N.txt` (the same texts, one per line; the answers written to /dev/null). Wall time of the command "
        "and peak memory of its process tree.",
    )  # fmt: skip
    trained_s = sorted({f"{r['trained_s']:,.0f}" for r in stopped.values() if r["model"] in stopped_models})
    trained, stopped_body = section(
        stopped, stopped_models, stopped_sizes, stopped_table,
        f"Each cell: `sentiment train --model M --data train-N.csv --test-data test.csv --epochs 1` stopped as "
        f"Ctrl-C stops it after {' or '.join(trained_s)} s of training: the seconds until it started training "
        f"(preparing the data, loading the model) and the peak memory of its process tree until then, the examples a "
        "second it trained, the peak memory of its process tree over both, and the hours the epoch's training would "
        "have taken at that speed (scoring its validation split comes on top).",
    )  # fmt: skip
    if args.readme:
        if results:
            replace_section("bench-scale", body)
        if trained:
            replace_section("bench-scale-stopped", stopped_body)
        if answers:
            replace_section("bench-scale-answers", answer_body)


if __name__ == "__main__":
    main()
