"""Run configurations: built-in defaults < a TOML file < command-line flags.

The effective config is printed at the start of a run and saved as `config.json` in the run folder.
`configs/*.toml` hold the same defaults as the dataclasses below (a test keeps them in step).
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from sentiment.errors import SentimentError


@dataclass(kw_only=True)
class RunSettings:
    """What every run has, text or image: the schedule, clipping, seed, device and output folder."""

    schedule: str = "none"
    step_size: int = 1
    gamma: float = 0.1
    grad_clip: float = 0.0
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # bf16 autocast where the hardware has it (see train.resolve_precision), else fp32
    out: str = "runs"


@dataclass(kw_only=True)
class TextConfig(RunSettings):
    model: str = "textcnn"
    # data
    data: str | None = None
    test_data: str | None = None
    text_col: str | None = None
    label_col: str | None = None
    test_fraction: float = 0.2
    tokenizer: str = "basic"
    min_freq: int = 5
    max_len: int = 500
    vectors: str = "glove.6B.50d"
    limit_train: int | None = None
    limit_test: int | None = None
    cache: bool = True  # keep prepared ids under <data dir>/cache/ for the next run
    # model
    freeze_embedding: bool = True  # BiRNN's embedding; the TextCNN always has one frozen and one trained
    num_hiddens: int = 100
    num_layers: int = 2
    kernel_sizes: list[int] = field(default_factory=lambda: [3, 4, 5])
    num_channels: list[int] = field(default_factory=lambda: [100, 100, 100])
    dropout: float = 0.5
    # optimisation
    epochs: int = 5
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0


@dataclass(kw_only=True)
class ImageConfig(RunSettings):
    backbone: str = "resnet18"
    # data
    data: str | None = None
    limit_train: int | None = None
    limit_test: int | None = None
    num_workers: int = 2
    color_jitter: float = 0.0  # 0 = off; else brightness/contrast/saturation factor
    # model
    weights: str = "imagenet"  # "imagenet" or a checkpoint file
    scratch: bool = False  # random weights instead of `weights`
    head_init: str | None = None  # e.g. "imagenet:hotdog=934"
    freeze_backbone: bool = False
    # optimisation (the reference recipe: SGD, summed loss, head at 10x)
    epochs: int = 5
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 5e-5
    head_lr_mult: float = 10.0
    momentum: float = 0.0
    weight_decay: float = 0.001
    no_decay_1d: bool = False
    loss_reduction: str = "sum"


# Training from random weights, as in the reference comparison: 10x the configured learning rate,
# one learning rate for every layer (unless the flags say otherwise).
SCRATCH_LR_FACTOR = 10.0


MODEL_DEFAULTS: dict[str, dict] = {
    "textcnn": {"lr": 0.001},
    "birnn": {"lr": 0.01},
}

CHOICES = {
    "optimizer": ("adam", "adamw", "sgd"),
    "schedule": ("none", "step", "cosine"),
    "device": ("auto", "cpu", "cuda"),
    "precision": ("auto", "bf16", "fp32"),
    "tokenizer": ("basic", "words"),
    "loss_reduction": ("mean", "sum"),
}
POSITIVE = ("epochs", "batch_size", "max_len", "min_freq", "num_hiddens", "num_layers", "step_size")
NON_NEGATIVE = ("weight_decay", "momentum", "grad_clip", "num_workers", "color_jitter")


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


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def check_values(cfg, where: str) -> None:
    for name, choices in CHOICES.items():
        value = getattr(cfg, name, None)
        if value is not None and value not in choices:
            raise SentimentError(f"{where}: {name} must be one of {', '.join(choices)}, got {value!r}")
    for name in POSITIVE:
        value = getattr(cfg, name, None)
        if value is not None and value < 1:
            raise SentimentError(f"{where}: {name} must be at least 1, got {value}")
    for name in ("lr", "limit_train", "limit_test", "head_lr_mult"):
        value = getattr(cfg, name, None)
        if value is not None and value <= 0:
            raise SentimentError(f"{where}: {name} must be positive, got {value}")
    for name in NON_NEGATIVE:
        value = getattr(cfg, name, None)
        if value is not None and value < 0:
            raise SentimentError(f"{where}: {name} must not be negative, got {value}")


def apply(cfg, values: dict, where: str):
    """Return a copy of `cfg` with `values` applied; unknown keys and wrong types are user errors."""
    hints = _hints(type(cfg))
    known = {f.name for f in dataclasses.fields(cfg)}
    for key, value in values.items():
        if key not in known:
            raise SentimentError(f"{where}: unknown setting {key!r}; known settings: {', '.join(sorted(known))}")
        if not _type_ok(value, hints[key]):
            shown = getattr(hints[key], "__name__", str(hints[key]))
            raise SentimentError(f"{where}: {key} must be {shown}, got {value!r}")
        if hints[key] is float and isinstance(value, int):
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


def text_config(model: str | None, config_file: str | None, overrides: dict) -> TextConfig:
    """Defaults for the model, then the config file, then the flags that were given (None = not given)."""
    file_values = read_toml(config_file) if config_file else {}
    name = overrides.get("model") or model or file_values.get("model") or "textcnn"
    if name not in MODEL_DEFAULTS:
        raise SentimentError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_DEFAULTS)}")
    cfg = apply(TextConfig(model=name), MODEL_DEFAULTS[name], "built-in defaults")
    if file_values:
        cfg = apply(cfg, {**file_values, "model": name}, str(config_file))
    flags = {k: v for k, v in overrides.items() if v is not None}
    return apply(cfg, flags, "command line")


def image_config(config_file: str | None, overrides: dict) -> ImageConfig:
    """Recipe defaults, then the config file, then the flags given; `scratch` then scales the lr."""
    file_values = read_toml(config_file) if config_file else {}
    flags = {k: v for k, v in overrides.items() if v is not None}
    cfg = ImageConfig()
    if file_values:
        cfg = apply(cfg, file_values, str(config_file))
    cfg = apply(cfg, flags, "command line")
    if cfg.scratch:
        cfg = apply(
            cfg,
            {"lr": flags.get("lr", cfg.lr * SCRATCH_LR_FACTOR), "head_lr_mult": flags.get("head_lr_mult", 1.0)},
            "command line",
        )
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
