"""bf16 autocast against fp32 on a CPU that computes bfloat16 natively: train TextCNN and BiRNN on full
IMDb (words tokenizer, each family's defaults) with several seeds in each precision, and record the
test accuracies in benchmarks/results/precision.json and docs/results.md. The table is what decides which
families `--precision auto` may run in bf16 on CPU (each family's `Task.cpu_bf16`).

    python -m benchmarks.precision [--data PATH] [--models birnn,textcnn] [--seeds 0,1,2] [--threads 1]

Every finished run is saved at once, and a second call skips what the results file already holds,
so the benchmark can be stopped and continued.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from benchmarks.accuracy import TEXTBOOK, cpu_model, threads
from benchmarks.readme import replace_section
from sentiment.config import text_config
from sentiment.fsutil import atomic_write_json
from sentiment.recipe import fine_tune
from sentiment.runtime import cpu_has_bf16

RESULTS = Path(__file__).resolve().parent / "results" / "precision.json"


def load(path: Path = RESULTS) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def table(results: list[dict]) -> str:
    rows = [
        "| model | precision | seeds | test acc per seed | mean | epoch s (median) |",
        "|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["model"], r["precision"]), []).append(r)
    for (model, precision), runs in sorted(groups.items()):
        runs.sort(key=lambda r: r["seed"])
        accs = [r["test_acc"] for r in runs]
        per_seed = ", ".join(f"{a:.4f} ({r['seed']})" for a, r in zip(accs, runs, strict=True))
        rows.append(
            f"| {model} | {precision} | {len(runs)} | {per_seed} | {statistics.mean(accs):.4f} | "
            f"{statistics.median(r['epoch_s'] for r in runs):.0f} |"
        )
    first = results[0]
    rows.append("")
    rows.append(
        f"Full IMDb (25,000 / 25,000), words tokenizer, each family's defaults, test accuracy after the last "
        f"epoch (seed in brackets); {first['cpu']}, {threads(first['threads'])}, "
        f"{'native' if first['native_bf16'] else 'emulated'} bf16, torch {first['torch']}, measured "
        f"{first['date']}. Re-run: `make bench-precision`."
    )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("SENTIMENT_IMDB"))
    ap.add_argument("--models", default="birnn,textcnn")
    ap.add_argument("--precisions", default="bf16,fp32")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    ap.add_argument("--out", default="runs/bench-precision")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--limit-train", type=int, help="a smaller trial of the benchmark itself")
    ap.add_argument("--limit-test", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    results = load(args.results)
    done = {(r["model"], r["precision"], r["seed"]) for r in results}
    # Seed by seed, so a stopped benchmark has compared the precisions on the seeds it finished.
    for seed in (int(s) for s in args.seeds.split(",")):
        for model in args.models.split(","):
            for precision in args.precisions.split(","):
                if (model, precision, seed) in done:
                    continue
                overrides = {"data": args.data, "tokenizer": "words", "seed": seed, "precision": precision, **TEXTBOOK}
                overrides |= {
                    k: v for k in ("limit_train", "limit_test", "epochs") if (v := getattr(args, k)) is not None
                }
                cfg = text_config(model, None, overrides | {"out": args.out})
                print(f"== {model} {precision} seed {seed}", flush=True)
                run = fine_tune(cfg, progress=False)
                summary = json.loads(run.file("summary.json").read_text())
                result = {
                    "model": model,
                    "precision": precision,
                    "seed": seed,
                    "test_acc": summary["test_acc"],
                    "per_epoch_test_acc": [m["test_acc"] for m in run.metrics],
                    "epoch_s": summary["epoch_s"],
                    "run": run.path.name,
                    "cpu": cpu_model(),
                    "native_bf16": cpu_has_bf16(),
                    "threads": torch.get_num_threads(),
                    "torch": torch.__version__,
                    "date": time.strftime("%Y-%m-%d"),
                }
                # Read again before writing: two calls with different --models may share the file.
                results = load(args.results) + [result]
                atomic_write_json(args.results, results)
                print(json.dumps({k: result[k] for k in ("model", "precision", "seed", "test_acc")}), flush=True)
    results = load(args.results)
    if results and not args.no_readme:
        replace_section("bench-precision", table(results))
    if results:
        print(table(results))


if __name__ == "__main__":
    main()
