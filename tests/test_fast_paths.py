"""The contract of the TextCNN and BiRNN families' forms: every form gives the plain model's predictions
on a fixed batch.

Plain path: one review at a time, padded to 500 like the reference, fp32, the model's own forward.
Fast paths: length-bucketed batches padded per batch, the BiRNN's per-direction LSTMs, the TextCNN's
look-up tables, bf16 autocast, the vectorised id lookup.
"""

import numpy as np
import pytest
import torch

from sentiment.families import birnn, textcnn
from sentiment.families.birnn import BiRNN, BiRNNPerDirection, BiRNNTask
from sentiment.families.textcnn import (
    LOOKUP_MIN_TEXTS,
    TextCNN,
    TextCNNClassifier,
    TextCNNFast,
    TextCNNFastOnCPU,
    TextCNNLookup,
    TextCNNTask,
)
from sentiment.loop import predict_logits
from sentiment.runs import Run
from sentiment.runtime import Runtime
from sentiment.text.batching import TextBatches, encode, pad_or_truncate
from sentiment.text.vocab import PAD_ID, UNK_ID, Vocab

VOCAB = 300


def _reviews(n=40, seed=0):
    """Fixed ids of mixed lengths (1 to 120), some reviews shorter than the widest kernel."""
    rng = np.random.default_rng(seed)
    lengths = [1, 2, 3, 4, 5, *rng.integers(6, 120, n - 5).tolist()]
    return [rng.integers(2, VOCAB, n_).tolist() for n_ in lengths]


def _plain(model, reviews):
    """One review at a time, padded to 500, fp32."""
    model.eval()
    out = []
    with torch.no_grad():
        for ids in reviews:
            padded = torch.tensor([pad_or_truncate(ids, 500, PAD_ID)])
            out.append(model(padded, torch.tensor([len(ids)])))
    return torch.cat(out)


def _fast(model, reviews, precision="fp32", batch_size=16):
    from sentiment.text.batching import Encoded

    lengths = np.array([len(r) for r in reviews], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths[:-1])]).astype(np.int64)
    enc = Encoded(ids=np.concatenate(reviews).astype(np.int32), offsets=offsets, lengths=lengths)
    batches = TextBatches(enc, None, batch_size, shuffle=False)
    return predict_logits(model, batches, Runtime(torch.device("cpu"), precision), size=len(reviews), progress=False)


def _textcnn(cls=TextCNN):
    torch.manual_seed(0)
    model = cls(VOCAB, 16, num_classes=3)
    with torch.no_grad():
        model.embedding.weight[PAD_ID].zero_()
        model.constant_embedding.weight[PAD_ID].zero_()
    return model.eval()


@pytest.mark.parametrize("cls", [BiRNN, BiRNNPerDirection, TextCNN, TextCNNFast, TextCNNFastOnCPU])
def test_bucketed_batches_equal_one_at_a_time_padded_to_500(cls):
    torch.manual_seed(0)
    model = cls(VOCAB, 16, num_classes=3).eval() if issubclass(cls, BiRNN) else _textcnn(cls)
    reviews = _reviews()
    torch.testing.assert_close(_fast(model, reviews), _plain(model, reviews), atol=1e-5, rtol=0)


def test_textcnn_lookup_tables_equal_the_convolutions():
    model = _textcnn()
    reviews = _reviews()
    plain = _plain(model, reviews)
    looked_up = _fast(TextCNNLookup(model), reviews)
    torch.testing.assert_close(looked_up, plain, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls", [BiRNN, BiRNNPerDirection, TextCNN, TextCNNFast, TextCNNLookup])
def test_bf16_gives_the_same_classes(cls):
    """bf16 rounds to about 3 significant digits: logits move a little, the predicted class does not
    (reviews whose two best logits are nearly tied excepted)."""
    plain_cls = TextCNN if cls is TextCNNLookup else cls
    model = cls(VOCAB, 16, num_classes=3).eval() if issubclass(cls, BiRNN) else _textcnn(plain_cls)
    with torch.no_grad():
        model.decoder.weight.mul_(30)  # logits of a trained model's size, not a fresh one's
    plain = _plain(model, _reviews(60))
    if cls is TextCNNLookup:
        model = TextCNNLookup(model, torch.bfloat16)
    bf16 = _fast(model, _reviews(60), precision="bf16")
    scale = plain.abs().max()
    assert (bf16 - plain).abs().max() < 0.05 * scale
    top2 = plain.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 0.1 * scale
    assert clear.sum() > 30
    assert torch.equal(bf16.argmax(1)[clear], plain.argmax(1)[clear])


def _textbook_textcnn_logits(model, ids, lengths):
    """The TextCNN written out with plain autograd ops: conv, ReLU, masked max over time, decoder."""
    x = torch.cat([model.embedding(ids), model.constant_embedding(ids)], dim=2).transpose(1, 2)
    pooled = []
    for conv, k in zip(model.convs, model.kernel_sizes, strict=True):
        h = torch.relu(conv(x))
        padded = torch.arange(h.shape[2])[None, :] >= (lengths - k + 1).clamp(min=1)[:, None]
        pooled.append(h.masked_fill(padded[:, None, :], 0.0).amax(dim=2))
    return model.decoder(torch.cat(pooled, dim=1))


def test_textcnn_training_gradients_equal_plain_autograd():
    """The training forward's argmax-only backward gives plain autograd's parameter gradients,
    with repeated n-grams (tied windows) and reviews shorter than the widest kernel in the batch."""
    model = _textcnn(TextCNNFastOnCPU).double()  # eval: no dropout; gradients still on
    reviews = _reviews(24, seed=3)
    reviews[6] = [7, 8, 9] * 12  # every trigram repeats: tied maxima
    reviews[7] = [5] * 30  # one word repeated: every window ties
    lengths = torch.tensor([len(r) for r in reviews])
    ids = torch.tensor([pad_or_truncate(r, int(lengths.max()), PAD_ID) for r in reviews])
    weights = torch.randn(len(reviews), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    params = [p for p in model.parameters() if p.requires_grad]
    ours = torch.autograd.grad((model(ids, lengths) * weights).sum(), params)
    plain = torch.autograd.grad((_textbook_textcnn_logits(model, ids, lengths) * weights).sum(), params)
    assert any(g.abs().sum() > 0 for g in ours)
    for a, b in zip(ours, plain, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_textcnn_training_backward_under_bf16_autocast_gives_fp32_gradients():
    """Checked as a whole against fp32: bf16 rounds the convolutions (plain autograd under bf16 is
    itself 3-7% off in norm here) and ties different windows now and then (plain autograd splits
    the gradient between them, ours gives it to one). A wrong window would be ~100% off."""
    model = _textcnn(TextCNNFastOnCPU)
    reviews = _reviews(16)
    lengths = torch.tensor([len(r) for r in reviews])
    ids = torch.tensor([pad_or_truncate(r, int(lengths.max()), PAD_ID) for r in reviews])
    weight = model.convs[0].weight
    exact = torch.autograd.grad(_textbook_textcnn_logits(model, ids, lengths).sum(), weight)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = torch.autograd.grad(model(ids, lengths).float().sum(), weight)[0]
    assert ours.dtype == torch.float32
    assert (ours - exact).norm() < 0.15 * exact.norm()


def test_vectorised_lookup_equals_a_plain_dict_lookup():
    vocab = Vocab(["<unk>", "<pad>", "good", "bad", "film"])
    token_lists = [["good", "film", "zzz"], [], ["bad"] * 7, ["film", "<pad>", "unknown"]]
    enc = encode(token_lists, vocab, max_len=5)
    expected = [[vocab.stoi.get(t, UNK_ID) for t in toks[:5]] or [UNK_ID] for toks in token_lists]
    assert [enc.row(i).tolist() for i in range(len(token_lists))] == expected
    assert enc.ids.dtype == np.int32 and enc.lengths.tolist() == [3, 1, 5, 3]


def test_classifier_uses_the_lookup_path_for_many_texts_and_agrees_with_the_plain_one(tmp_path):
    """A saved TextCNN run predicts the same probabilities whether 3 texts (plain path) or many
    (look-up path) are asked for."""
    model = _textcnn()
    words = [f"w{i}" for i in range(VOCAB - 2)]
    vocab = Vocab(["<unk>", "<pad>", *words])
    run = Run.create(tmp_path / "runs", "textcnn")
    run.save_json(
        "config.json",
        {
            "kind": "text",
            "config": {"model": "textcnn", "tokenizer": "basic", "max_len": 500, "precision": "fp32"},
            "classes": ["a", "b", "c"],
            "model_hyper": {"kernel_sizes": [3, 4, 5], "num_channels": [100, 100, 100], "dropout": 0.5},
        },
    )
    vocab.save(run.file("vocab.json"))
    run.save_weights(model.state_dict(), {"epoch": 1})
    clf = TextCNNClassifier(run)
    rng = np.random.default_rng(1)
    texts = [" ".join(rng.choice(words, rng.integers(1, 80))) for _ in range(LOOKUP_MIN_TEXTS)]
    many = clf.probabilities(texts)
    assert isinstance(clf._many, TextCNNLookup)
    few = torch.cat([clf.probabilities(texts[i : i + 3]) for i in range(0, 30, 3)])
    assert clf.model_for(LOOKUP_MIN_TEXTS - 1) is clf.model
    torch.testing.assert_close(many[:30], few, atol=1e-5, rtol=0)


def test_choose_picks_one_form_per_device_and_size():
    assert textcnn.choose("cpu", texts=1) == "numpy"
    assert textcnn.choose("cpu", texts=1, numpy=False) == "train-cpu"
    assert textcnn.choose("cuda", texts=LOOKUP_MIN_TEXTS) == "lookup"
    assert birnn.choose("cpu", texts=LOOKUP_MIN_TEXTS) == "train-cpu"
    assert birnn.choose("cuda") == "train-cuda"
    size = dict(vocab_size=10, embed_size=4, num_classes=2)
    assert type(TextCNNTask.network("cpu", **size)) is TextCNNFastOnCPU
    assert type(TextCNNTask.network("cuda", **size)) is TextCNNFast
    assert type(BiRNNTask.network("cpu", **size)) is BiRNNPerDirection
    assert type(BiRNNTask.network("cuda", **size)) is BiRNN
