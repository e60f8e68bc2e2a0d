"""A trained text run folder read back: config, classes, tokenizer, vocabulary and weights, checked
to belong together. Imports no torch, so a few texts can be answered before torch would load.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sentiment.errors import SentimentError
from sentiment.runs import Run
from sentiment.tasks import ClassifierBase
from sentiment.text.batching import Encoded, encode
from sentiment.text.tokenize import Span, get_spans, get_tokenizer
from sentiment.text.vocab import Vocab

MAX_TEXT_CHARS = 200_000  # a review longer than this is almost certainly the wrong input


def check_texts(texts: Sequence[str]) -> None:
    """Texts to classify: an empty one, or one too long to be a review, is a user error."""
    for i, text in enumerate(texts):
        if not text.strip():
            raise SentimentError(f"text {i + 1} is empty; give a review to classify")
        if len(text) > MAX_TEXT_CHARS:
            raise SentimentError(
                f"text {i + 1} is {len(text):,} characters long; the limit is {MAX_TEXT_CHARS:,} "
                f"(is this the right input?)"
            )


class TextRunFolder:
    """A text run folder's config, classes, vocabulary and weights, checked to belong together."""

    def __init__(self, run: Run, framework: str = "pt"):
        meta = run.read_meta("text")
        self.run = run
        self.meta = meta
        self.config: dict = meta["config"]
        self.classes: list[str] = meta["classes"]
        from sentiment.targets import MultiLabel, Rating

        self.rating = Rating.of_run(meta)  # a rating run's range and mean; None for a classifier
        self.multi_label = MultiLabel.of_run(run, meta)  # a multi-label run's labels and thresholds; None otherwise
        self.vocab = Vocab.load(run.file("vocab.json"))
        self.tokenize: Callable[[str], list[str]] = get_tokenizer(self.config["tokenizer"])
        self.max_len: int = self.config["max_len"]
        self.state = run.load_weights(framework)
        rows = self.state.get("embedding.weight")
        if rows is None:
            raise SentimentError(f"{run.file('model.safetensors')} has no embedding.weight; not a text model")
        if rows.shape[0] != len(self.vocab):
            raise SentimentError(
                f"{run.path}: vocab.json has {len(self.vocab):,} tokens but the model's embedding has "
                f"{rows.shape[0]:,} rows; the run folder's files do not belong together"
            )

    def encode(self, texts: Sequence[str]) -> Encoded:
        check_texts(texts)
        return encode((self.tokenize(t) for t in texts), self.vocab, self.max_len)

    def encode_spans(self, text: str) -> tuple[list[Span], Encoded, bool]:
        """One text's tokens with their places in it (those the model reads: at most `max_len`), its
        ids as `encode` gives them, and whether it was cut."""
        check_texts([text])
        spans = get_spans(self.config["tokenizer"])(text)
        enc = encode([[token for token, _, _ in spans]], self.vocab, self.max_len)
        return spans[: self.max_len], enc, len(spans) > self.max_len


class NumpyClassifier(ClassifierBase):
    """A trained run of a word-vector family predicting in numpy: no torch import, one review at a
    time. `forward(ids)` gives one review's logits; `full()` opens the run's torch classifier, for
    everything beyond predicting a few texts; `explainer()`, where given, explains without it."""

    precision = "fp32"

    def __init__(
        self, text_run: TextRunFolder, forward: Callable, *, full: Callable, explainer: Callable | None = None
    ):
        self.run = text_run.run
        self.text_run = text_run
        self.rating = text_run.rating  # read with the folder's config.json, not again
        self.multi_label = text_run.multi_label
        self.classes = text_run.classes
        self._forward = forward
        self._full = full
        self._explainer = explainer
        self._explaining = None  # what explains, made at the first explanation

    def scores(self, texts: Sequence[str], **_):
        """`(probabilities, whether each text has a word in the vocabulary)`, one encoding."""
        import numpy as np

        from sentiment.text.vocab import UNK_ID

        enc = self.text_run.encode(texts)
        known = enc.has_other_than([UNK_ID])
        logits = np.stack([self._forward(enc.ids[o : o + n]) for o, n in zip(enc.offsets, enc.lengths, strict=True)])
        return self.answers(logits), known

    def probabilities(self, texts: Sequence[str], **_):
        return self.scores(texts)[0]

    def knows(self, texts: Sequence[str]) -> list[bool]:
        from sentiment.text.vocab import UNK_ID

        return self.text_run.encode(texts).has_other_than([UNK_ID])

    def evaluate(self, corpus, **kw) -> dict:
        return self._full().evaluate(corpus, **kw)

    def explain(self, text: str):
        if self._explaining is None:
            self._explaining = (self._explainer or self._full)()
        return self._explaining.explain(text)

    def serve(self) -> None:
        raise RuntimeError("a numpy classifier answers a few texts; serve the run's torch classifier")
