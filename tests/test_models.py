import pytest
import torch

from sentiment.errors import SentimentError
from sentiment.families.birnn import BiRNN, BiRNNPerDirection, BiRNNTask
from sentiment.families.textcnn import TextCNN, TextCNNTask
from sentiment.registry import get


def _batch(lengths, vocab=50, extra_pad=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    steps = max(lengths) + extra_pad
    ids = torch.ones(len(lengths), steps, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(2, vocab, (n,), generator=g)
    return ids, torch.tensor(lengths)


@pytest.mark.parametrize("cls", [BiRNN, TextCNN])
def test_forward_shapes(cls):
    torch.manual_seed(0)
    model = cls(50, 8, num_classes=3).eval()
    ids, lengths = _batch([7, 3, 1, 12])
    assert model(ids, lengths).shape == (4, 3)
    assert model(ids).shape == (4, 3)  # no lengths: every position is real


@pytest.mark.parametrize("cls", [BiRNN, TextCNN])
def test_padding_and_batch_mates_do_not_change_a_prediction(cls):
    torch.manual_seed(0)
    model = cls(50, 8).eval()
    ids, lengths = _batch([9, 4, 2, 1, 6])
    base = model(ids, lengths)
    padded = model(*_batch([9, 4, 2, 1, 6], extra_pad=40))
    alone = torch.cat([model(ids[i : i + 1, :n], lengths[i : i + 1]) for i, n in enumerate(lengths.tolist())])
    torch.testing.assert_close(padded, base, atol=1e-5, rtol=0)
    torch.testing.assert_close(alone, base, atol=1e-5, rtol=0)


def test_birnn_reads_the_real_last_token():
    """The backward direction must start at the last real token: changing it changes the output,
    changing what sits in the padding does not."""
    torch.manual_seed(0)
    model = BiRNN(50, 8).eval()
    ids, lengths = _batch([5, 5], extra_pad=3)
    ids[1, 4] = 7 if ids[0, 4] != 7 else 8
    out = model(ids, lengths)
    assert not torch.allclose(out[0], out[1])
    ids2 = ids.clone()
    ids2[:, 5:] = 9  # garbage where the pads are
    torch.testing.assert_close(model(ids2, lengths), out, atol=1e-6, rtol=0)


def test_birnn_per_direction_path_equals_packed_lstm():
    torch.manual_seed(0)
    model = BiRNN(50, 8, num_hiddens=6).eval()
    ids, lengths = _batch([9, 4, 2, 7])
    x = model.embedding(ids.T)
    per_direction = BiRNNPerDirection(50, 8, num_hiddens=6).eval()
    per_direction.load_state_dict(model.state_dict())
    a = per_direction.encode(x, lengths)
    b = model.encode(x, lengths)
    real = (torch.arange(9)[:, None] < lengths[None, :])[:, :, None]
    torch.testing.assert_close(a * real, b * real, atol=1e-5, rtol=0)


def test_birnn_under_cpu_bf16_autocast_without_native_bf16_runs_its_lstms_in_fp32(monkeypatch):
    """oneDNN builds no bf16 LSTM on a CPU without native bfloat16 (AVX2 only): the LSTMs drop out of
    autocast there, so training and prediction work, and only the output layer runs in bf16."""
    import sentiment.runtime

    monkeypatch.setattr(sentiment.runtime, "cpu_has_bf16", lambda: False)
    torch.manual_seed(0)
    model = BiRNNPerDirection(50, 8, num_classes=3)
    ids, lengths = _batch([9, 4, 2, 1, 6])
    with torch.no_grad():
        fp32 = model.eval()(ids, lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model.train()(ids, lengths)
        logits.float().sum().backward()
    assert logits.dtype == torch.bfloat16
    assert model.encoder.weight_hh_l1_reverse.grad.abs().sum() > 0
    torch.testing.assert_close(logits.float(), fp32, atol=0.02, rtol=0.02)


def test_birnn_gradients_flow_through_both_directions():
    torch.manual_seed(0)
    model = BiRNN(50, 8)
    ids, lengths = _batch([6, 3])
    model(ids, lengths).sum().backward()
    for name, p in model.encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_textcnn_short_reviews_and_frozen_side():
    torch.manual_seed(0)
    model = TextCNN(50, 8).eval()
    assert not model.constant_embedding.weight.requires_grad
    assert model.embedding.weight.requires_grad
    ids, lengths = _batch([1, 2])
    assert torch.isfinite(model(ids, lengths)).all()


def test_pretrained_embeddings_and_freezing():
    weights = torch.randn(50, 8)
    weights[1] = 0
    cnn = TextCNN(50, 8)
    TextCNNTask(get("textcnn").settings()).start_from(cnn, weights)
    assert torch.equal(cnn.embedding.weight, weights) and torch.equal(cnn.constant_embedding.weight, weights)
    assert cnn.embedding.weight.requires_grad and not cnn.constant_embedding.weight.requires_grad
    rnn = BiRNN(50, 8)
    frozen, trained = (BiRNNTask(get("birnn").settings(freeze_embedding=f)) for f in (True, False))
    frozen.start_from(rnn, weights)
    assert not rnn.embedding.weight.requires_grad
    trained.start_from(rnn, weights)
    assert rnn.embedding.weight.requires_grad
    with pytest.raises(SentimentError, match="do not fit"):
        frozen.start_from(rnn, torch.zeros(49, 8))


def test_xavier_init_of_layers_not_loaded_from_vectors():
    torch.manual_seed(0)
    model = TextCNN(50, 8)
    for m in [*model.convs, model.decoder]:
        fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(m.weight)
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert m.weight.abs().max() <= bound and torch.all(m.bias == 0)


def test_build_model():
    assert isinstance(BiRNNTask.network("cuda", vocab_size=10, embed_size=4, num_classes=2), BiRNN)
    with pytest.raises(SentimentError, match="unknown model 'gpt'"):
        get("gpt")
