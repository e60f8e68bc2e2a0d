"""The image recipe on real photos, each variant run as a user runs it (`sentiment image-finetune` in
its own process, under `/usr/bin/time -v`), with the memory of its whole process tree (the training
process and its data workers) sampled as it runs. Results go to benchmarks/results/<set>.json, a
`sentiment compare` picture beside it, and the page holding its table (docs/results.md).

- hotdog (`../shared/data/hotdog_real.zip`), the recipe's own defaults (`configs/hotdog.toml`):
  EfficientNet-Lite0 fine-tuned from its ImageNet weights, ResNet-18 from scratch (no ImageNet
  ResNet-18 weights can be had offline), EfficientNet-Lite0 with its backbone frozen, and with its
  head started from the ImageNet "hotdog" row (934).
  Then its head started from ImageNet's food rows, and the few-shot recipe asked for by name.
- foods (`../shared/data/hotdog_foods.zip`, hot dogs against other foods), the family's own defaults
  (for 160 photos: the few-shot recipe), and the same variants with the standard recipe.
- ants-bees (`../shared/data/hymenoptera_data.tar`, `configs/ants_bees.toml`): EfficientNet-Lite0
  fine-tuned, from scratch, frozen, and with its head from the ImageNet rows ant and bee.

The hot dog sets score every run on the other set's test split too (`sentiment image-evaluate`), and
name the negatives each run calls a hot dog by what the pretrained EfficientNet-Lite0 ImageNet
classifier sees in them (its top class), so the table shows whether a model learned hot dogs or food.

    python -m benchmarks.images [--sets hotdog,foods,ants-bees] [--variants 1,2] [--no-readme]
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
from collections import Counter
from pathlib import Path

import torch

from benchmarks.accuracy import cpu_model, threads
from benchmarks.readme import link, replace_section
from sentiment.fsutil import atomic_write_json

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared" / "data"
HOTDOG_REAL = os.environ.get("SENTIMENT_HOTDOG_REAL", str(SHARED / "hotdog_real.zip"))
HOTDOG_FOODS = os.environ.get("SENTIMENT_HOTDOG_FOODS", str(SHARED / "hotdog_foods.zip"))
# The reference comparison's protocol: the standard recipe, every photo trains, test after each epoch.
REFERENCE = ["--recipe", "standard", "--val-fraction", "0", "--test-each-epoch"]
STANDARD = ["--backbone", "efficientnet-lite0", "--recipe", "standard"]

SETS = {
    "hotdog": {
        "data": HOTDOG_REAL,
        "config": "configs/hotdog.toml",
        "protocol": REFERENCE,
        "other": ("foods", HOTDOG_FOODS),
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
            (
                "EfficientNet-Lite0, head from ImageNet's food rows (not-hotdog=food)",
                "head from food rows",
                ["--backbone", "efficientnet-lite0", "--head-init", "imagenet:hotdog=934,not-hotdog=food"],
            ),
            (
                "EfficientNet-Lite0, few-shot recipe (head fitted on frozen features)",
                "few-shot recipe",
                ["--backbone", "efficientnet-lite0", "--recipe", "few-shot"],
            ),
        ],
    },
    "foods": {
        "data": HOTDOG_FOODS,
        "config": None,
        "protocol": [],
        "other": ("general photos", HOTDOG_REAL),
        "title": "hot dog / another food",
        "variants": [
            (
                "EfficientNet-Lite0, the family's defaults (few-shot recipe)",
                "defaults (few-shot)",
                ["--backbone", "efficientnet-lite0"],
            ),
            ("EfficientNet-Lite0, fine-tuned (standard recipe)", "fine-tuned", STANDARD),
            ("ResNet-18 from scratch (random weights)", "ResNet-18 scratch", ["--backbone", "resnet18", "--scratch"]),
            ("EfficientNet-Lite0, frozen backbone (standard recipe)", "frozen", [*STANDARD, "--freeze-backbone"]),
            (
                "EfficientNet-Lite0, head from row hotdog=934 (standard recipe)",
                "head from row 934",
                [*STANDARD, "--head-init", "imagenet:hotdog=934"],
            ),
            (
                "EfficientNet-Lite0, head from food rows (standard recipe)",
                "head from food rows",
                [*STANDARD, "--head-init", "imagenet:hotdog=934,not-hotdog=food"],
            ),
        ],
    },
    "ants-bees": {
        "data": os.environ.get("SENTIMENT_HYMENOPTERA", str(SHARED / "hymenoptera_data.tar")),
        "config": "configs/ants_bees.toml",
        "protocol": REFERENCE,
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
            # The family's defaults for 245 photos, which the config's own schedule turns off.
            ("few-shot recipe (head fitted on frozen features)", "few-shot recipe", ["--recipe", "few-shot"]),
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


class ImageNetEyes:
    """What the pretrained EfficientNet-Lite0 ImageNet classifier sees in a photo: its top class's name."""

    def __init__(self):
        self.model = self.transform = None
        self.seen: dict[str, str] = {}

    def __call__(self, paths: list[str]) -> list[str]:
        todo = [p for p in dict.fromkeys(paths) if p not in self.seen]
        if todo:
            from sentiment.vision.backbones import build_model, get_backbone
            from sentiment.vision.folder import load_image
            from sentiment.vision.imagenet import short_name
            from sentiment.vision.transforms import eval_transform, to_tensor

            if self.model is None:
                backbone = get_backbone("efficientnet-lite0")
                self.model = build_model(backbone, 1000, weights="imagenet")[0].eval()
                self.transform = eval_transform(
                    size=backbone.input_size, resize_size=backbone.resize_size, mean=backbone.mean, std=backbone.std
                )
            with torch.inference_mode():
                for i in range(0, len(todo), 32):
                    chunk = todo[i : i + 32]
                    x = torch.stack([self.transform(to_tensor(load_image(p))) for p in chunk])
                    for p, row in zip(chunk, self.model(x).argmax(1).tolist(), strict=True):
                        self.seen[p] = short_name(row)
        return [self.seen[p] for p in paths]


EYES = ImageNetEyes()


def score_on(run: Path, data: str) -> dict:
    """`sentiment image-evaluate` of `run` on `data`'s test split: accuracy, and the negatives it calls
    a hot dog, by what ImageNet sees in them (most frequent first)."""
    cmd = [sys.executable, "-m", "sentiment", "image-evaluate", "--run", str(run), "--data", data, "--json"]
    out = subprocess.run([*cmd, "--top", "100000"], check=True, capture_output=True, text=True, cwd=REPO).stdout
    report = json.loads(out)
    false_hotdogs = [m["image"] for m in report["mistakes"] if m["label"] != "hotdog" and m["predicted"] == "hotdog"]
    missed = sum(1 for m in report["mistakes"] if m["label"] == "hotdog")
    seen = Counter(EYES(false_hotdogs)).most_common()
    rows = zip(report["classes"], report["confusion"], strict=True)
    negatives = sum(sum(row) for name, row in rows if name != "hotdog")
    return {
        "acc": report["accuracy"],
        "false_hotdogs": len(false_hotdogs),
        "negatives": negatives,
        "missed_hotdogs": missed,
        "false_hotdogs_seen_as": seen,
    }


def table(name: str, spec: dict, results: list[dict], meta: dict) -> str:
    rows = [
        "| variant | test acc before | after the last epoch | best epoch | train images/s | epoch s "
        "| micro-batch | peak RSS MB: largest process / whole tree (PSS) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def num(r: dict, key: str, form: str) -> str:
        return "—" if r.get(key) is None else format(r[key], form)

    for r in results:
        parts = f"{r['micro_batch']} of {r['batch_size']}" if r.get("recipe") != "few-shot" else "—"
        rows.append(
            f"| {r['variant']} | {num(r, 'initial_test_acc', '.3f')} | {r['test_acc']:.3f} "
            f"| {num(r, 'best_test_acc', '.3f')} | {num(r, 'train_examples_per_s', '.1f')} "
            f"| {num(r, 'epoch_s', '.0f')} "
            f"| {parts} | {r['time_v_max_rss_mb']:,} / {r['tree_rss_mb']:,} ({r['tree_pss_mb']:,}) |"
        )
    r0 = next((r for r in results if r.get("recipe") != "few-shot"), results[0])
    settings = f"settings from `{Path(spec['config']).name}`" if spec["config"] else "the family's default settings"
    protocol = (
        "every training photo trains and the test split is scored after each epoch (the reference protocol)"
        if spec["protocol"]
        else "the standard recipe holds out a tenth of the training photos for validation and keeps its best "
        "epoch; the test split is scored once, at the end; dashes: not scored before training or per epoch"
    )
    rows += [
        "",
        f"{r0['train_examples']:,} train / {r0['test_examples']:,} test photos, {settings} (batch "
        f"{r0['batch_size']}, {r0['epochs']} epochs for the standard recipe); {protocol}. The few-shot recipe fits "
        f'its head in one go (one "epoch"; its images/s counts each photo once). The batch is split into '
        f"micro-batches sized from memory (gradient accumulation). Largest process: `/usr/bin/time -v`'s maximum "
        f"resident set size; whole tree: the training process and its data workers, sampled every 0.2 s, "
        f"summed resident memory (shared pages counted in every process) and, in brackets, proportional set "
        f"size. {measured_on(results, meta)} "
        f"Re-run: `make bench-images`.",
        "",
        f"![{spec['title']}]({link(HERE / 'results' / f'{name}.png', f'bench-images-{name}')})",
    ]
    return "\n".join(rows)


def measured_on(results: list[dict], meta: dict) -> str:
    """`CPU (X, 2 threads), torch T, measured D.`, naming each machine and date when rows differ."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(results, 1):
        groups.setdefault((r.get("cpu", meta["cpu"]), r.get("date", meta["date"])), []).append(i)
    if len(groups) == 1:
        ((cpu, date),) = groups
        return f"CPU ({cpu}, {threads(meta['threads'])}), torch {meta['torch']}, measured {date}."
    rows = [
        f"rows {', '.join(map(str, rows))}: CPU {cpu}, {threads(meta['threads'])}, measured {date}"
        for (cpu, date), rows in groups.items()
    ]
    return f"{'; '.join(rows)}; torch {meta['torch']}."


def bench(name: str, spec: dict, out: Path, only: list[int] | None, readme: bool) -> None:
    results_path = HERE / "results" / f"{name}.json"
    picture = HERE / "results" / f"{name}.png"
    recorded = json.loads(results_path.read_text()) if results_path.exists() and only is not None else {}
    # each row says where it was measured, so a table of kept and new rows names both machines
    where = {k: recorded.get("meta", {}).get(k) for k in ("cpu", "date")}
    old = [where | r for r in recorded.get("results", [])]
    now = {"cpu": cpu_model(), "date": time.strftime("%Y-%m-%d")}
    results = []
    for i, (variant, label, flags) in enumerate(spec["variants"], 1):
        if only is not None and i not in only:
            kept = [r | {"label": label} for r in old if r["variant"] == variant]
            results += kept
            continue
        print(f"== {name}: {variant}", flush=True)
        config_flags = ["--config", spec["config"]] if spec["config"] else []
        measured = run_variant(["--data", spec["data"], *config_flags, *spec["protocol"], *flags], out / name)
        run = Path(measured["run"])
        summary = json.loads((run / "summary.json").read_text())
        config = json.loads((run / "config.json").read_text())
        if "other" in spec:
            measured["own"] = score_on(run, spec["data"])
            measured["other"] = score_on(run, spec["other"][1])
        results.append(
            {
                "variant": variant,
                "label": label,
                **now,
                **measured,
                "batch_size": config["config"]["batch_size"],
                "micro_batch": config.get("micro_batch") or config["config"]["batch_size"],
                **{
                    k: summary.get(k)
                    for k in (
                        "recipe",
                        "head_c",
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
    # the loop's runs: a one-fit few-shot run has no curve to draw
    drawn = [r for r in results if r.get("recipe") != "few-shot"][:3]
    if all(Path(r["run"]).is_dir() for r in drawn):
        subprocess.run(
            [sys.executable, "-m", "sentiment", "compare", *(r["run"] for r in drawn)]
            + ["--out", str(picture), "--title", spec["title"], "--labels", ",".join(r["label"] for r in drawn)],
            check=True,
            cwd=REPO,
        )
    else:
        print(f"kept {picture.name}: the run folders it draws are not here to redraw it from", flush=True)
    text = table(name, spec, results, meta)
    if readme:
        replace_section(f"bench-images-{name}", text)
    print(text)
    if "other" in spec:
        cross = cross_table()
        if readme and cross:
            replace_section("bench-images-cross", cross)
        print(cross)


def cross_table() -> str:
    """Every hot dog run scored on its own test split and on the other set's: the general photos
    (people, pets, scenes as negatives) and the foods (other foods as negatives)."""
    rows = [
        "| trained on | variant | general photos test | foods test | negatives called hot dog, general photos "
        "(what ImageNet sees in the most frequent) | negatives called hot dog, foods |",
        "|---|---|---|---|---|---|",
    ]
    meta = None
    for name, data_name in (("hotdog", "general photos"), ("foods", "foods")):
        path = HERE / "results" / f"{name}.json"
        if not path.exists():
            continue
        recorded = json.loads(path.read_text())
        meta = recorded["meta"]
        for r in recorded["results"]:
            if "own" not in r:
                continue
            general, foods = (r["own"], r["other"]) if name == "hotdog" else (r["other"], r["own"])

            def wrong(s: dict) -> str:
                seen = ", ".join(f"{n} {c}" for n, c in s["false_hotdogs_seen_as"][:3])
                return f"{s['false_hotdogs']} of {s['negatives']}" + (f": {seen}" if seen else "")

            rows.append(
                f"| {data_name} | {r['variant']} | {general['acc']:.3f} | {foods['acc']:.3f} | {wrong(general)} "
                f"| {wrong(foods)} |"
            )
    if meta is None:
        return ""
    rows += [
        "",
        "Each run of the two tables above scored by `sentiment image-evaluate` on the test split of both sets: "
        "the general photos (`hotdog_real.zip`, 200 + 200 test photos; negatives are people, pets and scenes) and "
        "the foods (`hotdog_foods.zip`, 20 + 20; negatives are other foods). A negative's name is the top class "
        "the pretrained EfficientNet-Lite0 ImageNet classifier gives it (the foods have no finer labels). "
        f"CPU ({meta['cpu']}, {threads(meta['threads'])}), torch {meta['torch']}, measured {meta['date']}. "
        "Re-run: `make bench-images`.",
    ]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="hotdog,foods,ants-bees")
    ap.add_argument(
        "--variants", help="only these variants (1, 2, ...), keeping the others' recorded results; 0: none (redraw)"
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
