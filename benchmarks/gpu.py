"""The recipes at full size on one NVIDIA GPU, each run as a user runs it (`sentiment train` or
`sentiment image-finetune` in its own process), then `sentiment serve --device cuda` under load.

    python -m benchmarks.gpu [--rows linear,textcnn,...,serve] [--out runs/bench-gpu] [--readme]
    python -m benchmarks.gpu --smoke      # every row on tiny slices, on whatever device is here

Rows (each family's defaults unless said):
- linear: TF-IDF + logistic regression on full IMDb (fitted on the CPU whatever the device: the bar)
- textcnn, birnn: full IMDb, 5 epochs
- transformer-256: all-MiniLM-L6-v2, full IMDb, one epoch at --max-len 256
- transformer-512: all-MiniLM-L6-v2, full IMDb, 3 epochs at --max-len 512
- hotdog: `image-finetune --backbone efficientnet-lite0` on the real hot dog photos (5 epochs)
- serve: the textcnn and transformer-256 runs of --out served with `--device cuda`, 16 clients
  sending one IMDb test review per request (benchmarks/serve.py's clients)

Each training row records the device's name, the precision, the epochs, the mean epoch's training
time and their sum, training examples/s, test accuracy, the training process's peak GPU memory
(`torch.cuda.max_memory_allocated`, read by benchmarks/gpu_child.py) and the process's wall time,
with the row's goal and whether it was met. Rows are written to benchmarks/results/gpu.json as they
finish (and, with --readme, to the table between docs/gpu.md's `bench-gpu` markers), so a run cut
short keeps what it measured; a row that fails is recorded as failed and the next one runs.

Without a CUDA device it refuses, unless --smoke: then every row runs on a slice of a few hundred
reviews (32 photos), one epoch, on whatever device there is, to check this script end to end. Smoke
figures go to OUT/gpu-smoke.json only, never to the results or the docs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.readme import merge_results, replace_section

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "gpu.json"
SHARED = REPO.parent / "shared" / "data"
SECTION = "bench-gpu"


@dataclass(frozen=True)
class Goal:
    key: str  # a field of the row's result
    below: float | None = None
    at_least: float | None = None
    says: str = ""

    def met(self, result: dict) -> bool | None:
        value = result.get(self.key)
        if value is None:
            return None
        return value < self.below if self.below is not None else value >= self.at_least


@dataclass(frozen=True)
class Row:
    name: str
    what: str
    command: str  # "train" or "image-finetune"
    args: list[str]
    goal: Goal | None = None
    on_gpu: bool = True  # False: fitted on the CPU whatever the device
    smoke: list[str] = field(default_factory=lambda: ["--limit-train", "200", "--limit-test", "200", "--epochs", "1"])


TEXT = ["--seed", "0", "--quiet"]
ROWS = [
    Row(
        "linear",
        "TF-IDF + logistic regression",
        "train",
        ["--model", "linear", *TEXT],
        on_gpu=False,
        smoke=["--limit-train", "200", "--limit-test", "200"],
    ),
    Row(
        "textcnn",
        "TextCNN, 5 epochs",
        "train",
        ["--model", "textcnn", *TEXT],
        Goal("train_s", below=20, says="5 epochs < 20 s"),
    ),
    Row(
        "birnn",
        "BiRNN (cuDNN, packed), 5 epochs",
        "train",
        ["--model", "birnn", *TEXT],
        Goal("train_s", below=60, says="5 epochs < 60 s"),
    ),
    Row(
        "transformer-256",
        "all-MiniLM-L6-v2, 1 epoch, max length 256",
        "train",
        ["--model", "transformer", "--max-len", "256", "--epochs", "1", *TEXT],
        Goal("epoch_s", below=60, says="one epoch < 60 s"),
        smoke=["--limit-train", "100", "--limit-test", "100", "--epochs", "1"],
    ),
    Row(
        "transformer-512",
        "all-MiniLM-L6-v2, 3 epochs, max length 512",
        "train",
        ["--model", "transformer", "--max-len", "512", "--epochs", "3", *TEXT],
        Goal("test_acc", at_least=0.93, says="test accuracy >= 0.93"),
        smoke=["--limit-train", "100", "--limit-test", "100", "--epochs", "1"],
    ),
    Row(
        "hotdog",
        "EfficientNet-Lite0 fine-tuned on hot dog photos, 5 epochs",
        "image-finetune",
        # the standard recipe, which 1,040 photos get anyway, so that --smoke's slice runs it too
        ["--backbone", "efficientnet-lite0", "--recipe", "standard", "--seed", "0", "--quiet"],
        smoke=["--limit-train", "32", "--limit-test", "32", "--epochs", "1"],
    ),
]
SERVED = ("textcnn", "transformer-256")  # the runs the serve row serves, from the rows above
ROW_NAMES = [r.name for r in ROWS] + ["serve"]


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


def train_row(row: Row, data: dict, out: Path, device: str, smoke: bool) -> dict:
    """One training in its own process (under gpu_child, for its peak GPU memory)."""
    folder = out / row.name
    args = [row.command, *row.args, "--data", data["image" if row.command == "image-finetune" else "text"]]
    args += ["--device", device] if row.on_gpu else []
    args += [*row.smoke] if smoke else []
    args += ["--out", str(folder)]
    with tempfile.TemporaryDirectory() as tmp:
        child = Path(tmp) / "gpu.json"
        started = time.perf_counter()
        proc = _run([sys.executable, "-m", "benchmarks.gpu_child", str(child), *args])
        wall = time.perf_counter() - started
        gpu = json.loads(child.read_text()) if child.is_file() else {}
    result = {"row": row.name, "what": row.what, "command": "sentiment " + " ".join(args), "wall_s": round(wall, 1)}
    if proc.returncode != 0:
        return result | {"status": "failed", "error": _last_line(proc.stderr or proc.stdout)}
    run = (folder / "latest").resolve()
    summary = json.loads((run / "summary.json").read_text())
    config = json.loads((run / "config.json").read_text())["config"]
    result |= {
        "status": "completed",
        "run": str(run),
        "device": gpu.get("device_name"),
        "device_type": summary.get("device"),
        "precision": summary.get("precision") if row.on_gpu else "fp64 (scikit-learn)",
        "epochs": summary["epochs"],
        "epoch_s": summary.get("epoch_s"),
        "train_s": round(summary["epoch_s"] * summary["epochs"], 2) if summary.get("epoch_s") else None,
        "train_examples_per_s": summary.get("train_examples_per_s"),
        "test_acc": summary.get("test_acc"),
        "train_examples": summary.get("train_examples"),
        "test_examples": summary.get("test_examples"),
        "max_len": config.get("max_len"),
        "batch_size": config.get("batch_size"),
        "peak_gpu_mb": gpu.get("peak_gpu_mb"),
        "peak_gpu_reserved_mb": gpu.get("peak_gpu_reserved_mb"),
        "torch": gpu.get("torch"),
        "cuda": gpu.get("cuda"),
    }
    if row.goal is not None:  # a smoke run's slices say nothing about a goal
        result |= {"goal": row.goal.says, "goal_met": None if smoke else row.goal.met(result)}
    return result


def _run(argv: list[str]):
    import subprocess

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env)


def serve_rows(out: Path, data: str, device: str, smoke: bool) -> list[dict]:
    """`sentiment serve --device DEVICE` of each served run under load; answers checked against
    `sentiment predict --file --json --device DEVICE` of the same reviews."""
    from benchmarks import serve
    from sentiment.runtime import resolve_device

    clients, seconds, count = (4, 2.0, 50) if smoke else (16, 15.0, 2000)
    texts = serve.reviews(data, count)
    rows = []
    for name in SERVED:
        run = out / name / "latest"
        result = {"row": f"serve {name}", "run": name, "clients": clients, "seconds": seconds}
        if not (run / "summary.json").is_file():
            rows.append(result | {"status": "failed", "error": f"no run at {run}: run the {name} row first"})
            continue
        try:
            want = serve.predict_file(str(run), texts, device=device)
            port = serve.free_port()
            server = serve.start_server(str(run), port, ["--device", device])
            try:
                asyncio.run(serve.load(port, texts[:50], want[:50], 2, 1 if smoke else 3))  # warm-up
                measured = asyncio.run(serve.load(port, texts, want, clients, seconds))
                health = serve.health(port)
            finally:
                server.terminate()
                server.wait(timeout=30)
        except (Exception, SystemExit) as e:  # a row that fails is recorded; the others still run
            rows.append(result | {"status": "failed", "error": _last_line(str(e)) or type(e).__name__})
            continue
        measured.pop("first_difference", None)  # a whole review: the counts say enough here
        where = str(resolve_device(device))
        rows.append(result | measured | {"status": "completed", "device": where, "precision": health["precision"]})
    return rows


def _cell(value, spec: str = "") -> str:
    return "—" if value is None else format(value, spec)


def table(results: list[dict]) -> str:
    rows = [
        "| row | what | device | precision | epochs | epoch s | train s | train examples/s | test acc "
        "| peak GPU MB | whole run s | goal |",
        "|---" * 12 + "|",
    ]
    order = {n: i for i, n in enumerate(ROW_NAMES)}
    trained = sorted((r for r in results if not r["row"].startswith("serve")), key=lambda r: order.get(r["row"], 99))
    for r in trained:
        if r.get("status") != "completed":
            rows.append(f"| {r['row']} | {r['what']} | failed: {r.get('error', '?')} |" + " |" * 9)
            continue
        goal = "—"
        if r.get("goal"):
            goal = f"{r['goal']}: {'met' if r['goal_met'] else 'not met' if r['goal_met'] is False else '?'}"
        rows.append(
            f"| {r['row']} | {r['what']} | {r['device']} | {r['precision']} | {r['epochs']} | "
            f"{_cell(r['epoch_s'], '.1f')} | {_cell(r['train_s'], '.1f')} | "
            f"{_cell(r['train_examples_per_s'], ',.0f')} | "
            f"{_cell(r['test_acc'], '.4f')} | {_cell(r['peak_gpu_mb'], ',')} | {r['wall_s']:.0f} | {goal} |"
        )
    served = [r for r in results if r["row"].startswith("serve")]
    if served:
        rows += [
            "",
            "| served run | device | precision | clients | seconds | requests/s | p50 ms | p99 ms | errors "
            "| labels unlike predict's |",
            "|---" * 10 + "|",
        ]
        for r in served:
            if r.get("status") != "completed":
                rows.append(f"| {r['run']} | failed: {r.get('error', '?')} |" + " |" * 8)
                continue
            rows.append(
                f"| {r['run']} | {r['device']} | {r['precision']} | {r['clients']} | {r['seconds']:.0f} | "
                f"{r['requests_per_s']:.0f} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} | {r['labels_differ']} |"
            )
    machines = sorted(
        {f"{r['device']}, torch {r.get('torch')} (CUDA {r.get('cuda')}), {r['date']}" for r in trained if r.get("cuda")}
    )
    if any(r.get("smoke") for r in results):
        return "\n".join([*rows, "", "Smoke run (--smoke): slices, one epoch; a check of this script, not figures."])
    rows += [
        "",
        "Full IMDb: the families' default 10% of the training reviews held out for validation, the test "
        "split's 25,000 reviews scored once; train s is the sum of the epochs' training time; peak GPU "
        "memory is `torch.cuda.max_memory_allocated` of the training process. "
        + (f"{'; '.join(machines)}. " if machines else "")
        + "Re-run: `make bench-gpu`.",
        "",
        "Goals on one H100-class GPU: " + "; ".join(f"{r.name} {r.goal.says}" for r in ROWS if r.goal) + ".",
    ]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=",".join(ROW_NAMES), help=f"comma-separated, of: {', '.join(ROW_NAMES)}")
    ap.add_argument("--data", default=os.environ.get("SENTIMENT_IMDB"), help="the IMDb archive")
    ap.add_argument("--photos", default=os.environ.get("SENTIMENT_HOTDOG_REAL", str(SHARED / "hotdog_real.zip")))
    ap.add_argument("--out", help="where the run folders go (default runs/bench-gpu, runs/bench-gpu-smoke)")
    ap.add_argument("--readme", action="store_true", help="write the table into docs/gpu.md")
    ap.add_argument("--smoke", action="store_true", help="every row on tiny slices, on whatever device is here")
    a = ap.parse_args()
    rows = [r for r in a.rows.split(",") if r]
    unknown = sorted(set(rows) - set(ROW_NAMES))
    if not rows:
        fail(f"--rows names none; choose from {', '.join(ROW_NAMES)}")
    if unknown:
        fail(f"unknown row {', '.join(unknown)}; choose from {', '.join(ROW_NAMES)}")
    import torch

    if not a.smoke and not torch.cuda.is_available():
        fail("no CUDA GPU here (torch.cuda.is_available() is False); --smoke checks this script on tiny slices instead")
    if a.smoke and a.readme:
        fail("--smoke figures are not kept: drop --readme")
    if not a.data or not Path(a.data).exists():
        fail("name the IMDb archive with --data or $SENTIMENT_IMDB")
    if "hotdog" in rows and not Path(a.photos).exists():
        fail(f"no hot dog photos at {a.photos}; name them with --photos or $SENTIMENT_HOTDOG_REAL")
    out = Path(a.out or REPO / "runs" / ("bench-gpu-smoke" if a.smoke else "bench-gpu")).resolve()
    results_file = out / "gpu-smoke.json" if a.smoke else RESULTS
    device = "auto" if a.smoke else "cuda"
    data = {"text": str(Path(a.data).resolve()), "image": str(Path(a.photos).resolve())}
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name in rows:
        print(f"== {name}", flush=True)
        if name == "serve":
            fresh = serve_rows(out, data["text"], device, a.smoke)
        else:
            fresh = [train_row(next(r for r in ROWS if r.name == name), data, out, device, a.smoke)]
        for r in fresh:
            r |= {"smoke": a.smoke, "date": time.strftime("%Y-%m-%d")}
            failed += r["status"] != "completed"
            print(json.dumps(r), flush=True)
        results = merge_results(results_file, fresh, key=lambda r: r["row"])
        if a.readme:
            replace_section(SECTION, table(results))
    print(table(results))
    if a.smoke:
        print(f"smoke run: figures in {results_file} only")
    if failed:
        print(f"{failed} row(s) failed; see their errors above", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
