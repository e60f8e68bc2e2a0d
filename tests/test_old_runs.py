"""Run folders written before families became one module each (tests/fixtures/old_runs/, see
make_old_runs.py there) predict, evaluate and explain as that version did."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import jsonl, run_cli

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "old_runs"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
FAMILIES = sorted(EXPECTED)  # every text family of that version


def _texts(n: int) -> list[str]:
    return (FIXTURES / "texts.txt").read_text(encoding="utf-8").splitlines()[:n]


def _scores(rows: list[dict], classes: list[str]) -> np.ndarray:
    return np.array([[r["scores"][c] for c in classes] for r in rows])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("count", [5, 20, 300])
def test_old_run_predicts_the_same(family, count, capsys, tmp_path):
    want = EXPECTED[family][f"predict_{count}"]
    run = FIXTURES / family
    if count <= 16:
        code, out, err = run_cli(capsys, "predict", *_texts(count), "--run", run, "--json")
    else:
        file = tmp_path / "texts.txt"
        file.write_text("".join(t + "\n" for t in _texts(count)), encoding="utf-8")
        code, out, err = run_cli(capsys, "predict", "--file", file, "--run", run, "--json")
    assert code == 0, err
    got = jsonl(out)
    classes = sorted(want[0]["scores"])
    assert [r["text"] for r in got] == [r["text"] for r in want]
    assert [r["label"] for r in got] == [r["label"] for r in want]
    assert [r["no_known_words"] for r in got] == [r["no_known_words"] for r in want]
    np.testing.assert_allclose(_scores(got, classes), _scores(want, classes), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_old_run_evaluates_and_explains_the_same(family, capsys):
    run = FIXTURES / family
    code, out, err = run_cli(capsys, "evaluate", "--run", run, "--data", FIXTURES / "test.csv", "--json")
    assert code == 0, err
    got, want = json.loads(out), EXPECTED[family]["evaluate"]
    assert got["accuracy"] == want["accuracy"] and got["confusion"] == want["confusion"]
    assert got["loss"] == pytest.approx(want["loss"], abs=1e-5)

    want = EXPECTED[family]["explain"]
    code, out, err = run_cli(capsys, "explain", want["text"], "--run", run, "--json")
    assert code == 0, err
    got = json.loads(out)
    assert (got["label"], got["method"]) == (want["label"], want["method"])
    assert [t["token"] for t in got["tokens"]] == [t["token"] for t in want["tokens"]]
    np.testing.assert_allclose(
        [t["contribution"] for t in got["tokens"]], [t["contribution"] for t in want["tokens"]], atol=1e-4, rtol=0
    )
