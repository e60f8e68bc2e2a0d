"""Calibration and class weights, each measured as a user would see it: `sentiment train` twice
(`--no-calibrate`, then the default), `sentiment evaluate --json` on IMDb's test split and on the
project's short reviews (benchmarks/data/short_reviews.csv, 300 one-sentence reviews from four
domains); and `--class-weights none` against `auto` on 1:9 imbalanced IMDb slices.

    python -m benchmarks.calibration [--data PATH] [--models linear,textcnn,transformer] [--seeds 0,1,2]
                                     [--table-only] [--readme]

Runs (CPU):
- linear: full IMDb (22,500 trained on, 2,500 validation), scored on the 25,000 test reviews;
- textcnn: a 5,000-review slice (4,500 / 500), its defaults, scored on the 25,000 test reviews;
- transformer: a 2,000-review slice for 1 epoch (1,800 / 200), scored on 1,000 test reviews
  (training on full IMDb takes about an hour per run here; see docs/results.md for those runs);
- class weights: linear and textcnn (3 epochs) trained on 1,500 reviews with 150 negative, scored
  on 1,000 test reviews with 100 negative: macro-F1 and balanced accuracy.

Writes benchmarks/results/calibration.json and, with `--readme`, the tables between the
`bench-calibration` and `bench-class-weights` markers in docs/validation.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.accuracy import cpu_model, kept_row
from benchmarks.fasttext import _write_csv
from benchmarks.readme import replace_section

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "calibration.json"
SHORT = HERE / "data" / "short_reviews.csv"
RUNS = {
    "linear": (["--model", "linear"], None),
    "textcnn": (["--model", "textcnn", "--limit-train", "5000"], None),
    "transformer": (["--model", "transformer", "--limit-train", "2000", "--epochs", "1"], 1000),
}
NAMES = {"linear": "linear, full IMDb", "textcnn": "TextCNN, 5,000 reviews",
         "transformer": "transformer, 2,000 reviews, 1 epoch"}  # fmt: skip


def sentiment(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "sentiment", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"sentiment {args[0]}: {(done.stderr.strip().splitlines() or ['failed'])[-1]}")
    return done.stdout


def train(out: Path, *args: str) -> Path:
    sentiment("train", *args, "--out", str(out), "--quiet")
    return (out / "latest").resolve()


def evaluate(run: Path, data: str | None, limit: int | None = None) -> dict:
    args = ["evaluate", "--run", str(run), "--json"] + (["--data", data] if data else [])
    args += ["--limit", str(limit)] if limit else []
    report = json.loads(sentiment(*args))
    keys = ("examples", "accuracy", "balanced_accuracy", "f1", "ece", "ece_floor", "mean_confidence")
    return {k: report[k] for k in keys}


def calibration_rows(models: list[str], seeds: list[int], data: str | None, folder: Path) -> list[dict]:
    rows = []
    for model in models:
        for seed in seeds:
            flags, limit = RUNS[model]
            flags = flags + ["--seed", str(seed)] + (["--data", data] if data else [])
            row = {"model": model, "seed": seed, "cpu": cpu_model()}
            for name, extra in (("plain", ["--no-calibrate"]), ("calibrated", [])):
                started = time.perf_counter()
                run = train(folder / f"{model}-{seed}-{name}", *flags, *extra)
                row[f"{name}_train_s"] = round(time.perf_counter() - started, 1)
                row[name] = {"imdb": evaluate(run, data, limit), "short": evaluate(run, str(SHORT))}
                if name == "calibrated":
                    record = json.loads((run / "calibration.json").read_text())
                    row["temperature"] = record["temperature"]
                    row["maximum_likelihood"] = record.get("maximum_likelihood", record["temperature"])
                    row["val_examples"] = record["examples"]
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def skewed(examples, neg: int, pos: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    by = [[ex for ex in examples if ex.label == c] for c in (0, 1)]
    picked = [by[0][i] for i in rng.choice(len(by[0]), neg, replace=False)]
    picked += [by[1][i] for i in rng.choice(len(by[1]), pos, replace=False)]
    return [picked[i] for i in rng.permutation(len(picked))]


def class_weight_rows(data: str | None, folder: Path) -> list[dict]:
    from sentiment.text.corpus import load_corpus

    corpus = load_corpus(data)
    train_csv, test_csv = folder / "skewed-train.csv", folder / "skewed-test.csv"
    _write_csv(train_csv, skewed(corpus.train, 150, 1350, 0))
    _write_csv(test_csv, skewed(corpus.test, 100, 900, 1))
    rows = []
    for model, extra in (("linear", []), ("textcnn", ["--epochs", "3"])):
        row = {"model": model, "cpu": cpu_model()}
        for weights in ("none", "auto"):
            run = train(folder / f"cw-{model}-{weights}", "--model", model, "--data", str(train_csv), "--test-data",
                        str(test_csv), "--class-weights", weights, *extra)  # fmt: skip
            row[weights] = evaluate(run, str(test_csv))
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def machine_line(rows: list[dict]) -> str:
    """The machines `rows` were measured on (each row records its own)."""
    machines = ", ".join(sorted({r["cpu"] for r in rows if r.get("cpu")})) or cpu_model()
    return f"Machine: {machines}; each family's precision (`--precision auto`)."


def calibration_table(rows: list[dict]) -> str:
    lines = [
        "| run | seed | T (maximum likelihood) | IMDb test: ECE as trained | ECE calibrated | floor "
        "| mean confidence / accuracy | short reviews: ECE as trained | ECE calibrated | floor "
        "| mean confidence / accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p, c = r["plain"], r["calibrated"]
        ml = r.get("maximum_likelihood", r["temperature"])
        floor = {k: c[k].get("ece_floor", float("nan")) for k in ("imdb", "short")}
        lines.append(
            f"| {NAMES[r['model']]} | {r.get('seed', 0)} | {r['temperature']:.2f} ({ml:.2f}) "
            f"| {p['imdb']['ece']:.3f} | **{c['imdb']['ece']:.3f}** | {floor['imdb']:.3f} "
            f"| {c['imdb']['mean_confidence']:.3f} / {c['imdb']['accuracy']:.3f} ({c['imdb']['examples']:,} reviews) "
            f"| {p['short']['ece']:.3f} | **{c['short']['ece']:.3f}** | {floor['short']:.3f} "
            f"| {c['short']['mean_confidence']:.3f} / {c['short']['accuracy']:.3f} |"
        )
    return "\n".join(lines)


def class_weight_table(rows: list[dict]) -> str:
    lines = [
        "| model | weights | accuracy | balanced accuracy | macro-F1 |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        for w in ("none", "auto"):
            e = r[w]
            lines.append(f"| {r['model']} | {w} | {e['accuracy']:.3f} | {e['balanced_accuracy']:.3f} | {e['f1']:.3f} |")
    return "\n".join(lines)


def sections(calibration: list[dict], weights: list[dict]) -> tuple[str, str]:
    """The calibration and class-weight tables with their notes, as the docs hold them."""
    cal = (
        f"{calibration_table(calibration)}\n\nECE: 15 equal-width bins of the top probability. T: the temperature "
        f"fitted on the validation split (above 1: the run was overconfident), and in brackets the "
        "maximum-likelihood T, before the prior drew it towards 1. Floor: the ECE a perfectly calibrated model with "
        "the calibrated run's probabilities would show on that many examples (`ece_floor`). "
        f"{machine_line(calibration)} `python -m benchmarks.calibration --readme`."
    )
    cw = (
        f"{class_weight_table(weights)}\n\nTrained on 1,500 IMDb reviews (150 negative), scored on 1,000 "
        f"(100 negative). {machine_line(weights)}"
    )
    return cal, cw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="IMDb folder or archive (default: as sentiment finds it)")
    ap.add_argument("--models", default="linear,textcnn,transformer")
    ap.add_argument("--seeds", default="0,1,2", help="seeds per model (each a run as trained and one calibrated)")
    ap.add_argument("--skip-class-weights", action="store_true")
    ap.add_argument("--table-only", action="store_true", help="run nothing: the tables from the results file")
    ap.add_argument("--readme", action="store_true")
    args = ap.parse_args()
    saved = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if args.table_only:
        calibration, weights = saved.get("calibration", []), saved.get("class_weights", [])
    else:
        with tempfile.TemporaryDirectory(prefix="calibration-") as tmp:
            folder = Path(tmp)
            models = [m for m in args.models.split(",") if m]
            seeds = [int(x) for x in args.seeds.split(",") if x]
            fresh = calibration_rows(models, seeds, args.data, folder)
            kept = [kept_row(r, saved) for r in saved.get("calibration", []) if r["model"] not in models]
            order = list(RUNS)
            calibration = sorted(kept + fresh, key=lambda r: order.index(r["model"]))
            RESULTS.write_text(json.dumps({**saved, "cpu": cpu_model(), "calibration": calibration}, indent=1) + "\n")
            weights = (
                [kept_row(r, saved) for r in saved.get("class_weights", [])]
                if args.skip_class_weights
                else class_weight_rows(args.data, folder)
            )
        result = {"cpu": cpu_model(), "calibration": calibration, "class_weights": weights}
        RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    cal, cw = sections(calibration, weights)
    print(cal + "\n\n" + cw)
    if args.readme:
        replace_section("bench-calibration", cal)
        if weights:
            replace_section("bench-class-weights", cw)


if __name__ == "__main__":
    main()
