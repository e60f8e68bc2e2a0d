"""Fine-tune on the real ants/bees photos (hymenoptera_data.tar) for 5 epochs on CPU and record the
results in benchmarks/results/ants_bees.json, a comparison picture, and the README:

- EfficientNet-Lite0 from its ImageNet weights (the fine-tuning recipe),
- the same network from random weights (--scratch),
- the ImageNet network with its backbone frozen (head only),
- the ImageNet network with its head started from the ImageNet rows "ant" (310) and "bee" (309).

    python -m benchmarks.images [--data PATH] [--config configs/ants_bees.toml]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from benchmarks.accuracy import cpu_model, threads
from benchmarks.readme import replace_section
from sentiment.cli import main as cli_main
from sentiment.config import image_config
from sentiment.fsutil import atomic_write_json
from sentiment.recipe import fine_tune

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "ants_bees.json"
PICTURE = HERE / "results" / "ants_bees.png"
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "hymenoptera_data.tar"

VARIANTS = [
    ("fine-tuned (ImageNet weights)", {}),
    ("from scratch (random weights)", {"scratch": True}),
    ("frozen backbone (head only)", {"freeze_backbone": True}),
    ("head from ImageNet rows ant=310, bee=309", {"head_init": "imagenet:ants=310,bees=309"}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("SENTIMENT_HYMENOPTERA", str(DEFAULT_DATA)))
    ap.add_argument("--config", default=str(HERE.parent / "configs" / "ants_bees.toml"))
    ap.add_argument("--out", default="runs/bench-images")
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args()

    results, runs = [], []
    for name, overrides in VARIANTS:
        cfg = image_config(args.config, {"data": args.data, "out": args.out, **overrides})
        print(f"== {name}", flush=True)
        run = fine_tune(cfg, progress=False)
        runs.append(run)
        s = run.read_json("summary.json")
        results.append(
            {
                "variant": name,
                "run": str(run.path),
                "lr": cfg.lr,
                "head_lr_mult": cfg.head_lr_mult,
                **{
                    k: s[k]
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
        "config": args.config,
    }
    atomic_write_json(RESULTS, {"meta": meta, "results": results})
    # The picture comes from the CLI's own `compare`, as a user would draw it.
    compare = [
        "compare",
        *(r.path for r in runs[:3]),
        "--out",
        PICTURE,
        "--title",
        "ants vs bees, EfficientNet-Lite0",
        "--labels",
        ",".join(v.split(" (")[0] for v, _ in VARIANTS[:3]),
    ]
    try:
        cli_main([str(a) for a in compare])
    except SystemExit as e:
        if e.code:
            raise

    rows = [
        "| EfficientNet-Lite0 | val acc before training | after 5 epochs | best epoch | train images/s | epoch s |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r['variant']} | {r['initial_test_acc']:.3f} | {r['test_acc']:.3f} | {r['best_test_acc']:.3f} "
            f"| {r['train_examples_per_s']:.1f} | {r['epoch_s']:.0f} |"
        )
    rows += [
        "",
        f"{results[0]['train_examples']} train / {results[0]['test_examples']} val photos, settings from "
        f"`{Path(args.config).name}`; CPU ({meta['cpu']}, {threads(meta['threads'])}), torch {meta['torch']}, "
        f"measured {meta['date']}. Re-run: `make bench-images`.",
        "",
        "![ants vs bees: fine-tuned, from scratch and frozen backbone](benchmarks/results/ants_bees.png)",
    ]
    table = "\n".join(rows)
    if not args.no_readme:
        replace_section("bench-images", table)
    print(table)


if __name__ == "__main__":
    main()
