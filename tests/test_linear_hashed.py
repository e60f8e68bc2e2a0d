"""The linear family on hashed features (`--features hashed`, or `auto` above a size): the same TF-IDF
transform over hashed columns, the data read from disk a block at a time, an out-of-core solver,
and a run folder that predicts, evaluates and explains like an exact one."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import assert_user_error, jsonl, run_cli, three_class_csv
from sentiment.text import hashed
from sentiment.text.hashed import HashedNgrams, HashedSplits, column_of, tfidf, vectorizer

TEXTS = ["This movie is great great great!", "", "naïve café über-cool film, not bad", "a", "Ünïcödé ÉTÉ été", ""]


def test_stored_columns_are_the_vectorizers_counts():
    """What the streamed readers keep of a text (each n-gram's column, repeated per occurrence) gives
    back the counts the vectorizer makes of it, empty texts included, in any block size."""
    encode = HashedNgrams(2, 12)
    ids, lengths = encode(TEXTS)
    assert lengths.tolist()[1::2] == [0, 0, 0] and lengths.sum() == len(ids)
    want = encode.vectorizer.transform(TEXTS).toarray()
    np.testing.assert_array_equal(hashed._counts(ids, lengths, 1 << 12).toarray(), want)


@pytest.mark.parametrize("bits", [4, 12, 21])
def test_column_of_is_the_vectorizers_column(bits):
    rng = random.Random(bits)
    letters = "abcdefghijklmnopqrstuvwxyzéüßçøñ"
    terms = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 10))) for _ in range(2000)]
    terms += [f"{a} {b}" for a, b in zip(terms[:500], terms[500:1000], strict=True)]
    counts = vectorizer(2, bits).transform(terms)
    for i, term in enumerate(terms[:2000]):  # one word: one column
        assert counts[i].indices.tolist() == [column_of(term, bits)], term
    for i, term in enumerate(terms[2000:], 2000):  # two words: theirs and the pair's
        assert column_of(term, bits) in counts[i].indices, term


def test_hashed_tfidf_is_tfidf_vectorizers_when_nothing_collides():
    """With columns to spare, hashed TF-IDF rows are TfidfVectorizer's, column for term."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = [t for t in TEXTS if t.strip()] + ["great film great cast", "not great, not bad"]
    exact = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, dtype=np.float32)
    want = exact.fit_transform(texts).toarray()
    bits = 24
    counts = vectorizer(2, bits).transform(texts)
    idf = np.zeros(1 << bits, dtype=np.float32)
    columns = [column_of(term, bits) for term in exact.get_feature_names_out()]
    assert len(set(columns)) == len(columns)  # no collision among these few terms
    idf[columns] = hashed.idf_of(np.bincount(counts.indices, minlength=1 << bits), len(texts), 1)[columns]
    got = tfidf(counts, idf)[:, columns].toarray()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_splits_are_the_exact_paths_and_blocks_their_rows(tmp_path):
    """The streamed splits hold the examples `load_subsets` chooses (the training rows shuffled
    once), and every block's rows are the TF-IDF of those examples' texts."""
    from sentiment.families.linear import LinearSettings
    from sentiment.text.corpus import load_subsets

    data = three_class_csv(tmp_path / "train.csv", n=300, seed=3)
    cfg = LinearSettings(model="linear", data=str(data), test_fraction=0.2, val_fraction=0.1, min_df=2)
    corpus, *splits = load_subsets(cfg)
    stored = HashedSplits(cfg, 14)
    try:
        for split, want in zip(("train", "val", "test"), splits, strict=True):
            got = stored.examples[split]
            assert sorted(ex.id for ex in got) == sorted(ex.id for ex in want)
            np.testing.assert_array_equal(stored.labels[split], corpus.targets(got))
        assert [ex.id for ex in stored.examples["train"]] != [ex.id for ex in splits[0]]  # shuffled
        text = {ex.id: ex.text for ex in splits[0] + splits[1] + splits[2]}
        counter = vectorizer(2, 14)
        df = np.bincount(counter.transform([ex.text for ex in splits[0]]).indices, minlength=1 << 14)
        np.testing.assert_array_equal(stored.idf, hashed.idf_of(df, len(splits[0]), 2))
        for split in ("train", "test"):
            rows = [text[ex.id] for ex in stored.examples[split]]
            blocks = list(stored.blocks(split, rows=37))
            assert [b[0] for b in blocks] == list(range(0, len(rows), 37))
            got = np.vstack([b[2].toarray() for b in blocks])
            np.testing.assert_allclose(got, tfidf(counter.transform(rows), stored.idf).toarray(), rtol=1e-6)
        folder = stored.folder
        assert folder.is_dir()
    finally:
        stored.close()
    assert not folder.exists()


@pytest.fixture(scope="module")
def hashed_run(tmp_path_factory):
    import sentiment.cli as cli_module  # noqa: F401 - the CLI's families registered

    root = tmp_path_factory.mktemp("hashed")
    return root, three_class_csv(root / "train.csv", n=300, seed=1), three_class_csv(root / "test.csv", n=90, seed=2)


def test_a_hashed_run_trains_predicts_evaluates_and_explains(hashed_run, capsys, monkeypatch):
    from sentiment.registry import open_classifier
    from sentiment.runs import Run

    root, train, test = hashed_run
    monkeypatch.chdir(root)
    code, out, err = run_cli(capsys, "train", "--model", "linear", "--features", "hashed", "--hash-bits", "16",
                             "--data", train, "--test-data", test, "--passes", "4")  # fmt: skip
    assert code == 0, err
    assert "hashed TF-IDF features: 1- to 2-grams in 2**16 columns" in out and "(--features hashed)" in out
    assert "pass 4/4: val acc by alpha" in out and "fit: SGD logistic regression" in out
    run = (root / "runs" / "latest").resolve()
    assert json.loads((run / "tfidf.json").read_text()) == {"ngrams": 2, "hash_bits": 16}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["hashed"] and summary["test_acc"] >= 0.9 and summary["features"] == 1 << 16
    assert len(summary["val_acc_by_pass"]) == 4 and 1 <= summary["best_pass"] <= 4
    assert not list(Path(hashed.tempfile.gettempdir()).glob("sentiment-hashed-*"))  # its data went with it

    code, out, err = run_cli(capsys, "evaluate", "--data", test, "--json")
    assert code == 0, err
    assert json.loads(out)["accuracy"] == pytest.approx(summary["test_acc"])
    code, out, err = run_cli(capsys, "predict", "superb wonderful great", "awful terrible worst", "--json")
    assert code == 0, err
    assert [r["label"] for r in jsonl(out)] == ["good", "bad"]

    clf = open_classifier(Run.open(run), kind="text")
    text = "superb acting, awful plot; superb superb ending"
    e = clf.explain(text)
    assert e.method == "exact"
    assert sum(t["contribution"] for t in e.tokens) + e.bias == pytest.approx(e.margin, abs=1e-5)
    assert {t["token"] for t in e.tokens if t["contribution"]} >= {"superb", "awful"}


def test_auto_hashes_above_the_size_and_says_so(hashed_run, capsys, monkeypatch):
    from sentiment.families import linear

    root, train, test = hashed_run
    monkeypatch.chdir(root)
    monkeypatch.setattr(linear, "HASHED_ABOVE", 1000)
    code, out, err = run_cli(capsys, "train", "--model", "linear", "--hash-bits", "12", "--data", train,
                             "--test-data", test, "--passes", "1", "--out", "auto")  # fmt: skip
    assert code == 0, err
    assert "in 2**12 columns" in out and "MB of data, above 0 MB" in out
    code, out, err = run_cli(capsys, "train", "--model", "linear", "--data", train, "--test-data", test,
                             "--features", "exact", "--out", "auto")  # fmt: skip
    assert code == 0, err
    assert "TF-IDF features (1- to 2-grams" in out and "--features exact" in out


def test_hashed_features_are_for_classifiers(hashed_run, capsys, monkeypatch, tmp_path):
    root, train, _ = hashed_run
    ratings = tmp_path / "r.csv"
    ratings.write_text("text,label\n" + "".join(f"good film {i},{i % 5}\n" for i in range(40)))
    code, _, err = run_cli(capsys, "train", "--model", "linear", "--features", "hashed", "--data", ratings,
                           "--target", "rating", "--out", tmp_path)  # fmt: skip
    assert_user_error(code, err, "--features hashed fits classifiers")
    code, _, err = run_cli(capsys, "train", "--model", "linear", "--hash-bits", "30", "--data", train,
                           "--out", tmp_path)  # fmt: skip
    assert_user_error(code, err, "--hash-bits must be at most 26")
