"""Calibrated probabilities: ECE as defined, a temperature fitted on the validation split and kept in
the run's weights, and what `evaluate` reports; class weights for imbalanced data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import run_cli
from sentiment import calibration


def test_ece_of_known_tables():
    # right with probability 1: no gap; right half the time at 0.9: a gap of 0.4
    assert calibration.ece(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([1, 0])) == 0.0
    probs = np.array([[0.1, 0.9]] * 4)
    assert calibration.ece(probs, np.array([1, 1, 0, 0])) == pytest.approx(0.4)
    # two bins: (0.6, right) and (0.9, wrong) -> (|1 - 0.6| + |0 - 0.9|) / 2
    assert calibration.ece(np.array([[0.4, 0.6], [0.1, 0.9]]), np.array([1, 0])) == pytest.approx(0.65)
    table = calibration.reliability(np.array([[0.4, 0.6], [0.1, 0.9]]), np.array([1, 0]))
    assert len(table) == 15 and sum(b["examples"] for b in table) == 2


def test_fit_temperature_finds_the_temperature_the_labels_were_drawn_with():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(20_000, 3))
    drawn = calibration.softmax(logits / 2.5)
    labels = np.array([rng.choice(3, p=p) for p in drawn])
    assert calibration.fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.05)
    assert calibration.nll(logits, labels, 2.5) < calibration.nll(logits, labels, 1.0)


def test_the_prior_draws_a_small_departure_from_one_back_but_lets_a_large_one_stand():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, size=(20_000, 2))
    # drawn from the logits themselves: calibrated, yet 300 examples' cross-entropy puts T elsewhere
    calibrated = (rng.random(20_000) < calibration.softmax(logits)[:, 1]).astype(int)
    few, labels, rest = logits[:300], calibrated[:300], (logits[300:], calibrated[300:])
    wandering = calibration.fit_temperature(few, labels, prior=None)
    held = calibration.fit_temperature(few, labels)
    assert abs(np.log(wandering)) > 0.05 and abs(np.log(held)) < abs(np.log(wandering)) / 1.4
    assert calibration.nll(*rest, held) < calibration.nll(*rest, wandering)
    # drawn at T = 0.4 (an underconfident model, as a logistic regression is): 300 examples say so
    underconfident = (rng.random(300) < calibration.softmax(few / 0.4)[:, 1]).astype(int)
    free = calibration.fit_temperature(few, underconfident, prior=None)
    assert 0.25 < free < 0.55
    assert calibration.fit_temperature(few, underconfident) == pytest.approx(free, rel=0.06)


def test_the_ece_floor_is_what_sampling_alone_gives():
    rng = np.random.default_rng(2)
    probs = calibration.softmax(rng.normal(0, 2, size=(300, 2)))
    low = calibration.floor(probs)
    assert 0.02 < low < 0.09  # a few hundred examples: a calibrated model still shows a few points
    many = calibration.softmax(rng.normal(0, 2, size=(20_000, 2)))
    assert calibration.floor(many, draws=20) < low / 4  # and it falls as 1 / sqrt(n)
    assert calibration.floor(np.array([[0.0, 1.0]] * 50), draws=5) == 0.0


@pytest.fixture(scope="module")
def imdb_slices(tmp_path_factory):
    """A balanced 2,400-review training file and 1,000 test reviews, and a 1:9 imbalanced pair."""
    path = os.environ.get("SENTIMENT_IMDB")
    if not path or not Path(path).exists():
        pytest.skip("set SENTIMENT_IMDB to the IMDb archive to run real-data tests")
    from benchmarks.calibration import skewed
    from benchmarks.fasttext import _write_csv
    from sentiment.text.corpus import balanced_subset, load_corpus

    corpus = load_corpus(path)
    folder = tmp_path_factory.mktemp("slices")

    def write(name, examples):
        _write_csv(folder / name, examples)
        return folder / name

    return {
        "train": write("train.csv", balanced_subset(corpus.train, 2400, 2, 0)),
        "test": write("test.csv", balanced_subset(corpus.test, 1000, 2, 1)),
        "skewed_train": write("skewed_train.csv", skewed(corpus.train, 150, 1350, 0)),
        "skewed_test": write("skewed_test.csv", skewed(corpus.test, 100, 900, 1)),
    }


def _train(capsys, out, *args):
    code, _, err = run_cli(capsys, "train", *args, "--out", out, "--quiet")
    assert code == 0, err
    return (Path(out) / "latest").resolve()


def _evaluate(capsys, run, data, *more):
    code, out, err = run_cli(capsys, "evaluate", "--run", run, "--data", data, "--json", *more)
    assert code == 0, err
    return json.loads(out)


@pytest.mark.real_data
def test_linear_probabilities_are_calibrated_on_validation(imdb_slices, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["--model", "linear", "--data", imdb_slices["train"], "--test-data", imdb_slices["test"]]
    plain = _train(capsys, "plain", *base, "--no-calibrate")
    fitted = _train(capsys, "fitted", *base)
    record = json.loads((fitted / "calibration.json").read_text())
    t = record["temperature"]
    assert record["examples"] == 240 and record["val_ece_after"] < record["val_ece_before"]
    # a logistic regression on TF-IDF is underconfident: the temperature makes it surer
    assert t < 1
    before = _evaluate(capsys, plain, imdb_slices["test"], "--plot", "plain.png")
    after = _evaluate(capsys, fitted, imdb_slices["test"], "--plot", "fitted.png")
    assert after["accuracy"] == before["accuracy"]  # no prediction changes
    assert after["ece"] < before["ece"] and after["ece"] < 0.05, (before["ece"], after["ece"])
    assert {"ece", "mean_confidence", "balanced_accuracy", "reliability"} <= set(after)
    assert Path("fitted.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # what predict says is the trained model's logits divided by the temperature
    texts = ["a wonderful, moving film", "dull and far too long", "it was a film"]
    from sentiment import load

    raw = load(plain).probabilities(texts)
    logits = np.log(np.asarray(raw, dtype=np.float64))
    expected = calibration.softmax(logits / t)
    assert np.asarray(load(fitted).probabilities(texts)) == pytest.approx(expected, abs=1e-5)
    summary = json.loads((fitted / "summary.json").read_text())
    assert summary["temperature"] == t and summary["test_ece"] == pytest.approx(after["ece"], abs=1e-6)


@pytest.mark.real_data
@pytest.mark.slow
def test_textcnn_calibration_lowers_test_ece(imdb_slices, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["--model", "textcnn", "--data", imdb_slices["train"], "--test-data", imdb_slices["test"],
            "--epochs", "4", "--max-len", "200"]  # fmt: skip
    plain = _train(capsys, "plain", *base, "--no-calibrate")
    fitted = _train(capsys, "fitted", *base)
    before = _evaluate(capsys, plain, imdb_slices["test"])
    after = _evaluate(capsys, fitted, imdb_slices["test"])
    assert after["accuracy"] == pytest.approx(before["accuracy"], abs=2e-3)  # bf16 rounding at most
    assert after["ece"] < before["ece"], (before["ece"], after["ece"])


@pytest.mark.real_data
@pytest.mark.parametrize("model", ["linear", "textcnn"])
def test_class_weights_auto_beat_none_on_macro_f1_when_classes_are_1_to_9(
    model, imdb_slices, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    base = ["--model", model, "--data", imdb_slices["skewed_train"], "--test-data", imdb_slices["skewed_test"]]
    if model == "textcnn":
        base += ["--epochs", "3", "--max-len", "200"]
    f1 = {}
    for weights in ("none", "auto"):
        run = _train(capsys, weights, *base, "--class-weights", weights)
        report = _evaluate(capsys, run, imdb_slices["skewed_test"])
        f1[weights] = report["f1"]
        assert report["balanced_accuracy"] == pytest.approx(
            np.mean([c["recall"] for c in report["per_class"].values()])
        )
    assert f1["auto"] > f1["none"] + 0.02, f1
