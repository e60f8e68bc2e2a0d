"""Multi-label runs on real reviews: IMDb tagged from its reviewers' own stars, each family with
its defaults in its own process (`sentiment train --multi-label`), test figures from `evaluate`.

    python -m benchmarks.multilabel [--data PATH] [--models linear,textcnn] [--limit-train N]
                                    [--limit-test N] [--readme]
    python -m benchmarks.multilabel --write-tags FOLDER    # only the tags files, to train on by hand

The tags (`star_tags`): positive (7-10 stars) or negative (1-4), plus glowing (9-10) or scathing
(1-2): every review has one or two of four labels, two of them nested in the others. The tags
files are written from the archive once per run of this benchmark (train.jsonl, test.jsonl); the
default is full IMDb (25,000 / 25,000). Writes benchmarks/results/multilabel.json and, with
`--readme`, the table between docs/multilabel.md's `bench-multilabel` markers; a run of some
models replaces only their rows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.accuracy import cpu_model
from benchmarks.child import run_measured
from benchmarks.readme import merge_results, replace_section

RESULTS = Path(__file__).resolve().parent / "results" / "multilabel.json"
EXTRA = {"textcnn": ["--tokenizer", "words"], "birnn": ["--tokenizer", "words"]}


def star_tags(stars: int) -> list[str]:
    """A review's tags from its star rating (IMDb has 1-4 and 7-10)."""
    tags = ["positive"] if stars >= 7 else ["negative"]
    if stars >= 9:
        tags.append("glowing")
    elif stars <= 2:
        tags.append("scathing")
    return tags


def write_tags(data: str | None, folder: Path) -> tuple[Path, Path]:
    """IMDb's train and test splits as JSON Lines files of `{"text", "labels"}`."""
    from sentiment.text.corpus import load_corpus

    corpus = load_corpus(data)
    paths = []
    for split in ("train", "test"):
        path = folder / f"{split}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for ex in getattr(corpus, split):
                f.write(json.dumps({"text": ex.text, "labels": star_tags(ex.rating)}) + "\n")
        paths.append(path)
    return paths[0], paths[1]


def run_one(model: str, train: Path, test: Path, limit_train: int, limit_test: int, out: Path) -> dict:
    args = [sys.executable, "-m", "sentiment", "train", "--model", model, "--data", str(train)]
    args += ["--test-data", str(test), "--multi-label", "--seed", "0", *EXTRA.get(model, [])]
    args += ["--limit-train", str(limit_train)] if limit_train else []
    args += ["--limit-test", str(limit_test)] if limit_test else []
    args += ["--out", str(out / model), "--quiet"]
    started = time.perf_counter()
    code, _, err, peak_mb = run_measured(args)
    if code != 0:
        raise SystemExit(f"{model}: {err.strip().splitlines()[-1]}")
    wall = time.perf_counter() - started
    run = (out / model / "latest").resolve()
    summary = json.loads((run / "summary.json").read_text())
    code, report, err, _ = run_measured([sys.executable, "-m", "sentiment", "evaluate", "--run", str(run), "--json"])
    if code != 0:
        raise SystemExit(f"{model} evaluate: {err.strip().splitlines()[-1]}")
    report = json.loads(report)
    return {
        "model": model,
        "micro_f1": report["micro_f1"],
        "macro_f1": report["macro_f1"],
        "exact_match": report["exact_match"],
        "per_label_f1": {name: m["f1"] for name, m in report["per_label"].items()},
        "thresholds": summary["thresholds"],
        "epochs": summary["epochs"],
        "train": summary["train_examples"],
        "val": summary["val_examples"],
        "test": report["examples"],
        "wall_s": round(wall, 1),
        "peak_rss_mb": peak_mb,
        "precision": summary.get("precision", "fp32"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }


def table(results: list[dict]) -> str:
    labels = ["positive", "negative", "glowing", "scathing"]
    head = ["family", "train / val / test", "micro-F1", "macro-F1", "exact match", *(f"F1 {c}" for c in labels),
            "precision", "wall s", "peak RSS"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        f1 = " | ".join(f"{r['per_label_f1'][c]:.3f}" for c in labels)
        lines.append(
            f"| {r['model']} | {r['train']:,} / {r['val']:,} / {r['test']:,} | {r['micro_f1']:.4f} | "
            f"{r['macro_f1']:.4f} | {r['exact_match']:.4f} | {f1} | {r['precision']} | {r['wall_s']:.0f} | "
            f"{r['peak_rss_mb'] / 1024:.2f} GB |"
        )
    machines = sorted({f"{r['cpu']}, {r['cores']} cores, {r['date']}" for r in results})
    lines += ["", "Measured on: " + "; ".join(machines) + "."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="IMDb folder or archive (default: as sentiment finds it)")
    parser.add_argument("--models", default="linear,textcnn")
    parser.add_argument("--limit-train", type=int, default=0, help="0 = every training review")
    parser.add_argument("--limit-test", type=int, default=0, help="0 = every test review")
    parser.add_argument("--readme", action="store_true", help="write the table into docs/multilabel.md")
    parser.add_argument("--write-tags", default=None, help="only write train.jsonl and test.jsonl into this folder")
    args = parser.parse_args()
    if args.write_tags:
        folder = Path(args.write_tags)
        folder.mkdir(parents=True, exist_ok=True)
        for path in write_tags(args.data, folder):
            print(f"wrote {path}")
        return
    with tempfile.TemporaryDirectory(prefix="multilabel-") as tmp:
        folder = Path(tmp)
        train, test = write_tags(args.data, folder)
        fresh = []
        for model in args.models.split(","):
            row = run_one(model, train, test, args.limit_train, args.limit_test, folder / "runs")
            print(json.dumps(row), flush=True)
            fresh.append(row)
    results = merge_results(RESULTS, fresh, key=lambda r: (r["model"], r["train"], r["test"]))
    print(table(results))
    if args.readme:
        replace_section("bench-multilabel", table(results))


if __name__ == "__main__":
    main()
