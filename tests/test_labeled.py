import json

import pytest

from sentiment.errors import SentimentError
from sentiment.text.corpus import load_corpus, load_labeled
from sentiment.text.labeled import read_labeled_rows


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_two_classes_with_default_columns(tmp_path):
    p = _write(tmp_path / "a.csv", 'review,sentiment\n"great, fun",positive\nawful,negative\n\nfine,positive\n')
    rows = read_labeled_rows(p)
    assert rows == [("great, fun", "positive", 2), ("awful", "negative", 3), ("fine", "positive", 5)]


def test_tsv_three_classes_named_columns(tmp_path):
    p = _write(tmp_path / "a.tsv", "id\tbody\ttag\n1\tgood\tpos\n2\tbad\tneg\n3\tmeh\tneutral\n")
    corpus = load_labeled(p, p, text_col="body", label_col="tag")
    assert corpus.classes == ["neg", "neutral", "pos"]
    assert [ex.label for ex in corpus.train] == [2, 0, 1]
    assert corpus.counts("test") == {"neg": 1, "neutral": 1, "pos": 1}


def test_jsonl_integer_labels_sorted_numerically(tmp_path):
    lines = [{"text": f"t{i}", "label": lab} for i, lab in enumerate([10, 2, 2, 10, 1, 1])]
    p = _write(tmp_path / "a.jsonl", "\n".join(json.dumps(r) for r in lines) + "\n")
    corpus = load_labeled(p, p)
    assert corpus.classes == ["1", "2", "10"]
    assert [ex.label for ex in corpus.train] == [2, 1, 1, 2, 0, 0]


def test_split_with_test_fraction_is_seeded_and_stratified(tmp_path):
    rows = "".join(f"text {i},{'a' if i % 2 else 'b'}\n" for i in range(40))
    p = _write(tmp_path / "s.csv", "sentence,label\n" + rows)
    c1 = load_labeled(p, test_fraction=0.25, seed=3)
    c2 = load_labeled(p, test_fraction=0.25, seed=3)
    c3 = load_labeled(p, test_fraction=0.25, seed=4)
    assert c1.test == c2.test and c1.test != c3.test
    assert c1.counts("test") == {"a": 5, "b": 5}
    assert len(c1.train) == 30
    assert not {ex.id for ex in c1.train} & {ex.id for ex in c1.test}
    with pytest.raises(SentimentError, match="between 0 and 1"):
        load_labeled(p, test_fraction=1.5)


def test_load_corpus_dispatches_on_suffix(tmp_path):
    p = _write(tmp_path / "x.csv", "text,label\na,x\nb,y\nc,x\nd,y\n")
    corpus = load_corpus(p, test_data=p)
    assert corpus.classes == ["x", "y"] and len(corpus.test) == 4


@pytest.mark.parametrize(
    "name, content, pattern",
    [
        ("nocol.csv", "foo,bar\n1,2\n", "none of the usual text columns"),
        ("nolabel.csv", "text,stars\nhi,3\n", "none of the usual label columns"),
        ("empty_label.csv", "text,label\nhi,pos\nthere,\n", r"line 3: empty label"),
        ("empty.csv", "", "is empty"),
        ("header_only.csv", "text,label\n", "holds no labeled rows"),
        ("bad.jsonl", '{"text": "a", "label": 1}\n{oops\n', r"line 2: not a JSON object"),
        ("list.jsonl", "[1, 2]\n", r"line 1: expected a JSON object"),
        ("nulllabel.jsonl", '{"text": "a", "label": null}\n', r"line 1: empty label"),
        ("one_class.csv", "text,label\na,x\nb,x\n", "only one class"),
        ("notes.txt", "hello\n", "unknown file type"),
    ],
)
def test_bad_files(tmp_path, name, content, pattern):
    p = _write(tmp_path / name, content)
    with pytest.raises(SentimentError, match=pattern) as e:
        load_labeled(p, p)
    assert name in str(e.value) and "\n" not in str(e.value)


def test_named_column_missing_lists_columns(tmp_path):
    p = _write(tmp_path / "a.csv", "text,label\nhi,x\n")
    with pytest.raises(SentimentError, match=r"no text column 'body'; its columns are: text, label"):
        read_labeled_rows(p, text_col="body")


def test_not_utf8_names_the_line(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes(b"text,label\nok,a\ncaf\xe9,b\n")
    with pytest.raises(SentimentError, match=r"latin.csv, line 3: not UTF-8"):
        read_labeled_rows(p)


def test_test_file_with_unknown_class(tmp_path):
    train = _write(tmp_path / "train.csv", "text,label\na,x\nb,y\n")
    test = _write(tmp_path / "test.csv", "text,label\nc,z\n")
    with pytest.raises(SentimentError, match=r"test.csv, line 2: label 'z' is not among"):
        load_labeled(train, test)


def test_missing_file(tmp_path):
    with pytest.raises(SentimentError, match="no file at"):
        load_labeled(tmp_path / "gone.csv")
