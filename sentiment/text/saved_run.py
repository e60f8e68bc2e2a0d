"""A trained text run folder read back: config, classes, tokenizer, vocabulary and weights, checked
to belong together. Imports no torch, so a few texts can be answered before torch would load.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sentiment.errors import SentimentError
from sentiment.runs import Run
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
