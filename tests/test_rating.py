"""Rating runs (`--target rating`): every text family trains a one-output regression on numbers it
can recover from the words, and predict, evaluate, explain and serve answer with ratings."""

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
# the word that tells each rating; the rest of a text is filler
RATED = {1.0: "dreadful", 3.0: "poor", 5.5: "okay", 7.0: "good", 9.5: "superb"}
FILLER = ["the", "a", "film", "it", "was", "and", "this", "of", "story", "cast"]


def rating_csv(path, n: int = 200, seed: int = 0, column: str = "label"):
    rng = random.Random(seed)
    rows = [f"text,{column}"]
    for i in range(n):
        rating = list(RATED)[i % len(RATED)]
        words = [RATED[rating]] * 2 + [rng.choice(FILLER) for _ in range(5)]
        rng.shuffle(words)
        rows.append(f"{' '.join(words)},{rating:g}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module", params=TEXT_FAMILIES)
def rated(request, tmp_path_factory):
    family = registry.get(request.param)
    root = tmp_path_factory.mktemp(f"rating-{family.name}")
    tiny = family.task.tiny_settings(root)
    if "epochs" in tiny:  # long enough for the words to be learned
        tiny |= {"epochs": 8}
    settings = {
        "model": family.name,
        "data": str(rating_csv(root / "ratings.csv")),
        "out": str(root / "runs"),
        "device": "cpu",
        "precision": "fp32",
        "target": "rating",
        **tiny,
    }
    return family, sentiment.train(echo=None, **settings)


def test_a_rating_run_learns_the_ratings_and_records_them(rated):
    family, run = rated
    summary = json.loads((run / "summary.json").read_text())
    meta = json.loads((run / "config.json").read_text())
    assert summary["target"] == meta["target"] == "rating" and meta["classes"] == ["rating"]
    assert meta["rating"]["low"] == 1.0 and meta["rating"]["high"] == 9.5
    assert "test_acc" not in summary and "calibration.json" not in {p.name for p in run.iterdir()}
    assert {"test_mae", "test_rmse", "test_spearman", "val_mae"} <= set(summary)
    spread = np.mean(np.abs(np.array(list(RATED)) - np.mean(list(RATED))))  # answering the mean
    if family.name != "transformer":  # a tiny random encoder learns slowly; the others read the words
        assert summary["test_mae"] < 0.6 * spread, summary
        assert summary["test_spearman"] > 0.7, summary
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("train_mae" in m and "train_acc" not in m for m in metrics if m["epoch"] >= 1)


def test_a_rating_run_answers_ratings_within_its_range(rated, capsys):
    family, run = rated
    clf = sentiment.load(run)
    predictions = clf.predict(["superb superb film", "dreadful dreadful film", "a film"])
    assert [p.label for p in predictions] == ["rating"] * 3
    assert all(1.0 <= p.rating <= 9.5 and p.probability is None for p in predictions)
    if family.name != "transformer":
        assert predictions[0].rating > predictions[1].rating
    code, out, _ = run_cli(capsys, "predict", "--run", run, "--json", "superb superb film", "okay")
    rows = jsonl(out)
    assert code == 0 and [set(r) for r in rows] == [{"text", "rating", "no_known_words"}] * 2
    assert rows[0]["rating"] == pytest.approx(predictions[0].rating, abs=1e-4)
    code, out, _ = run_cli(capsys, "predict", "--run", run, "superb superb film")
    assert code == 0 and out.split()[0] == f"{predictions[0].rating:.2f}"


def test_evaluate_reports_mae_rmse_and_spearman(rated, capsys):
    _, run = rated
    report = sentiment.evaluate(run)
    summary = json.loads((run / "summary.json").read_text())
    assert report["target"] == "rating" and report["examples"] == summary["test_examples"]
    assert report["mae"] == pytest.approx(summary["test_mae"], abs=1e-3)
    assert report["spearman"] == pytest.approx(summary["test_spearman"], abs=1e-3)
    code, out, _ = run_cli(capsys, "evaluate", "--run", run)
    assert code == 0 and "MAE" in out and "Spearman" in out
    code, _, err = run_cli(capsys, "evaluate", "--run", run, "--plot", run / "r.png")
    assert_user_error(code, err, "a rating run has none")
    code, out, _ = run_cli(capsys, "compare", run, "--out", run / "compare.png")
    assert code == 0 and "test_mae" in out.splitlines()[0] and (run / "compare.png").is_file()


def test_explanations_of_a_rating_add_up_to_it(rated):
    family, run = rated
    expl = sentiment.load(run).explain("superb superb film")
    assert expl.label == "rating" and expl.probability is None
    assert expl.rating == pytest.approx(min(max(expl.margin, 1.0), 9.5), abs=1e-4)
    total = sum(t["contribution"] for t in expl.tokens)
    if expl.method == "exact":
        assert total == pytest.approx(expl.margin - expl.bias, abs=1e-3)
    json.dumps(expl.to_json())


def test_serve_answers_a_rating_run_with_its_schema(rated):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from sentiment.runs import Run
    from sentiment.serve import ServedModel, create_app

    family, run = rated
    if family.name != "linear":
        pytest.skip("one family is enough for the HTTP contract")
    with TestClient(create_app(ServedModel(Run.open(run)))) as client:
        answer = client.post("/predict", json={"texts": ["superb film", "dreadful film"]}).json()
        assert [set(p) for p in answer["predictions"]] == [{"rating", "no_known_words"}] * 2
        explained = client.post("/explain", json={"text": "superb film"}).json()
        assert explained["label"] == "rating" and explained["probability"] is None
        schema = client.get("/openapi.json").json()["components"]["schemas"]
        assert "RatingPrediction" in schema and "Prediction" not in schema
        assert client.get("/health").json()["target"] == "rating"


def test_rating_input_errors_are_one_line(tmp_path, capsys):
    data = rating_csv(tmp_path / "r.csv")
    common = ["train", "--model", "linear", "--target", "rating", "--out", tmp_path / "runs", "--data"]
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nsuperb film,9\nawful film,lots\n")
    code, _, err = run_cli(capsys, *common, bad)
    assert_user_error(code, err, "line 3", "'lots' is not a number")
    same = tmp_path / "same.csv"
    same.write_text("text,label\n" + "".join(f"film {i},7\n" for i in range(20)))
    code, _, err = run_cli(capsys, *common, same)
    assert_user_error(code, err, "every rating", "is 7")
    code, _, err = run_cli(capsys, *common, data, "--class-weights", "auto")
    assert_user_error(code, err, "a rating run")
    code, _, err = run_cli(capsys, *[c if c != "linear" else "textcnn" for c in common], data, "--select", "f1")
    assert_user_error(code, err, "--select f1 is for labels")
    code, _, err = run_cli(capsys, "train", "--model", "textcnn", "--data", data, "--select", "mae",
                           "--out", tmp_path / "runs")  # fmt: skip
    assert_user_error(code, err, "--select mae is for --target rating")


def test_a_rating_run_is_not_exported(tmp_path, capsys):
    pytest.importorskip("onnx")
    run = sentiment.train(model="textcnn", data=str(rating_csv(tmp_path / "r.csv")), out=str(tmp_path / "runs"),
                          target="rating", epochs=1, min_freq=1, max_len=20, echo=None)  # fmt: skip
    code, _, err = run_cli(capsys, "export", run, "--format", "onnx")
    assert_user_error(code, err, "rating run")


def test_ratings_select_the_best_epoch_by_validation_mae():
    from sentiment.loop import RatingObjective
    from sentiment.targets import Rating, select_for

    objective = RatingObjective(Rating(low=1, high=10, mean=5, std=2))
    better = {"val_mae": 1.0, "val_loss": 0.5, "val_spearman": 0.5}
    worse = {"val_mae": 1.2, "val_loss": 0.4, "val_spearman": 0.6}
    assert objective.score(better, select_for("rating", "auto")) > objective.score(worse, "mae")
    assert objective.score(worse, "spearman") > objective.score(better, "spearman")
    assert objective.score(worse, "loss") > objective.score(better, "loss")
    with pytest.raises(SentimentError, match="two different values"):
        Rating.of([3, 3, 3])
