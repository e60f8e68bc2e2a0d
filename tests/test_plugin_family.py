"""A family from another package joins through the `sentiment.families` entry points: it trains
with its own settings and defaults, and its runs open, predict and evaluate like any other."""

from __future__ import annotations

import json
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from cli_helpers import run_cli, three_class_csv
from sentiment import registry


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent / "plugins"))
    point = EntryPoint(name="toy", value="toy_family", group=registry.ENTRY_POINTS)
    monkeypatch.setattr(registry, "_plugins", lambda: {"toy": point})
    monkeypatch.setattr(registry, "_loaded_all", False)
    yield
    registry._registered.pop("toy", None)
    sys.modules.pop("toy_family", None)


def test_a_family_from_an_entry_point_trains_and_predicts(toy, tmp_path, capsys):
    assert "toy" in registry.names("text")
    csv = three_class_csv(tmp_path / "three.csv", n=90)
    code, out, err = run_cli(capsys, "train", "--model", "toy", "--data", csv, "--out", tmp_path / "runs", "--quiet")
    assert code == 0, err
    run = (tmp_path / "runs" / "latest").resolve()
    config = json.loads((run / "config.json").read_text())
    assert config["family"] == "toy" and config["config"]["ngrams"] == 1  # its own default
    code, out, err = run_cli(capsys, "predict", "superb wonderful great", "--run", run)
    assert code == 0 and out.startswith("good"), out + err
