"""The unit every reader produces: one labeled text."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    label: int  # index into the corpus's classes
    rating: int | None = None  # IMDb's 1-10 star rating, when the source has one
    id: str = ""  # where it came from: IMDb file id, or "<file>:<line>"
    labels: tuple[int, ...] = ()  # a multi-label run's: every label of the text (`label` is the rarest of them)
    # its place in its source's reading order (a streamed preparation keeps the ids, not the text);
    # not part of what the example is
    slot: int = field(default=-1, compare=False)
