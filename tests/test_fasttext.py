"""`--model fasttext`: words and hashed word pairs, averaged, then a linear layer. The numpy form and
the explanation are held to the torch model; the generated suite (test_families.py) covers the rest."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cli_helpers import assert_user_error, run_cli, three_class_csv
from sentiment.families.fasttext import FastText, ngram_rows, numpy_logits

HYPER = {"buckets": 97, "ngrams": 3}


def _model(seed: int = 0) -> FastText:
    torch.manual_seed(seed)
    model = FastText(50, 8, num_classes=3, **HYPER)
    torch.nn.init.normal_(model.decoder.weight)  # fastText starts it at zero: nothing to compare then
    return model.eval()


def test_numpy_form_equals_the_model_for_every_length_and_batch_mate():
    model = _model()
    w = {k: v.numpy() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    reviews = [rng.integers(2, 50, n) for n in (1, 2, 3, 7, 40)]
    width = max(len(r) for r in reviews) + 5
    ids = torch.ones(len(reviews), width, dtype=torch.long)
    for i, r in enumerate(reviews):
        ids[i, : len(r)] = torch.from_numpy(r)
    with torch.no_grad():
        batched = model(ids, torch.tensor([len(r) for r in reviews])).numpy()
    for i, r in enumerate(reviews):
        np.testing.assert_allclose(numpy_logits(w, r, HYPER), batched[i], atol=1e-5, rtol=0)


def test_a_word_pair_is_its_own_row_in_either_order():
    a, b = np.array([5, 9]), np.array([9, 5])
    (pair_ab, triple_ab), (pair_ba, _) = ngram_rows(np.array([5, 9, 5]), 97, 3), ngram_rows(b, 97, 3)
    assert len(pair_ab) == 2 and len(triple_ab) == 1 and pair_ab[0] != pair_ba[0]
    assert ngram_rows(a, 97, 3)[0][0] == pair_ab[0]  # the same pair hashes the same wherever it is


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from sentiment import train

    root = tmp_path_factory.mktemp("fasttext")
    csv = three_class_csv(root / "three.csv", n=240)
    return train(model="fasttext", data=str(csv), min_freq=1, epochs=3, buckets=1000, out=str(root), echo=None)


def test_explanations_are_exact(run):
    from sentiment import load

    text = "superb wonderful great, but the chair by the river was awful"
    expl = load(run, texts=1).explain(text)
    assert expl.method == "exact" and [t["token"] for t in expl.tokens][:3] == ["superb", "wonderful", "great"]
    assert sum(t["contribution"] for t in expl.tokens) + expl.bias == pytest.approx(expl.margin, abs=1e-9)
    assert expl.label == "good" and max(expl.tokens, key=lambda t: t["contribution"])["token"] in WORDS_GOOD


WORDS_GOOD = {"great", "wonderful", "excellent", "superb", "brilliant", "loved"}


def test_optimizers_without_sparse_steps_are_refused(tmp_path, capsys):
    csv = three_class_csv(tmp_path / "three.csv", n=60)
    code, _, err = run_cli(capsys, "train", "--model", "fasttext", "--data", csv, "--optimizer", "adam", "--quiet")
    assert_user_error(code, err, "--optimizer adam", "adagrad or sgd")
