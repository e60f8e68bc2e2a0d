"""sentiment: fine-tune pretrained representations on small classification tasks.

The Python API (see `sentiment.api`): `train(**settings) -> run folder`, `load(run) -> classifier`
whose `.predict(texts)` gives a label, probability and scores per text, `evaluate(run, data=None)
-> dict`, and `families()`, the model families registered.
"""

__version__ = "0.1.0"

from sentiment.api import evaluate, families, load, train  # noqa: E402

__all__ = ["evaluate", "families", "load", "train"]
