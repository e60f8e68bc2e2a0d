"""IMDb-trained runs on short texts from elsewhere: benchmarks/data/short_reviews.csv (300 one-sentence
reviews of movies, products, restaurants and books, written for this project; 150 positive, 150
negative). Each run predicts every sentence with `sentiment predict --file --json`, as a user would.

    python -m benchmarks.short_texts --run RUN [--run RUN ...] [--readme]

Writes benchmarks/results/short_texts.json and, with `--readme`, the table between docs/results.md's
`bench-short-texts` markers (rows of other runs are kept).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from benchmarks.accuracy import cpu_model
from benchmarks.readme import merge_results, replace_section
from benchmarks.serve import predict_file

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "short_reviews.csv"
RESULTS = HERE / "results" / "short_texts.json"
DOMAINS = ("movie", "product", "restaurant", "book")


def rows() -> list[dict]:
    with DATA.open(newline="") as f:
        return list(csv.DictReader(f))


def score(run: str, data: list[dict]) -> dict:
    got = [p["label"] for p in predict_file(run, [r["text"] for r in data])]
    right = [g == r["label"] for g, r in zip(got, data, strict=True)]
    meta = json.loads((Path(run) / "config.json").read_text())
    summary = json.loads((Path(run) / "summary.json").read_text())
    result = {
        "run": Path(run).resolve().name,
        "model": meta["config"].get("model"),
        "imdb_test_acc": summary["test_acc"],
        "train": summary.get("train_examples"),
        "accuracy": round(sum(right) / len(right), 4),
    }
    for domain in DOMAINS:
        mine = [ok for ok, r in zip(right, data, strict=True) if r["domain"] == domain]
        result[domain] = round(sum(mine) / len(mine), 4)
    return result | {"cpu": cpu_model(), "date": time.strftime("%Y-%m-%d")}


def table(results: list[dict]) -> str:
    lines = [
        "| run | model | trained on | IMDb test acc | short texts acc | " + " | ".join(DOMAINS) + " |",
        "|---" * (5 + len(DOMAINS)) + "|",
    ]
    for r in results:
        cells = [
            r["run"],
            r["model"],
            f"{r['train']:,} IMDb reviews",
            f"{r['imdb_test_acc']:.4f}",
            f"{r['accuracy']:.3f}",
        ]
        lines.append("| " + " | ".join(cells + [f"{r[d]:.3f}" for d in DOMAINS]) + " |")
    data = rows()
    n = {d: sum(1 for r in data if r["domain"] == d) for d in DOMAINS}
    lines += [
        "",
        f"{len(data)} sentences ({', '.join(f'{d} {k}' for d, k in n.items())}), half positive; measured "
        f"{', '.join(sorted({r['date'] for r in results}))}. Re-run: `python -m benchmarks.short_texts --run RUN ...`.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", default=[], help="a text run folder trained on IMDb (repeat)")
    ap.add_argument("--readme", action="store_true")
    a = ap.parse_args()
    data = rows()
    fresh = []
    for run in a.run:
        fresh.append(score(run, data))
        print(json.dumps(fresh[-1]), flush=True)
    order = ["linear", "textcnn", "birnn", "transformer"]
    results = sorted(merge_results(RESULTS, fresh, key=lambda r: r["run"]), key=lambda r: order.index(r["model"]))
    print(table(results))
    if a.readme:
        replace_section("bench-short-texts", table(results))


if __name__ == "__main__":
    main()
