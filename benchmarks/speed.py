"""Reference pipeline vs `sentiment`, side by side in one benchmark run.

For each model, two worker processes (so each side's peak memory is its own) take turns: the
reference prepares its data, then ours does; the reference trains and tests epoch 1, then ours does;
and so on. Neither side ever runs while the other does, and whatever else loads the machine loads
both sides alike, so the speed-up is a ratio taken under the same conditions.

  reference  benchmarks.reference: the textbook recipe (padded to 500, one TensorDataset, DataLoader)
  ours       sentiment's recipe.fine_tune with the same data, model and hyper-parameters: a cold
             preparation (cache empty), a second one from the cache, then training

Training reviews/s is that of the median epoch (each over a whole epoch, batching included). After
the models, `sentiment predict` is timed from a cold start (one sentence; median of 3) and with
--file over every test review. Results go to benchmarks/results/speed.json and, with --readme, to
docs/results.md; a run of some models replaces only their rows there.

    python -m benchmarks.speed [--data PATH] [--models textcnn,birnn] [--epochs 5] [--limit-train N]
                               [--limit-test N] [--device cpu|cuda] [--readme] [--predict-run RUN]

`--models "" --predict-run RUN` times only `sentiment predict`, with a trained TextCNN run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.accuracy import TEXTBOOK, cpu_model
from benchmarks.readme import replace_section
from sentiment.fsutil import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results" / "speed.json"
SENTENCE = "this movie is so great"


def _peak_rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _say(event: dict) -> None:
    print(json.dumps(event), flush=True)


def _wait() -> None:
    """Block until the parent says it is this side's turn."""
    if sys.stdin.readline().strip() != "go":
        sys.exit(0)


def _worker_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--data")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--limit-train", type=int)
    ap.add_argument("--limit-test", type=int)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--out")
    return ap.parse_args(argv)


def reference_worker(argv: list[str]) -> None:
    import torch
    from torch.utils.data import DataLoader

    from benchmarks import reference as r
    from sentiment.text.vectors import load_vectors

    a = _worker_args(argv)
    _wait()
    torch.manual_seed(0)
    data = r.prepare(a.data, limit_train=a.limit_train, limit_test=a.limit_test)
    model = r.build(a.model, data, load_vectors("glove.6B.50d")).to(a.device)
    optimizer = r.make_optimizer(a.model, model)
    train_loader = DataLoader(data.train, batch_size=r.BATCH_SIZE, shuffle=True)
    test_loader = DataLoader(data.test, batch_size=r.BATCH_SIZE)
    _say({"prepare_seconds_cold": round(data.seconds, 2), "train": len(data.train), "test": len(data.test)})
    for epoch in range(1, a.epochs + 1):
        _wait()
        m = r.train_epoch(model, train_loader, optimizer)
        if a.device == "cuda":
            torch.cuda.synchronize()
        acc = r.evaluate(model, test_loader) if epoch == a.epochs else None  # only the end result is compared
        _say({"epoch": epoch, "examples": m["examples"], "seconds": m["seconds"], "test_acc": acc})
    _say({"peak_rss_mb": _peak_rss_mb()})


def ours_worker(argv: list[str]) -> None:
    from sentiment.config import text_config
    from sentiment.recipe import fine_tune
    from sentiment.text.prepared import prepare_text

    a = _worker_args(argv)
    overrides = {
        "data": a.data,
        "epochs": a.epochs,
        "limit_train": a.limit_train,
        "limit_test": a.limit_test,
        "out": a.out,
        "device": a.device,
        "precision": a.precision,
        **TEXTBOOK,
    }
    cfg = text_config(a.model, None, overrides)
    _wait()
    start = time.perf_counter()
    prepare_text(cfg)  # the cache is empty: read, tokenize, build the vocabulary, store the ids
    cold = time.perf_counter() - start
    start = time.perf_counter()
    data = prepare_text(cfg)  # from the cache
    cached = time.perf_counter() - start
    _say(
        {
            "prepare_seconds_cold": round(cold, 2),
            "prepare_seconds_cached": round(cached, 2),
            "train": len(data.train),
            "test": len(data.test),
        }
    )
    del data
    _wait()

    def after_epoch(m: dict) -> None:
        _say({"epoch": m["epoch"], "examples": m["train_examples"], "seconds": m["train_s"], "test_acc": m["test_acc"]})
        if m["epoch"] < a.epochs:
            _wait()

    run = fine_tune(cfg, progress=False, echo=lambda _: None, after_epoch=after_epoch)
    summary = json.loads(run.file("summary.json").read_text())
    _say({"peak_rss_mb": _peak_rss_mb(), "run": str(run.path), "precision": summary.get("precision", "fp32")})


class Side:
    """One worker process, driven one step at a time."""

    def __init__(self, kind: str, argv: list[str], env: dict):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.speed", f"_{kind}", *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def step(self, *, go: bool = True) -> dict:
        if go:
            self.proc.stdin.write("go\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"a benchmark worker stopped (exit {self.proc.wait()}); run it alone to see why")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def _summarise(prep: dict, epochs: list[dict], final: dict) -> dict:
    """Reviews/s of the median epoch (each a whole epoch, batching included): a burst of other work
    on the machine during one epoch does not move it, as it would a mean."""
    rates = [e["examples"] / e["seconds"] for e in epochs]
    return {
        **{k: v for k, v in prep.items() if k.startswith("prepare")},
        "train_examples_per_s": round(statistics.median(rates), 1),
        "train_examples_per_s_by_epoch": [round(r, 1) for r in rates],
        "epoch_s": round(statistics.median(e["seconds"] for e in epochs), 2),
        "test_acc": epochs[-1]["test_acc"],
        "test_acc_by_epoch": [None if e["test_acc"] is None else round(e["test_acc"], 4) for e in epochs],
        "peak_rss_mb": final["peak_rss_mb"],
    }


def compare(model: str, a, tmp: Path) -> tuple[dict, dict]:
    """Both sides of one model, turn by turn; returns the result row and ours' final report."""
    argv = ["--model", model, "--data", a.data, "--epochs", str(a.epochs), "--device", a.device]
    for flag, value in (("--limit-train", a.limit_train), ("--limit-test", a.limit_test)):
        if value:
            argv += [flag, str(value)]
    env = {**os.environ, "SENTIMENT_DATA_DIR": str(tmp / f"data-{model}")}  # a cold cache for each model
    ref = Side("reference", argv, env)
    ours = Side("ours", [*argv, "--out", str(tmp / "runs"), "--precision", a.precision], env)
    preps = {"reference": ref.step(), "ours": ours.step()}
    epochs: dict[str, list] = {"reference": [], "ours": []}
    for epoch in range(1, a.epochs + 1):
        for name, side in (("reference", ref), ("ours", ours)):
            epochs[name].append(side.step())
            e = epochs[name][-1]
            acc = "" if e["test_acc"] is None else f", test acc {e['test_acc']:.4f}"
            print(f"{model} {name} epoch {epoch}: {e['examples'] / e['seconds']:.0f} reviews/s{acc}", flush=True)
    finals = {"reference": ref.step(go=False), "ours": ours.step(go=False)}
    ref.close()
    ours.close()
    row = {"model": model, "train": preps["ours"]["train"], "test": preps["ours"]["test"]}
    for name in ("reference", "ours"):
        row[name] = _summarise(preps[name], epochs[name], finals[name])
    row["ours"]["precision"] = finals["ours"]["precision"]
    row["speedup"] = round(row["ours"]["train_examples_per_s"] / row["reference"]["train_examples_per_s"], 2)
    return row, finals["ours"]


def _sentiment(args: list[str], env: dict) -> float:
    """Wall seconds of one `sentiment ...` command started from scratch."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sentiment", *args], check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def predict_figures(run: str, data: str, tmp: Path, env: dict) -> dict:
    from sentiment.text.imdb import read_imdb

    reviews = tmp / "test_reviews.txt"
    texts = [" ".join(ex.text.split()) for ex in read_imdb(data, "test")]
    reviews.write_text("\n".join(texts) + "\n", encoding="utf-8")
    cold = [_sentiment(["predict", "--run", run, SENTENCE], env) for _ in range(3)]
    file_s = _sentiment(["predict", "--run", run, "--file", str(reviews), "--json"], env)
    return {
        "run_model": json.loads((Path(run) / "config.json").read_text())["config"]["model"],
        "one_sentence_cold_s": round(statistics.median(cold), 2),
        "file_reviews": len(texts),
        "file_s": round(file_s, 2),
        "file_reviews_per_s": round(len(texts) / file_s, 1),
    }


def table(results: list[dict], predict: dict | None) -> str:
    rows = [
        "| model | pipeline | train reviews/s | epoch s | prepare s (cold / cached) | peak RSS MB | test acc "
        "| data (train / test, epochs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r["meta"]
        data = f"{m['train']:,} / {m['test']:,}, {m['epochs']}"
        for side in ("reference", "ours"):
            s = r[side]
            cached = s.get("prepare_seconds_cached")
            prep = f"{s['prepare_seconds_cold']}" + (f" / {cached}" if cached is not None else "")
            label = side if side == "reference" else f"ours ({s['precision']})"
            rows.append(
                f"| {r['model']} | {label} | {s['train_examples_per_s']:.0f} | {s['epoch_s']:.0f} | {prep} "
                f"| {s['peak_rss_mb']} | {s['test_acc']:.4f} | {data} |"
            )
        rows.append(f"| {r['model']} | **speed-up** | **{r['speedup']:.2f}x** | | | | | |")
    rows.append("")
    if predict:
        rows.append(
            f"`sentiment predict` ({predict['run_model']} run): one sentence from a cold start "
            f"{predict['one_sentence_cold_s']} s wall (median of 3); `--file` with {predict['file_reviews']:,} "
            f"reviews {predict['file_s']} s wall, {predict['file_reviews_per_s']:.0f} reviews/s (start-up included)."
        )
        rows.append("")
    machines = sorted({(r["meta"]["cpu"], r["meta"]["threads"], r["meta"]["device"]) for r in results})
    where = "; ".join(f"{cpu}, {threads} threads, device {device}" for cpu, threads, device in machines)
    dates = ", ".join(sorted({r["meta"]["date"] for r in results}))
    rows.append(
        f"{where}; reference and ours took turns, epoch by epoch; reviews/s and epoch s of the median epoch; "
        f"measured {dates}. Re-run: `make bench` (`python -m benchmarks.speed --models birnn ...` replaces one "
        f"model's rows)."
    )
    return "\n".join(rows)


def _merge(out: Path, results: list[dict], predict: dict | None) -> tuple[list[dict], dict | None]:
    """Earlier rows of other models stay: a run of one model replaces only that model's row."""
    try:
        old = json.loads(out.read_text())
    except (OSError, ValueError):
        return results, predict
    run = {r["model"] for r in results}
    kept = [r for r in old.get("results", []) if r.get("model") not in run and "meta" in r]
    order = {"textcnn": 0, "birnn": 1}
    merged = sorted(kept + results, key=lambda r: order.get(r["model"], 2))
    return merged, predict if predict is not None else old.get("predict")


def _meta(a, row: dict) -> dict:
    import torch

    return {
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "device": a.device if a.device == "cpu" else torch.cuda.get_device_name(0),
        "date": time.strftime("%Y-%m-%d"),
        "epochs": a.epochs,
        "train": row["train"],
        "test": row["test"],
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("_reference", "_ours"):
        worker = reference_worker if sys.argv[1] == "_reference" else ours_worker
        return worker(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("SENTIMENT_IMDB"))
    ap.add_argument("--models", default="textcnn,birnn")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--limit-train", type=int, default=None)
    ap.add_argument("--limit-test", type=int, default=None)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"), help="ours only")
    ap.add_argument("--out", default=str(RESULTS), help="results JSON")
    ap.add_argument("--readme", action="store_true", help="write the table into docs/results.md")
    ap.add_argument(
        "--predict-run", help="time `sentiment predict` with this TextCNN run folder instead of training one"
    )
    a = ap.parse_args()
    if not a.data:
        ap.error("give --data PATH or set SENTIMENT_IMDB")
    results, predict = [], None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if a.predict_run:
            predict = predict_figures(a.predict_run, a.data, tmp, dict(os.environ))
            print(json.dumps(predict), flush=True)
        for model in filter(None, a.models.split(",")):
            row, final = compare(model, a, tmp)
            row["meta"] = _meta(a, row)
            results.append(row)
            print(json.dumps(row), flush=True)
            if model == "textcnn" and not a.predict_run:
                env = {**os.environ, "SENTIMENT_DATA_DIR": str(tmp / "data-textcnn")}
                predict = predict_figures(final["run"], a.data, tmp, env)
                print(json.dumps(predict), flush=True)
    out = Path(a.out)
    results, predict = _merge(out, results, predict)
    atomic_write_json(out, {"results": results, "predict": predict})
    text = table(results, predict)
    if a.readme:
        replace_section("bench-speed", text)
    print(text)


if __name__ == "__main__":
    main()
