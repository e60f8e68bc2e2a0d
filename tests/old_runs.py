"""Write run folders of every text family and what the `sentiment` importable here answers with them.

    python tests/old_runs.py OUT

tests/test_old_runs.py runs this with the version of sentiment at commit 69144de (before families
became one module each, taken from git history) first on the path: one small run of every text
family then trained in fp32 on a labeled file made here, and `predict --json` of 5, 20 and 300 texts
(each of predict's paths), `evaluate --json` and `explain --json` as that version answered, in
OUT/expected.json. Everything runs in this one process.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import shutil
import sys
from pathlib import Path

import torch

# fp32 whatever this CPU supports, so the answers do not depend on the machine
torch.cpu._is_avx512_bf16_supported = lambda: False
torch.cpu._is_amx_tile_supported = lambda: False

from cli_helpers import WORDS, three_class_csv  # noqa: E402 - beside this script, on the path as its folder

KEEP = ("config.json", "model.safetensors", "vocab.json", "tfidf.json", "summary.json", "metrics.jsonl")
EXPLAINED = "superb wonderful great, it was a film by the river"


def texts(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = [w for ws in WORDS.values() for w in ws] + ["the", "film", "was", "zzzzqqq"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 40))) for _ in range(n)]


def cli(*args) -> str:
    from sentiment.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            assert e.code == 0, (args, e.code, out.getvalue())
    return out.getvalue()


def main(out: Path) -> None:
    from encoders import tiny_encoder

    work = out / "work"
    work.mkdir(parents=True)
    csv = three_class_csv(out / "reviews.csv", n=240)
    test_csv = three_class_csv(out / "test.csv", n=60, seed=1)  # not the training file, wherever it is
    (out / "texts.txt").write_text("".join(t + "\n" for t in texts()), encoding="utf-8")
    encoder = tiny_encoder(work / "encoder", "bert")
    common = ["--data", csv, "--epochs", "2", "--device", "cpu", "--precision", "fp32", "--quiet"]
    families = {
        "textcnn": ["--min-freq", "1", "--max-len", "200", "--batch-size", "16", "--tokenizer", "words"],
        "birnn": ["--min-freq", "1", "--max-len", "200", "--batch-size", "16"],
        "linear": ["--min-df", "1"],
        "transformer": ["--encoder", encoder, "--max-len", "32", "--batch-size", "16", "--lr", "1e-3"],
    }
    expected = {}
    for family, flags in families.items():
        cli("train", "--model", family, *common, *flags, "--out", work / family)
        run = out / family
        run.mkdir()
        trained = (work / family / "latest").resolve()
        for name in KEEP:
            if (trained / name).is_file():
                shutil.copy2(trained / name, run / name)
        if (trained / "encoder").is_dir():
            shutil.copytree(trained / "encoder", run / "encoder")
        answers = {}
        for count in (5, 20, 300):
            file = work / f"texts{count}.txt"
            file.write_text("".join(t + "\n" for t in texts()[:count]), encoding="utf-8")
            args = [*texts()[:count]] if count <= 16 else ["--file", file]
            printed = cli("predict", *args, "--run", run, "--json")
            answers[f"predict_{count}"] = [json.loads(line) for line in printed.splitlines()]
        answers["evaluate"] = json.loads(cli("evaluate", "--run", run, "--data", test_csv, "--json"))
        answers["explain"] = json.loads(cli("explain", EXPLAINED, "--run", run, "--json"))
        expected[family] = answers
    (out / "expected.json").write_text(json.dumps(expected, ensure_ascii=False) + "\n", encoding="utf-8")
    import sentiment

    (out / "written_by.txt").write_text(sentiment.__file__ + "\n", encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
