"""TextCNN (`--model textcnn`): two GloVe embeddings side by side (one trained, one frozen) ->
Conv1d of several widths -> ReLU -> max over time -> dropout -> Linear, as the textbook has it.

This module is the whole family: its settings, its task, its forms and `choose` (the one function
that picks among them), its classifier and its exact explanation.

| form          | used for                           | what it does                                        |
|---------------|------------------------------------|-----------------------------------------------------|
| `numpy`       | predicting a few texts on the CPU  | the forward pass in numpy: no torch import          |
| `lookup`      | predicting many texts              | convolutions as look-ups of per-word products       |
| `train-cpu`   | training and testing on the CPU    | a backward that reads only each winning window      |
| `train-cuda`  | training and testing on CUDA       | cuDNN's backward; both: one bf16 cast, in-place     |
|               |                                    | inference                                           |

`TextCNN` is the plain computation; every form gives its predictions (tests/test_fast_paths.py holds
them to it) and keeps its parameter names, so weights move freely between forms. The torch forms
are defined when first needed (`nets()`), so that the numpy form answers before torch would load.

Explanations are exact: each channel's value is ReLU of its best window, and a window's
pre-activation is its convolution bias plus one dot product per token in it; so the margin (the
predicted class's logit minus the mean of the others') is the decoder's bias plus, for every channel
whose best window is positive, (margin weight) x (bias + token terms). Each token gets its terms; a
window's bias is shared equally by the review's tokens in it. Computed in numpy float64 from the
run's weights: the same arithmetic as the numpy form.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from sentiment.config import LoopSettings, default, setting
from sentiment.errors import SentimentError
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
LOOKUP_MIN_TEXTS = 256  # the look-up tables take a moment to build: worth it from this many texts on


@dataclass(kw_only=True)
class TextCNNSettings(WordVectorSettings):
    kernel_sizes: list[int] = setting([3, 4, 5], "convolution widths", flag=False)
    num_channels: list[int] = setting([100, 100, 100], "channels per width", flag=False)
    dropout: float = setting(0.5, "before the classifier", at_least=0, flag=False)
    lr: float = default(LoopSettings, "lr", 0.001)


def choose(device: str, *, texts: int | None = None, numpy: bool = True) -> str:
    """The form to run on `device` ("cpu" or "cuda"): for training and testing when `texts` is None,
    else for predicting that many texts (`numpy=False` once torch is loaded anyway)."""
    if texts is not None and numpy and device == "cpu" and texts <= NUMPY_MAX_TEXTS:
        return "numpy"
    if texts is not None and texts >= LOOKUP_MIN_TEXTS:
        return "lookup"
    return "train-cuda" if device.startswith("cuda") else "train-cpu"


# -- the numpy form ------------------------------------------------------------------------------


def textcnn_input(w: dict[str, np.ndarray], ids: np.ndarray, convs: int) -> np.ndarray:
    """`[max(n, widest kernel), 2E]`: both embeddings of one review side by side, with the zero rows a
    review shorter than the widest kernel is padded with."""
    x = np.concatenate([w["embedding.weight"][ids], w["constant_embedding.weight"][ids]], axis=1)  # [n, 2E]
    widest = max(w[f"convs.{i}.weight"].shape[2] for i in range(convs))
    if len(ids) < widest:
        x = np.concatenate([x, np.zeros((widest - len(ids), x.shape[1]), x.dtype)])
    return x


def window_terms(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """`[k, windows, C]`: each window's dot products with a `[C, 2E, k]` kernel, one per offset in the
    window: a window's pre-activation is the convolution's bias plus their sum."""
    k = weight.shape[2]
    windows = x.shape[0] - k + 1
    return np.stack([x[j : j + windows] @ weight[:, :, j].T for j in range(k)])


def real_windows(n: int, k: int) -> int:
    """How many width-`k` windows start inside a review of `n` tokens (a short one keeps window 0)."""
    return max(n - k + 1, 1)


def numpy_logits(w: dict[str, np.ndarray], ids: np.ndarray, convs: int) -> np.ndarray:
    """One review's logits, in numpy."""
    x = textcnn_input(w, ids, convs)
    pooled = []
    for i in range(convs):
        weight, bias = w[f"convs.{i}.weight"], w[f"convs.{i}.bias"]  # [C, 2E, k], [C]
        h = bias + window_terms(x, weight).sum(0)  # [windows, C]
        pooled.append(np.maximum(h[: real_windows(len(ids), weight.shape[2])], 0.0).max(axis=0))
    return w["decoder.weight"] @ np.concatenate(pooled) + w["decoder.bias"]


def _convs(w: dict[str, np.ndarray]) -> int:
    return sum(1 for k in w if k.startswith("convs.") and k.endswith(".weight"))


def _expected_shapes(w: dict[str, np.ndarray]) -> dict[str, tuple] | None:
    """The weights a TextCNN of this run's sizes has, or None where they hold no convolution."""
    if "embedding.weight" not in w or not _convs(w):
        return None
    vocab, embed = w["embedding.weight"].shape
    classes = w.get("decoder.weight", np.empty((0, 0))).shape[0]
    shapes = {"embedding.weight": (vocab, embed), "constant_embedding.weight": (vocab, embed)}
    channels = 0
    for i in range(_convs(w)):
        c, _, k = w.get(f"convs.{i}.weight", np.empty((0, 0, 0))).shape
        shapes |= {f"convs.{i}.weight": (c, 2 * embed, k), f"convs.{i}.bias": (c,)}
        channels += c
    return shapes | {"decoder.weight": (classes, channels), "decoder.bias": (classes,)}


def open_numpy(run: Run) -> NumpyClassifier | None:
    """The run in the numpy form, or None where only the torch forms can run it (weights it does not
    expect). Raises the torch path's errors for runs whose files are damaged or do not belong together."""
    text_run = TextRunFolder(run, framework="numpy")
    w = text_run.state
    shapes = _expected_shapes(w)
    if shapes is None or set(shapes) != set(w):
        return None
    if any(w[k].shape != s or w[k].dtype != np.float32 for k, s in shapes.items()):
        return None
    convs = _convs(w)
    return NumpyClassifier(
        text_run,
        lambda ids: numpy_logits(w, ids, convs),
        full=lambda: TextCNNClassifier(run, "cpu"),
        explainer=lambda: TextCNNExplainer(run),  # exact and in numpy: no torch either
    )


# -- the exact explanation -----------------------------------------------------------------------


class TextCNNExplainer:
    """Exact per-token contributions of a TextCNN run, in numpy float64."""

    def __init__(self, run: Run):
        folder = TextRunFolder(run, framework="numpy")
        self.folder = folder
        self.classes = folder.classes
        w = {k: v.astype(np.float64) for k, v in folder.state.items()}
        convs = _convs(w)
        if not convs:
            raise SentimentError(f"{run.path} holds no TextCNN convolutions")
        self.w = w
        self.convs = [(w[f"convs.{i}.weight"], w[f"convs.{i}.bias"]) for i in range(convs)]

    def contributions(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(logits, per-token contributions to the margin of the predicted class, that margin's bias),
        from the numpy form's own pieces."""
        from sentiment.explain import margin_weights

        w = self.w
        n = len(ids)
        x = textcnn_input(w, ids, len(self.convs))
        per_channel = []  # (best window's start [C], its token terms [k, C], bias [C], active [C])
        pooled = []
        for weight, bias in self.convs:
            terms = window_terms(x, weight)  # [k, windows, C]
            h = bias + terms.sum(0)  # [windows, C]
            best = h[: real_windows(n, weight.shape[2])].argmax(0)  # [C]
            value = h[best, np.arange(h.shape[1])]
            pooled.append(np.maximum(value, 0.0))
            per_channel.append((best, terms[:, best, np.arange(h.shape[1])], bias, value > 0))
        logits = w["decoder.weight"] @ np.concatenate(pooled) + w["decoder.bias"]
        m = margin_weights(len(logits), int(logits.argmax()), own=self.folder.multi_label is not None)
        channel_weight = m @ w["decoder.weight"]  # [all channels]
        out = np.zeros(len(x))
        first = 0
        for best, terms, bias, active in per_channel:
            k, c = terms.shape
            cw = channel_weight[first : first + c] * active
            first += c
            inside = np.minimum(best + k, n) - best  # the review's tokens in each best window (>= 1)
            for j in range(k):
                np.add.at(out, best + j, cw * terms[j] + np.where(j < inside, cw * bias / inside, 0.0))
        return logits, out[:n], m @ w["decoder.bias"]

    def explain(self, text: str):
        from sentiment.explain import explanation

        spans, enc, cut = self.folder.encode_spans(text)
        logits, contrib, bias = self.contributions(enc.ids.astype(np.int64))
        if not spans:  # nothing but spaces and newlines: one <unk> was read
            contrib = contrib[:0]
        return explanation(text, self.classes, logits, spans, contrib, "exact", bias=float(bias), cut=cut,
                           rating=self.folder.rating, multi_label=self.folder.multi_label)  # fmt: skip


# -- the torch forms -----------------------------------------------------------------------------


@functools.cache
def nets() -> SimpleNamespace:
    """The torch forms: `TextCNN` (the plain model), `TextCNNFast`, `TextCNNFastOnCPU` and `TextCNNLookup`."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from sentiment.text.batching import full_lengths
    from sentiment.text.vocab import PAD_ID

    def padded_windows(windows: int, lengths: torch.Tensor, k: int) -> torch.Tensor:
        """`[B, W]` True where a width-`k` window starts in the padding; a review shorter than `k` keeps window 0."""
        return torch.arange(windows, device=lengths.device)[None, :] >= (lengths - k + 1).clamp(min=1)[:, None]

    class TextCNN(nn.Module):
        """Takes `ids [B, T]` (padded with `<pad>`) and `lengths [B]`; gives logits `[B, classes]` that
        do not depend on how much padding a batch has. Windows that start in the padding are ignored."""

        def __init__(
            self,
            vocab_size: int,
            embed_size: int = 50,
            kernel_sizes=(3, 4, 5),
            num_channels=(100, 100, 100),
            num_classes: int = 2,
            dropout: float = 0.5,
        ):
            super().__init__()
            if len(kernel_sizes) != len(num_channels) or not kernel_sizes:
                raise SentimentError(
                    f"TextCNN needs one channel count per kernel size, got {list(kernel_sizes)} and "
                    f"{list(num_channels)}"
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
            return h.masked_fill(padded_windows(h.shape[2], lengths, conv.kernel_size[0])[:, None, :], 0.0).amax(2)

        def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
            lengths = full_lengths(ids, lengths)
            x = self.embed(ids)
            pooled = torch.cat([self.conv_max(conv, x, lengths) for conv in self.convs], dim=1)
            return self.decoder(self.dropout(pooled))

    class ConvReluMaxPool(torch.autograd.Function):
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
                    return ConvReluMaxPool.apply(x, conv.weight, conv.bias, lengths)
                return super().conv_max(conv, x, lengths)
            h = torch.relu_(conv(x))  # nothing is kept for a backward pass: reuse the buffers
            return h.masked_fill_(padded_windows(h.shape[2], lengths, conv.kernel_size[0])[:, None, :], 0.0).amax(2)

    class TextCNNFastOnCPU(TextCNNFast):
        """TextCNNFast whose training backward reads only the winning windows (on CUDA, cuDNN's own
        backward is faster)."""

        custom_backward = True

    class TextCNNLookup(nn.Module):
        """A trained TextCNN's inference rewritten as table look-ups: the same predictions, faster on CPU.

        A convolution over embeddings is a sum over the kernel's taps of `embedding[id] @ W_tap`. At
        inference the embeddings are fixed, so each product is computed once per vocabulary word when
        this wrapper is built (`[V + 1, channels]` per tap); a window is then the sum of `k` rows, one
        `embedding_bag` per convolution. `dtype=torch.bfloat16` halves the memory the look-ups read (the
        tables are computed in fp32 and then rounded, as bf16 autocast rounds a convolution's output).

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

    return SimpleNamespace(
        TextCNN=TextCNN,
        ConvReluMaxPool=ConvReluMaxPool,
        TextCNNFast=TextCNNFast,
        TextCNNFastOnCPU=TextCNNFastOnCPU,
        TextCNNLookup=TextCNNLookup,
    )


__getattr__ = torch_forms(__name__, nets)  # `from sentiment.families.textcnn import ...` of a torch module


# -- training and trained runs -------------------------------------------------------------------


class TextCNNTask(WordVectorTask):
    """TextCNN over a GloVe-initialised vocabulary built from the training split."""

    @classmethod
    def network(cls, device: str, *, vocab_size: int, embed_size: int, num_classes: int, **hyper):
        forms = nets()
        form = forms.TextCNNFast if choose(device) == "train-cuda" else forms.TextCNNFastOnCPU
        return form(vocab_size, embed_size, num_classes=num_classes, **hyper)

    def hyper(self) -> dict:
        cfg = self.cfg
        return {"kernel_sizes": list(cfg.kernel_sizes), "num_channels": list(cfg.num_channels), "dropout": cfg.dropout}

    def start_from(self, model, vectors) -> None:
        """Both embeddings start from the word vectors: `embedding` is trained, `constant_embedding`
        stays fixed (that pair is the model)."""
        copy_vectors(model.embedding, vectors, "embedding")
        copy_vectors(model.constant_embedding, vectors, "constant_embedding")
        model.embedding.weight.requires_grad_(True)
        model.constant_embedding.weight.requires_grad_(False)


class TextCNNClassifier(WordVectorClassifier):
    """A trained TextCNN run: the look-up form for many texts, exact explanations."""

    def __init__(self, run: Run, device: str = "cpu"):
        super().__init__(run, device, TextCNNTask)
        self._many = None  # the form for many texts, built when first needed
        self.always_many = False
        self._explainer: TextCNNExplainer | None = None

    def model_for(self, texts: int):
        if self.always_many:
            texts = max(texts, LOOKUP_MIN_TEXTS)
        if choose(self.runtime.device.type, texts=texts, numpy=False) != "lookup":
            return self.model
        if self._many is None:
            import torch

            dtype = torch.bfloat16 if self.runtime.precision == "bf16" else torch.float32
            self.model.eval()
            self._many = nets().TextCNNLookup(self.model, dtype)
        return self._many

    def serve(self) -> None:
        """Answer every batch, however small, in the form for many texts (built now), as a server
        does: its answers are then those `predict` gives for a file of reviews."""
        self.always_many = True
        self.model_for(LOOKUP_MIN_TEXTS)

    def explain(self, text: str):
        if self._explainer is None:
            self._explainer = TextCNNExplainer(self.run)
        return self._explainer.explain(text)


def open_run(run: Run, device: str = "cpu", *, texts: int | None = None):
    """The run in the form that answers `texts` texts fastest: numpy for a few, else torch."""
    return open_fastest(run, device, texts, choose=choose, numpy_form=open_numpy, torch_form=TextCNNClassifier)


register(
    Family(
        name="textcnn",
        kind="text",
        settings=TextCNNSettings,
        task=TextCNNTask,
        open=open_run,
        summary="convolutions over GloVe word vectors (the textbook's TextCNN)",
    )
)
