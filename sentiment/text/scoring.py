"""A text run's test split scored as it is read: the readers hand each text to a stream (see
`corpus.reading`) that gives the model a chunk of texts at a time and keeps only its outputs, so
`evaluate` holds no texts, however large the file.

A first pass reads the labels alone (the texts are dropped as they are read) and chooses the split
as an in-memory read would: the held-out part of a training file, `--limit`'s balanced subset. The
second pass scores the chosen texts. What stays in memory per example is its label record and its
outputs.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sentiment.fsutil import byte_bar

CHUNK = 2048  # texts given to the model together


class _File:
    """One file's texts as a scoring stream reads them: counted, and those `wanted` scored in chunks."""

    def __init__(self, outputs: Callable | None, wanted: np.ndarray | None, chunk: int):
        self.outputs, self.wanted, self.chunk = outputs, wanted, chunk
        self.read = 0
        self.pending: list[str] = []
        self.slots = array("q")
        self.parts: list[np.ndarray] = []

    def keep(self, text: str) -> str:
        slot = self.read
        self.read += 1
        if self.outputs is not None and (self.wanted is None or self.wanted[slot]):
            self.pending.append(text)
            self.slots.append(slot)
            if len(self.pending) >= self.chunk:
                self.flush()
        return ""

    def flush(self) -> None:
        if self.pending:
            self.parts.append(np.asarray(self.outputs(self.pending)))
            self.pending = []


class Scoring:
    """A stream for the corpus readers: every file read is counted, and with `outputs` (texts ->
    `[n, outputs]`) the texts `wanted` (a mask per file, in reading order; None: all) are scored a
    chunk at a time. `desc` starts the label of the bar over each file's bytes."""

    def __init__(
        self, outputs: Callable | None = None, wanted: list | None = None, *, desc: str, progress: bool = False,
        chunk: int = CHUNK,
    ):  # fmt: skip
        self.score, self.wanted, self.desc, self.progress, self.chunk = outputs, wanted, desc, progress, chunk
        self.files: list[_File] = []
        self.bars: list = []

    def reading(self, path: Path) -> dict:
        wanted = self.wanted[len(self.files)] if self.wanted is not None else None
        scored = _File(self.score, wanted, self.chunk)
        self.files.append(scored)
        bar, move = byte_bar(Path(path), f"{self.desc} {Path(path).name}", progress=self.progress)
        if bar is not None:
            self.bars.append(bar)
        return {"keep": scored.keep, "read_to": move}

    def close(self) -> None:
        for bar in self.bars:
            bar.close()
        for scored in self.files:
            if scored.outputs is not None:
                scored.flush()

    def outputs_of(self, slots: list[int]) -> np.ndarray:
        """The outputs of the last file's texts at `slots` (each of them scored), in that order."""
        scored = self.files[-1]
        have = np.frombuffer(scored.slots, dtype=np.int64)
        at = np.searchsorted(have, slots)
        if len(slots) and (at.max() >= len(have) or not np.array_equal(have[at], slots)):
            raise RuntimeError("a test example was not scored")
        return np.concatenate(scored.parts)[at]


def score_test(clf, read: Callable, choose: Callable, *, progress: bool = False, chunk: int | None = None):
    """`(corpus, outputs)`: the test split `read(stream)` gives (a `Corpus` whose examples carry no
    text), narrowed to the examples `choose(corpus)` lists, and `clf.outputs` of their texts, in
    their order. The source is read twice: the labels first, then the chosen texts, scored a chunk
    at a time."""
    import dataclasses

    labels = Scoring(desc="reading", progress=progress)
    try:
        corpus = read(labels)
    finally:
        labels.close()
    test = choose(corpus)
    corpus = dataclasses.replace(corpus, train=[])
    if not test:
        from sentiment.errors import SentimentError

        raise SentimentError(f"{corpus.source} holds no test examples to score")
    wanted = [np.zeros(f.read, dtype=bool) for f in labels.files]  # the test split is the last file's
    wanted[-1][[ex.slot for ex in test]] = True
    del labels
    scoring = Scoring(clf.outputs, wanted, desc="scoring", progress=progress, chunk=chunk or CHUNK)
    try:
        again = read(scoring)
    finally:
        scoring.close()
    if len(again.test) != len(corpus.test):
        raise RuntimeError("the test split changed between the two reads")
    return dataclasses.replace(corpus, test=test), scoring.outputs_of([ex.slot for ex in test])
