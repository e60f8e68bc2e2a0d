"""The two text classifiers: a bidirectional LSTM and a TextCNN, both started from word vectors.

Both take `ids [B, T]` (padded with `<pad>`) and `lengths [B]`, and give logits `[B, classes]`
that do not depend on how much padding a batch has: a review's prediction is the same alone or
in any batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sentiment.errors import SentimentError
from sentiment.runtime import cpu_has_bf16
from sentiment.text.vocab import PAD_ID


def _reverse_index(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """`[T, B]` time index that reverses each review within its own length and leaves pads in place.

    Applying it twice gives the identity, so the same index also undoes the reversal.
    """
    t = torch.arange(steps, device=lengths.device)[:, None]
    last = (lengths - 1)[None, :]
    return torch.where(t <= last, last - t, t)


def _gather_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x.gather(0, index[:, :, None].expand(-1, -1, x.shape[2]))


def _bf16_lstm_unavailable() -> bool:
    """CPU autocast asks for bf16, but oneDNN can only build a bf16 LSTM on CPUs with native bf16."""
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16 and not cpu_has_bf16()


class BiRNN(nn.Module):
    """Embedding -> 2-layer bidirectional LSTM -> [outputs at the first token, at the last token] -> Linear.

    The "last token" is each review's real last token, and the backward direction starts there:
    with padded batches, reading `outputs[-1]` would make the backward direction read the pads
    first. On CUDA this runs cuDNN over packed sequences; on CPU, where packing is slow, each
    direction runs as its own LSTM and the backward one reads every review reversed within its
    length. Parameters keep `nn.LSTM(bidirectional=True)` names, so either path loads the other's
    weights.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_size: int = 50,
        num_hiddens: int = 100,
        num_layers: int = 2,
        num_classes: int = 2,
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size, padding_idx=PAD_ID)
        self.encoder = nn.LSTM(embed_size, num_hiddens, num_layers=num_layers, bidirectional=True)
        self.decoder = nn.Linear(4 * num_hiddens, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.decoder.weight)
        nn.init.zeros_(self.decoder.bias)
        for name, p in self.encoder.named_parameters():
            if "weight" in name:
                nn.init.xavier_uniform_(p)

    def _direction(self, layer: int, reverse: bool) -> list[torch.Tensor]:
        suffix = f"_l{layer}" + ("_reverse" if reverse else "")
        enc = self.encoder
        return [getattr(enc, f"{kind}{suffix}") for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]

    def _encode_per_direction(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        steps, batch, _ = x.shape
        rev = _reverse_index(lengths, steps)
        h0 = x.new_zeros(1, batch, self.encoder.hidden_size)
        fwd_in, bwd_in = x, _gather_time(x, rev)
        for layer in range(self.encoder.num_layers):
            fwd = torch.lstm(
                fwd_in, (h0, h0), self._direction(layer, False), True, 1, 0.0, self.training, False, False
            )[0]
            bwd_rev = torch.lstm(
                bwd_in, (h0, h0), self._direction(layer, True), True, 1, 0.0, self.training, False, False
            )[0]
            bwd = _gather_time(bwd_rev, rev)
            # Next layer: forward reads [fwd, bwd] in order, backward reads the same reversed.
            fwd_in = torch.cat([fwd, bwd], dim=2)
            bwd_in = torch.cat([_gather_time(fwd, rev), bwd_rev], dim=2)
        return fwd_in

    def _encode_packed(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        out, _ = self.encoder(packed)
        return nn.utils.rnn.pad_packed_sequence(out, total_length=x.shape[0])[0]

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        batch, steps = ids.shape
        if lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.long, device=ids.device)
        lengths = lengths.to(ids.device).clamp(1, steps)
        x = self.embedding(ids.T)  # [T, B, E]
        if x.is_cuda:
            outputs = self._encode_packed(x, lengths)
        elif _bf16_lstm_unavailable():
            with torch.autocast("cpu", enabled=False):
                outputs = self._encode_per_direction(x.float(), lengths)
        else:
            outputs = self._encode_per_direction(x, lengths)
        last = outputs.gather(0, (lengths - 1)[None, :, None].expand(1, -1, outputs.shape[2]))[0]
        encoding = torch.cat([outputs[0], last], dim=1)
        return self.decoder(encoding)


class TextCNN(nn.Module):
    """Two embeddings side by side (one trained, one frozen) -> Conv1d of several widths -> ReLU ->
    max over time (padded positions ignored) -> dropout -> Linear."""

    def __init__(
        self,
        vocab_size: int,
        embed_size: int = 50,
        kernel_sizes: Sequence[int] = (3, 4, 5),
        num_channels: Sequence[int] = (100, 100, 100),
        num_classes: int = 2,
        dropout: float = 0.5,
    ):
        super().__init__()
        if len(kernel_sizes) != len(num_channels) or not kernel_sizes:
            raise SentimentError(
                f"TextCNN needs one channel count per kernel size, got {list(kernel_sizes)} and {list(num_channels)}"
            )
        self.embedding = nn.Embedding(vocab_size, embed_size, padding_idx=PAD_ID)
        self.constant_embedding = nn.Embedding(vocab_size, embed_size, padding_idx=PAD_ID)
        self.constant_embedding.weight.requires_grad_(False)
        self.convs = nn.ModuleList(
            nn.Conv1d(2 * embed_size, c, k) for c, k in zip(num_channels, kernel_sizes, strict=True)
        )
        self.dropout = nn.Dropout(dropout)
        self.decoder = nn.Linear(sum(num_channels), num_classes)
        self.kernel_sizes = tuple(kernel_sizes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in [*self.convs, self.decoder]:
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        batch, steps = ids.shape
        if lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.long, device=ids.device)
        lengths = lengths.to(ids.device).clamp(1, steps)
        x = torch.cat([self.embedding(ids), self.constant_embedding(ids)], dim=2)  # [B, T, 2E]
        if torch.is_autocast_enabled(x.device.type):
            # Cast once for all the convolutions (autocast would cast the same input for each).
            x = x.to(torch.get_autocast_dtype(x.device.type))
        x = x.transpose(1, 2)  # [B, 2E, T]
        widest = max(self.kernel_sizes)
        if steps < widest:  # a zero column is what a <pad> embeds to
            x = F.pad(x, (0, widest - steps))
        pooled = []
        in_place = not torch.is_grad_enabled()  # nothing is kept for a backward pass: reuse the buffers
        for conv, k in zip(self.convs, self.kernel_sizes, strict=True):
            h = conv(x)  # [B, C, T - k + 1]
            h = torch.relu_(h) if in_place else torch.relu(h)
            # A window is real if it starts inside the review; a review shorter than k keeps window 0.
            padded = torch.arange(h.shape[2], device=h.device)[None, :] >= (lengths - k + 1).clamp(min=1)[:, None]
            # After ReLU every value is >= 0, so zeroing the padded windows never changes the max.
            mask = padded[:, None, :]
            h = h.masked_fill_(mask, 0.0) if in_place else h.masked_fill(mask, 0.0)
            pooled.append(h.amax(dim=2))
        return self.decoder(self.dropout(torch.cat(pooled, dim=1)))


class TextCNNLookup(nn.Module):
    """A trained TextCNN's inference rewritten as table look-ups: the same predictions, about twice as fast.

    A convolution over embeddings is a sum over the kernel's taps of `embedding[id] @ W_tap`. At
    inference the embeddings are fixed, so each product is computed once per vocabulary word when
    this wrapper is built (`[V + 1, channels]` per tap); a batch then needs row look-ups and adds,
    with no convolution. `dtype=torch.bfloat16` halves the memory the look-ups read (the tables are
    computed in fp32 and then rounded, as bf16 autocast rounds a convolution's output).

    For prediction only: the wrapper copies what it needs, so later changes to `model` are not seen.
    """

    def __init__(self, model: TextCNN, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.kernel_sizes = model.kernel_sizes
        with torch.no_grad():
            emb = torch.cat([model.embedding.weight, model.constant_embedding.weight], dim=1).float()  # [V, 2E]
            emb = torch.cat([emb, emb.new_zeros(1, emb.shape[1])])  # row V: the zero column past a short batch
            # per conv: [k, V + 1, C], tap j's product with every word
            self.tables = [
                torch.einsum("ve,cek->kvc", emb, conv.weight.float()).to(dtype).contiguous() for conv in model.convs
            ]
            self.biases = [conv.bias.detach().to(dtype) for conv in model.convs]
            self.decoder_weight = model.decoder.weight.detach().float().clone()
            self.decoder_bias = model.decoder.bias.detach().float().clone()
        self.zero_id = emb.shape[0] - 1

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        batch, steps = ids.shape
        if lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.long, device=ids.device)
        lengths = lengths.to(ids.device).clamp(1, steps)
        widest = max(self.kernel_sizes)
        if steps < widest:
            ids = F.pad(ids, (0, widest - steps), value=self.zero_id)
        pooled = []
        for table, bias, k in zip(self.tables, self.biases, self.kernel_sizes, strict=True):
            windows = ids.shape[1] - k + 1
            h = F.embedding(ids[:, :windows], table[0])  # [B, W, C]
            for j in range(1, k):
                h += F.embedding(ids[:, j : j + windows], table[j])
            h = torch.relu_(h.add_(bias))
            padded = torch.arange(windows, device=h.device)[None, :] >= (lengths - k + 1).clamp(min=1)[:, None]
            pooled.append(h.masked_fill_(padded[:, :, None], 0.0).amax(dim=1).float())
        return F.linear(torch.cat(pooled, dim=1), self.decoder_weight, self.decoder_bias)


def for_prediction(model: nn.Module, precision: str = "fp32") -> nn.Module:
    """The fastest form of a trained model for prediction (eval mode, no gradients)."""
    model.eval()
    if isinstance(model, TextCNN):
        return TextCNNLookup(model, torch.bfloat16 if precision == "bf16" else torch.float32)
    return model


MODELS = {"birnn": BiRNN, "textcnn": TextCNN}


def _copy_vectors(embedding: nn.Embedding, weights: torch.Tensor, name: str) -> None:
    if embedding.weight.shape != weights.shape:
        raise SentimentError(
            f"word vectors of shape {tuple(weights.shape)} do not fit {name} {tuple(embedding.weight.shape)}"
        )
    with torch.no_grad():
        embedding.weight.copy_(weights)


def load_pretrained_embeddings(model: nn.Module, weights: torch.Tensor, *, freeze: bool) -> None:
    """Start every embedding of `model` from the word vectors.

    BiRNN: its one embedding is frozen when `freeze`. TextCNN: `embedding` is always trained and
    `constant_embedding` always frozen (that pair is the model), so `freeze` does not apply.
    """
    if isinstance(model, TextCNN):
        _copy_vectors(model.embedding, weights, "embedding")
        _copy_vectors(model.constant_embedding, weights, "constant_embedding")
        model.embedding.weight.requires_grad_(True)
        model.constant_embedding.weight.requires_grad_(False)
    elif isinstance(model, BiRNN):
        _copy_vectors(model.embedding, weights, "embedding")
        model.embedding.weight.requires_grad_(not freeze)
    else:
        raise SentimentError(f"no word vectors can be loaded into a {type(model).__name__}")


def build_model(name: str, *, vocab_size: int, embed_size: int, num_classes: int, **hyper) -> nn.Module:
    if name not in MODELS:
        raise SentimentError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name](vocab_size, embed_size, num_classes=num_classes, **hyper)
