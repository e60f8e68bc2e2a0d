"""One suite over every registered model family, generated from the registry: a tiny run trains
through the Python API, then predicts, evaluates, explains, serves and resumes. A family added to
sentiment/families/ (or through the `sentiment.families` entry points) is covered by adding it."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import sentiment
from cli_helpers import jsonl, run_cli, three_class_csv
from sentiment import registry
from sentiment.errors import SentimentError

FAMILIES = registry.families()
TEXTS = ["superb wonderful great, it was a film", "awful terrible worst", "the table by the river", "great"]
REPO = Path(__file__).resolve().parent.parent


def _photos(root: Path) -> Path:
    """Red and blue photos, 6 per class and split: the classes are told apart by their colour."""
    rng = random.Random(0)
    for split in ("train", "test"):
        for name, colour in (("blue", (20, 40, 200)), ("red", (200, 30, 20))):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(6):
                tint = tuple(min(255, max(0, c + rng.randint(-30, 30))) for c in colour)
                Image.new("RGB", (40 + 4 * i, 36), tint).save(folder / f"{i}.png")
    return root


def _settings(family: registry.Family, root: Path) -> dict:
    data = three_class_csv(root / "three.csv", n=120) if family.kind == "text" else _photos(root / "photos")
    return {
        "model": family.name,
        "data": str(data),
        "out": str(root / "runs"),
        "device": "cpu",
        "precision": "fp32",
        **family.task.tiny_settings(root),
    }


@pytest.fixture(scope="module", params=[f.name for f in FAMILIES])
def trained(request, tmp_path_factory):
    """(family, its settings, a run folder trained with them)."""
    family = registry.get(request.param)
    root = tmp_path_factory.mktemp(family.name)
    settings = _settings(family, root)
    return family, settings, sentiment.train(echo=None, **settings)


def _inputs(family, settings) -> list[str]:
    if family.kind == "text":
        return TEXTS
    return sorted(str(p) for p in Path(settings["data"], "test").rglob("*.png"))[:4]


def test_the_registry_knows_every_family_module():
    assert registry.builtin_names() == sorted(
        p.stem for p in (REPO / "sentiment" / "families").glob("*.py") if not p.stem.startswith("_")
    )
    assert {f.name for f in FAMILIES} >= set(registry.builtin_names())
    with pytest.raises(SentimentError, match="unknown model 'gpt'; choose one of: "):
        registry.get("gpt")


def test_a_run_predicts_with_its_classes(trained):
    family, settings, run = trained
    clf = sentiment.load(run)
    inputs = _inputs(family, settings)
    predictions = clf.predict(inputs)
    assert len(predictions) == len(inputs)
    for p in predictions:
        assert p.label in clf.classes and set(p.scores) == set(clf.classes)
        assert p.probability == max(p.scores.values())
        assert sum(p.scores.values()) == pytest.approx(1, abs=1e-5)
    assert clf.precision in ("fp32", "bf16")


def test_every_form_of_a_run_gives_the_same_answers(trained):
    """A few inputs (each family's quick form, where it has one) and many (its form for files)."""
    family, settings, run = trained
    inputs = _inputs(family, settings)
    few = sentiment.load(run, texts=len(inputs)).probabilities(inputs)
    many = sentiment.load(run, texts=1000).probabilities(inputs)
    np.testing.assert_allclose(np.asarray(few), np.asarray(many), atol=1e-4, rtol=0)


def test_a_run_evaluates(trained, monkeypatch):
    family, settings, run = trained
    if family.kind == "text":
        from sentiment.api import test_corpus
        from sentiment.text import scoring

        clf = sentiment.load(run)
        whole = clf.evaluate(test_corpus(clf.run, None), progress=False)  # every text at once, in memory
        monkeypatch.setattr(scoring, "CHUNK", 5)
        report = sentiment.evaluate(run)  # read as it is scored, 5 texts at a time
        assert report["examples"] == 24  # the held-out 20% of 120 rows
        assert report["confusion"] == whole["confusion"]
        assert report["loss"] == pytest.approx(whole["loss"], abs=1e-5)
    else:
        report = sentiment.load(run).evaluate(settings["data"])
        assert report["examples"] == 12
    assert 0 <= report["accuracy"] <= 1 and len(report["confusion"]) == len(report["classes"])


def test_a_text_run_explains_and_the_parts_add_up(trained):
    family, settings, run = trained
    clf = sentiment.load(run, texts=1)
    if family.kind != "text":
        with pytest.raises(SentimentError):
            clf.explain("a photo")
        return
    expl = clf.explain(TEXTS[0])
    assert expl.tokens and expl.label in clf.classes
    assert expl.label == clf.predict([TEXTS[0]])[0].label
    total = sum(t["contribution"] for t in expl.tokens) + expl.bias
    gap = expl.completeness_gap if expl.completeness_gap is not None else 0.0
    assert total == pytest.approx(expl.margin + gap, abs=1e-4)
    for t in expl.tokens:
        assert 0 <= t["start"] < t["end"] <= len(TEXTS[0])


def test_a_text_run_serves_what_it_predicts(trained):
    family, settings, run = trained
    if family.kind != "text":
        pytest.skip("sentiment serve answers text runs")
    from sentiment.runs import Run
    from sentiment.serve import ServedModel, create_app

    served = ServedModel(Run.open(run))
    create_app(served)
    answers = served.predict(TEXTS)
    want = sentiment.load(run, texts=1000).predict(TEXTS)
    for got, p in zip(answers, want, strict=True):
        assert got["label"] == p.label and got["probability"] == pytest.approx(p.probability, abs=1e-4)
        assert got["no_known_words"] is not p.known
    assert served.health()["model"] == family.name
    assert served.explain(TEXTS[0])["label"] == want[0].label


def test_a_text_network_exports_to_onnx_and_answers_as_torch(trained, capsys, tmp_path, monkeypatch):
    family, settings, run = trained
    if family.kind != "text":
        pytest.skip("ONNX export is for text runs")
    pytest.importorskip("onnxruntime")
    with monkeypatch.context() as mp:
        mp.setitem(sys.modules, "onnxruntime", None)
        code, _, err = run_cli(capsys, "export", run)
        assert code == 2 and "need onnx and onnxruntime" in err, err
    code, out, err = run_cli(capsys, "export", run, "--quantize", "int8")
    if family.task.solver:
        assert code == 2 and "no network to export" in err and err.count("\n") == 1, err
        return
    assert code == 0, err
    assert "probabilities within" in out and (run / "export" / "model-int8.onnx").is_file()
    code, _, err = run_cli(capsys, "export", run)
    assert code == 2 and "already has an ONNX export" in err and "--force" in err

    texts = TEXTS * 30  # batches of mixed lengths, shorter ones than TextCNN's widest kernel among them
    torch_p = np.asarray(sentiment.load(run).probabilities(texts))
    for backend, atol in (("onnx", 1e-3), ("onnx-int8", 0.1)):
        clf = sentiment.load(run, backend=backend)
        np.testing.assert_allclose(np.asarray(clf.probabilities(texts)), torch_p, atol=atol, err_msg=backend)
    code, out, err = run_cli(capsys, "predict", *TEXTS, "--run", run, "--json", "--backend", "onnx")
    assert code == 0, err
    assert [r["label"] for r in jsonl(out)] == [p.label for p in sentiment.load(run).predict(TEXTS)]
    from sentiment.runs import Run
    from sentiment.serve import ServedModel

    served = ServedModel(Run.open(run), backend="onnx")
    assert served.health()["backend"] == "onnx"
    want = sentiment.load(run, texts=1000).predict(TEXTS)
    for got, p in zip(served.predict(TEXTS), want, strict=True):
        assert got["probability"] == pytest.approx(p.probability, abs=1e-3) and got["no_known_words"] is not p.known

    shipped = tmp_path / "shipped"
    code, _, err = run_cli(capsys, "export", run, "--out", shipped)
    assert code == 0, err
    meta = json.loads((shipped / "onnx.json").read_text())
    assert meta["classes"] == sentiment.load(run).classes and meta["max_abs_diff"]["onnx"] <= 1e-3
    if family.name == "transformer":  # onnxruntime's attention, layer-norm and GELU kernels, one attention a layer
        assert meta["fused"]["Attention"] == encoder_layers(run) and meta["fused"]["SkipLayerNormalization"] >= 1
        import onnx

        ops = [node.op_type for node in onnx.load(str(shipped / "model.onnx")).graph.node]
        assert ops.count("Attention") == meta["fused"]["Attention"] and ops.count("Softmax") == 1  # the output's
    else:
        assert meta["fused"] is None
    assert all((shipped / name).exists() for name in meta["tokenization"]) and (shipped / "model.onnx").is_file()
    code, _, err = run_cli(capsys, "export", run, "--out", shipped)
    assert code == 2 and "exists" in err
    code, _, err = run_cli(capsys, "export", run, "--out", shipped, "--force")
    assert code == 0, err


def encoder_layers(run) -> int:
    """The number of layers of a transformer run's encoder."""
    config = json.loads((Path(run) / "encoder" / "config.json").read_text())
    return config["num_hidden_layers"]


def test_a_transformer_run_is_a_hugging_face_classifier(trained, capsys, tmp_path):
    family, settings, run = trained
    if family.kind != "text":
        pytest.skip("Hugging Face export is for text runs")
    code, out, err = run_cli(capsys, "export", run, "--format", "hf", "--out", tmp_path / "hf")
    if family.name != "transformer":
        assert code == 2 and "--format hf writes transformer runs" in err, err
        return
    assert code == 0, err
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(tmp_path / "hf"), top_k=None, truncation=True)
    want = sentiment.load(run).predict(TEXTS)  # trained and answering in fp32
    for got, p in zip(classify(TEXTS), want, strict=True):
        scores = {g["label"]: g["score"] for g in got}
        assert max(scores, key=scores.get) == p.label
        assert scores == pytest.approx(p.scores, abs=2e-3)
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "pipeline(" in card and "Test accuracy" in card
    code, _, err = run_cli(capsys, "export", run, "--format", "hf", "--out", tmp_path / "hf")
    assert code == 2 and "exists" in err


def test_the_cli_predicts_as_the_api_does(trained, capsys):
    family, settings, run = trained
    inputs = _inputs(family, settings)
    command = "predict" if family.kind == "text" else "image-predict"
    code, out, err = run_cli(capsys, command, *inputs, "--run", run, "--json")
    assert code == 0, err
    rows = jsonl(out)
    want = sentiment.load(run).predict(inputs)
    assert [r["label"] for r in rows] == [p.label for p in want]


def test_an_interrupted_run_resumes_to_the_same_weights(trained, tmp_path):
    family, settings, run = trained
    if family.task.solver:  # fitted in one go: there is nothing to resume
        with pytest.raises(SentimentError, match="completed; nothing to resume$"):
            sentiment.train(echo=None, resume=run)
        return
    from safetensors.numpy import load_file

    two = {**settings, "epochs": 2}
    whole = sentiment.train(echo=None, **{**two, "out": str(tmp_path / "whole")})
    stopped = _stopped_after_one_epoch(two, tmp_path)
    resumed = sentiment.train(echo=None, resume=stopped)
    assert resumed == stopped
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _stopped_after_one_epoch(settings: dict, tmp_path: Path) -> Path:
    """A run stopped by SIGINT once its first epoch is on disk (a resumable checkpoint)."""
    from sentiment import recipe
    from sentiment.config import family_config

    cfg = family_config(settings["model"], None, {**settings, "out": str(tmp_path / "stopped")})
    try:
        run = recipe.fine_tune(cfg, progress=False, echo=lambda _: None, after_epoch=_interrupt)
    except KeyboardInterrupt:
        return (tmp_path / "stopped" / "latest").resolve()
    return recipe.resume(run.path, progress=False, echo=lambda _: None).path  # one epoch: nothing to stop


def _interrupt(metrics: dict) -> None:
    os.kill(os.getpid(), signal.SIGINT)


def test_family_modules_import_no_torch():
    names = ", ".join(repr(n) for n in registry.builtin_names())
    script = (
        "import sys\nfrom sentiment import registry\n"
        f"for n in [{names}]:\n    registry.get(n)\n"
        "import sentiment.cli\n"
        "print(sorted(m for m in ('torch', 'transformers', 'sklearn') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
