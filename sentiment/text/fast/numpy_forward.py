"""A trained TextCNN or BiRNN's forward pass in numpy, for predicting a few texts without torch.

`import torch` alone takes about 2 s on a 2-core CPU, longer than classifying a sentence. For a
handful of texts on the CPU, `sentiment predict` therefore runs the forward pass in numpy float32
from the run's safetensors file: the same arithmetic as the models' own forward (checked against
it in the tests), one review at a time with no padding. Anything it does not know (another
architecture, weights it did not expect) goes to the torch path instead, which also gives the
error messages for damaged runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from sentiment.runs import Run
from sentiment.text.saved_run import TextRunFolder
from sentiment.text.vocab import UNK_ID


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


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


def _textcnn_logits(w: dict[str, np.ndarray], ids: np.ndarray, convs: int) -> np.ndarray:
    x = textcnn_input(w, ids, convs)
    pooled = []
    for i in range(convs):
        weight, bias = w[f"convs.{i}.weight"], w[f"convs.{i}.bias"]  # [C, 2E, k], [C]
        h = bias + window_terms(x, weight).sum(0)  # [windows, C]
        pooled.append(np.maximum(h[: real_windows(len(ids), weight.shape[2])], 0.0).max(axis=0))
    return w["decoder.weight"] @ np.concatenate(pooled) + w["decoder.bias"]


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


def _birnn_logits(w: dict[str, np.ndarray], ids: np.ndarray, layers: int) -> np.ndarray:
    x = w["embedding.weight"][ids]  # [n, E]
    for layer in range(layers):
        directions = []
        for suffix, order in ((f"_l{layer}", slice(None)), (f"_l{layer}_reverse", slice(None, None, -1))):
            params = [w[f"encoder.{kind}{suffix}"] for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            directions.append(_lstm(x[order], *params)[order])
        x = np.concatenate(directions, axis=1)  # [n, 2H]
    return w["decoder.weight"] @ np.concatenate([x[0], x[-1]]) + w["decoder.bias"]


def _blocks(model: str, w: dict[str, np.ndarray]) -> int:
    """How many convolutions (TextCNN) or LSTM layers (BiRNN) the weights hold."""
    if model == "textcnn":
        return sum(1 for k in w if k.startswith("convs.") and k.endswith(".weight"))
    return sum(1 for k in w if k.startswith("encoder.weight_hh_l") and not k.endswith("_reverse"))


def _expected_shapes(model: str, w: dict[str, np.ndarray], blocks: int) -> dict[str, tuple] | None:
    """The weights a TextCNN or BiRNN with `blocks` convolutions or layers of this run's sizes has,
    or None for another architecture or none of either."""
    vocab, embed = w["embedding.weight"].shape
    classes = w.get("decoder.weight", np.empty((0, 0))).shape[0]
    if blocks == 0:
        return None
    if model == "textcnn":
        shapes = {"embedding.weight": (vocab, embed), "constant_embedding.weight": (vocab, embed)}
        channels = 0
        for i in range(blocks):
            c, _, k = w.get(f"convs.{i}.weight", np.empty((0, 0, 0))).shape
            shapes |= {f"convs.{i}.weight": (c, 2 * embed, k), f"convs.{i}.bias": (c,)}
            channels += c
        return shapes | {"decoder.weight": (classes, channels), "decoder.bias": (classes,)}
    if model == "birnn":
        hidden = w.get("encoder.weight_hh_l0", np.empty((0, 0))).shape[1]
        shapes = {"embedding.weight": (vocab, embed)}
        for layer in range(blocks):
            width = embed if layer == 0 else 2 * hidden
            for suffix in (f"_l{layer}", f"_l{layer}_reverse"):
                shapes |= {
                    f"encoder.weight_ih{suffix}": (4 * hidden, width),
                    f"encoder.weight_hh{suffix}": (4 * hidden, hidden),
                    f"encoder.bias_ih{suffix}": (4 * hidden,),
                    f"encoder.bias_hh{suffix}": (4 * hidden,),
                }
        return shapes | {"decoder.weight": (classes, 4 * hidden), "decoder.bias": (classes,)}
    return None


class NumpyClassifier:
    """A trained TextCNN or BiRNN run predicting in numpy: no torch import, one review at a time."""

    def __init__(self, text_run: TextRunFolder, forward: Callable[[np.ndarray], np.ndarray]):
        self.text_run = text_run
        self.classes = text_run.classes
        self._forward = forward

    def probabilities(self, texts: Sequence[str], **_) -> np.ndarray:
        return self.scores(texts)[0]

    def scores(self, texts: Sequence[str], **_) -> tuple[np.ndarray, list[bool]]:
        """`(probabilities, whether each text has a word in the vocabulary)`, one encoding."""
        enc = self.text_run.encode(texts)
        known = enc.has_other_than([UNK_ID])
        logits = np.stack([self._forward(enc.ids[o : o + n]) for o, n in zip(enc.offsets, enc.lengths, strict=True)])
        logits = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True), known


def open_numpy_classifier(run: Run) -> NumpyClassifier | None:
    """The run as a numpy classifier, or None where only the torch path can run it.

    Raises the same errors as the torch path for runs whose files are damaged or do not belong together.
    """
    text_run = TextRunFolder(run, framework="numpy")
    w = text_run.state
    model = text_run.config.get("model")
    blocks = _blocks(model, w)
    shapes = _expected_shapes(model, w, blocks)
    if shapes is None or set(shapes) != set(w):
        return None
    if any(w[k].shape != s or w[k].dtype != np.float32 for k, s in shapes.items()):
        return None
    logits = _textcnn_logits if model == "textcnn" else _birnn_logits
    return NumpyClassifier(text_run, lambda ids: logits(w, ids, blocks))
