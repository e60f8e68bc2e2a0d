"""Multi-label runs (`--multi-label`): every text family learns which of several labels a text has
from words that tell them, tunes a threshold per label on validation, and predict, evaluate,
explain and serve answer with every label's probability and the labels over threshold."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

import sentiment
from cli_helpers import assert_user_error, jsonl, run_cli
from sentiment import registry
from sentiment.errors import SentimentError

TEXT_FAMILIES = [f.name for f in registry.families("text")]
# the word that tells each label; a text has one to three labels and filler around their words
CUES = {"action": "explosions", "comedy": "hilarious", "drama": "tearful", "horror": "gory"}
FILLER = ["the", "a", "film", "it", "was", "and", "this", "of", "story", "cast"]


def texts_and_labels(n: int, seed: int) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    names = list(CUES)
    out = []
    for i in range(n):
        labels = sorted(rng.sample(names, 1 + i % 3))
        words = [CUES[name] for name in labels] * 2 + [rng.choice(FILLER) for _ in range(5)]
        rng.shuffle(words)
        out.append((" ".join(words), labels))
    return out


def multilabel_jsonl(path, n: int = 240, seed: int = 0):
    rows = [json.dumps({"text": t, "labels": labels}) for t, labels in texts_and_labels(n, seed)]
    path.write_text("\n".join(rows) + "\n")
    return path


def multilabel_csv(path, n: int = 240, seed: int = 0, column: str = "tags"):
    rows = [f"text,{column}"] + [f"{t},{'|'.join(labels)}" for t, labels in texts_and_labels(n, seed)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module", params=TEXT_FAMILIES)
def tagged(request, tmp_path_factory):
    family = registry.get(request.param)
    root = tmp_path_factory.mktemp(f"multilabel-{family.name}")
    tiny = family.task.tiny_settings(root)
    if "epochs" in tiny:  # long enough for the words to be learned
        tiny |= {"epochs": 8}
    settings = {
        "model": family.name,
        "data": str(multilabel_jsonl(root / "tags.jsonl")),
        "label_col": "labels",
        "out": str(root / "runs"),
        "device": "cpu",
        "precision": "fp32",
        "target": "multilabel",
        **tiny,
    }
    return family, sentiment.train(echo=None, **settings)


def test_a_multilabel_run_learns_the_labels_and_tunes_thresholds(tagged):
    family, run = tagged
    summary = json.loads((run / "summary.json").read_text())
    meta = json.loads((run / "config.json").read_text())
    assert summary["target"] == meta["target"] == "multilabel" and meta["classes"] == sorted(CUES)
    assert "test_acc" not in summary and "calibration.json" not in {p.name for p in run.iterdir()}
    assert {"test_micro_f1", "test_macro_f1", "test_exact_match", "val_micro_f1"} <= set(summary)
    saved = json.loads((run / "thresholds.json").read_text())
    assert saved["fitted_on"] == "validation" and set(saved["thresholds"]) == set(CUES)
    assert all(0 < t < 1 for t in saved["thresholds"].values())
    if family.name != "transformer":  # a tiny random encoder learns slowly; the others read the words
        assert summary["test_micro_f1"] > 0.9, summary
        assert summary["test_macro_f1"] > 0.85, summary


def test_predict_gives_every_label_and_those_over_threshold(tagged, capsys):
    family, run = tagged
    clf = sentiment.load(run)
    (both, none) = clf.predict(["explosions explosions gory gory film", "the film"])
    assert set(both.scores) == set(CUES) and both.labels is not None
    assert all(0 <= p <= 1 for p in both.scores.values())
    assert both.label == max(both.scores, key=both.scores.get)
    assert both.labels == sorted(both.labels, key=lambda c: -both.scores[c])
    if family.name != "transformer":
        assert set(both.labels) == {"action", "horror"}
    code, out, _ = run_cli(capsys, "predict", "--run", run, "--json", "explosions gory film", "hilarious film")
    rows = jsonl(out)
    assert code == 0 and [set(r) for r in rows] == [{"text", "labels", "scores", "no_known_words"}] * 2
    assert rows[0]["scores"]["action"] == pytest.approx(clf.predict(["explosions gory film"])[0].scores["action"],
                                                        abs=1e-4)  # fmt: skip
    code, out, _ = run_cli(capsys, "predict", "--run", run, "explosions explosions gory gory film")
    assert code == 0 and out.strip().endswith("explosions explosions gory gory film")
    if family.name != "transformer":
        assert out.startswith(("action ", "horror ")) and "," in out.split("  ")[0]


def test_evaluate_reports_micro_macro_f1_and_per_label_figures(tagged, capsys, tmp_path):
    _, run = tagged
    report = sentiment.evaluate(run)
    summary = json.loads((run / "summary.json").read_text())
    assert report["target"] == "multilabel" and report["examples"] == summary["test_examples"]
    assert report["micro_f1"] == pytest.approx(summary["test_micro_f1"], abs=1e-3)
    assert report["macro_f1"] == pytest.approx(summary["test_macro_f1"], abs=1e-3)
    assert set(report["per_label"]) == set(CUES)
    assert {"precision", "recall", "f1", "support", "threshold"} <= set(report["per_label"]["comedy"])
    code, out, _ = run_cli(capsys, "evaluate", "--run", run)
    assert code == 0 and "micro F1" in out and "threshold" in out
    # a new file, `|`-separated in a CSV: its labels are matched to the run's by name
    fresh = multilabel_csv(tmp_path / "fresh.csv", n=40, seed=9, column="labels")
    code, out, _ = run_cli(capsys, "evaluate", "--run", run, "--data", fresh, "--json")
    assert code == 0 and json.loads(out)["examples"] == 40
    code, _, err = run_cli(capsys, "evaluate", "--run", run, "--plot", tmp_path / "r.png")
    assert_user_error(code, err, "a multi-label run has none")
    code, out, _ = run_cli(capsys, "compare", run, "--out", tmp_path / "compare.png")
    assert code == 0 and "test_micro_f1" in out.splitlines()[0]


def test_explanations_explain_the_most_probable_labels_log_odds(tagged):
    family, run = tagged
    expl = sentiment.load(run).explain("explosions explosions film")
    assert expl.labels is not None and expl.label == max(expl.scores, key=expl.scores.get)
    assert expl.probability == pytest.approx(1 / (1 + np.exp(-expl.margin)), abs=1e-4)
    total = sum(t["contribution"] for t in expl.tokens)
    if expl.method == "exact":
        assert total == pytest.approx(expl.margin - expl.bias, abs=1e-3)
    json.dumps(expl.to_json())


def test_serve_answers_a_multilabel_run_with_its_schema(tagged):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from sentiment.runs import Run
    from sentiment.serve import ServedModel, create_app

    family, run = tagged
    if family.name != "linear":
        pytest.skip("one family is enough for the HTTP contract")
    with TestClient(create_app(ServedModel(Run.open(run)))) as client:
        answer = client.post("/predict", json={"texts": ["explosions gory film", "a film"]}).json()
        assert [set(p) for p in answer["predictions"]] == [
            {"labels", "label", "probability", "scores", "no_known_words"}
        ] * 2
        assert set(answer["predictions"][0]["labels"]) == {"action", "horror"}
        explained = client.post("/explain", json={"text": "hilarious film"}).json()
        assert explained["label"] == "comedy" and "labels" in explained
        schema = client.get("/openapi.json").json()["components"]["schemas"]
        assert "MultiLabelPrediction" in schema and "MultiLabelExplainResponse" in schema
        health = client.get("/health").json()
        assert health["target"] == "multilabel" and set(health["thresholds"]) == set(CUES)


def test_the_cli_flag_trains_from_a_pipe_separated_csv(tmp_path, capsys):
    data = multilabel_csv(tmp_path / "tags.csv")
    code, out, _ = run_cli(capsys, "train", "--model", "linear", "--data", data, "--label-col", "tags",
                           "--multi-label", "--out", tmp_path / "runs")  # fmt: skip
    assert code == 0 and "4 labels (any number per text)" in out and "thresholds (tuned on validation)" in out
    assert "done: test micro-F1" in out and "(kept" not in out


def test_multilabel_input_errors_are_one_line(tmp_path, capsys):
    common = ["train", "--model", "linear", "--out", tmp_path / "runs", "--label-col", "labels", "--data"]
    tagged = multilabel_jsonl(tmp_path / "tags.jsonl")
    code, _, err = run_cli(capsys, *common, tagged)  # lists, without --multi-label
    assert_user_error(code, err, "holds several labels", "--multi-label")
    piped = multilabel_csv(tmp_path / "tags.csv")
    code, _, err = run_cli(capsys, "train", "--model", "linear", "--out", tmp_path / "runs", "--label-col", "tags",
                           "--data", piped)  # fmt: skip
    assert_user_error(code, err, "holds several labels", "--multi-label")
    single = tmp_path / "single.csv"
    single.write_text("text,labels\n" + "".join(f"film {i},{'ab'[i % 2]}\n" for i in range(40)))
    code, _, err = run_cli(capsys, *common, single, "--multi-label")  # the reverse
    assert_user_error(code, err, "exactly one label", "drop --multi-label")
    empty = tmp_path / "empty.jsonl"
    empty.write_text(tagged.read_text() + json.dumps({"text": "a film", "labels": []}) + "\n")
    code, _, err = run_cli(capsys, *common, empty, "--multi-label")
    assert_user_error(code, err, "line 241", "empty label list")
    code, _, err = run_cli(capsys, *common, tagged, "--multi-label", "--class-weights", "auto")
    assert_user_error(code, err, "--class-weights")
    code, _, err = run_cli(capsys, *common, tagged, "--multi-label", "--target", "rating")
    assert_user_error(code, err, "drop --target rating")
    code, _, err = run_cli(capsys, *[c if c != "linear" else "textcnn" for c in common], tagged, "--multi-label",
                           "--select", "acc")  # fmt: skip
    assert_user_error(code, err, "--select acc does not apply to a multi-label run")
    code, _, err = run_cli(capsys, "train", "--model", "linear", "--out", tmp_path / "runs", "--multi-label")
    assert_user_error(code, err, "IMDb has one label per review")


def test_a_multilabel_run_is_not_exported(tmp_path, capsys):
    pytest.importorskip("onnx")
    run = sentiment.train(model="textcnn", data=str(multilabel_jsonl(tmp_path / "t.jsonl")), label_col="labels",
                          out=str(tmp_path / "runs"), target="multilabel", epochs=1, min_freq=1, max_len=20,
                          echo=None)  # fmt: skip
    code, _, err = run_cli(capsys, "export", run, "--format", "onnx")
    assert_user_error(code, err, "multi-label run")


def test_thresholds_are_tuned_per_label_on_validation():
    from sentiment.targets import MultiLabel, multilabel_report, parse_labels, tune_thresholds

    rng = np.random.default_rng(0)
    actual = (rng.random((400, 2)) < [0.5, 0.2]).astype(np.float32)
    # label 0 is told apart at 0.7, label 1 at 0.3: tuning finds each one's own
    probs = np.where(actual > 0, [0.8, 0.4], [0.6, 0.2]) + rng.normal(0, 0.02, actual.shape)
    thresholds = tune_thresholds(probs, actual)
    assert 0.6 < thresholds[0] <= 0.8 and 0.2 < thresholds[1] <= 0.4
    assert multilabel_report(probs, actual, ["a", "b"], thresholds)["micro_f1"] == 1.0
    assert multilabel_report(probs, actual, ["a", "b"], [0.5, 0.5])["micro_f1"] < 0.9
    assert tune_thresholds(probs, np.zeros_like(actual)) == [0.5, 0.5]  # nothing to tune on: the default
    tags = MultiLabel(["a", "b", "c"], [0.5, 0.3, 0.9])
    assert tags.labels_of([0.6, 0.7, 0.8]) == ["b", "a"] and tags.labels_of([0.1, 0.1, 0.1]) == []
    assert parse_labels(" a | b |a", "x") == ("a", "b") and parse_labels(["x", 3], "x") == ("x", "3")
    with pytest.raises(SentimentError, match="empty label list"):
        parse_labels("", "x")
