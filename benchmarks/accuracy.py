"""Train TextCNN and BiRNN for 5 epochs on the full IMDb train split, with each tokenizer, and record
test accuracy, epoch time and examples/s in benchmarks/results/accuracy.json and docs/results.md.

    python -m benchmarks.accuracy [--data PATH] [--models textcnn,birnn] [--tokenizers words,basic]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from benchmarks.readme import replace_section
from sentiment.config import text_config
from sentiment.fsutil import atomic_write_json
from sentiment.recipe import fine_tune

RESULTS = Path(__file__).resolve().parent / "results" / "accuracy.json"


# The reference chapter's protocol, which these figures were measured with: every training review
# trained on (no validation split) and the test split scored after every epoch.
TEXTBOOK = {"val_fraction": 0.0, "test_each_epoch": True}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def kept_row(row: dict, saved: dict) -> dict:
    """A row read back from a results file, with the file's `cpu` where the row names none; its
    keys stay in their order, so rewriting the file leaves the row as it was."""
    return {**row, "cpu": row.get("cpu", saved.get("cpu"))}


def threads(n: int) -> str:
    return f"{n} thread" if n == 1 else f"{n} threads"


def table(results: list[dict]) -> str:
    rows = [
        "| model | tokenizer | test acc (epoch 5) | best epoch | epoch s | train reviews/s | vocab | OOV words |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r['model']} | {r['tokenizer']} | {r['test_acc']:.4f} | {r['best_test_acc']:.4f} | "
            f"{r['epoch_s']:.0f} | {r['train_examples_per_s']:.0f} | {r['vocab_size']:,} | {r['oov_words']:,} |"
        )
    first = results[0]
    rows.append("")
    rows.append(
        f"Full IMDb (25,000 train / 25,000 test), GloVe 6B 50-d, 5 epochs, reference hyper-parameters; "
        f"{first['device']} ({first['cpu']}, {threads(first['threads'])}), torch {first['torch']}, "
        f"measured {first['date']}. Re-run: `make bench-accuracy`."
    )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("SENTIMENT_IMDB"))
    ap.add_argument("--models", default="textcnn,birnn")
    ap.add_argument("--tokenizers", default="words,basic")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--out", default="runs/bench-accuracy")
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args()

    results = []
    for tokenizer in args.tokenizers.split(","):
        for model in args.models.split(","):
            cfg = text_config(
                model,
                None,
                {"data": args.data, "tokenizer": tokenizer, "epochs": args.epochs, "out": args.out, **TEXTBOOK},
            )
            print(f"== {model} / {tokenizer}", flush=True)
            run = fine_tune(cfg, progress=False)
            summary = json.loads(run.file("summary.json").read_text())
            results.append(
                summary
                | {
                    "run": str(run.path),
                    "per_epoch_test_acc": [m["test_acc"] for m in run.metrics],
                    "cpu": cpu_model(),
                    "threads": torch.get_num_threads(),
                    "torch": torch.__version__,
                    "date": time.strftime("%Y-%m-%d"),
                }
            )
            atomic_write_json(RESULTS, results)  # after every run, so a long benchmark keeps what it has
            print(
                json.dumps(
                    {
                        k: results[-1][k]
                        for k in ("model", "tokenizer", "test_acc", "best_test_acc", "epoch_s", "train_examples_per_s")
                    }
                ),
                flush=True,
            )
    if not args.no_readme:
        replace_section("bench-accuracy", table(results))
    print(table(results))


if __name__ == "__main__":
    main()
