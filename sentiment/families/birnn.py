"""BiRNN (`--model birnn`): a GloVe embedding -> 2-layer bidirectional LSTM -> [outputs at the first
token, at the last token] -> Linear, as the textbook has it.

This module is the whole family: its settings, its task, its forms and `choose` (the one function
that picks among them), its classifier and its explanation (integrated gradients).

| form          | used for                           | what it does                                        |
|---------------|------------------------------------|-----------------------------------------------------|
| `numpy`       | predicting a few texts on the CPU  | the forward pass in numpy: no torch import          |
| `train-cpu`   | training and testing on the CPU    | each direction as its own unpacked LSTM             |
| `train-cuda`  | training and testing on CUDA       | the plain model: cuDNN over packed sequences        |

`BiRNN` is the plain computation; every form gives its predictions (tests/test_fast_paths.py holds
them to it) and keeps its parameter names. The torch forms are defined when first needed (`nets()`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from sentiment.config import LoopSettings, default, setting
from sentiment.registry import Family, register, torch_forms
from sentiment.runs import Run
from sentiment.text.saved_run import NumpyClassifier, TextRunFolder
from sentiment.text.wordvectors import (
    WordVectorClassifier,
    WordVectorSettings,
    WordVectorTask,
    copy_vectors,
    open_fastest,
)

NUMPY_MAX_TEXTS = 16  # up to this many texts, numpy answers before torch would have been imported


@dataclass(kw_only=True)
class BiRNNSettings(WordVectorSettings):
    freeze_embedding: bool = setting(True, "keep BiRNN's GloVe embedding fixed", flag=False)
    num_hiddens: int = setting(100, "LSTM width", at_least=1, flag=False)
    num_layers: int = setting(2, "LSTM layers", at_least=1, flag=False)
    lr: float = default(LoopSettings, "lr", 0.01)


def choose(device: str, *, texts: int | None = None) -> str:
    """The form to run on `device` ("cpu" or "cuda"): for training and testing when `texts` is None,
    else for predicting that many texts."""
    if texts is not None and device == "cpu" and texts <= NUMPY_MAX_TEXTS:
        return "numpy"
    return "train-cuda" if device.startswith("cuda") else "train-cpu"


# -- the numpy form ------------------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


def _lstm(x: np.ndarray, w_ih, w_hh, b_ih, b_hh) -> np.ndarray:
    """One direction of one layer over `x [n, in]`; PyTorch's gate order (input, forget, cell, output)."""
    hidden = w_hh.shape[1]
    pre = x @ w_ih.T + (b_ih + b_hh)  # [n, 4H]
    h = np.zeros(hidden, x.dtype)
    c = np.zeros(hidden, x.dtype)
    out = np.empty((len(x), hidden), x.dtype)
    for t in range(len(x)):
        gates = pre[t] + w_hh @ h
        i, f, g, o = np.split(gates, 4)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        out[t] = h
    return out


def numpy_logits(w: dict[str, np.ndarray], ids: np.ndarray, layers: int) -> np.ndarray:
    """One review's logits, in numpy."""
    x = w["embedding.weight"][ids]  # [n, E]
    for layer in range(layers):
        directions = []
        for suffix, order in ((f"_l{layer}", slice(None)), (f"_l{layer}_reverse", slice(None, None, -1))):
            params = [w[f"encoder.{kind}{suffix}"] for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            directions.append(_lstm(x[order], *params)[order])
        x = np.concatenate(directions, axis=1)  # [n, 2H]
    return w["decoder.weight"] @ np.concatenate([x[0], x[-1]]) + w["decoder.bias"]


def _layers(w: dict[str, np.ndarray]) -> int:
    return sum(1 for k in w if k.startswith("encoder.weight_hh_l") and not k.endswith("_reverse"))


def _expected_shapes(w: dict[str, np.ndarray]) -> dict[str, tuple] | None:
    """The weights a BiRNN of this run's sizes has, or None where they hold no LSTM."""
    if "embedding.weight" not in w or not _layers(w):
        return None
    vocab, embed = w["embedding.weight"].shape
    classes = w.get("decoder.weight", np.empty((0, 0))).shape[0]
    hidden = w.get("encoder.weight_hh_l0", np.empty((0, 0))).shape[1]
    shapes = {"embedding.weight": (vocab, embed)}
    for layer in range(_layers(w)):
        width = embed if layer == 0 else 2 * hidden
        for suffix in (f"_l{layer}", f"_l{layer}_reverse"):
            shapes |= {
                f"encoder.weight_ih{suffix}": (4 * hidden, width),
                f"encoder.weight_hh{suffix}": (4 * hidden, hidden),
                f"encoder.bias_ih{suffix}": (4 * hidden,),
                f"encoder.bias_hh{suffix}": (4 * hidden,),
            }
    return shapes | {"decoder.weight": (classes, 4 * hidden), "decoder.bias": (classes,)}


def open_numpy(run: Run) -> NumpyClassifier | None:
    """The run in the numpy form, or None where only the torch forms can run it."""
    text_run = TextRunFolder(run, framework="numpy")
    w = text_run.state
    shapes = _expected_shapes(w)
    if shapes is None or set(shapes) != set(w):
        return None
    if any(w[k].shape != s or w[k].dtype != np.float32 for k, s in shapes.items()):
        return None
    layers = _layers(w)
    return NumpyClassifier(text_run, lambda ids: numpy_logits(w, ids, layers), full=lambda: BiRNNClassifier(run, "cpu"))


# -- the torch forms -----------------------------------------------------------------------------


@functools.cache
def nets() -> SimpleNamespace:
    """The torch forms: `BiRNN` (the plain model, packed sequences) and `BiRNNPerDirection`."""
    import torch
    from torch import nn

    from sentiment import runtime
    from sentiment.text.batching import full_lengths
    from sentiment.text.vocab import PAD_ID

    class BiRNN(nn.Module):
        """Takes `ids [B, T]` (padded with `<pad>`) and `lengths [B]`; gives logits `[B, classes]`.

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

    def reverse_index(lengths: torch.Tensor, steps: int) -> torch.Tensor:
        """`[T, B]` time index that reverses each review within its own length and leaves pads in place.
        Applying it twice gives the identity, so the same index also undoes the reversal."""
        t = torch.arange(steps, device=lengths.device)[:, None]
        last = (lengths - 1)[None, :]
        return torch.where(t <= last, last - t, t)

    def gather_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return x.gather(0, index[:, :, None].expand(-1, -1, x.shape[2]))

    def bf16_lstm_unavailable() -> bool:
        """CPU autocast asks for bf16, but oneDNN can only build a bf16 LSTM on CPUs with native bf16."""
        return (
            torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        ) and not runtime.cpu_has_bf16()

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
            if bf16_lstm_unavailable():
                with torch.autocast("cpu", enabled=False):
                    return self._encode(x.float(), lengths)
            return self._encode(x, lengths)

        def _encode(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            steps, batch, _ = x.shape
            rev = reverse_index(lengths, steps)
            h0 = x.new_zeros(1, batch, self.encoder.hidden_size)
            fwd_in, bwd_in = x, gather_time(x, rev)
            for layer in range(self.encoder.num_layers):
                fwd = torch.lstm(
                    fwd_in, (h0, h0), self._direction(layer, False), True, 1, 0.0, self.training, False, False
                )[0]
                bwd_rev = torch.lstm(
                    bwd_in, (h0, h0), self._direction(layer, True), True, 1, 0.0, self.training, False, False
                )[0]
                bwd = gather_time(bwd_rev, rev)
                # Next layer: forward reads [fwd, bwd] in order, backward reads the same reversed.
                fwd_in = torch.cat([fwd, bwd], dim=2)
                bwd_in = torch.cat([gather_time(fwd, rev), bwd_rev], dim=2)
            return fwd_in

    return SimpleNamespace(BiRNN=BiRNN, BiRNNPerDirection=BiRNNPerDirection, reverse_index=reverse_index)


__getattr__ = torch_forms(__name__, nets)  # `from sentiment.families.birnn import ...` of a torch module


# -- training and trained runs -------------------------------------------------------------------


class BiRNNTask(WordVectorTask):
    """A bidirectional LSTM over a GloVe-initialised vocabulary built from the training split."""

    @classmethod
    def network(cls, device: str, *, vocab_size: int, embed_size: int, num_classes: int, **hyper):
        forms = nets()
        form = forms.BiRNN if choose(device) == "train-cuda" else forms.BiRNNPerDirection
        return form(vocab_size, embed_size, num_classes=num_classes, **hyper)

    def hyper(self) -> dict:
        return {"num_hiddens": self.cfg.num_hiddens, "num_layers": self.cfg.num_layers}

    def start_from(self, model, vectors) -> None:
        """The embedding starts from the word vectors, frozen with `freeze_embedding`."""
        copy_vectors(model.embedding, vectors, "embedding")
        model.embedding.weight.requires_grad_(not self.cfg.freeze_embedding)


class BiRNNClassifier(WordVectorClassifier):
    """A trained BiRNN run; explanations by integrated gradients over its embedding."""

    def __init__(self, run: Run, device: str = "cpu"):
        super().__init__(run, device, BiRNNTask)
        self._explainer = None

    def explain(self, text: str):
        from sentiment.explain import GradientExplainer

        if self._explainer is None:
            own = BiRNNClassifier(self.run, "cpu")  # a model of its own: the explainer hooks its embedding

            def tokens(text: str):
                spans, enc, cut = own.folder.encode_spans(text)
                return enc.ids.tolist(), list(range(len(spans))), spans, cut

            # BiRNN embeds ids.T: its embedding's output is [T, B, E]
            self._explainer = GradientExplainer(own, own.model.embedding, tokens, time_first=True, family="birnn")
        return self._explainer.explain(text)


def open_run(run: Run, device: str = "cpu", *, texts: int | None = None):
    """The run in the form that answers `texts` texts fastest: numpy for a few, else torch."""
    return open_fastest(run, device, texts, choose=choose, numpy_form=open_numpy, torch_form=BiRNNClassifier)


register(
    Family(
        name="birnn",
        kind="text",
        settings=BiRNNSettings,
        task=BiRNNTask,
        open=open_run,
        summary="a bidirectional LSTM over GloVe word vectors (the textbook's BiRNN)",
    )
)
