"""ONNX exports against the torch path: accuracy, agreement and speed of each backend, per run.

    python -m benchmarks.export --run RUN [--run RUN ...] [--reviews 2000] [--speed 1000] [--readme]

For each run folder: `sentiment export RUN --format onnx --quantize int8 --force` (timed), then, on
one balanced draw of IMDb test reviews (`--reviews`), each backend's accuracy, and the largest
difference of its probabilities from the torch model's in fp32 (the export's contract) and from
the torch path as `predict` runs it (the run's precision: bf16 on a CPU with native bfloat16). Speed
is `predict`'s work on a file of `--speed` reviews (encoding, batches, the network; the model loaded
and warmed up first), in reviews/s, one backend after another in one process. Writes
benchmarks/results/export.json and, with `--readme`, the table between the `bench-export` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from benchmarks.accuracy import cpu_model
from benchmarks.readme import merge_results, replace_section

RESULTS = Path(__file__).resolve().parent / "results" / "export.json"
BACKENDS = ("torch", "torch-fp32", "onnx", "onnx-int8")


def draw(data: str | None, n: int) -> tuple[list[str], list[str]]:
    """A balanced draw of `n` IMDb test reviews: their texts and their labels' names."""
    from sentiment.text.corpus import balanced_subset, load_corpus

    corpus = load_corpus(data)
    examples = balanced_subset(corpus.test, n, 2, 2026)
    return [ex.text for ex in examples], [corpus.classes[ex.label] for ex in examples]


def measure(run: str, texts: list[str], labels, speed: int) -> dict:
    import numpy as np

    import sentiment
    from sentiment import export
    from sentiment.runtime import Runtime

    started = time.perf_counter()
    files = export.onnx(run, quantize="int8", force=True, echo=lambda _: None)
    out = {
        "export_s": round(time.perf_counter() - started, 1),
        "sizes_mb": {p.name: round(p.stat().st_size / 1e6, 1) for p in files if p.suffix == ".onnx"},
        "backends": {},
    }
    probs = {}
    for backend in BACKENDS:
        clf = sentiment.load(run, backend=backend.replace("torch-fp32", "torch"))
        if backend == "torch-fp32":
            clf.runtime = Runtime.resolve("cpu", "fp32")
        clf.probabilities(texts[:32])  # warm-up
        began = time.perf_counter()
        clf.probabilities(texts[:speed])
        seconds = time.perf_counter() - began
        p = np.asarray(clf.probabilities(texts))
        probs[backend] = p
        out["backends"][backend] = {
            "precision": clf.precision
            if backend.startswith("torch")
            else {"onnx": "fp32", "onnx-int8": "int8"}[backend],
            "accuracy": float((p.argmax(1) == labels).mean()),
            "reviews_per_s": round(speed / seconds, 1),
        }
    for backend in BACKENDS:
        row = out["backends"][backend]
        row["max_diff_fp32"] = float(np.abs(probs[backend] - probs["torch-fp32"]).max())
        row["max_diff_predict"] = float(np.abs(probs[backend] - probs["torch"]).max())
        row["labels_differ"] = int((probs[backend].argmax(1) != probs["torch"].argmax(1)).sum())
    return out


def table(results: list[dict]) -> str:
    head = ("| run | model | backend | precision | file MB | accuracy | labels differ from predict | "
            "max prob. diff vs torch fp32 | reviews/s | speed vs torch |")  # fmt: skip
    rows = [head, "|---" * 10 + "|"]
    for r in results:
        torch_speed = r["backends"]["torch"]["reviews_per_s"]
        for backend, b in r["backends"].items():
            size = {"onnx": "model.onnx", "onnx-int8": "model-int8.onnx"}.get(backend)
            cells = [r["run"], r["model"], backend, b["precision"], r["sizes_mb"].get(size, "—") if size else "—"]
            cells += [f"{b['accuracy']:.4f}", b["labels_differ"], f"{b['max_diff_fp32']:.1e}"]
            cells += [f"{b['reviews_per_s']:.0f}", f"{b['reviews_per_s'] / torch_speed:.2f}x"]
            rows.append("| " + " | ".join(map(str, cells)) + " |")
    machines = sorted({f"{r['cpu']}, {r['cores']} cores, {r['date']}" for r in results})
    rows += [
        "",
        f"Accuracy on {results[0]['reviews']:,} balanced IMDb test reviews; speed: predicting "
        f"{results[0]['speed_reviews']:,} of them after a warm-up; torch is the path `predict` takes (the "
        f"run's precision), torch-fp32 the same model in fp32, the reference the export is checked "
        f"against. {'; '.join(machines)}. Re-run: `make bench-export RUNS=...`.",
    ]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, help="a text run folder (repeat for several)")
    ap.add_argument("--data", default=os.environ.get("SENTIMENT_IMDB"))
    ap.add_argument("--reviews", type=int, default=2000, help="test reviews the accuracy is measured on")
    ap.add_argument("--speed", type=int, default=1000, help="reviews the speed is measured on")
    ap.add_argument("--readme", action="store_true")
    a = ap.parse_args()
    import numpy as np

    from sentiment.runs import Run

    texts, names = draw(a.data, a.reviews)
    fresh = []
    for run in a.run:
        meta = Run.open(run).read_json("config.json")
        labels = np.asarray([meta["classes"].index(name) for name in names])
        result = measure(run, texts, labels, a.speed)
        result |= {
            "run": Run.open(run).path.name,
            "model": meta["config"].get("model"),
            "reviews": a.reviews,
            "speed_reviews": a.speed,
            "cpu": cpu_model(),
            "cores": len(os.sched_getaffinity(0)),
            "date": time.strftime("%Y-%m-%d"),
        }
        print(json.dumps(result), flush=True)
        fresh.append(result)
    results = merge_results(RESULTS, fresh, key=lambda r: r["run"])
    print(table(results))
    if a.readme:
        replace_section("bench-export", table(results))


if __name__ == "__main__":
    main()
