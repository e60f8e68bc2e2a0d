"""Why a text run said what it said: for every token, how much it pushed the prediction.

A token's `contribution` is its share of the *margin*: the predicted class's logit minus the mean
of the other classes' logits (with two classes, the logit difference). Positive pushes towards the
predicted label, negative away from it. A rating run's margin is its one output, the rating (before
it is clipped to the training range): positive raises it, negative lowers it. A multi-label run's
is the most probable label's own logit (its log-odds): each label is decided on its own.

Each family explains its own runs (`Classifier.explain`): TextCNN and linear exactly (the
contributions sum to the margin minus the `bias` no token accounts for, to rounding), BiRNN and the
transformer by integrated gradients (`GradientExplainer` below).

Integrated gradients (Captum's `IntegratedGradients` over the token embeddings) integrate the
margin's gradient along the straight path from a baseline (every token the padding token, the
special tokens kept) to the text; the per-token attributions are summed over the embedding. Their
sum misses margin(text) - margin(baseline) by the path integral's error: `completeness_gap`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from sentiment.errors import SentimentError
from sentiment.runs import Run
from sentiment.text.saved_run import check_texts

IG_STEPS = 50  # integration steps; the completeness gap says whether they were enough
IG_BATCH = 25  # of them in one forward and backward: bounds the memory of a long text in a large encoder


@dataclass
class Explanation:
    text: str
    label: str
    probability: float | None
    scores: dict[str, float]
    tokens: list[dict]  # {token, start, end, contribution}, in reading order
    method: str  # "exact" or "integrated gradients"
    bias: float = 0.0  # the part of the margin no token accounts for (integrated gradients: the baseline's margin)
    margin: float = 0.0  # the predicted class's logit minus the mean of the others'
    completeness_gap: float | None = None  # integrated gradients: sum - (margin - baseline margin)
    cut: bool = False  # the text was longer than the model reads: only the tokens it read are listed
    rating: float | None = None  # a rating run's answer (clipped); its label is "rating", probability None
    labels: list[str] | None = None  # a multi-label run's answer; `label` is the most probable, explained

    def to_json(self) -> dict:
        return asdict(self)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return e / e.sum()


def margin_weights(n: int, label: int, *, own: bool = False) -> np.ndarray:
    """`v` with `v @ logits` = logits[label] - mean(logits of the other classes); with `own` (a
    multi-label run's labels, each decided alone), logits[label]."""
    v = np.zeros(n) if own else np.full(n, -1.0 / max(n - 1, 1))
    v[label] = 1.0
    return v


def explanation(
    text, classes, logits, tokens, contributions, method, *, rating=None, multi_label=None, **extra
) -> Explanation:
    """An `Explanation` of `logits` (one text's); a rating run passes its `targets.Rating`, a
    multi-label run its `targets.MultiLabel`."""
    logits = np.asarray(logits, dtype=np.float64)
    rows = [
        {"token": tok, "start": int(start), "end": int(end), "contribution": float(c)}
        for (tok, start, end), c in zip(tokens, contributions, strict=True)
    ]
    if rating is not None:
        answer = float(rating.clip(logits[:1])[0])
        return Explanation(text=text, label=classes[0], probability=None, scores={}, tokens=rows, method=method,
                           margin=float(logits[0]), rating=answer, **extra)  # fmt: skip
    if multi_label is not None:
        probs = 1.0 / (1.0 + np.exp(-logits))
        label = int(probs.argmax())
        return Explanation(text=text, label=classes[label], probability=float(probs[label]),
                           scores={c: float(p) for c, p in zip(classes, probs, strict=True)}, tokens=rows,
                           method=method, margin=float(logits[label]), labels=multi_label.labels_of(probs),
                           **extra)  # fmt: skip
    probs = _softmax(logits)
    label = int(probs.argmax())
    return Explanation(
        text=text,
        label=classes[label],
        probability=float(probs[label]),
        scores={c: float(p) for c, p in zip(classes, probs, strict=True)},
        tokens=rows,
        method=method,
        margin=float(margin_weights(len(classes), label) @ logits),
        **extra,
    )


class GradientExplainer:
    """Integrated gradients over the token embeddings of a text run's torch classifier (Captum).

    `clf` is a classifier of its own (the explainer turns its model to fp32 and hooks its embedding
    layer); `layer` is that embedding layer, `tokens(text)` gives (ids the model reads, which of
    them are the text's tokens, their spans, whether the text was cut), `keep` the ids the baseline
    keeps ([CLS], [SEP]), and `time_first` says the layer's output is `[T, B, E]`."""

    def __init__(self, clf, layer, tokens, *, keep=(), time_first: bool = False, family: str = "this"):
        import torch

        self.torch = torch
        self.clf = clf
        self.classes = clf.classes
        self.layer = layer
        self._tokens = tokens
        self.keep = set(keep)
        self.time_first = time_first
        self.family = family
        self.model = clf.model.float().eval()

    def explain(self, text: str, offset: np.ndarray | None = None) -> Explanation:
        """`offset`: logits the run adds to its network's for this text (a word model's); the label
        explained is then the sum's, and the tokens' contributions are the network's part of it."""
        try:
            from captum.attr import IntegratedGradients
        except ImportError:
            raise SentimentError(
                f"explaining a {self.family} run needs Captum: pip install 'sentiment[serve]'"
            ) from None

        torch = self.torch
        check_texts([text])
        ids, positions, spans, cut = self._tokens(text)
        x = torch.tensor([ids])
        lengths = torch.tensor([len(ids)])
        baseline = torch.tensor([[i if i in self.keep else self.clf.pad for i in ids]])
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            logits = self.model(x, lengths)[0].double().numpy()
            embedded, embedded_baseline = self.layer(x), self.layer(baseline)  # [1, T, E] each
        if offset is not None:
            logits = logits + offset
        own = self.clf.multi_label is not None
        m = torch.tensor(margin_weights(len(logits), int(logits.argmax()), own=own), dtype=torch.float32)

        def margin(points: torch.Tensor) -> torch.Tensor:  # [B, T, E] token embeddings -> [B] margins
            n = points.shape[0]

            def swap(module, inputs, output):  # the embedding layer's output: BiRNN's is [T, B, E]
                return points.transpose(0, 1) if self.time_first else points

            handle = self.layer.register_forward_hook(swap)
            try:
                return self.model(x.expand(n, -1), lengths.expand(n)) @ m
            finally:
                handle.remove()

        with torch.autocast("cpu", enabled=False):
            attr, delta = IntegratedGradients(margin).attribute(
                embedded,
                baselines=embedded_baseline,
                n_steps=IG_STEPS,
                internal_batch_size=IG_BATCH,
                return_convergence_delta=True,
            )
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            at_baseline = float(margin(embedded_baseline)[0])
        per_token = attr[0].sum(-1).double().numpy()
        contrib = per_token[positions] if positions else per_token[:0]
        return explanation(
            text,
            self.classes,
            logits,
            spans,
            contrib,
            "integrated gradients",
            bias=at_baseline,
            completeness_gap=float(delta[0]),
            cut=cut,
            rating=self.clf.rating,
            multi_label=self.clf.multi_label,
        )


def open_explainer(run: Run):
    """A text run's classifier for explaining one text at a time (its family's `explain`)."""
    from sentiment.registry import open_classifier

    return open_classifier(run, "cpu", kind="text", texts=1)


def strongest(tokens: Sequence[dict], n: int = 8) -> tuple[list[dict], list[dict]]:
    """The tokens that pushed most for and most against the label."""
    ranked = sorted(tokens, key=lambda t: t["contribution"])
    return [t for t in ranked[::-1][:n] if t["contribution"] > 0], [t for t in ranked[:n] if t["contribution"] < 0]
