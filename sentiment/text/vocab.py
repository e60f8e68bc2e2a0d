"""A vocabulary in the format torchtext's legacy `Vocab` users know: `stoi`, `itos`, `min_freq`."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from sentiment.errors import SentimentError
from sentiment.fsutil import atomic_write_json

UNK, PAD = "<unk>", "<pad>"
SPECIALS = (UNK, PAD)
UNK_ID, PAD_ID = 0, 1


class Vocab:
    """Token <-> id mapping. Specials come first (`<unk>`=0, `<pad>`=1); unknown tokens map to `<unk>`."""

    def __init__(self, itos: Sequence[str]):
        itos = list(itos)
        if itos[: len(SPECIALS)] != list(SPECIALS):
            raise SentimentError(f"a vocabulary must start with {list(SPECIALS)}, got {itos[:2]}")
        self.itos: list[str] = itos
        self.stoi: dict[str, int] = {tok: i for i, tok in enumerate(itos)}
        if len(self.stoi) != len(itos):
            dup = next(t for t, c in Counter(itos).items() if c > 1)
            raise SentimentError(f"a vocabulary lists the token {dup!r} twice")

    @classmethod
    def build(
        cls,
        counter: Counter,
        *,
        min_freq: int = 5,
        max_size: int | None = None,
    ) -> Vocab:
        """Tokens with count >= `min_freq`, by descending count, ties alphabetical.

        `max_size` caps the number of ordinary tokens (specials not counted), as
        torchtext's legacy `Vocab` did.
        """
        if min_freq < 1:
            raise SentimentError(f"min_freq must be at least 1, got {min_freq}")
        kept = [(tok, c) for tok, c in counter.items() if c >= min_freq and tok not in SPECIALS]
        kept.sort(key=lambda tc: (-tc[1], tc[0]))
        if max_size is not None:
            kept = kept[:max_size]
        return cls([*SPECIALS, *(tok for tok, _ in kept)])

    @classmethod
    def from_tokens(cls, token_lists: Iterable[Iterable[str]], **kwargs) -> Vocab:
        counter: Counter = Counter()
        for tokens in token_lists:
            counter.update(tokens)
        return cls.build(counter, **kwargs)

    def __len__(self) -> int:
        return len(self.itos)

    def __getitem__(self, token: str) -> int:
        return self.stoi.get(token, UNK_ID)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)})"

    def lookup_indices(self, tokens: Iterable[str]) -> list[int]:
        get = self.stoi.get
        return [get(t, UNK_ID) for t in tokens]

    def lookup_tokens(self, indices: Iterable[int]) -> list[str]:
        itos = self.itos
        try:
            return [itos[i] for i in indices]
        except IndexError:
            raise SentimentError(f"an id is outside the vocabulary of size {len(itos)}") from None

    def encode(self, tokens: Sequence[str]) -> np.ndarray:
        """Ids as an int64 array (the form the batcher wants)."""
        return np.fromiter(self.lookup_indices(tokens), dtype=np.int64, count=len(tokens))

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, {"itos": self.itos}, indent=None)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocab:
        path = Path(path)
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
            itos = obj["itos"]
        except FileNotFoundError:
            raise SentimentError(f"no vocabulary file at {path}") from None
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise SentimentError(f"{path} is not a vocabulary file ({type(e).__name__}: {e})") from None
        if not isinstance(itos, list) or not all(isinstance(t, str) for t in itos):
            raise SentimentError(f"{path}: 'itos' must be a list of strings")
        return cls(itos)
