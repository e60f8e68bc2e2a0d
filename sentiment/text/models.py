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


def _padded_windows(windows: int, lengths: torch.Tensor, k: int) -> torch.Tensor:
    """`[B, W]` True where a width-`k` window starts in the padding; a review shorter than `k` keeps window 0."""
    return torch.arange(windows, device=lengths.device)[None, :] >= (lengths - k + 1).clamp(min=1)[:, None]


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


class _ConvReluMaxPool(torch.autograd.Function):
    """`amax(relu(conv1d(x)), over real windows)` whose backward reads only each channel's winning window.

    Max-over-time passes a channel's gradient to one window per review, so the backward needs the
    weights and the `k` input columns of that window, not a full transposed convolution over every
    position. Parameter gradients equal plain autograd's (a tie between windows only happens for a
    repeated n-gram, whose embedding gradient is the same whichever copy receives it; under bf16,
    rounding can tie two different windows, and the gradient goes to one of them). Saves `x`,
    the winners and the pooled values instead of every convolution output.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, lengths):
        h = torch.relu_(F.conv1d(x, weight, bias))  # [B, C, W]
        padded = _padded_windows(h.shape[2], lengths, weight.shape[2])
        # After ReLU every value is >= 0, so zeroing the padded windows never changes the max.
        pooled, where = h.masked_fill_(padded[:, None, :], 0.0).max(dim=2)
        ctx.save_for_backward(x, weight, where, pooled)
        return pooled

    @staticmethod
    def backward(ctx, grad):
        x, weight, where, pooled = ctx.saved_tensors
        acc = torch.promote_types(weight.dtype, torch.float32)
        batch, c_in, steps = x.shape
        channels, _, k = weight.shape
        g_t = torch.where(pooled > 0, grad, 0).to(acc).T.contiguous()  # ReLU's gradient at the winner; [C, B]
        # Row of `[B*T, Cin]` (x as time-major rows) of tap j of channel c's winning window in review b,
        # ordered [C, B, k] so the weight gradient is one batched product per channel without a copy.
        taps_at = where.T.contiguous()[:, :, None] + torch.arange(k, device=x.device)  # [C, B, k]
        flat = (taps_at + (torch.arange(batch, device=x.device) * steps)[None, :, None]).view(-1)
        dx = dw = db = None
        if ctx.needs_input_grad[1]:
            windows = x.transpose(1, 2).reshape(batch * steps, c_in).index_select(0, flat)
            windows = windows.view(channels, batch, k * c_in).to(acc)
            dw = torch.bmm(g_t[:, None, :], windows).view(channels, k, c_in).transpose(1, 2).to(weight.dtype)
        if ctx.needs_input_grad[2]:
            db = g_t.sum(1).to(weight.dtype)
        if ctx.needs_input_grad[0]:
            taps = weight.to(acc).permute(0, 2, 1).contiguous()  # [C, k, Cin]
            contrib = g_t[:, :, None, None] * taps[:, None]  # [C, B, k, Cin], rows in the order of `flat`
            dxt = torch.zeros(batch * steps, c_in, dtype=acc, device=x.device)
            dxt.index_add_(0, flat, contrib.view(-1, c_in))
            dx = dxt.view(batch, steps, c_in).transpose(1, 2).to(x.dtype)
        return dx, dw, db, None


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
            if not in_place and not x.is_cuda:
                pooled.append(_ConvReluMaxPool.apply(x, conv.weight, conv.bias, lengths))
                continue
            h = conv(x)  # [B, C, T - k + 1]
            h = torch.relu_(h) if in_place else torch.relu(h)
            # After ReLU, zeroed padded windows never change the max.
            mask = _padded_windows(h.shape[2], lengths, k)[:, None, :]
            h = h.masked_fill_(mask, 0.0) if in_place else h.masked_fill(mask, 0.0)
            pooled.append(h.amax(dim=2))
        return self.decoder(self.dropout(torch.cat(pooled, dim=1)))


class TextCNNLookup(nn.Module):
    """A trained TextCNN's inference rewritten as table look-ups: the same predictions, about 5x faster on CPU.

    A convolution over embeddings is a sum over the kernel's taps of `embedding[id] @ W_tap`. At
    inference the embeddings are fixed, so each product is computed once per vocabulary word when
    this wrapper is built (`[V + 1, channels]` per tap); a window is then the sum of `k` rows, one
    `embedding_bag` per convolution. `dtype=torch.bfloat16` halves the memory the look-ups read (the tables are
    computed in fp32 and then rounded, as bf16 autocast rounds a convolution's output).

    For prediction only: the wrapper copies what it needs, so later changes to `model` are not seen.
    """

    def __init__(self, model: TextCNN, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.kernel_sizes = model.kernel_sizes
        with torch.no_grad():
            emb = torch.cat([model.embedding.weight, model.constant_embedding.weight], dim=1).float()  # [V, 2E]
            emb = torch.cat([emb, emb.new_zeros(1, emb.shape[1])])  # row V: the zero column past a short batch
            # per conv: [k * (V + 1) + 1, C], tap j's product with every word in rows j * (V + 1) onwards,
            # and a last row of -inf that stands in for tap 0 of a window starting in the padding
            self.tables = []
            for conv in model.convs:
                products = torch.einsum("ve,cek->kvc", emb, conv.weight.float()).reshape(-1, conv.out_channels)
                outside = products.new_full((1, conv.out_channels), float("-inf"))
                self.tables.append(torch.cat([products, outside]).to(dtype))
            self.biases = [conv.bias.detach().to(dtype) for conv in model.convs]
            self.decoder_weight = model.decoder.weight.detach().float().clone()
            self.decoder_bias = model.decoder.bias.detach().float().clone()
        self.rows = emb.shape[0]  # per tap; the last one is the zero column

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        batch, steps = ids.shape
        if lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.long, device=ids.device)
        lengths = lengths.to(ids.device).clamp(1, steps)
        widest = max(self.kernel_sizes)
        if steps < widest:
            ids = F.pad(ids, (0, widest - steps), value=self.rows - 1)
        pooled = []
        for table, bias, k in zip(self.tables, self.biases, self.kernel_sizes, strict=True):
            windows = ids.shape[1] - k + 1
            # window t sums row ids[t + j] of tap j's table over j: one bag of k rows per window
            taps = ids.unfold(1, k, 1) + torch.arange(k, device=ids.device) * self.rows  # [B, W, k]
            # A window starting in the padding reads the -inf row for tap 0: never the max (window 0 is real).
            taps[:, :, 0].masked_fill_(_padded_windows(windows, lengths, k), table.shape[0] - 1)
            h = F.embedding_bag(taps.reshape(-1, k), table, mode="sum").view(batch, windows, -1)  # [B, W, C]
            # Adding the bias and ReLU after the max gives the same values: both are monotonic.
            pooled.append(torch.relu_(h.amax(dim=1).add_(bias)).float())
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
