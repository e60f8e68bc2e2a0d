"""Run folders written by the version before the recipe restructuring keep loading and predicting
the same probabilities.

That version is taken from git history (`git archive`), trains a small TextCNN and BiRNN run in a
subprocess, and predicts 300 texts with them in fp32; this version then predicts the same texts
from the same folders through every path of the CLI: a few texts (the numpy forward), 20 (the torch
model) and 300 (the TextCNN look-up tables).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import WORDS, jsonl, run_cli, three_class_csv

BEFORE = "e6aeb7f70e7c7568d884498ba2e66507846a7294"  # the last version with text/pipeline.py
REPO = Path(__file__).resolve().parent.parent
# Run the CLI in fp32 whatever this CPU supports, as both versions are compared
FP32 = (
    "import sys, torch; torch.cpu._is_avx512_bf16_supported = lambda: False; "
    "torch.cpu._is_amx_tile_supported = lambda: False; from sentiment.cli import main; main(sys.argv[1:])"
)


def _texts(n=300, seed=0):
    rng = random.Random(seed)
    words = [w for ws in WORDS.values() for w in ws] + ["the", "film", "was", "zzzzqqq"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 40))) for _ in range(n)]


@pytest.fixture(scope="module")
def old_runs(tmp_path_factory):
    """{model: (run folder, probabilities the old version predicted, classes)}."""
    root = tmp_path_factory.mktemp("before")
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", BEFORE, "sentiment"], capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("the git history with the version before the restructuring is not here")
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    env = {**os.environ, "PYTHONPATH": str(root), "SENTIMENT_DATA_DIR": str(root / "data"), "OMP_NUM_THREADS": "1"}
    work = root / "work"
    work.mkdir()
    csv = three_class_csv(work / "reviews.csv", n=240)
    texts = work / "texts.txt"
    texts.write_text("".join(t + "\n" for t in _texts()), encoding="utf-8")

    def old(*args):
        done = subprocess.run(
            [sys.executable, "-c", FP32, *map(str, args)], cwd=work, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    found = subprocess.run(
        [sys.executable, "-c", "import sentiment.text.pipeline as p; print(p.__file__)"],
        cwd=work, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert found.stdout.startswith(str(root)), found.stdout + found.stderr  # the old code, not this one
    runs = {}
    for model in ("textcnn", "birnn"):
        old("train", "--model", model, "--data", csv, "--min-freq", "1", "--max-len", "200", "--epochs", "1",
            "--batch-size", "16", "--out", work / model, "--quiet")  # fmt: skip
        run = (work / model / "latest").resolve()
        classes = json.loads((run / "config.json").read_text())["classes"]
        rows = jsonl(old("predict", "--file", texts, "--run", run, "--json"))
        runs[model] = (run, np.array([[r["scores"][c] for c in classes] for r in rows]), classes)
    return runs


@pytest.fixture
def fp32_cpu(monkeypatch):
    """Predict in fp32 whatever this CPU supports, as the old version's figures were made."""
    import torch

    from sentiment.runtime import cpu_has_bf16

    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: False, raising=False)
    cpu_has_bf16.cache_clear()
    yield
    cpu_has_bf16.cache_clear()


@pytest.mark.parametrize("model", ["textcnn", "birnn"])
@pytest.mark.parametrize("count", [16, 20, 300])
def test_old_run_folder_predicts_the_same(model, count, old_runs, capsys, tmp_path, fp32_cpu):
    run, want, classes = old_runs[model]
    texts = _texts()[:count]
    if count <= 16:
        code, out, err = run_cli(capsys, "predict", *texts, "--run", run, "--json")
    else:
        file = tmp_path / "texts.txt"
        file.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
        code, out, err = run_cli(capsys, "predict", "--file", file, "--run", run, "--json")
    assert code == 0, err
    rows = jsonl(out)
    assert len(rows) == count
    got = np.array([[r["scores"][c] for c in classes] for r in rows])
    np.testing.assert_allclose(got, want[:count], atol=1e-4, rtol=0)
