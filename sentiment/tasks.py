"""What a model family declares (`Task`), and the registry look-ups that find a family's task: for a
config about to be trained, and for a trained run folder about to predict. `config.FAMILIES` maps a
family's name to its task class; this module imports it by name, when it is needed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from sentiment.config import FAMILIES, family_of
from sentiment.errors import SentimentError
from sentiment.runs import Run
from sentiment.runtime import Runtime


@dataclass
class TaskData:
    """A task's prepared data, in the loop's `(index, inputs, labels)` batches."""

    train: object  # iterable of batches with __len__ and optionally set_epoch(epoch)
    test: object
    test_labels: torch.Tensor
    classes: list[str]
    train_examples: int
    test_examples: int
    source: str | None = None  # where the data was read, as an absolute path (config.json keeps it)
    test_source: str | None = None  # a separate test file, if any


class Task(Protocol):
    """What a model family declares. `cfg` is its config (config.TextConfig, config.ImageConfig)."""

    kind: str  # recorded in config.json: which commands can use the run
    allocator: str  # "keep_all" (fixed batch shapes) or "bounded" (shapes change every batch); see runtime
    cpu_bf16: bool  # whether `--precision auto` may pick bf16 on a CPU with native bfloat16
    evaluate_before: bool  # an epoch-0 test line: how good the model is before any step
    head: str | None  # parameter prefix of the new head (trained at lr x head_lr_mult)
    solver: bool  # fitted by its own solver (`fit`) instead of the training loop
    # Inputs for n examples at the largest size training sees: the recipe measures a step's memory
    # with them and splits batches into micro-batches that fit (`--micro-batch` overrides). None:
    # batches are split only when `--micro-batch` says so.
    example_inputs: Callable[[int], tuple] | None

    def fit(self, model: torch.nn.Module, data: TaskData, echo: Callable[[str], None]) -> dict:
        """Only for `solver` families: fit `model` in place; return the metrics of its one "epoch"."""

    def data(self, runtime: Runtime, echo: Callable[[str], None]) -> TaskData: ...

    def model(self, data: TaskData, runtime: Runtime, echo: Callable[[str], None]) -> torch.nn.Module:
        """The model on `runtime.device`, its frozen parameters already frozen."""

    def record(self, data: TaskData) -> dict:
        """What config.json must hold besides the config to rebuild the model and read its inputs."""

    def save(self, run: Run, data: TaskData) -> None:
        """Files the run folder needs besides config.json and the weights (a vocabulary, ...)."""

    def check_resume(self, run: Run, data: TaskData) -> None:
        """Raise if the data no longer gives what the run was trained with."""

    def summary(self, data: TaskData) -> dict:
        """Figures for summary.json beyond the recipe's own."""

    @classmethod
    def classifier(cls, run: Run, device: str):
        """A trained run ready to predict, from nothing but its folder."""


def task_for(cfg) -> Task:
    """The task of `cfg`'s model family, from the registry."""
    return _task_class(family_of(cfg))(cfg)


def _task_class(family: str):
    module, _, name = FAMILIES[family].task.partition(":")
    return getattr(importlib.import_module(module), name)


def open_classifier(run: Run, device: str = "cpu", *, kind: str, hint: str = ""):
    """A trained run of this `kind` as its family's classifier (`Task.classifier`)."""
    meta = run.read_meta(kind, hint)
    family = meta.get("family") or (meta["config"].get("model") if kind == "text" else kind)
    if family not in FAMILIES:
        raise SentimentError(f"{run.path} was trained as {family!r}, which this version does not know")
    return _task_class(family).classifier(run, device)
