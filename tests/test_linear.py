"""`--model linear`: TF-IDF + logistic regression as a family like the others (run folder, predict,
evaluate, compare), fitted by its own solver, and giving scikit-learn's own probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_helpers import assert_user_error, jsonl, run_cli, three_class_csv


def _two_class(path, n=200, seed=0):
    rows = three_class_csv(path.with_suffix(".all.csv"), n=n, seed=seed).read_text().splitlines()
    path.write_text("\n".join([rows[0], *(r for r in rows[1:] if not r.endswith(",meh"))]) + "\n")
    return path


@pytest.fixture(scope="module", params=["three", "two"])
def trained(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"linear-{request.param}")
    make = three_class_csv if request.param == "three" else _two_class
    train, test = make(root / "train.csv", seed=1), make(root / "test.csv", seed=2)
    return root, train, test


def test_linear_run_predicts_evaluates_and_compares(trained, capsys, monkeypatch):
    root, train, test = trained
    monkeypatch.chdir(root)
    code, out, err = run_cli(capsys, "train", "--model", "linear", "--data", train, "--test-data", test, "--quiet")
    assert code == 0, err
    assert "config: " in out and " lr=" not in out and "epochs=" not in out  # the loop's settings do not apply
    run = (root / "runs" / "latest").resolve()
    assert (run / "tfidf.json").is_file() and not (run / "checkpoint.pt").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_acc"] >= 0.9 and summary["status"] == "completed"

    code, out, err = run_cli(capsys, "predict", "superb wonderful great", "awful terrible worst", "--json")
    assert code == 0, err
    assert [r["label"] for r in jsonl(out)] == ["good", "bad"]
    code, out, err = run_cli(capsys, "evaluate", "--data", test, "--json")
    assert code == 0, err
    assert json.loads(out)["accuracy"] == pytest.approx(summary["test_acc"])
    code, out, err = run_cli(capsys, "compare", run, "--out", root / "c.png")
    assert code == 0, err
    assert (root / "c.png").is_file()
    code, _, err = run_cli(capsys, "train", "--resume", run)
    assert_user_error(code, err, "completed; nothing to resume")


def test_probabilities_are_scikit_learns(trained, capsys, monkeypatch):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from sentiment.registry import open_classifier
    from sentiment.runs import Run
    from sentiment.text.labeled import read_labeled_rows

    root, train, test = trained
    monkeypatch.chdir(root)
    # every row trained on and the probabilities as fitted: what scikit-learn alone gives
    run_cli(capsys, "train", "--model", "linear", "--data", train, "--test-data", test, "--out", "exact",
            "--val-fraction", "0", "--no-calibrate", "--quiet")  # fmt: skip
    rows = read_labeled_rows(train)
    texts = [t for t, _, _ in rows]
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, dtype=np.float32)
    model = LogisticRegression(C=4.0, max_iter=1000, random_state=0).fit(
        vectorizer.fit_transform(texts), [lab for _, lab, _ in rows]
    )
    probe = [t for t, _, _ in read_labeled_rows(test)][:20]
    want = model.predict_proba(vectorizer.transform(probe))
    clf = open_classifier(Run.open("exact/latest"), kind="text")
    assert clf.classes == list(model.classes_)
    np.testing.assert_allclose(clf.probabilities(probe), want, atol=1e-5)


@pytest.mark.real_data
def test_linear_on_an_imdb_slice(real_imdb, tmp_path, capsys):
    code, out, err = run_cli(
        capsys, "train", "--model", "linear", "--data", real_imdb, "--limit-train", "2000",
        "--limit-test", "1000", "--out", tmp_path, "--quiet",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads((tmp_path / "latest" / "summary.json").read_text())
    assert summary["test_acc"] >= 0.8, summary


def test_a_word_model_is_the_linear_models_logits_times_its_share(tmp_path):
    """`WordModel` (the transformer few-shot recipe's): TF-IDF and a logistic regression with the
    family's defaults, its logits times its share, the same after saving; None without shared words."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from sentiment.families.linear import LinearSettings, WordModel
    from sentiment.runs import Run

    rows = [r.rsplit(",", 1) for r in three_class_csv(tmp_path / "t.csv", n=90).read_text().splitlines()[1:]]
    texts, names = [t.strip('"') for t, _ in rows], [n for _, n in rows]
    classes = sorted(set(names))
    labels = np.array([classes.index(n) for n in names])
    words = WordModel.fit(texts, labels, classes, share=2.0, balanced=False, seed=0)
    defaults = LinearSettings()
    tfidf = TfidfVectorizer(ngram_range=(1, defaults.ngrams), min_df=defaults.min_df, sublinear_tf=True)
    x = tfidf.fit_transform(texts)
    want = LogisticRegression(C=defaults.c, max_iter=1000).fit(x, labels).decision_function(x[:5])
    got = words.logits(texts[:5])
    assert np.allclose(got - got.mean(1, keepdims=True), 2.0 * (want - want.mean(1, keepdims=True)), atol=1e-4)
    run = Run(tmp_path / "run")
    run.path.mkdir()
    words.save(run)
    again = WordModel.load(run, classes)
    assert np.allclose(again.logits(texts[:5]), got, atol=1e-6) and again.info["share"] == 2.0
    assert WordModel.load(Run(tmp_path), classes) is None  # a run folder without one
    unique = [f"word{i}x" for i in range(60)]  # no word in two texts
    assert WordModel.fit(unique, np.arange(60) % 2, ["a", "b"], share=2.0, balanced=False, seed=0) is None
