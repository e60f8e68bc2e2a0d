"""Settings, each declared once: type, default, choices, bounds and help.

The pieces every run has are declared here (`RunSettings`, `LoopSettings`, `TextData`); each model
family declares its own settings class from them, beside its code (`sentiment/families/`), with its
own defaults. A run's settings are built as the family's defaults < a TOML file < command-line flags.
The command-line options, the TOML loader and validation all read the declarations; the effective
config is printed at the start of a run and saved as `config.json` in the run folder.
`configs/*.toml` hold recipes (a test keeps them valid). This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sentiment.errors import SentimentError


def setting(
    default,
    help: str = "",  # noqa: A002 - the word the CLI uses
    *,
    choices: tuple[str, ...] | None = None,
    at_least: float | None = None,
    above: float | None = None,
    flag: bool = True,
):
    """A declared setting. `at_least` / `above` bound numbers; `flag=False` keeps it out of the command
    line (TOML only)."""
    meta = {"help": help, "choices": choices, "at_least": at_least, "above": above, "flag": flag}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def default(cls, name: str, value, **changes):
    """`cls`'s declared setting `name` with another default (and, in `changes`, another help or bound):
    how a family's settings class changes a default of the pieces it is built from."""
    meta = {**cls.__dataclass_fields__[name].metadata, **changes}
    return setting(value, **meta)


DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp32")
OPTIMIZERS = ("adam", "adamw", "sgd", "adagrad")
SCHEDULES = ("none", "step", "cosine", "linear")
REDUCTIONS = ("mean", "sum")
CLASS_WEIGHTS = ("none", "auto")
LOGS = ("tensorboard", "mlflow", "none")
KEEP = ("best", "last")
SELECT = ("auto", "acc", "f1", "loss", "mae", "spearman")
TARGETS = ("label", "rating", "multilabel")  # sentiment.targets holds what rating and multi-label runs are
RATING_LOSSES = ("mse", "huber")


@dataclass(kw_only=True)
class RunSettings:
    """What every run has, whatever it trains: which family, the seed, device and output folder.

    A family's settings are a dataclass of its own built from these pieces (`LoopSettings` when the
    training loop fits it, `TextData` for text), declared beside its code and registered with it,
    so a run's `config.json` holds only what applies to it."""

    model: str = setting("textcnn", "the model family")
    seed: int = setting(0)
    device: str = setting("auto", "auto, cpu or cuda", choices=DEVICES)
    precision: str = setting("auto", "auto (bf16 where the hardware has it), bf16 or fp32", choices=PRECISIONS)
    out: str = setting("runs", "where run folders go")
    class_weights: str = setting(
        "none", "auto (each class weighted by its inverse frequency in training) or none", choices=CLASS_WEIGHTS
    )
    calibrate: bool = setting(True, "fit a temperature to the validation split, so probabilities mean what they say")
    log: str = setting(
        "tensorboard",
        "where training figures go besides metrics.jsonl: tensorboard (event files in the run folder), "
        "mlflow (those, and an MLflow run at MLFLOW_TRACKING_URI) or none",
        choices=LOGS,
    )

    def finish(self, given: dict) -> RunSettings:
        """The settings after layering, given what the flags set (`given`): a family whose defaults
        depend on another setting adjusts them here."""
        return self


@dataclass(kw_only=True)
class LoopSettings:
    """Optimisation and schedule, for the families the training loop fits."""

    epochs: int = setting(5, at_least=1)
    batch_size: int = setting(64, at_least=1)
    optimizer: str = setting("adam", "adam, adamw, sgd or adagrad", choices=OPTIMIZERS)
    lr: float = setting(0.001, above=0)
    momentum: float = setting(0.9, "for sgd", at_least=0)
    weight_decay: float = setting(0.0, at_least=0)
    head_lr_mult: float = setting(1.0, "head lr = lr x this; 1 = one group", above=0)
    layer_decay: float = setting(1.0, "lr x this per block below the top (layer-wise decay); 1 = off", above=0)
    no_decay_1d: bool = setting(False, "no weight decay on biases and norm weights", flag=False)
    loss_reduction: str = setting("mean", "step on the batch's mean or summed loss", choices=REDUCTIONS, flag=False)
    schedule: str = setting("none", "none, step, cosine (per epoch) or linear (per batch)", choices=SCHEDULES)
    warmup: float = setting(0.1, "share of all steps the lr warms up over (linear)", at_least=0)
    step_size: int = setting(1, "epochs between lr steps (step)", at_least=1)
    gamma: float = setting(0.1, "lr factor at each step (step)")
    grad_clip: float = setting(0.0, "clip the gradient norm; 0 = off", at_least=0)
    micro_batch: int | None = setting(
        None,
        "examples per forward/backward; a batch's parts add their gradients before its one step "
        "(default: the whole batch; image runs: as many as fit the memory budget)",
        above=0,
    )
    threads: int | None = setting(
        None, "CPU threads (default: the cores this process may use, shared with other trainings)", above=0
    )
    patience: int | None = setting(
        None, "stop once validation has not improved for this many epochs (default: train every epoch)", at_least=1
    )
    keep: str = setting("best", "the weights a run keeps: best (validation) or last epoch's", choices=KEEP)
    select: str = setting(
        "auto",
        "what 'best' means on validation: acc (ties: lower loss), f1 or loss; a rating run's mae, spearman or "
        "loss; a multi-label run's f1 (micro) or loss (auto: acc, mae for a rating run, f1 for a multi-label one)",
        choices=SELECT,
    )
    test_each_epoch: bool = setting(
        False, "also score the test split after every epoch (the textbook's test curve; not for choosing)"
    )
    keep_checkpoint: bool = setting(
        False, "keep checkpoint.pt (optimizer state, for --resume) once the run completes; interrupted runs keep it"
    )


@dataclass(kw_only=True)
class TextData:
    """Where a text family's examples come from."""

    data: str | None = setting(None, "aclImdb/ folder, IMDb tar archive, or a labeled CSV/TSV/JSONL file")
    test_data: str | None = setting(None, "test file for a labeled train file")
    text_col: str | None = setting(None, "the text column of a labeled file (default: text, review, ...)")
    label_col: str | None = setting(None, "the label column of a labeled file (default: label, sentiment, ...)")
    test_fraction: float = setting(0.2, "held out of a single file")
    val_fraction: float = setting(
        0.1, "share of the training data held out for validation (stratified, seeded); 0 = none", at_least=0
    )
    val_data: str | None = setting(None, "a labeled file to validate on instead of a share of the training data")
    limit_train: int | None = setting(None, "a balanced random subset", above=0)
    limit_test: int | None = setting(None, "a balanced random subset", above=0)
    target: str = setting(
        "label",
        "label (a class per text), rating (a number: IMDb's stars from its file names, or a file's numeric "
        "label column) or multilabel (any number of labels per text; train's --multi-label)",
        choices=TARGETS,
    )


@dataclass(kw_only=True)
class TextRun(TextData, RunSettings):
    """A text family fitted by its own solver: data and run settings, no loop."""


@dataclass(kw_only=True)
class TextLoopRun(TextData, LoopSettings, RunSettings):
    """A text family the training loop fits."""

    no_decay_1d: bool = default(LoopSettings, "no_decay_1d", True)
    loss: str = setting("mse", "the loss of a rating run (--target rating): mse or huber", choices=RATING_LOSSES)


def declared(cls) -> list[dataclasses.Field]:
    return list(dataclasses.fields(cls))


def _type_ok(value, annotation) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def help_of(cls, name: str) -> str:
    return cls.__dataclass_fields__[name].metadata["help"]


def hints(cls) -> dict:
    return typing.get_type_hints(cls)


def check_values(cfg, where: str) -> None:
    """Choices and bounds, as declared."""
    for f in declared(type(cfg)):
        value, meta = getattr(cfg, f.name), f.metadata
        if value is None:
            continue
        if meta["choices"] is not None and value not in meta["choices"]:
            raise SentimentError(f"{where}: {f.name} must be one of {', '.join(meta['choices'])}, got {value!r}")
        if meta["at_least"] == 1 and value < 1:
            raise SentimentError(f"{where}: {f.name} must be at least 1, got {value}")
        if meta["at_least"] == 0 and value < 0:
            raise SentimentError(f"{where}: {f.name} must not be negative, got {value}")
        if meta["above"] == 0 and value <= 0:
            raise SentimentError(f"{where}: {f.name} must be positive, got {value}")


def apply(cfg, values: dict, where: str):
    """Return a copy of `cfg` with `values` applied; unknown keys and wrong types are user errors."""
    types_ = hints(type(cfg))
    known = {f.name for f in declared(type(cfg))}
    for key, value in values.items():
        if key not in known:
            raise SentimentError(f"{where}: unknown setting {key!r}; known settings: {', '.join(sorted(known))}")
        if not _type_ok(value, types_[key]):
            shown = getattr(types_[key], "__name__", str(types_[key]))
            raise SentimentError(f"{where}: {key} must be {shown}, got {value!r}")
        if types_[key] is float and isinstance(value, int):
            values = {**values, key: float(value)}
    out = dataclasses.replace(cfg, **values)
    check_values(out, where)
    return out


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SentimentError(f"no config file at {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise SentimentError(f"{path} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise SentimentError(f"{path} is not UTF-8 text") from None


def _given(overrides: dict) -> dict:
    return {k: v for k, v in overrides.items() if v is not None}


def family_config(
    name: str | None,
    config_file: str | None,
    overrides: dict,
    *,
    kind: str | None = None,
    note: Callable[[str], None] | None = None,
):
    """The settings of family `name` (or the one the flags or the config file name): the family's
    defaults, then the config file, then the flags that were given (None = not given). A flag that is
    a setting of other families only is dropped, and `note` says so; one no family has is an error."""
    from sentiment import registry

    file_values = read_toml(config_file) if config_file else {}
    flags = _given(overrides)
    name = flags.get("model") or name or file_values.get("model") or registry.default(kind)
    family = registry.get(name, kind=kind)
    cfg = family.settings(model=family.name)
    if file_values:
        cfg = apply(cfg, {**file_values, "model": family.name}, str(config_file))
    own = {f.name for f in declared(family.settings)}
    for key in [k for k in flags if k not in own]:
        others = [f.name for f in registry.families(family.kind) if key in {g.name for g in declared(f.settings)}]
        if not others:
            continue  # `apply` says it is unknown
        del flags[key]
        if note is not None:
            flag = "--" + key.replace("_", "-")
            note(f"note: --model {family.name} has no {flag} (a setting of {', '.join(others)}); ignored")
    return apply(cfg, {**flags, "model": family.name}, "command line").finish(flags)


def text_config(model: str | None, config_file: str | None, overrides: dict, *, note=None):
    """A text family's settings: see `family_config`."""
    return family_config(model, config_file, overrides, kind="text", note=note)


def image_config(config_file: str | None, overrides: dict, *, note=None):
    """The image family's settings: see `family_config`."""
    return family_config("image", config_file, overrides, kind="image", note=note)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def saved(cls, values: dict) -> dict:
    """`values` (a run's saved config) without the keys `cls` does not declare: folders written
    before families had settings of their own record every family's."""
    known = {f.name for f in declared(cls)}
    return {k: v for k, v in values.items() if k in known}


def held_out_seed(seed: int) -> int:
    """The seed a test subset (`--limit-test`, `evaluate --limit`) is drawn with: not the training
    subset's, so the two draws are independent."""
    return seed + 1


def validation_seed(seed: int) -> int:
    """The seed the validation split is drawn with: neither the training subset's nor the test's."""
    return seed + 2
