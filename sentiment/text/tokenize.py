"""Named tokenizers. The name is saved with every run, so a run always re-tokenizes the same way."""

from __future__ import annotations

import re
from collections.abc import Callable

from sentiment.errors import SentimentError

Tokenizer = Callable[[str], list[str]]


def basic(text: str) -> list[str]:
    """The reference chapter's tokenizer: drop newlines, lower-case, split on a single space.

    Splitting on `' '` (not on any whitespace) is deliberate: it keeps the
    reference's vocabulary, empty tokens from double spaces included.
    """
    return text.replace("\n", "").lower().split(" ")


_BREAK = re.compile(r"<\s*br\s*/?\s*>", re.IGNORECASE)
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u00b4": "'", "`": "'"})
# GloVe's corpus was tokenized Penn-Treebank style: "don't" -> "do n't", "it's" -> "it 's".
# Splitting the same way keeps contractions as tokens GloVe knows. Order of alternatives matters.
_WORD = re.compile(
    r"""
      \w+(?=n't\b)            # "do" of "don't", "ca" of "can't"
    | n't\b                   # the negation itself
    | '(?:s|m|d|ll|re|ve)\b   # 's 'm 'd 'll 're 've
    | \d+(?:[.,/:]\d+)+       # 7/10, 3.5, 1,000, 2:30 as one token
    | \w+                     # words (unicode letters, digits)
    | \.{2,} | -{2,} | !{2,} | \?{2,}   # ... -- !!! ??? as one token each
    | [^\w\s]                 # any other punctuation mark on its own
    """,
    re.VERBOSE,
)


def words(text: str) -> list[str]:
    """Lower-case, `<br />` tags removed, punctuation split from words, contractions kept GloVe-style."""
    text = _BREAK.sub(" ", text).translate(_APOSTROPHES).lower()
    return _WORD.findall(text)


TOKENIZERS: dict[str, Tokenizer] = {"basic": basic, "words": words}

# Where each token lies in the original text (for `explain`): the tokenizers above, token for token.
Span = tuple[str, int, int]  # token, start, end (character offsets into the text)


def basic_spans(text: str) -> list[Span]:
    """`basic`'s tokens with their places: dropping newlines never joins or splits pieces between spaces."""
    spans, start = [], 0
    for piece in text.split(" "):
        spans.append((piece.replace("\n", "").lower(), start, start + len(piece)))
        start += len(piece) + 1
    return spans


_WORD_ANY_CASE = re.compile(_WORD.pattern, re.VERBOSE | re.IGNORECASE)


def words_spans(text: str) -> list[Span]:
    """`words`' tokens with their places. Matching ignores case instead of lower-casing first, and
    `<br />` tags become spaces of their own length, so offsets stay those of `text`."""
    same_length = _BREAK.sub(lambda m: " " * len(m.group()), text).translate(_APOSTROPHES)
    return [(m.group().lower(), m.start(), m.end()) for m in _WORD_ANY_CASE.finditer(same_length)]


SPANS: dict[str, Callable[[str], list[Span]]] = {"basic": basic_spans, "words": words_spans}


def get_spans(name: str) -> Callable[[str], list[Span]]:
    get_tokenizer(name)  # the same error for an unknown name
    return SPANS[name]


def get_tokenizer(name: str) -> Tokenizer:
    try:
        return TOKENIZERS[name]
    except KeyError:
        raise SentimentError(f"unknown tokenizer {name!r}; choose one of: {', '.join(TOKENIZERS)}") from None
