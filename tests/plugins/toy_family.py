"""A model family that lives outside the package, as a user's own would: registered through the
`sentiment.families` entry points (tests/test_plugin_family.py stands one in)."""

from __future__ import annotations

from dataclasses import dataclass

from sentiment.config import setting
from sentiment.families.linear import LinearClassifier, LinearSettings, LinearTask
from sentiment.registry import Family, register


@dataclass(kw_only=True)
class ToySettings(LinearSettings):
    ngrams: int = setting(1, "TF-IDF of 1- to N-word sequences", at_least=1)
    min_df: int = setting(1, "keep n-grams seen in at least this many reviews", at_least=1)


register(
    Family(
        name="toy",
        kind="text",
        settings=ToySettings,
        task=LinearTask,
        open=lambda run, device="cpu", *, texts=None: LinearClassifier(run),
        summary="words only, TF-IDF and logistic regression",
    )
)
