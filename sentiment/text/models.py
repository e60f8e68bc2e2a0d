"""The two text classifiers, as the textbook has them: a bidirectional LSTM and a TextCNN, both
started from word vectors.

Both take `ids [B, T]` (padded with `<pad>`) and `lengths [B]`, and give logits `[B, classes]`
that do not depend on how much padding a batch has: a review's prediction is the same alone or
in any batch. This is the plain computation; `text/fast/` holds faster ways to compute the same
(checked against these in the tests) and chooses among them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sentiment.errors import SentimentError
from sentiment.text.vocab import PAD_ID


def full_lengths(ids: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """`lengths` on `ids`' device and within `1..T`; every review full length when not given."""
    batch, steps = ids.shape
    if lengths is None:
        return torch.full((batch,), steps, dtype=torch.long, device=ids.device)
    return lengths.to(ids.device).clamp(1, steps)


def padded_windows(windows: int, lengths: torch.Tensor, k: int) -> torch.Tensor:
    """`[B, W]` True where a width-`k` window starts in the padding; a review shorter than `k` keeps window 0."""
    return torch.arange(windows, device=lengths.device)[None, :] >= (lengths - k + 1).clamp(min=1)[:, None]


class BiRNN(nn.Module):
    """Embedding -> 2-layer bidirectional LSTM -> [outputs at the first token, at the last token] -> Linear.

    The "last token" is each review's real last token, and the backward direction starts there:
    the LSTM runs over packed sequences, so neither direction reads the padding (reading
    `outputs[-1]` of a padded batch would make the backward direction read the pads first).
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

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """LSTM outputs `[T, B, 2H]` for embedded reviews `x [T, B, E]`; zeros past each review's end."""
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        out, _ = self.encoder(packed)
        return nn.utils.rnn.pad_packed_sequence(out, total_length=x.shape[0])[0]

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        lengths = full_lengths(ids, lengths)
        outputs = self.encode(self.embedding(ids.T), lengths)  # [T, B, 2H]
        last = outputs.gather(0, (lengths - 1)[None, :, None].expand(1, -1, outputs.shape[2]))[0]
        return self.decoder(torch.cat([outputs[0], last], dim=1))


class TextCNN(nn.Module):
    """Two embeddings side by side (one trained, one frozen) -> Conv1d of several widths -> ReLU ->
    max over time (windows that start in the padding ignored) -> dropout -> Linear."""

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

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """`[B, 2E, T']`: both embeddings as channels, at least as long as the widest kernel."""
        x = torch.cat([self.embedding(ids), self.constant_embedding(ids)], dim=2).transpose(1, 2)
        widest = max(self.kernel_sizes)
        if x.shape[2] < widest:  # a zero column is what a <pad> embeds to
            x = F.pad(x, (0, widest - x.shape[2]))
        return x

    def conv_max(self, conv: nn.Conv1d, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """`[B, C]`: ReLU of one convolution, maximised over the windows that start inside the review."""
        h = torch.relu(conv(x))  # [B, C, W]
        # After ReLU every value is >= 0, so zeroing the padded windows never changes the max.
        return h.masked_fill(padded_windows(h.shape[2], lengths, conv.kernel_size[0])[:, None, :], 0.0).amax(dim=2)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        lengths = full_lengths(ids, lengths)
        x = self.embed(ids)
        pooled = torch.cat([self.conv_max(conv, x, lengths) for conv in self.convs], dim=1)
        return self.decoder(self.dropout(pooled))


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


def build_model(
    name: str, *, vocab_size: int, embed_size: int, num_classes: int, cls: type[nn.Module] | None = None, **hyper
) -> nn.Module:
    """The plain model `name`, or `cls` (one of `text.fast`'s forms of it) built the same way."""
    if name not in MODELS:
        raise SentimentError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return (cls or MODELS[name])(vocab_size, embed_size, num_classes=num_classes, **hyper)
