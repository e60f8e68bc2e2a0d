"""Fine-tuning speed against Hugging Face's `Trainer`, side by side in one run: the same encoder
(all-MiniLM-L6-v2), the same IMDb training reviews (a balanced, seeded subset), the same maximum
length (head + tail cut, as `sentiment` does, so both see the same tokens), batch size, precision
(bf16 autocast where the CPU has it, else fp32), threads and one epoch. Each side runs in its own
process, one after the other.

    python -m benchmarks.trainer_speed [--examples 512] [--max-len 256] [--batch-size 16] [--readme]

`Trainer` gets what a user would write: the reviews as a torch Dataset of token-id lists, padding
per batch (DataCollatorWithPadding), `AutoModelForSequenceClassification` with the encoder's config
as `sentiment` sets it (no dropout on attention weights); a second time with
`train_sampling_strategy="group_by_length"` (its own length grouping); and a third time with the
encoder's config as it ships (attention dropout 0.1), which is what `from_pretrained` gives a user.
`sentiment` is `sentiment train --model transformer`. Reported: training examples/s of the epoch as
each side measures it (`Trainer`: train_samples_per_second; `sentiment`: the epoch's examples over
its time), the ratio, and each process's peak resident memory. Needs `accelerate` (`pip install
accelerate`), which `Trainer` requires. Writes benchmarks/results/trainer_speed.json and, with
`--readme`, docs/results.md's `bench-trainer` table.
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
from benchmarks.readme import replace_section
from sentiment.fsutil import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results" / "trainer_speed.json"


def _reviews(data: str, n: int, seed: int):
    from sentiment.text.corpus import balanced_subset, load_corpus

    corpus = load_corpus(data, splits=("train",))
    train = balanced_subset(corpus.train, n, len(corpus.classes), seed)
    return [ex.text for ex in train], [ex.label for ex in train]


def trainer_side(a) -> dict:
    """One epoch under transformers' Trainer (runs in its own process)."""
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from sentiment.families.transformer import encode_texts, find_encoder, load_tokenizer, set_attention_dropout
    from sentiment.registry import get

    torch.set_num_threads(a.threads)
    folder = find_encoder("all-MiniLM-L6-v2")
    tokenizer = load_tokenizer(folder)
    texts, labels = _reviews(a.data, a.examples, a.seed)
    enc, _ = encode_texts(tokenizer, texts, a.max_len, a.max_len // 2)  # the same tokens sentiment reads
    rows = [{"input_ids": enc.row(i).tolist(), "labels": labels[i]} for i in range(len(enc))]

    class Reviews(torch.utils.data.Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, i):
            return rows[i]

    config = AutoConfig.from_pretrained(str(folder), num_labels=2)
    if a.side != "trainer-shipped":  # the attention dropout sentiment trains with
        set_attention_dropout(config, get("transformer").settings().attention_dropout)
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), config=config)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=a.batch_size,
            num_train_epochs=1,
            learning_rate=1e-4,
            warmup_steps=0.1,  # a float: the share of the steps
            weight_decay=0.01,
            max_grad_norm=1.0,
            bf16=a.precision == "bf16",
            use_cpu=True,
            train_sampling_strategy="group_by_length" if a.side == "trainer-grouped" else "random",
            dataloader_num_workers=0,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            seed=a.seed,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=Reviews(),
            data_collator=DataCollatorWithPadding(tokenizer),
        )
        metrics = trainer.train().metrics
    return {
        "examples_per_s": round(metrics["train_samples_per_second"], 2),
        "train_s": round(metrics["train_runtime"], 1),
    }


def sentiment_side(a) -> dict:
    with tempfile.TemporaryDirectory() as out:
        argv = [sys.executable, "-m", "sentiment", "train", "--model", "transformer", "--data", a.data]
        argv += ["--limit-train", str(a.examples), "--limit-test", "16", "--epochs", "1"]
        argv += ["--max-len", str(a.max_len), "--batch-size", str(a.batch_size), "--precision", a.precision]
        argv += ["--threads", str(a.threads), "--seed", str(a.seed), "--out", out, "--quiet"]
        code, _, err, peak_mb = run_measured(argv)
        if code != 0:
            raise SystemExit(f"sentiment: {err.strip()[-2000:]}")
        summary = json.loads((Path(out) / "latest" / "summary.json").read_text())
    return {
        "examples_per_s": summary["train_examples_per_s"],
        "train_s": round(summary["epoch_s"], 1),
        "peak_rss_mb": peak_mb,
    }


def table(r: dict) -> str:
    ours = r["sides"]["sentiment"]["examples_per_s"]
    lines = [
        "| trainer | train examples/s | epoch s | sentiment is faster by | peak RSS MB |",
        "|---|---|---|---|---|",
    ]
    names = {
        "sentiment": "`sentiment train --model transformer`",
        "trainer": "Hugging Face `Trainer` (padding per batch)",
        "trainer-grouped": "Hugging Face `Trainer`, grouped by length",
        "trainer-shipped": "Hugging Face `Trainer`, the encoder's attention dropout (0.1)",
    }
    for side, m in r["sides"].items():
        ratio = "" if side == "sentiment" else f"{ours / m['examples_per_s']:.2f}x"
        peak = f"{m['peak_rss_mb']:,}" if "peak_rss_mb" in m else ""
        lines.append(f"| {names[side]} | {m['examples_per_s']:.1f} | {m['train_s']:.0f} | {ratio} | {peak} |")
    lines += [
        "",
        f"all-MiniLM-L6-v2, {r['examples']} IMDb training reviews, max length {r['max_len']}, batch {r['batch_size']}, "
        f"{r['precision']}, 1 epoch, {r['threads']} threads, one side after the other; {r['cpu']}, {r['date']}. "
        f"Re-run: `python -m benchmarks.trainer_speed --readme`.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("SENTIMENT_IMDB"))
    ap.add_argument("--examples", type=int, default=512)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--precision", choices=["bf16", "fp32"], default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--side", help=argparse.SUPPRESS)  # internal: run one Trainer side and print its figures
    ap.add_argument("--readme", action="store_true")
    a = ap.parse_args()
    if not a.data:
        raise SystemExit("name the IMDb archive with --data or $SENTIMENT_IMDB")
    if a.precision is None:
        from sentiment.runtime import cpu_has_bf16

        a.precision = "bf16" if cpu_has_bf16() else "fp32"
    if a.side:
        print(json.dumps(trainer_side(a)))
        return
    sides = {}
    for side in ("sentiment", "trainer", "trainer-grouped", "trainer-shipped"):
        print(f"== {side}", flush=True)
        if side == "sentiment":
            sides[side] = sentiment_side(a)
        else:
            argv = [sys.executable, "-m", "benchmarks.trainer_speed", "--side", side, "--data", a.data]
            argv += ["--examples", str(a.examples), "--max-len", str(a.max_len), "--batch-size", str(a.batch_size)]
            argv += ["--threads", str(a.threads), "--precision", a.precision, "--seed", str(a.seed)]
            code, stdout, err, peak_mb = run_measured(argv)
            if code != 0:
                raise SystemExit(f"{side}: {err.strip()[-2000:]}")
            sides[side] = {**json.loads(stdout.strip().splitlines()[-1]), "peak_rss_mb": peak_mb}
        print(json.dumps(sides[side]), flush=True)
    result = {
        "sides": sides,
        "examples": a.examples,
        "max_len": a.max_len,
        "batch_size": a.batch_size,
        "precision": a.precision,
        "threads": a.threads,
        "cpu": cpu_model(),
        "date": time.strftime("%Y-%m-%d"),
    }
    atomic_write_json(RESULTS, result)
    print(table(result))
    if a.readme:
        replace_section("bench-trainer", table(result))


if __name__ == "__main__":
    main()
