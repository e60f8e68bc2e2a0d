"""Run folders written by the version before families became one module each (commit 69144de,
taken from git history) predict, evaluate and explain as that version did: tests/old_runs.py
trains one run of every text family of that version with that version, and records its answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import jsonl, run_cli

BEFORE = "69144de646203f43db7460de457bbf6b233f450b"  # the last version with text/task.py and text/fast/
TESTS = Path(__file__).resolve().parent
FAMILIES = ["birnn", "linear", "textcnn", "transformer"]  # every text family of that version


@pytest.fixture(scope="module")
def old(tmp_path_factory) -> tuple[Path, dict]:
    """(the folder with that version's run folders and files, what it answered)."""
    root = tmp_path_factory.mktemp("before-families")
    try:
        archive = subprocess.run(
            ["git", "-C", str(TESTS.parent), "archive", BEFORE, "sentiment"], capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("the git history with the version before families became modules is not here")
    code = root / "code"
    code.mkdir()
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
    out = root / "runs"
    env = {**os.environ, "PYTHONPATH": str(code), "SENTIMENT_DATA_DIR": str(root / "data"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(TESTS / "old_runs.py"), str(out)], cwd=root, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "written_by.txt").read_text().startswith(str(code))  # that version, not this one
    return out, json.loads((out / "expected.json").read_text(encoding="utf-8"))


def _texts(folder: Path, n: int) -> list[str]:
    return (folder / "texts.txt").read_text(encoding="utf-8").splitlines()[:n]


def _scores(rows: list[dict], classes: list[str]) -> np.ndarray:
    return np.array([[r["scores"][c] for c in classes] for r in rows])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("count", [5, 20, 300])
def test_old_run_predicts_the_same(family, count, old, capsys, tmp_path):
    folder, expected = old
    want = expected[family][f"predict_{count}"]
    run = folder / family
    if count <= 16:
        code, out, err = run_cli(capsys, "predict", *_texts(folder, count), "--run", run, "--json")
    else:
        file = tmp_path / "texts.txt"
        file.write_text("".join(t + "\n" for t in _texts(folder, count)), encoding="utf-8")
        code, out, err = run_cli(capsys, "predict", "--file", file, "--run", run, "--json")
    assert code == 0, err
    got = jsonl(out)
    classes = sorted(want[0]["scores"])
    assert [r["text"] for r in got] == [r["text"] for r in want]
    assert [r["label"] for r in got] == [r["label"] for r in want]
    assert [r["no_known_words"] for r in got] == [r["no_known_words"] for r in want]
    np.testing.assert_allclose(_scores(got, classes), _scores(want, classes), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_old_run_evaluates_and_explains_the_same(family, old, capsys):
    folder, expected = old
    run = folder / family
    code, out, err = run_cli(capsys, "evaluate", "--run", run, "--data", folder / "test.csv", "--json")
    assert code == 0, err
    got, want = json.loads(out), expected[family]["evaluate"]
    assert got["accuracy"] == want["accuracy"] and got["confusion"] == want["confusion"]
    assert got["loss"] == pytest.approx(want["loss"], abs=1e-5)

    want = expected[family]["explain"]
    code, out, err = run_cli(capsys, "explain", want["text"], "--run", run, "--json")
    assert code == 0, err
    got = json.loads(out)
    assert (got["label"], got["method"]) == (want["label"], want["method"])
    assert [t["token"] for t in got["tokens"]] == [t["token"] for t in want["tokens"]]
    np.testing.assert_allclose(
        [t["contribution"] for t in got["tokens"]], [t["contribution"] for t in want["tokens"]], atol=1e-4, rtol=0
    )
