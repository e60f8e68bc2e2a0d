"""`sentiment predict` with a few texts runs the trained model in numpy, without importing torch,
and gives the torch path's probabilities."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from cli_helpers import jsonl, run_cli, three_class_csv
from sentiment.families import birnn, textcnn
from sentiment.families.birnn import BiRNN
from sentiment.families.textcnn import NUMPY_MAX_TEXTS, TextCNN
from sentiment.registry import open_classifier
from sentiment.runs import Run

TEXTS = ["great wonderful film", "the worst and most boring", "a table by the river", "superb", "it"]


@pytest.mark.parametrize("cls", [TextCNN, BiRNN])
def test_numpy_forward_equals_the_model_on_reviews_of_every_length(cls):
    torch.manual_seed(0)
    model = cls(300, 16, num_classes=3).eval()
    w = {k: v.numpy() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 4, 5, 6, 37, 120):
        ids = rng.integers(2, 300, n)
        with torch.no_grad():
            want = model(torch.from_numpy(ids)[None], torch.tensor([n]))[0].numpy()
        got = textcnn.numpy_logits(w, ids, 3) if cls is TextCNN else birnn.numpy_logits(w, ids, 2)
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)


@pytest.fixture(scope="module", params=["textcnn", "birnn"])
def trained_run(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"quick-{request.param}")
    csv = three_class_csv(root / "three.csv", n=90)
    args = ["train", "--model", request.param, "--data", str(csv), "--min-freq", "1", "--epochs", "1"]
    args += ["--device", "cpu", "--precision", "fp32", "--quiet", "--out", str(root / "runs")]
    subprocess.run([sys.executable, "-m", "sentiment", *args], check=True, capture_output=True)
    return root / "runs" / "latest"


def test_predict_a_few_texts_without_torch_gives_the_torch_probabilities(trained_run):
    script = (
        "import sys\n"
        "from sentiment.cli import main\n"
        "try:\n"
        f"    main(['predict', '--run', {str(trained_run)!r}, '--json', *{TEXTS!r}])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "print('torch imported' if 'torch' in sys.modules else 'no torch', file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "no torch"
    rows = jsonl(proc.stdout)
    assert [r["text"] for r in rows] == TEXTS
    clf = open_classifier(Run.open(trained_run), kind="text")
    want = clf.probabilities(TEXTS).numpy()
    got = np.array([[r["scores"][c] for c in clf.classes] for r in rows])
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert [r["label"] for r in rows] == [clf.classes[i] for i in want.argmax(1)]


def test_many_texts_take_the_torch_path_with_the_same_answers(trained_run, capsys):
    texts = [f"{t} {i}" for i in range(NUMPY_MAX_TEXTS + 1) for t in TEXTS[:1]]
    code, out, err = run_cli(capsys, "predict", "--run", trained_run, "--json", *texts)
    assert code == 0, err
    quick = open_classifier(Run.open(trained_run), kind="text", texts=1)
    np.testing.assert_allclose(
        [[r["scores"][c] for c in quick.classes] for r in jsonl(out)], quick.probabilities(texts), atol=1e-5, rtol=0
    )


def test_weights_the_numpy_forward_does_not_know_go_to_the_torch_path(trained_run, tmp_path):
    from safetensors.numpy import save_file

    run = tmp_path / "run"
    shutil.copytree(trained_run.resolve(), run)
    state = Run(run).load_weights("numpy")
    state["extra.weight"] = np.zeros(3, np.float32)
    save_file(state, str(run / "model.safetensors"))
    family = json.loads((run / "config.json").read_text())["family"]
    assert {"textcnn": textcnn, "birnn": birnn}[family].open_numpy(Run.open(run)) is None
