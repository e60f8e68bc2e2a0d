"""Run folders written by earlier versions keep loading and predicting the same probabilities.

`tests/fixtures/runs/{textcnn,birnn}` were trained before the recipe was restructured
(`--tokenizer words --limit-train 2000 --limit-test 500 --min-freq 10 --max-len 200 --epochs 1`;
checkpoint and curves left out), and `expected_probabilities.json` holds what that code predicted
for 300 texts in fp32. Every prediction path is reached through the CLI: a few texts (the numpy
forward), `--file` with 20 texts (the torch model) and with 300 (the TextCNN look-up tables).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import jsonl, run_cli

FIXTURES = Path(__file__).parent / "fixtures" / "runs"
EXPECTED = json.loads((FIXTURES / "expected_probabilities.json").read_text())


@pytest.fixture
def fp32_cpu(monkeypatch):
    """Predict in fp32 whatever this CPU supports, as the expected figures were made."""
    import torch

    from sentiment.runtime import cpu_has_bf16

    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: False, raising=False)
    cpu_has_bf16.cache_clear()
    yield
    cpu_has_bf16.cache_clear()


def _probabilities(rows: list[dict], classes: list[str]) -> np.ndarray:
    return np.array([[row["scores"][c] for c in classes] for row in rows])


@pytest.mark.parametrize("model", ["textcnn", "birnn"])
@pytest.mark.parametrize("count", [16, 20, 300])
def test_old_run_folder_predicts_the_same(model, count, capsys, tmp_path, fp32_cpu):
    texts = EXPECTED["texts"][:count]
    run = FIXTURES / model
    if count <= 16:
        code, out, err = run_cli(capsys, "predict", *texts, "--run", run, "--json")
    else:
        file = tmp_path / "texts.txt"
        file.write_text("".join(t.replace("\n", " ") + "\n" for t in texts), encoding="utf-8")
        code, out, err = run_cli(capsys, "predict", "--file", file, "--run", run, "--json")
    assert code == 0, err
    rows = jsonl(out)
    assert len(rows) == count
    classes = json.loads((run / "config.json").read_text())["classes"]
    want = np.array(EXPECTED[model][:count])
    np.testing.assert_allclose(_probabilities(rows, classes), want, atol=1e-4, rtol=0)
