"""TextCNN, faster: a backward pass that reads only each channel's winning window (CPU training), one
bf16 cast for all convolutions, in-place inference, and look-up tables for predicting many texts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sentiment.text.models import TextCNN, full_lengths, padded_windows


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
        padded = padded_windows(h.shape[2], lengths, weight.shape[2])
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


class TextCNNFast(TextCNN):
    """The same TextCNN: under autocast its input is cast once for all convolutions (autocast would
    cast it for each), and without gradients the convolution buffers are reused in place."""

    custom_backward = False

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        x = super().embed(ids)
        if torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))
        return x

    def conv_max(self, conv: nn.Conv1d, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            if self.custom_backward:
                return _ConvReluMaxPool.apply(x, conv.weight, conv.bias, lengths)
            return super().conv_max(conv, x, lengths)
        h = torch.relu_(conv(x))  # nothing is kept for a backward pass: reuse the buffers
        return h.masked_fill_(padded_windows(h.shape[2], lengths, conv.kernel_size[0])[:, None, :], 0.0).amax(dim=2)


class TextCNNFastOnCPU(TextCNNFast):
    """TextCNNFast whose training backward reads only the winning windows (on CUDA, cuDNN's own
    backward is faster)."""

    custom_backward = True


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
        lengths = full_lengths(ids, lengths)
        widest = max(self.kernel_sizes)
        if steps < widest:
            ids = F.pad(ids, (0, widest - steps), value=self.rows - 1)
        pooled = []
        for table, bias, k in zip(self.tables, self.biases, self.kernel_sizes, strict=True):
            windows = ids.shape[1] - k + 1
            # window t sums row ids[t + j] of tap j's table over j: one bag of k rows per window
            taps = ids.unfold(1, k, 1) + torch.arange(k, device=ids.device) * self.rows  # [B, W, k]
            # A window starting in the padding reads the -inf row for tap 0: never the max (window 0 is real).
            taps[:, :, 0].masked_fill_(padded_windows(windows, lengths, k), table.shape[0] - 1)
            h = F.embedding_bag(taps.reshape(-1, k), table, mode="sum").view(batch, windows, -1)  # [B, W, C]
            # Adding the bias and ReLU after the max gives the same values: both are monotonic.
            pooled.append(torch.relu_(h.amax(dim=1).add_(bias)).float())
        return F.linear(torch.cat(pooled, dim=1), self.decoder_weight, self.decoder_bias)
