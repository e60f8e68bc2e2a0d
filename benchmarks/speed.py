"""Reference pipeline vs `sentiment`, side by side in one benchmark run, so the figures are ratios taken
on the same machine at the same time.

For each model, one child process per side (so each side's peak memory is its own):
  reference  python -m benchmarks.reference (the textbook recipe)
  ours       sentiment's train_text with the same data, model and hyper-parameters, cache off (cold
             preparation), then a second preparation from the cache
Training reviews/s is over whole epochs, batching included. Results go to
benchmarks/results/speed.json and, with --readme, to the README.

    python -m benchmarks.speed [--data PATH] [--models textcnn,birnn] [--epochs 1] [--limit-train N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.accuracy import cpu_model
from benchmarks.readme import replace_section
from sentiment.fsutil import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results" / "speed.json"


def _child(args: list[str], env: dict) -> dict:
    """Run a child process that prints one JSON object (its peak RSS included) as its last stdout line."""
    out = subprocess.run([sys.executable, *args], check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def ours_main(argv: list[str]) -> None:
    """The `ours` side, run as a child: train, then prepare again from the cache; print JSON."""
    import resource

    from sentiment.config import text_config
    from sentiment.text.pipeline import train_text
    from sentiment.text.prepared import prepare_text

    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--data")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--limit-train", type=int)
    ap.add_argument("--limit-test", type=int)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    overrides = {
        "data": a.data,
        "epochs": a.epochs,
        "limit_train": a.limit_train,
        "limit_test": a.limit_test,
        "out": a.out,
    }
    cfg = text_config(a.model, None, overrides)
    start = time.perf_counter()
    prepare_text(cfg)  # cold: builds the cache entry
    cold = time.perf_counter() - start
    start = time.perf_counter()
    prepare_text(cfg)
    cached = time.perf_counter() - start
    run = train_text(cfg, progress=False, echo=lambda _: None)
    summary = json.loads(run.file("summary.json").read_text())
    print(
        json.dumps(
            {
                "prepare_seconds_cold": round(cold, 2),
                "prepare_seconds_cached": round(cached, 2),
                "train_examples_per_s": summary["train_examples_per_s"],
                "epoch_s": summary["epoch_s"],
                "test_acc": summary["test_acc"],
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            }
        )
    )


def reference_side(model: str, a, env: dict) -> dict:
    args = [
        "-c",
        (
            "import json, resource, sys; from benchmarks import reference as r; "
            f"res = r.run({model!r}, {a.data!r}, epochs={a.epochs}, limit_train={a.limit_train}, "
            f"limit_test={a.limit_test}); "
            "ep = res['epochs']; "
            "print(json.dumps({'prepare_seconds_cold': round(res['prepare_seconds'], 2), "
            "'train_examples_per_s': round(sum(e['examples'] for e in ep) / sum(e['seconds'] for e in ep), 1), "
            "'epoch_s': round(sum(e['seconds'] for e in ep) / len(ep), 2), 'test_acc': res['test_acc'], "
            "'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))"
        ),
    ]
    return _child(args, env)


def table(results: list[dict], meta: dict) -> str:
    rows = [
        "| model | pipeline | train reviews/s | epoch s | prepare s (cold / cached) | peak RSS MB | test acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for side in ("reference", "ours"):
            s = r[side]
            cached = s.get("prepare_seconds_cached")
            prep = f"{s['prepare_seconds_cold']}" + (f" / {cached}" if cached is not None else "")
            rows.append(
                f"| {r['model']} | {side} | {s['train_examples_per_s']:.0f} | {s['epoch_s']:.0f} | {prep} "
                f"| {s['peak_rss_mb']} | {s['test_acc']:.4f} |"
            )
        rows.append(f"| {r['model']} | **speed-up** | **{r['speedup']:.2f}x** | | | | |")
    rows += [
        "",
        f"{meta['epochs']} epoch(s), {meta['train']} train / {meta['test']} test reviews; {meta['cpu']}, "
        f"{meta['threads']} threads, measured {meta['date']}. Re-run: `python -m benchmarks.speed`.",
    ]
    return "\n".join(rows)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_ours":
        return ours_main(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("SENTIMENT_IMDB"))
    ap.add_argument("--models", default="textcnn,birnn")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--limit-train", type=int, default=None)
    ap.add_argument("--limit-test", type=int, default=None)
    ap.add_argument("--readme", action="store_true", help="write the table into the README")
    a = ap.parse_args()
    if not a.data:
        ap.error("give --data PATH or set SENTIMENT_IMDB")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in a.models.split(","):
            env = {**os.environ, "SENTIMENT_DATA_DIR": str(Path(tmp) / f"data-{model}")}  # a cold cache each
            ref = reference_side(model, a, env)
            ours_args = [
                "-m",
                "benchmarks.speed",
                "_ours",
                "--model",
                model,
                "--data",
                a.data,
                "--epochs",
                str(a.epochs),
                "--out",
                str(Path(tmp) / "runs"),
            ]
            for flag, value in (("--limit-train", a.limit_train), ("--limit-test", a.limit_test)):
                if value:
                    ours_args += [flag, str(value)]
            ours = _child(ours_args, env)
            results.append(
                {
                    "model": model,
                    "reference": ref,
                    "ours": ours,
                    "speedup": ours["train_examples_per_s"] / ref["train_examples_per_s"],
                }
            )
            print(json.dumps(results[-1]), flush=True)
    import torch

    meta = {
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
        "epochs": a.epochs,
        "train": a.limit_train or 25_000,
        "test": a.limit_test or 25_000,
    }
    atomic_write_json(RESULTS, {"meta": meta, "results": results})
    text = table(results, meta)
    if a.readme:
        replace_section("bench-speed", text)
    print(text)


if __name__ == "__main__":
    main()
