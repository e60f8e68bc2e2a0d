"""Time `sentiment data-stats --json` on the IMDb archive with each tokenizer and record what it reports
(review lengths, vocabulary, GloVe coverage) in benchmarks/results/data_stats.json and docs/results.md.

    python -m benchmarks.data_stats [--data PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.accuracy import cpu_model
from benchmarks.readme import replace_section
from sentiment.fsutil import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results" / "data_stats.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("SENTIMENT_IMDB"))
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args()
    results = []
    for tokenizer in ("basic", "words"):
        cmd = [sys.executable, "-m", "sentiment", "data-stats", "--json", "--tokenizer", tokenizer]
        if args.data:
            cmd += ["--data", args.data]
        start = time.perf_counter()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        wall = time.perf_counter() - start
        results.append(json.loads(out) | {"wall_s": round(wall, 1)})
        print(f"{tokenizer}: {wall:.1f} s", flush=True)
    atomic_write_json(RESULTS, {"cpu": cpu_model(), "cores": os.cpu_count(), "runs": results})
    rows = [
        "| tokenizer | vocab (min_freq 5) | vocab words GloVe lacks | training tokens GloVe covers "
        "| tokens p50 / p90 / p99 | reviews > 500 tokens | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ln = r["lengths"]["train"]
        rows.append(
            f"| `{r['tokenizer']}` | {r['vocab_size']:,} | {r['oov_words']:,} ({1 - r['vocab_coverage']:.1%}) "
            f"| {r['token_coverage']:.1%} | {ln['p50']} / {ln['p90']} / {ln['p99']} "
            f"| {ln['share_over_500']:.1%} | {r['wall_s']} |"
        )
    rows.append("")
    rows.append(
        f"IMDb train split (25,000 reviews), GloVe 6B 50-d; {cpu_model()}, {os.cpu_count()} cores, "
        f"measured {time.strftime('%Y-%m-%d')}. Re-run: `make bench-data`."
    )
    table = "\n".join(rows)
    if not args.no_readme:
        replace_section("data-stats", table)
    print(table)


if __name__ == "__main__":
    main()
