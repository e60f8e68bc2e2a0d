"""`sentiment explain`: per-token contributions that add up (exactly for TextCNN and linear, to the
completeness gap for integrated gradients), with character offsets into the original text."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cli_helpers import assert_user_error, run_cli, three_class_csv
from sentiment.explain import IG_BATCH, margin_weights, open_explainer
from sentiment.registry import open_classifier
from sentiment.runs import Run
from sentiment.text.tokenize import basic, basic_spans, words, words_spans

TEXTS = [
    "superb wonderful great, it was a film",
    "awful <br /><br />terrible WORST!!! and the chair",
    "great",  # shorter than the widest kernel
    "the table and the chair by the river, awful but loved it; 7/10 didn't hate it",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    csv = three_class_csv(root / "three.csv", n=240)
    made = {}
    for model in ("textcnn", "birnn", "linear"):
        tokens = ["--tokenizer", "words"] if model != "linear" else []
        code = _train(["--model", model, "--data", csv, "--out", root / model, "--epochs", "3", "--quiet", *tokens])
        assert code == 0
        made[model] = Run.open(root / model / "latest")
    return made


def _train(args):
    from sentiment.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", *map(str, args)])
    return e.value.code


def _logits(run: Run, text: str) -> np.ndarray:
    """The run's own classifier, in fp32, for one text."""
    clf = open_classifier(run, "cpu", kind="text")
    if hasattr(clf, "model"):
        enc = clf.encode([text])
        ids = torch.from_numpy(enc.ids.astype(np.int64))[None]
        with torch.no_grad():
            return clf.model.float().eval()(ids, torch.tensor([ids.shape[1]]))[0].double().numpy()
    return clf.outputs([text])[0].astype(np.float64)


@pytest.mark.parametrize("model", ["textcnn", "linear"])
@pytest.mark.parametrize("text", TEXTS)
def test_exact_contributions_add_up_to_the_margin(runs, model, text):
    expl = open_explainer(runs[model]).explain(text)
    assert expl.method == "exact"
    total = sum(t["contribution"] for t in expl.tokens) + expl.bias
    assert total == pytest.approx(expl.margin, abs=1e-9, rel=1e-9)
    logits = _logits(runs[model], text)  # the model's own forward agrees with the decomposition's
    label = int(logits.argmax())
    assert expl.label == runs[model].read_json("config.json")["classes"][label]
    assert expl.margin == pytest.approx(float(margin_weights(len(logits), label) @ logits), abs=1e-4)


def test_textcnn_tokens_point_into_the_text_and_the_strong_words_lead(runs):
    text = "Superb, WONDERFUL film.<br />It was great!"
    expl = open_explainer(runs["textcnn"]).explain(text)
    assert [t["token"] for t in expl.tokens] == words(text)
    for t in expl.tokens:
        assert text[t["start"] : t["end"]].lower() == t["token"]
    assert expl.label == "good"
    top = max(expl.tokens, key=lambda t: t["contribution"])
    assert top["token"] in {"superb", "wonderful", "great"}


# as many tokens as integration points in one forward: [T, B, E] and [B, T, E] look alike
AS_MANY = " ".join((["superb", "film", "and", "the", "chair"] * IG_BATCH)[:IG_BATCH])


@pytest.mark.parametrize("model", ["birnn"])
def test_integrated_gradients_are_complete_to_their_reported_gap(runs, model):
    for text in [*TEXTS, AS_MANY]:
        expl = open_explainer(runs[model]).explain(text)
        assert expl.method == "integrated gradients"
        total = sum(t["contribution"] for t in expl.tokens)
        assert total + expl.bias - expl.margin == pytest.approx(expl.completeness_gap, abs=1e-4)
        assert abs(expl.completeness_gap) < 0.05 * max(1.0, abs(expl.margin - expl.bias))
        assert len(expl.tokens) == len(words(text))


def test_transformer_runs_are_explained_over_their_word_pieces(tmp_path, capsys):
    pytest.importorskip("transformers")
    from encoders import tiny_encoder

    csv = three_class_csv(tmp_path / "three.csv", n=240)
    encoder = tiny_encoder(tmp_path / "encoder")
    code = _train(["--model", "transformer", "--encoder", encoder, "--data", csv, "--out", tmp_path / "runs",
                   "--max-len", "12", "--head-tokens", "4", "--epochs", "1", "--batch-size", "8"])  # fmt: skip
    assert code == 0
    run = Run.open(tmp_path / "runs" / "latest")
    long = "superb wonderful great film and the table by the window and the river, loved it, awful end"
    expl = open_explainer(run).explain(long)
    assert expl.cut  # 10 text tokens of more: the first 4 and the last 6
    assert len(expl.tokens) == 10
    assert text_of(long, expl.tokens[0]) == "superb" and text_of(long, expl.tokens[-1]) == "end"
    total = sum(t["contribution"] for t in expl.tokens) + expl.bias
    assert total - expl.margin == pytest.approx(expl.completeness_gap, abs=1e-4)
    capsys.readouterr()
    code, out, err = run_cli(capsys, "explain", "loved it", "--run", run.path, "--json")
    assert code == 0, err
    assert [text_of("loved it", t) for t in json.loads(out)["tokens"]] == ["loved", "it"]


def text_of(text: str, token: dict) -> str:
    return text[token["start"] : token["end"]]


def test_explain_command_json_terminal_and_html(runs, tmp_path, capsys):
    run = runs["textcnn"].path
    page = tmp_path / "why.html"
    code, out, err = run_cli(capsys, "explain", "superb film, awful chair", "--run", run, "--html", page)
    assert code == 0, err
    first, text_line, towards, against = out.splitlines()[:4]
    assert first.split()[0] in {"good", "bad", "meh"} and "exact" in first
    assert text_line == "superb film, awful chair"  # not a terminal: no colour codes
    assert towards.startswith("for:") and against.startswith("against:")
    html = page.read_text()
    assert html.count('class="tok"') == 5 and "superb" in html
    code, out, err = run_cli(capsys, "explain", "superb film", "--run", run, "--json")
    assert code == 0, err
    body = json.loads(out)
    assert {"token", "start", "end", "contribution"} == set(body["tokens"][0])
    assert set(body["scores"]) == {"good", "bad", "meh"}


@pytest.mark.parametrize("text, needle", [("", "empty"), ("   \n ", "empty"), ("great " * 40_000, "characters long")])
def test_explain_bad_input_is_one_line(runs, text, needle, capsys):
    code, _, err = run_cli(capsys, "explain", text, "--run", runs["textcnn"].path)
    assert_user_error(code, err, needle)


_PIECES = list("abcXYZ '\u2019.,!?-/<>\n0123456789") + ["<br />", "<BR/>", "n't", "don't", " \u00e9t\u00e9 ", "It's"]
_TEXT = st.lists(st.sampled_from(_PIECES), max_size=30).map("".join)


@settings(max_examples=200, deadline=None)
@given(_TEXT)
def test_spans_give_the_tokenizers_tokens(text):
    assert [t for t, _, _ in words_spans(text)] == words(text)
    assert [t for t, _, _ in basic_spans(text)] == basic(text)
    for token, start, end in words_spans(text):
        piece = text[start:end].replace("\u2019", "'").lower()
        assert piece == token
