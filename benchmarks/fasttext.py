"""`--model fasttext` on IMDb: how its recipe was chosen, what it reaches on full IMDb and in how
long, and fastText's own implementation beside it.

    python -m benchmarks.fasttext [--data PATH] [--skip-validation] [--peer] [--readme]

1. Validation: 5,000 reviews (seeded, balanced) held out of IMDb's 25,000 training reviews, the
   other 20,000 trained on, for each candidate recipe in CANDIDATES (the default among them). The
   test split is not read.
2. Full IMDb with the family's defaults: `sentiment train --model fasttext`, timed as a whole
   (reading, tokenizing, training, testing), peak memory of the process.
3. `--peer`: fastText's own library (`pip install fasttext-wheel`; `--peer-python` names an
   interpreter of another environment that has it) with its defaults (words only) and with word
   pairs (`wordNgrams=2`), on the same training and test reviews, tokenized the same way.

Writes benchmarks/results/fasttext.json and, with `--readme`, the table between the `bench-fasttext`
markers in docs/results.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.accuracy import cpu_model
from benchmarks.child import run_measured
from benchmarks.readme import replace_section

RESULTS = Path(__file__).resolve().parent / "results" / "fasttext.json"
DEFAULTS = "defaults (Adagrad, lr 0.1, 3 epochs, 500,000 buckets)"
CANDIDATES = {
    "SGD as fastText, lr 0.2, 5 epochs, 2,000,000 buckets": [
        "--optimizer", "sgd", "--lr", "0.2", "--epochs", "5", "--buckets", "2000000",
    ],
    "SGD, lr 0.2, 10 epochs": ["--optimizer", "sgd", "--lr", "0.2", "--epochs", "10"],
    "Adagrad, lr 0.02": ["--lr", "0.02"],
    DEFAULTS: [],
    "Adagrad, words only (--ngrams 1)": ["--ngrams", "1"],
}  # fmt: skip


def _write_csv(path: Path, examples) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["text", "label"])
        for ex in examples:
            out.writerow([ex.text, ("neg", "pos")[ex.label]])


def validation_split(data: str, folder: Path) -> tuple[Path, Path]:
    from sentiment.text.imdb import read_imdb_splits

    train = read_imdb_splits(data, ("train",))["train"]
    order = list(range(len(train)))
    random.Random(0).shuffle(order)
    held = set(order[:5000])
    fit, val = folder / "train20k.csv", folder / "val5k.csv"
    _write_csv(fit, [ex for i, ex in enumerate(train) if i not in held])
    _write_csv(val, [train[i] for i in sorted(held)])
    return fit, val


def train(data_flags: list[str], extra: list[str], out: Path) -> dict:
    args = [sys.executable, "-m", "sentiment", "train", "--model", "fasttext", *data_flags, *extra]
    args += ["--val-fraction", "0", "--test-each-epoch"]  # the protocol these figures were measured with
    args += ["--out", str(out), "--quiet"]
    started = time.perf_counter()
    code, _, err, peak_mb = run_measured(args)
    if code != 0:
        raise SystemExit(f"fasttext: {err.strip().splitlines()[-1]}")
    wall = time.perf_counter() - started
    run = (out / "latest").resolve()
    summary = json.loads((run / "summary.json").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {
        "acc": summary["test_acc"],
        "per_epoch": [m["test_acc"] for m in metrics],
        "train_s": round(sum(m["train_s"] for m in metrics), 1),
        "wall_s": round(wall, 1),
        "peak_rss_mb": peak_mb,
        "train": summary["train_examples"],
        "test": summary["test_examples"],
    }


PEER = """
import json, sys, time
import fasttext
folder, threads = sys.argv[1], int(sys.argv[2])
test = [line.split(" ", 1) for line in open(folder + "/test.txt", encoding="utf-8").read().splitlines()]
for name, kw in (("fastText, words (its defaults)", {}), ("fastText, word pairs (wordNgrams=2)", {"wordNgrams": 2})):
    started = time.perf_counter()
    model = fasttext.train_supervised(folder + "/train.txt", thread=threads, verbose=0, **kw)
    labels, _ = model.predict([text for _, text in test])
    right = sum(got[0] == want for got, (want, _) in zip(labels, test))
    wall = round(time.perf_counter() - started, 1)
    print(json.dumps({"recipe": name, "acc": round(right / len(test), 4), "wall_s": wall}))
"""


def peer(data: str, folder: Path, python: str) -> list[dict]:
    """fastText's own library (in the interpreter `python`) on the same reviews, with the words
    tokenizer's tokens; its time is training and predicting the test split (files already written)."""
    import subprocess

    from sentiment.text.imdb import read_imdb_splits
    from sentiment.text.tokenize import words

    for split, examples in read_imdb_splits(data, ("train", "test")).items():
        examples = list(examples)
        random.Random(0).shuffle(examples)  # fastText reads its file in order: one class, then the other, fails
        with open(folder / f"{split}.txt", "w", encoding="utf-8") as f:
            for ex in examples:
                f.write(f"__label__{('neg', 'pos')[ex.label]} {' '.join(words(ex.text))}\n")
    done = subprocess.run(
        [python, "-c", PEER, str(folder), str(torch.get_num_threads())], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"fastText's library in {python}: {(done.stderr.strip().splitlines() or ['failed'])[-1]}")
    return [{**json.loads(line), "split": "full"} for line in done.stdout.splitlines() if line.startswith("{")]


def table(results: list[dict]) -> str:
    rows = [
        "| recipe | split | accuracy | per epoch | train s | whole run s | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        epochs = " / ".join(f"{a:.3f}" for a in r.get("per_epoch", []))
        rows.append(
            f"| {r['recipe']} | {r['split']} | {r['acc']:.4f} | {epochs} | {r.get('train_s', '')} | {r['wall_s']:.0f} "
            f"| {format(r['peak_rss_mb'], ',') if r.get('peak_rss_mb') else ''} |"
        )
    machines = sorted({f"{r['cpu']}, {r['threads']} threads, fp32, measured {r['date']}" for r in results})
    rows += [
        "",
        "validation: 20,000 of IMDb's training reviews trained on, the other 5,000 scored (the test split unread); "
        f"full: 25,000 / 25,000. {'; '.join(machines)}. Re-run: `python -m benchmarks.fasttext --peer --readme`.",
    ]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("SENTIMENT_IMDB"))
    ap.add_argument("--skip-validation", action="store_true", help="keep the validation rows of the last run")
    ap.add_argument("--peer", action="store_true", help="also fastText's own library")
    ap.add_argument("--peer-python", default=sys.executable, help="an interpreter with `import fasttext`")
    ap.add_argument("--readme", action="store_true")
    a = ap.parse_args()
    if not a.data:
        raise SystemExit("name the IMDb archive with --data or $SENTIMENT_IMDB")
    stamp = {"cpu": cpu_model(), "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}
    previous = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    results = [r for r in previous if r["split"] == "validation"] if a.skip_validation else []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not a.skip_validation:
            fit, val = validation_split(a.data, tmp)
            for i, (name, extra) in enumerate(CANDIDATES.items()):
                print(f"== validation: {name}", flush=True)
                row = train(["--data", str(fit), "--test-data", str(val)], extra, tmp / f"val{i}")
                results.append({"recipe": name, "split": "validation", **row, **stamp})
                print(json.dumps(results[-1]), flush=True)
        print("== full IMDb, the defaults", flush=True)
        row = train(["--data", a.data], [], tmp / "full")
        results.append({"recipe": DEFAULTS, "split": "full", **row, **stamp})
        print(json.dumps(results[-1]), flush=True)
        if a.peer:
            for r in peer(a.data, tmp, a.peer_python):
                results.append({**r, **stamp})
                print(json.dumps(results[-1]), flush=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    if a.readme:
        replace_section("bench-fasttext", table(results))


if __name__ == "__main__":
    main()
