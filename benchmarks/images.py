"""The image recipe on real photos, each variant run as a user runs it (`sentiment image-finetune` in
its own process, under `/usr/bin/time -v`), with the memory of its whole process tree (the training
process and its data workers) sampled as it runs. Results go to benchmarks/results/<set>.json, a
`sentiment compare` picture beside it, and the page holding its table (docs/results.md).

- hotdog (`../shared/data/hotdog_real.zip`), the recipe's own defaults (`configs/hotdog.toml`):
  EfficientNet-Lite0 fine-tuned from its ImageNet weights, ResNet-18 from scratch (no ImageNet
  ResNet-18 weights can be had offline), EfficientNet-Lite0 with its backbone frozen, and with its
  head started from the ImageNet "hotdog" row (934).
- ants-bees (`../shared/data/hymenoptera_data.tar`, `configs/ants_bees.toml`): EfficientNet-Lite0
  fine-tuned, from scratch, frozen, and with its head from the ImageNet rows ant and bee.

    python -m benchmarks.images [--sets hotdog,ants-bees] [--variants 1,2] [--no-readme]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from benchmarks.accuracy import cpu_model, threads
from benchmarks.readme import link, replace_section
from sentiment.fsutil import atomic_write_json

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared" / "data"

SETS = {
    "hotdog": {
        "data": os.environ.get("SENTIMENT_HOTDOG_REAL", str(SHARED / "hotdog_real.zip")),
        "config": "configs/hotdog.toml",
        "title": "hot dog / not hot dog (real photos)",
        "variants": [
            ("EfficientNet-Lite0, fine-tuned (ImageNet weights)", "fine-tuned", ["--backbone", "efficientnet-lite0"]),
            ("ResNet-18 from scratch (random weights)", "ResNet-18 scratch", ["--backbone", "resnet18", "--scratch"]),
            (
                "EfficientNet-Lite0, frozen backbone (head only)",
                "frozen backbone",
                ["--backbone", "efficientnet-lite0", "--freeze-backbone"],
            ),
            (
                "EfficientNet-Lite0, head from ImageNet row hotdog=934",
                "head from row 934",
                ["--backbone", "efficientnet-lite0", "--head-init", "imagenet:hotdog=934"],
            ),
        ],
    },
    "ants-bees": {
        "data": os.environ.get("SENTIMENT_HYMENOPTERA", str(SHARED / "hymenoptera_data.tar")),
        "config": "configs/ants_bees.toml",
        "title": "ants vs bees, EfficientNet-Lite0",
        "variants": [
            ("fine-tuned (ImageNet weights)", "fine-tuned", []),
            ("from scratch (random weights)", "from scratch", ["--scratch"]),
            ("frozen backbone (head only)", "frozen backbone", ["--freeze-backbone"]),
            (
                "head from ImageNet rows ant=310, bee=309",
                "head from rows 310/309",
                ["--head-init", "imagenet:ants=310,bees=309"],
            ),
            # What micro-batches do to BatchNorm: the fine-tuned run with its batch of 32 in one part
            # (the variants above split it as memory says, into parts of at most 13).
            ("fine-tuned, whole batch in one part", "one part", ["--micro-batch", "32"]),
        ],
    },
}


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def _rollup(pid: int) -> tuple[int, int]:
    """(Rss, Pss) of one process in bytes; (0, 0) once it is gone."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return rss, pss


class TreeMemory(threading.Thread):
    """Samples a process tree every 0.2 s: the peak of its summed Rss (shared pages counted in every
    process that maps them: an upper bound) and of its summed Pss (shared pages divided among them)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.rss, self.pss, self.processes = pid, 0, 0, 1
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            pids = _tree(self.pid)
            sizes = [_rollup(p) for p in pids]
            self.rss = max(self.rss, sum(r for r, _ in sizes))
            self.pss = max(self.pss, sum(p for _, p in sizes))
            self.processes = max(self.processes, len(pids))


def run_variant(args: list[str], out: Path) -> dict:
    """One `sentiment image-finetune` under /usr/bin/time -v; its run folder, wall time and memory."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "sentiment", "image-finetune", *args, "--out", str(out)]
    cmd += ["--val-fraction", "0", "--test-each-epoch"]  # the reference protocol these figures were measured with
    print("$ " + " ".join(cmd[2:]), flush=True)
    before = set(out.iterdir()) if out.is_dir() else set()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    sampler = TreeMemory(proc.pid)
    sampler.start()
    stdout, stderr = proc.communicate()
    sampler.done.set()
    sampler.join()
    wall = time.perf_counter() - start
    print(stdout, end="", flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"image-finetune failed ({proc.returncode}):\n{stderr[-3000:]}")
    max_rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    (run,) = [p for p in set(out.iterdir()) - before if p.is_dir() and not p.is_symlink()]
    memory = re.search(r"memory: .*", stdout)
    return {
        "run": str(run),
        "wall_s": round(wall, 1),
        "time_v_max_rss_mb": int(max_rss.group(1)) // 1024 if max_rss else None,
        "tree_rss_mb": sampler.rss // 2**20,
        "tree_pss_mb": sampler.pss // 2**20,
        "processes": sampler.processes,
        "memory_line": memory.group(0) if memory else None,
    }


def table(name: str, spec: dict, results: list[dict], meta: dict) -> str:
    rows = [
        "| variant | test acc before | after the last epoch | best epoch | train images/s | epoch s "
        "| micro-batch | peak RSS MB: largest process / whole tree (PSS) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r['variant']} | {r['initial_test_acc']:.3f} | {r['test_acc']:.3f} | {r['best_test_acc']:.3f} "
            f"| {r['train_examples_per_s']:.1f} | {r['epoch_s']:.0f} | {r['micro_batch']} of {r['batch_size']} "
            f"| {r['time_v_max_rss_mb']:,} / {r['tree_rss_mb']:,} ({r['tree_pss_mb']:,}) |"
        )
    r0 = results[0]
    rows += [
        "",
        f"{r0['train_examples']:,} train / {r0['test_examples']:,} test photos, settings from "
        f"`{Path(spec['config']).name}` (batch {r0['batch_size']}, {r0['epochs']} epochs); the batch is split into "
        f"micro-batches sized from memory (gradient accumulation). Largest process: `/usr/bin/time -v`'s maximum "
        f"resident set size; whole tree: the training process and its data workers, sampled every 0.2 s, "
        f"summed resident memory (shared pages counted in every process) and, in brackets, proportional set "
        f"size. CPU ({meta['cpu']}, {threads(meta['threads'])}), torch {meta['torch']}, measured {meta['date']}. "
        f"Re-run: `make bench-images`.",
        "",
        f"![{spec['title']}]({link(HERE / 'results' / f'{name}.png', f'bench-images-{name}')})",
    ]
    return "\n".join(rows)


def bench(name: str, spec: dict, out: Path, only: list[int] | None, readme: bool) -> None:
    results_path = HERE / "results" / f"{name}.json"
    picture = HERE / "results" / f"{name}.png"
    old = json.loads(results_path.read_text())["results"] if results_path.exists() and only is not None else []
    results = []
    for i, (variant, label, flags) in enumerate(spec["variants"], 1):
        if only is not None and i not in only:
            kept = [r | {"label": label} for r in old if r["variant"] == variant]
            results += kept
            continue
        print(f"== {name}: {variant}", flush=True)
        measured = run_variant(["--data", spec["data"], "--config", spec["config"], *flags], out / name)
        run = Path(measured["run"])
        summary = json.loads((run / "summary.json").read_text())
        config = json.loads((run / "config.json").read_text())
        results.append(
            {
                "variant": variant,
                "label": label,
                **measured,
                "batch_size": config["config"]["batch_size"],
                "micro_batch": config.get("micro_batch") or config["config"]["batch_size"],
                **{
                    k: summary[k]
                    for k in (
                        "model",
                        "epochs",
                        "initial_test_acc",
                        "test_acc",
                        "best_test_acc",
                        "train_examples_per_s",
                        "epoch_s",
                        "train_examples",
                        "test_examples",
                    )
                },
            }
        )
        print(json.dumps(results[-1]), flush=True)
    meta = {
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "config": spec["config"],
    }
    atomic_write_json(results_path, {"meta": meta, "results": results})
    # The picture comes from the CLI's own `compare`, as a user would draw it.
    labels = ",".join(r["label"] for r in results[:3])
    subprocess.run(
        [sys.executable, "-m", "sentiment", "compare", *(r["run"] for r in results[:3])]
        + ["--out", str(picture), "--title", spec["title"], "--labels", labels],
        check=True,
        cwd=REPO,
    )
    text = table(name, spec, results, meta)
    if readme:
        replace_section(f"bench-images-{name}", text)
    print(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="hotdog,ants-bees")
    ap.add_argument(
        "--variants", help="only these variants (1-4), keeping the others' recorded results; 0: none (redraw only)"
    )
    ap.add_argument("--out", default="runs/bench-images")
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args()
    only = [int(v) for v in args.variants.split(",")] if args.variants is not None else None
    for name in args.sets.split(","):
        if name not in SETS:
            raise SystemExit(f"unknown set {name!r}; choose from {', '.join(SETS)}")
        bench(name, SETS[name], Path(args.out).resolve(), only, not args.no_readme)


if __name__ == "__main__":
    main()
