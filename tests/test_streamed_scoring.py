"""evaluate, predict and explain on big files: the texts are read as they are answered, a chunk at a
time, and what is written or reported is what answering everything at once gives."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_multilabel import multilabel_csv
from test_rating import rating_csv

import sentiment
from cli_helpers import assert_user_error, jsonl, run_cli, three_class_csv
from sentiment import cli
from sentiment.api import test_corpus as read_test_corpus
from sentiment.errors import SentimentError
from sentiment.text import classify, scoring


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Linear runs (label, rating, multi-label) on small files, and a TextCNN run with a test file."""
    root = tmp_path_factory.mktemp("scoring")
    three = three_class_csv(root / "three.csv", n=300)
    test = three_class_csv(root / "test.csv", n=90, seed=3)
    quiet = dict(out=str(root / "runs"), device="cpu", precision="fp32", echo=None)
    made = {
        "label": (sentiment.train(model="linear", data=str(three), min_df=1, **quiet), three),
        "rating": (
            sentiment.train(model="linear", data=str(rating_csv(root / "r.csv")), target="rating", min_df=1, **quiet),
            None,
        ),  # fmt: skip
        "multilabel": (
            sentiment.train(
                model="linear", data=str(multilabel_csv(root / "m.csv")), target="multilabel", min_df=1, **quiet
            ),
            None,
        ),  # fmt: skip
        "textcnn": (
            sentiment.train(
                model="textcnn",
                data=str(three),
                test_data=str(test),
                epochs=1,
                min_freq=1,
                max_len=100,
                batch_size=16,
                **quiet,
            ),
            test,
        ),  # fmt: skip
    }
    return root, made


def _in_memory(run, data=None, limit=None, seed=None):
    """What evaluating everything at once reports: the family's own evaluate of the whole split."""
    from sentiment import config
    from sentiment.text.corpus import balanced_subset

    clf = sentiment.load(run)
    corpus = read_test_corpus(clf.run, data)
    meta = clf.run.read_json("config.json")
    seed = config.held_out_seed(meta["config"]["seed"]) if seed is None else seed
    corpus.test = balanced_subset(corpus.test, limit, len(corpus.classes), seed)
    return clf.evaluate(corpus, progress=False)


def _same(got: dict, want: dict):
    assert got.keys() - {"run", "source"} == want.keys()
    for key, value in want.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, abs=1e-5, nan_ok=True), key
        elif key not in ("reliability",):
            assert got[key] == value, key


@pytest.mark.parametrize("which", ["label", "rating", "multilabel", "textcnn"])
@pytest.mark.parametrize("limit", [None, 20])
def test_streamed_evaluate_reports_what_evaluating_at_once_does(runs, which, limit, monkeypatch):
    """The held-out split (or the run's test file), scored 7 texts at a time, with and without a
    balanced --limit: the report of the family's evaluate over the whole split in memory."""
    _, made = runs
    run, _ = made[which]
    want = _in_memory(run, limit=limit)
    calls = []
    outputs = classify.report

    def spy(clf, out, corpus):
        calls.append(corpus)
        return outputs(clf, out, corpus)

    monkeypatch.setattr(scoring, "CHUNK", 7)
    monkeypatch.setattr(classify, "report", spy)
    got = sentiment.evaluate(run, limit=limit)
    _same(got, want)
    assert got["examples"] == (limit or want["examples"])
    (corpus,) = calls
    assert all(ex.text == "" for ex in corpus.test) and corpus.train == []  # no text was held


def test_a_users_file_is_read_in_chunks_and_never_held(runs, monkeypatch):
    _, made = runs
    run, test = made["textcnn"]
    clf = sentiment.load(run)
    sizes = []
    real = type(clf).outputs

    def counted(self, texts, **kw):
        sizes.append(len(texts))
        return real(self, texts, **kw)

    monkeypatch.setattr(type(clf), "outputs", counted)
    monkeypatch.setattr(scoring, "CHUNK", 16)
    got = sentiment.evaluate(run, test)
    assert sizes == [16] * 5 + [10]  # 90 rows
    monkeypatch.undo()
    _same(got, _in_memory(run, data=test))


def test_an_imdb_archive_is_scored_in_its_split_order(tiny_imdb_tar, tmp_path, monkeypatch):
    """IMDb's test split is kept in another order than the archive's; each review's outputs are its own."""
    run = sentiment.train(model="linear", data=str(tiny_imdb_tar), min_df=1, out=str(tmp_path / "runs"), echo=None)
    monkeypatch.setattr(scoring, "CHUNK", 3)
    _same(sentiment.evaluate(run, tiny_imdb_tar), _in_memory(run, data=tiny_imdb_tar))


def test_a_label_the_run_never_saw_stops_before_any_scoring(runs, tmp_path, monkeypatch):
    _, made = runs
    run, _ = made["label"]
    odd = tmp_path / "odd.csv"
    odd.write_text("text,label\ngreat film,good\nodd film,strange\n")
    clf = sentiment.load(run)
    monkeypatch.setattr(type(clf), "outputs", lambda *a, **k: pytest.fail("scored before the labels were checked"))
    with pytest.raises(SentimentError, match="label 'strange' is not one of the run's classes"):
        sentiment.evaluate(run, odd)


def test_predict_writes_a_big_file_as_it_goes(runs, tmp_path, capsys, monkeypatch):
    """Answered 4 lines at a time (blank lines skipped, CRLF and a byte-order mark read as one file
    reads them): the output of answering all at once; a line that is not UTF-8 stops the run with
    its line number, after the lines before it were written."""
    root, made = runs
    run, _ = made["label"]
    lines = [f"{w} film number {i}" for i, w in enumerate(["great", "awful", "table", "superb", "worst"] * 3)]
    path = tmp_path / "reviews.txt"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines[:5] + ["", "  "] + lines[5:]).encode())
    code, once, err = run_cli(capsys, "predict", "--run", run, "--json", *lines)
    assert code == 0, err
    monkeypatch.setattr(cli, "PREDICT_CHUNK", 4)
    code, out, err = run_cli(capsys, "predict", "--run", run, "--json", "--file", path)
    assert code == 0, err
    assert jsonl(out) == jsonl(once) and [r["text"] for r in jsonl(out)] == lines

    bad = tmp_path / "bad.txt"
    bad.write_bytes(("\n".join(lines[:9]) + "\n").encode() + b"caf\xe9 film\n" + b"great\n")
    code, out, err = run_cli(capsys, "predict", "--run", run, "--file", bad)
    assert_user_error(code, err, "bad.txt, line 10: not UTF-8")
    assert [ln.split("  ", 1)[1] for ln in out.splitlines()] == lines[:9]  # every line before it


def test_predict_counts_unknown_texts_over_every_chunk(runs, tmp_path, capsys, monkeypatch):
    _, made = runs
    run, _ = made["label"]
    path = tmp_path / "few.txt"
    path.write_text("great film\nzzzz\nqqqq\nawful\nxxxx\n")
    monkeypatch.setattr(cli, "PREDICT_CHUNK", 2)
    code, out, err = run_cli(capsys, "predict", "--run", run, "--file", path)
    assert code == 0 and len(out.splitlines()) == 5
    assert "3 of 5 texts have no word the model knows" in err


def test_explain_a_file_line_by_line(runs, tmp_path, capsys):
    _, made = runs
    run, _ = made["textcnn"]
    path = tmp_path / "why.txt"
    path.write_text("superb wonderful great film\n\nawful terrible worst\nthe table by the river\n")
    code, out, err = run_cli(capsys, "explain", "--run", run, "--file", path, "--json")
    assert code == 0, err
    answers = jsonl(out)
    assert [a["text"] for a in answers] == ["superb wonderful great film", "awful terrible worst",
                                            "the table by the river"]  # fmt: skip
    code, one, err = run_cli(capsys, "explain", "--run", run, "awful terrible worst", "--json")
    assert json.loads(one) == answers[1]
    code, out, err = run_cli(capsys, "explain", "--run", run, "--file", path)
    assert code == 0 and out.count("awful") >= 1 and len(out.split("\n\n")) >= 3
    code, out, err = run_cli(capsys, "explain", "--run", run, "--file", path, "--html", tmp_path / "p.html")
    assert_user_error(code, err, "--html draws one review's page")
    code, out, err = run_cli(capsys, "explain", "--run", run)
    assert_user_error(code, err, "nothing to explain")


def test_outputs_are_the_logits_behind_the_probabilities(runs):
    _, made = runs
    for run, _ in made.values():
        clf = sentiment.load(run)
        texts = ["great superb film", "awful worst"]
        np.testing.assert_allclose(np.asarray(clf.answers(clf.outputs(texts))), np.asarray(clf.probabilities(texts)),
                                   atol=1e-5)  # fmt: skip
