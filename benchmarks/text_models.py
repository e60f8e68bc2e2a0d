"""Every text family side by side on one split: linear (TF-IDF + logistic regression), TextCNN,
BiRNN, fastText and the transformer (all-MiniLM-L6-v2), each with its family's defaults, each in its
own process (`sentiment train`), so the figures are what a user gets.

    python -m benchmarks.text_models [--data PATH] [--models linear,textcnn,birnn,fasttext,transformer]
                                     [--limit-train 5000 --limit-test 5000] [--target rating] [--readme]

The default split is the subset protocol that fits a 2-core CPU: 5,000 / 5,000 balanced reviews,
seed 0; `--limit-train 0 --limit-test 0` means full IMDb. TextCNN and BiRNN use the words
tokenizer (their best, see Results). Writes benchmarks/results/text_models.json and, with
`--readme`, the table between docs/results.md's `bench-text-models` markers; a run of some models
replaces only their rows. `--target rating` trains each family on IMDb's star ratings instead
(test MAE, RMSE and Spearman; the `bench-text-models-rating` table).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.accuracy import cpu_model
from benchmarks.child import run_measured
from benchmarks.readme import merge_results, replace_section

RESULTS = Path(__file__).resolve().parent / "results" / "text_models.json"
EXTRA = {"textcnn": ["--tokenizer", "words"], "birnn": ["--tokenizer", "words"]}
# On full IMDb (25,000 reviews) two epochs of the transformer fit about two hours of a 2-core CPU.
FULL_EXTRA = {"transformer": ["--epochs", "2"]}


def run_one(model: str, data: str, limit_train: int, limit_test: int, out: Path, target: str = "label") -> dict:
    args = [sys.executable, "-m", "sentiment", "train", "--model", model, "--data", data, "--seed", "0"]
    args += ["--target", target] if target != "label" else []
    args += ["--limit-train", str(limit_train)] if limit_train else []
    args += ["--limit-test", str(limit_test)] if limit_test else []
    args += [*EXTRA.get(model, []), *(FULL_EXTRA.get(model, []) if not limit_train else [])]
    args += ["--out", str(out / model), "--quiet"]
    started = time.perf_counter()
    code, _, err, peak_mb = run_measured(args)
    if code != 0:
        raise SystemExit(f"{model}: {err.strip().splitlines()[-1]}")
    run = (out / model / "latest").resolve()
    summary = json.loads((run / "summary.json").read_text())
    config = json.loads((run / "config.json").read_text())["config"]
    figures = (
        {"target": "rating", **{f"test_{k}": summary[f"test_{k}"] for k in ("mae", "rmse", "spearman")}}
        if target == "rating"
        else {"test_acc": summary["test_acc"]}
    )
    return {
        "model": model,
        **figures,
        "epochs": summary["epochs"],
        "train_s": round(summary["epoch_s"] * summary["epochs"], 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "train_examples_per_s": summary["train_examples_per_s"],
        "train": summary["train_examples"],
        "test": summary["test_examples"],
        "precision": summary.get("precision", "fp32"),
        "peak_rss_mb": peak_mb,
        "max_len": config.get("max_len"),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    }


def _measured(results: list[dict]) -> str:
    """Where and when the rows were measured, each machine once."""
    return "; ".join(sorted({f"{r['cpu']}, {r['threads']} threads, measured {r['date']}" for r in results}))


def table(results: list[dict]) -> str:
    rows = [
        "| model | data (train / test) | test acc | epochs | train s | whole run s | train examples/s | precision "
        "| peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r['model']} | {r['train']:,} / {r['test']:,} | {r['test_acc']:.4f} | {r['epochs']} | "
            f"{r['train_s']:.0f} | {r['wall_s']:.0f} | {r['train_examples_per_s']:.0f} | {r['precision']} | "
            f"{format(r['peak_rss_mb'], ',') if r.get('peak_rss_mb') else ''} |"
        )
    rows += ["", f"Each family's defaults, seed 0; {_measured(results)}. Re-run: `make bench-text-models`."]
    return "\n".join(rows)


def rating_table(results: list[dict]) -> str:
    rows = [
        "| model | data (train / test) | test MAE | RMSE | Spearman | epochs | whole run s | precision | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r['model']} | {r['train']:,} / {r['test']:,} | {r['test_mae']:.3f} | {r['test_rmse']:.3f} | "
            f"{r['test_spearman']:.3f} | {r['epochs']} | {r['wall_s']:.0f} | {r['precision']} | "
            f"{format(r['peak_rss_mb'], ',') if r.get('peak_rss_mb') else ''} |"
        )
    rows += ["", f"Each family's defaults with `--target rating`, seed 0; {_measured(results)}."]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("SENTIMENT_IMDB"))
    ap.add_argument("--models", default="linear,textcnn,birnn,fasttext,transformer")
    ap.add_argument("--limit-train", type=int, default=5000)
    ap.add_argument("--limit-test", type=int, default=5000)
    ap.add_argument("--readme", action="store_true")
    ap.add_argument("--target", choices=("label", "rating"), default="label", help="rating: IMDb's stars")
    ap.add_argument("--out", help="keep the run folders here (default: a temporary folder)")
    a = ap.parse_args()
    if not a.data:
        raise SystemExit("name the IMDb archive with --data or $SENTIMENT_IMDB")
    with tempfile.TemporaryDirectory() as tmp:
        fresh = []
        for model in [m for m in a.models.split(",") if m]:
            print(f"== {model}", flush=True)
            fresh.append(run_one(model, a.data, a.limit_train, a.limit_test, Path(a.out or tmp), a.target))
            print(json.dumps(fresh[-1]), flush=True)
    results = merge_results(RESULTS, fresh, key=lambda r: (r["model"], r["train"], r["test"], r.get("target", "label")))
    order = ["linear", "textcnn", "birnn", "fasttext", "transformer"]
    results.sort(key=lambda r: (-r["train"], order.index(r["model"]) if r["model"] in order else 99))
    labels = [r for r in results if r.get("target", "label") == "label"]
    ratings = [r for r in results if r.get("target") == "rating"]
    print(table(labels) if a.target == "label" else rating_table(ratings))
    if a.readme:
        replace_section("bench-text-models", table(labels))
        if ratings:
            replace_section("bench-text-models-rating", rating_table(ratings))


if __name__ == "__main__":
    main()
