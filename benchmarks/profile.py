"""Where a training epoch's time goes: torch.profiler over training steps of each model on IMDb.

Runs the same pieces as `sentiment train` (prepared data, bucketed batches, the model, Adam, the
configured precision) for `--steps` steps after a warm-up, and writes the operator table and a
phase split (batching / forward / backward / optimizer) to benchmarks/results/profile_<model>.txt.

    python -m benchmarks.profile [--data PATH] [--models textcnn,birnn] [--steps 60] [--precision auto]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from sentiment.config import text_config
from sentiment.finetune import param_groups
from sentiment.loop import make_optimizer
from sentiment.registry import task_for
from sentiment.runtime import Runtime, tune_allocator
from sentiment.text.batching import TextBatches

RESULTS = Path(__file__).resolve().parent / "results"


def profile_model(model_name: str, data_path: str, steps: int, precision: str) -> str:
    tune_allocator(keep_all=False)
    cfg = text_config(model_name, None, {"data": data_path, "precision": precision, "device": "cpu"})
    task = task_for(cfg)  # the family's own data and model, in the form training runs on the CPU
    runtime = Runtime.resolve("cpu", cfg.precision)
    task.data(runtime, lambda _: None)
    data = task.prepared
    torch.manual_seed(0)
    model = task.network("cpu", vocab_size=len(data.vocab), embed_size=task.vectors.dim, num_classes=2, **task.hyper())
    task.start_from(model, task.vectors.embedding_for(data.vocab))
    optimizer = make_optimizer(cfg.optimizer, param_groups(model, cfg.lr), lr=cfg.lr)
    prec = runtime.precision
    batches = TextBatches(data.train, data.train_labels, cfg.batch_size, shuffle=True, seed=0)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    phases = dict.fromkeys(("batching", "forward", "backward", "optimizer"), 0.0)
    examples = 0

    def step(batch_iter, timed: bool) -> None:
        nonlocal examples
        t0 = time.perf_counter()
        _, (ids, lengths), labels = next(batch_iter)
        t1 = time.perf_counter()
        with runtime.autocast():
            loss = loss_fn(model(ids, lengths).float(), labels)
        t2 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        optimizer.step()
        loss.item()
        t4 = time.perf_counter()
        if timed:
            for name, seconds in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                phases[name] += seconds
            examples += len(labels)

    it = iter(batches)
    for _ in range(5):
        step(it, timed=False)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step(it, timed=True)
    total = sum(phases.values())
    lines = [
        f"{model_name}: {steps} training steps of batch {cfg.batch_size} on IMDb (length-bucketed), precision {prec}, "
        f"{torch.get_num_threads()} threads; {examples / total:.0f} reviews/s while profiled",
        "phases: " + ", ".join(f"{k} {v / total:.1%}" for k, v in phases.items()),
        "",
        prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15),
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("SENTIMENT_IMDB"))
    ap.add_argument("--models", default="textcnn,birnn")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--precision", default="auto")
    a = ap.parse_args()
    if not a.data:
        ap.error("give --data PATH or set SENTIMENT_IMDB")
    for model_name in a.models.split(","):
        text = profile_model(model_name, a.data, a.steps, a.precision)
        out = RESULTS / f"profile_{model_name}.txt"
        out.write_text(text + "\n", encoding="utf-8")
        print(text)


if __name__ == "__main__":
    main()
