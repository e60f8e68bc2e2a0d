"""The reference pipeline (benchmarks/reference.py) on a tiny IMDb archive made in the test."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from benchmarks import reference
from conftest import NEG, POS


class _FakeVectors:
    """Stands in for GloVe: row i of the table is i (in every column), so copies are easy to check."""

    def embedding_for(self, vocab) -> torch.Tensor:
        return torch.arange(len(vocab.itos), dtype=torch.float32)[:, None].repeat(1, 50)


@pytest.fixture
def data(tiny_imdb_tar):
    return reference.prepare(tiny_imdb_tar, min_freq=1)


def test_prepare_pads_every_review_to_500(data):
    features, labels = data.train.tensors
    assert features.shape == (6, 500) and features.dtype == torch.long
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert data.test.tensors[0].shape == (6, 500)
    assert data.itos[:2] == ["<unk>", "<pad>"]
    assert (features[:, -1] == 1).all()  # every tiny review is shorter than 500 tokens
    # the ids spell the review back: newlines dropped, lower-cased, split on single spaces
    first = features[0][features[0] != 1].tolist()
    texts = {t.replace("\n", "").lower() for t in NEG + POS}
    assert " ".join(data.itos[i] for i in first) in texts
    assert data.seconds > 0


def test_vocab_is_specials_then_descending_count_ties_alphabetical(data):
    counts = Counter(tok for text in NEG + POS for tok in text.replace("\n", "").lower().split(" "))
    rest = data.itos[2:]
    assert set(rest) == set(counts)
    assert rest == sorted(rest, key=lambda t: (-counts[t], t))

    itos = reference.build_itos([["b", "a", "c", "b"], ["a", "c", "b", "d"]], min_freq=2)
    assert itos == ["<unk>", "<pad>", "b", "a", "c"]


def test_min_freq_and_unknown_tokens(tiny_imdb_tar):
    data = reference.prepare(tiny_imdb_tar)  # min_freq 5: almost nothing in the tiny data is that frequent
    counts = Counter(tok for text in NEG + POS for tok in text.replace("\n", "").lower().split(" "))
    assert data.itos[2:] == [t for t, _ in sorted(counts.items(), key=lambda tc: (-tc[1], tc[0])) if counts[t] >= 5]
    test_features = data.test.tensors[0]
    assert set(test_features.unique().tolist()) <= set(range(len(data.itos)))
    assert (test_features == 0).any()  # unknown words map to <unk>


def test_limits_take_a_seeded_subset(tiny_imdb_tar):
    a = reference.prepare(tiny_imdb_tar, limit_train=4, limit_test=2, seed=3, min_freq=1)
    b = reference.prepare(tiny_imdb_tar, limit_train=4, limit_test=2, seed=3, min_freq=1)
    assert len(a.train) == 4 and len(a.test) == 2
    assert torch.equal(a.train.tensors[0], b.train.tensors[0]) and a.itos == b.itos


@pytest.mark.parametrize("name", ["birnn", "textcnn"])
def test_models_forward_and_freeze_the_glove_copy(data, name):
    torch.manual_seed(0)
    model = reference.build(name, data, _FakeVectors())
    ids = data.train.tensors[0][:4]
    assert model(ids).shape == (4, 2)

    frozen = model.embedding.weight if name == "birnn" else model.constant_embedding.weight
    assert not frozen.requires_grad
    expected = torch.arange(len(data.itos), dtype=torch.float32)[:, None].repeat(1, 50)
    assert torch.equal(frozen, expected)
    if name == "textcnn":
        assert model.embedding.weight.requires_grad and torch.equal(model.embedding.weight, expected)

    optimizer = reference.make_optimizer(name, model)
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert id(frozen) not in in_optimizer
    assert in_optimizer == {id(p) for p in model.parameters() if p.requires_grad}
    assert optimizer.param_groups[0]["lr"] == reference.LEARNING_RATES[name]


def test_train_epoch_and_evaluate(data):
    torch.manual_seed(0)
    model = reference.build("textcnn", data, _FakeVectors())
    loader = torch.utils.data.DataLoader(data.train, batch_size=4, shuffle=True)
    metrics = reference.train_epoch(model, loader, reference.make_optimizer("textcnn", model))
    assert set(metrics) == {"loss", "acc", "examples", "seconds", "examples_per_s"}
    assert metrics["examples"] == 6 and 0 <= metrics["acc"] <= 1 and metrics["loss"] > 0
    assert 0 <= reference.evaluate(model, torch.utils.data.DataLoader(data.test, batch_size=4)) <= 1


@pytest.mark.parametrize("name", ["birnn", "textcnn"])
def test_run_end_to_end(tiny_imdb_tar, name):
    result = reference.run(name, tiny_imdb_tar, epochs=1, min_freq=1)
    assert {"model", "prepare_seconds", "epochs", "test_acc", "vocab_size"} <= set(result)
    assert result["model"] == name and result["train_examples"] == 6 and result["test_examples"] == 6
    [epoch] = result["epochs"]
    assert {"epoch", "loss", "acc", "examples", "seconds", "examples_per_s", "test_acc"} <= set(epoch)
    assert result["test_acc"] == epoch["test_acc"]


def test_unknown_model(data):
    with pytest.raises(ValueError, match="unknown model"):
        reference.build("gpt", data, _FakeVectors())
