"""The two contracts of a model family: `Task` (how the recipe trains it) and `Classifier` (what
every trained run offers, whatever its family), with the defaults most families keep.

Imports no torch: a family module subclasses these at import time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from sentiment.errors import SentimentError
from sentiment.runs import Run


@dataclass
class TaskData:
    """A task's prepared data, in the loop's `(index, inputs, labels)` batches."""

    train: object  # iterable of batches with __len__ and optionally set_epoch(epoch)
    test: object
    test_labels: object  # torch.Tensor [test examples]
    classes: list[str]
    train_examples: int
    test_examples: int
    source: str | None = None  # where the data was read, as an absolute path (config.json keeps it)
    test_source: str | None = None  # a separate test file, if any
    val: object = None  # the validation split's batches (held out of training), or None
    val_labels: object = None  # torch.Tensor [validation examples]
    val_examples: int = 0
    val_source: str | None = None  # a separate validation file, if any
    train_labels: object = None  # the training split's labels (all processes'), for `--class-weights auto`
    rating: object = None  # a rating run's `targets.Rating` (of its training split); None for a classifier
    target: str = "label"  # what the run predicts: "label", "rating" or "multilabel" (labels: [n, classes] 0/1)


class Task:
    """What a model family declares for training; the recipe (recipe.py) does the rest. `cfg` is the
    family's settings. The class attributes are the defaults a family overrides where it differs."""

    kind = "text"  # recorded in config.json: which commands can use the run
    allocator = "bounded"  # "keep_all" (fixed batch shapes) or "bounded" (shapes change every batch); see runtime
    cpu_bf16 = True  # whether `--precision auto` may pick bf16 on a CPU with native bfloat16
    evaluate_before = False  # an epoch-0 test line: how good the model is before any step
    head: str | None = None  # parameter prefix of the new head (trained at lr x head_lr_mult)
    solver = False  # fitted by its own solver (`fit`) instead of the training loop
    head_started = False  # set by a task whose `model` fitted its head already (the recipe leaves it as it is)
    # Inputs for n examples at the largest size training sees: the recipe measures a step's memory
    # with them and splits batches into micro-batches that fit (`--micro-batch` overrides). None:
    # batches are split only when `--micro-batch` says so.
    example_inputs: Callable[[int], tuple] | None = None

    def __init__(self, cfg):
        self.cfg = cfg

    def run_name(self) -> str:
        """What the run folder's name says it trained (after the time stamp)."""
        return self.cfg.model

    def data(self, runtime, echo: Callable[[str], None]) -> TaskData:
        raise NotImplementedError

    def settings(self, data: TaskData):
        """The settings training runs with, once the data is known: `self.cfg` by default; a family
        whose recipe depends on the data (the transformer's for a few labels) returns others, and
        config.json records those."""
        return self.cfg

    def model(self, data: TaskData, runtime, echo: Callable[[str], None]):
        """The model (a torch.nn.Module) on `runtime.device`, its frozen parameters already frozen."""
        raise NotImplementedError

    def fit(self, model, data: TaskData, echo: Callable[[str], None]) -> dict:
        """Only for `solver` families: fit `model` in place; return the training metrics of its one
        "epoch" (the recipe scores the validation and test splits with `logits`)."""
        raise NotImplementedError

    def refit(self, model, data: TaskData, runtime, echo: Callable[[str], None]) -> bool:
        """After training, on the kept weights and before anything is scored: change `model` in
        place (the transformer's few-shot recipe fits its head again on the trained encoder) and
        return True, or leave it and return False (the default)."""
        return False

    def keep(self, run: Run, temperature: float | None) -> None:
        """After training and calibration (`temperature`: the one the head's logits were divided by,
        None without), before the test split is scored: save into `run` what the run needs beside
        its weights and files (the transformer's few-shot word model). Nothing by default."""

    def logits(self, model, data: TaskData, split: str, runtime, *, progress: bool = False):
        """`model`'s logits (torch tensor `[examples, classes]`, in data order) on the `val` or
        `test` split of `data`; by default through the split's batches."""
        from sentiment import distributed
        from sentiment.loop import predict_logits

        batches = getattr(data, split)
        size = getattr(data, f"{split}_examples")
        return predict_logits(distributed.unwrap(model), batches, runtime, size=size, desc=split,
                              progress=progress, total=len(batches))  # fmt: skip

    def record(self, data: TaskData) -> dict:
        """What config.json must hold besides the config to rebuild the model and read its inputs."""
        return {}

    def save(self, run: Run, data: TaskData) -> None:
        """Files the run folder needs besides config.json and the weights (a vocabulary, ...)."""

    def check_resume(self, run: Run, data: TaskData) -> None:
        """Raise if the data no longer gives what the run was trained with."""
        classes = run.read_json("config.json")["classes"]
        if classes != data.classes:
            raise SentimentError(f"the data now has the classes {data.classes}; {run.path} was trained on {classes}")

    def summary(self, data: TaskData) -> dict:
        """Figures for summary.json beyond the recipe's own."""
        return {}

    def close(self) -> None:
        """Let go of what `data` left on disk or in memory, once the run has ended (however it ended)."""

    @classmethod
    def tiny_settings(cls, folder: Path) -> dict:
        """Settings that train this family in seconds on a few hundred short labeled texts (or a few
        photos): the test suite generated over every registered family trains each with them.
        `folder` is a scratch folder for anything they need (an encoder, say)."""
        return {"epochs": 1}


@dataclass
class Prediction:
    """One input's answer: the label, its probability and every class's; a rating run's: `rating`
    (label "rating", probability None, scores empty); a multi-label run's: `labels` (every label at
    or over its threshold, most probable first), `scores` every label's probability, and `label` /
    `probability` the most probable label whether or not it is over its threshold."""

    label: str
    probability: float | None
    scores: dict[str, float]
    known: bool = True  # False: the text has no word the model knows; the label is only its prior
    text: str | None = field(default=None, repr=False)
    rating: float | None = None  # a rating run's answer, within its training range
    labels: list[str] | None = None  # a multi-label run's answer


class Classifier(Protocol):
    """What every trained run offers, opened by `registry.open_classifier` (or `sentiment.load`)."""

    run: Run
    classes: list[str]
    precision: str  # what it computes in: "fp32" or "bf16"

    def scores(self, inputs: Sequence, *, batch_size: int = 256, progress: bool = False):
        """`(probabilities [n, classes] (torch tensor or numpy array), whether each input holds
        something the model knows)`, from one encoding of the inputs; a rating run's `[n, 1]` are
        its ratings (see `answers`)."""

    def knows(self, inputs: Sequence) -> list[bool]:
        """Whether each input holds something the model knows (a text: a word it has), without the model."""

    def evaluate(self, examples, *, progress: bool = True) -> dict:
        """Accuracy, per-class figures and the confusion matrix on labeled examples."""

    def explain(self, text: str):
        """Why it said what it said: an `explain.Explanation`."""

    def serve(self) -> None:
        """Get ready to answer a server's batches, however small, as `predict` answers a file."""

    def predict(self, inputs: Sequence) -> list[Prediction]: ...


class ClassifierBase:
    """The parts of `Classifier` that are the same for every family."""

    run: Run
    classes: list[str]
    precision = "fp32"

    @functools.cached_property
    def rating(self):
        """A rating run's `targets.Rating` (from its config.json); None for a classifier."""
        from sentiment.targets import Rating

        return Rating.of_run(self.run.read_json("config.json"))

    @functools.cached_property
    def multi_label(self):
        """A multi-label run's `targets.MultiLabel` (labels and thresholds); None for other runs."""
        from sentiment.targets import MultiLabel

        return MultiLabel.of_run(self.run)

    def answers(self, outputs):
        """The model's outputs `[n, outputs]` (numpy array or torch tensor) as the run answers:
        class probabilities (softmax), a multi-label run's label probabilities (a sigmoid each), or a
        rating run's ratings, clipped to its training range."""
        if self.rating is not None:
            return self.rating.clip(outputs)
        if self.multi_label is not None:
            if not isinstance(outputs, np.ndarray):
                return outputs.sigmoid()
            return 1.0 / (1.0 + np.exp(-np.asarray(outputs, dtype=np.float64)))
        if not isinstance(outputs, np.ndarray):  # a torch tensor
            return outputs.softmax(dim=1)
        from sentiment.calibration import softmax

        return softmax(outputs)

    def probabilities(self, inputs: Sequence, **kw):
        return self.scores(inputs, **kw)[0]

    def predict(self, inputs: Sequence, *, batch_size: int = 256, progress: bool = False) -> list[Prediction]:
        """A `Prediction` per input, in order."""
        inputs = list(inputs)
        probs, known = self.scores(inputs, batch_size=batch_size, progress=progress)
        if self.rating is not None:
            return [
                Prediction("rating", None, {}, known=k, text=text, rating=float(r[0]))
                for text, r, k in zip(inputs, probs.tolist(), known, strict=True)
            ]
        multi = self.multi_label
        out = []
        for text, p, k in zip(inputs, probs.tolist(), known, strict=True):
            best = max(range(len(p)), key=p.__getitem__)
            scores = dict(zip(self.classes, p, strict=True))
            labels = multi.labels_of(p) if multi is not None else None
            out.append(Prediction(self.classes[best], p[best], scores, known=k, text=text, labels=labels))
        return out

    def knows(self, inputs: Sequence) -> list[bool]:
        return self.scores(inputs)[1]

    def explain(self, text: str):
        raise SentimentError(f"{self.run.path}: its family has no explanations")

    def serve(self) -> None:
        pass
