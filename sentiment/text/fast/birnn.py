"""BiRNN on the CPU: each direction as its own LSTM over unpacked, length-bucketed batches."""

from __future__ import annotations

import torch

from sentiment.runtime import cpu_has_bf16
from sentiment.text.models import BiRNN


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


class BiRNNPerDirection(BiRNN):
    """The same BiRNN without packing, which is slow on the CPU: the forward LSTM reads each batch as
    it is, the backward one reads every review reversed within its own length, so neither reads a
    pad before a real token. Outputs past a review's end differ from the packed model's zeros, but
    only the first and last real positions are read. Same parameters as `nn.LSTM(bidirectional=True)`.
    """

    def _direction(self, layer: int, reverse: bool) -> list[torch.Tensor]:
        suffix = f"_l{layer}" + ("_reverse" if reverse else "")
        enc = self.encoder
        return [getattr(enc, f"{kind}{suffix}") for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if _bf16_lstm_unavailable():
            with torch.autocast("cpu", enabled=False):
                return self._encode(x.float(), lengths)
        return self._encode(x, lengths)

    def _encode(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
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
