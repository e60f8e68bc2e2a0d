"""Why a text run said what it said: for every token, how much it pushed the prediction.

A token's `contribution` is its share of the *margin*: the predicted class's logit minus the mean
of the other classes' logits (with two classes, the logit difference). Positive pushes towards the
predicted label, negative away from it.

| family      | method                  | the contributions sum to                                  |
|-------------|-------------------------|-----------------------------------------------------------|
| TextCNN     | exact decomposition     | the margin minus the decoder's bias (`bias`), to rounding |
| linear      | exact decomposition     | the margin minus the intercept (`bias`), to rounding      |
| BiRNN       | integrated gradients    | the margin minus the baseline's margin (`bias`), up to    |
| transformer | integrated gradients    | `completeness_gap` (the same sum minus that difference)   |

TextCNN: each channel's value is ReLU of its best window, and a window's pre-activation is its
convolution bias plus one dot product per token in it; so the margin is the decoder's bias plus,
for every channel whose best window is positive, (margin weight) x (bias + token terms). Each token
gets its terms; a window's bias is shared equally by the review's tokens in it. Computed in numpy
float64 from the run's weights (no torch import): the same arithmetic as the numpy forward.

Linear: the margin is the intercept plus feature x weight over the TF-IDF features; a word's
feature is shared by its occurrences, a word pair's by the two words of each occurrence.

Integrated gradients (Captum's `IntegratedGradients` over the token embeddings) integrate the
margin's gradient along the straight path from a baseline (every token the padding token, the
special tokens kept) to the text; the per-token attributions are summed over the embedding. Their
sum misses margin(text) - margin(baseline) by the path integral's error: `completeness_gap`.
"""

from __future__ import annotations

import re
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
    probability: float
    scores: dict[str, float]
    tokens: list[dict]  # {token, start, end, contribution}, in reading order
    method: str  # "exact" or "integrated gradients"
    bias: float = 0.0  # the part of the margin no token accounts for (integrated gradients: the baseline's margin)
    margin: float = 0.0  # the predicted class's logit minus the mean of the others'
    completeness_gap: float | None = None  # integrated gradients: sum - (margin - baseline margin)
    cut: bool = False  # the text was longer than the model reads: only the tokens it read are listed

    def to_json(self) -> dict:
        return asdict(self)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return e / e.sum()


def margin_weights(n: int, label: int) -> np.ndarray:
    """`v` with `v @ logits` = logits[label] - mean(logits of the other classes)."""
    v = np.full(n, -1.0 / max(n - 1, 1))
    v[label] = 1.0
    return v


def _explanation(text, classes, logits, tokens, contributions, method, **extra) -> Explanation:
    logits = np.asarray(logits, dtype=np.float64)
    probs = _softmax(logits)
    label = int(probs.argmax())
    rows = [
        {"token": tok, "start": int(start), "end": int(end), "contribution": float(c)}
        for (tok, start, end), c in zip(tokens, contributions, strict=True)
    ]
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


class TextCNNExplainer:
    """Exact per-token contributions of a TextCNN run, in numpy float64."""

    def __init__(self, run: Run):
        from sentiment.text.saved_run import TextRunFolder

        folder = TextRunFolder(run, framework="numpy")
        self.folder = folder
        self.classes = folder.classes
        w = {k: v.astype(np.float64) for k, v in folder.state.items()}
        convs = sum(1 for k in w if k.startswith("convs.") and k.endswith(".weight"))
        if not convs:
            raise SentimentError(f"{run.path} holds no TextCNN convolutions")
        self.w = w
        self.convs = [(w[f"convs.{i}.weight"], w[f"convs.{i}.bias"]) for i in range(convs)]

    def contributions(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(logits, per-token contributions to the margin of the predicted class, that margin's bias),
        from the numpy forward's own pieces (`textcnn_input`, `window_terms`, `real_windows`)."""
        from sentiment.text.fast.numpy_forward import real_windows, textcnn_input, window_terms

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
        m = margin_weights(len(logits), int(logits.argmax()))
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

    def explain(self, text: str) -> Explanation:
        spans, enc, cut = self.folder.encode_spans(text)
        logits, contrib, bias = self.contributions(enc.ids.astype(np.int64))
        if not spans:  # nothing but spaces and newlines: one <unk> was read
            contrib = contrib[:0]
        return _explanation(text, self.classes, logits, spans, contrib, "exact", bias=float(bias), cut=cut)


class LinearExplainer:
    """Exact per-word contributions of a linear (TF-IDF + logistic regression) run."""

    def __init__(self, run: Run):
        from sentiment.text.linear import LinearClassifier

        self.clf = LinearClassifier(run)
        self.classes = self.clf.classes
        vectorizer = self.clf.vectorizer
        self.ngrams = vectorizer.ngram_range[1]
        self.vocabulary = vectorizer.vocabulary_
        self.token = re.compile(vectorizer.token_pattern)  # the vectorizer's own words, found with places
        self.words_in = {i: term.count(" ") + 1 for term, i in self.vocabulary.items()}  # feature -> n of n-gram

    def explain(self, text: str) -> Explanation:
        check_texts([text])
        features = self.clf.vectorizer.transform([text]).tocsr().astype(np.float64)
        weight, bias = self.clf.weight.astype(np.float64), self.clf.bias.astype(np.float64)
        logits = np.asarray(features @ weight.T)[0] + bias
        m = margin_weights(len(logits), int(logits.argmax()))
        feature_weight = m @ weight  # [features]
        value = dict(zip(features.indices.tolist(), features.data.tolist(), strict=True))
        spans = [(t.group().lower(), t.start(), t.end()) for t in self.token.finditer(text)]
        words = [s[0] for s in spans]
        places: dict[int, list[int]] = {}  # feature -> start token of each occurrence
        for n in range(1, self.ngrams + 1):
            for i in range(len(words) - n + 1):
                f = self.vocabulary.get(" ".join(words[i : i + n]))
                if f is not None:
                    places.setdefault(f, []).append(i)
        contrib = np.zeros(len(spans))
        for f, starts in places.items():
            n = self.words_in[f]
            share = value.get(f, 0.0) * feature_weight[f] / (len(starts) * n)
            for i in starts:
                contrib[i : i + n] += share
        return _explanation(text, self.classes, logits, spans, contrib, "exact", bias=float(m @ bias))


class GradientExplainer:
    """Integrated gradients over the token embeddings of a BiRNN or transformer run (Captum)."""

    def __init__(self, run: Run, family: str):
        import torch

        from sentiment.tasks import open_classifier

        self.torch = torch
        self.clf = open_classifier(run, "cpu", kind="text")
        self.classes = self.clf.classes
        self.family = family
        model = self.clf.model
        if family == "transformer":
            self.layer = model.encoder.get_input_embeddings()
            self.keep = set(self.clf.tokenizer.all_special_ids) - {self.clf.unk}  # [CLS], [SEP] stay
        else:
            self.layer = model.embedding
            self.keep = set()
        self.time_first = family == "birnn"  # BiRNN embeds ids.T: its embedding output is [T, B, E]
        self.model = model.float().eval()

    def _tokens(self, text: str) -> tuple[list, list, list, bool]:
        """(ids the model reads, which of them are the text's tokens, their spans, whether cut)."""
        if self.family == "transformer":
            from sentiment.text.transformer import encode_with_spans

            return encode_with_spans(self.clf.tokenizer, text, self.clf.max_len, self.clf.head_tokens)
        spans, enc, cut = self.clf.folder.encode_spans(text)
        return enc.ids.tolist(), list(range(len(spans))), spans, cut

    def explain(self, text: str) -> Explanation:
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
        m = torch.tensor(margin_weights(len(logits), int(logits.argmax())), dtype=torch.float32)

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
        return _explanation(
            text,
            self.classes,
            logits,
            spans,
            contrib,
            "integrated gradients",
            bias=at_baseline,
            completeness_gap=float(delta[0]),
            cut=cut,
        )


def open_explainer(run: Run):
    """The explainer for a text run's family."""
    family = run.read_meta("text")["config"].get("model")
    if family == "textcnn":
        return TextCNNExplainer(run)
    if family == "linear":
        return LinearExplainer(run)
    if family in ("birnn", "transformer"):
        return GradientExplainer(run, family)
    raise SentimentError(f"{run.path}: no explanation for model {family!r}")


def strongest(tokens: Sequence[dict], n: int = 8) -> tuple[list[dict], list[dict]]:
    """The tokens that pushed most for and most against the label."""
    ranked = sorted(tokens, key=lambda t: t["contribution"])
    return [t for t in ranked[::-1][:n] if t["contribution"] > 0], [t for t in ranked[:n] if t["contribution"] < 0]
