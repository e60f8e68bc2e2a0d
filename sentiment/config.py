"""Every setting a run can have, declared once: type, default, choices, bounds and help.

Run configurations are built as built-in defaults < a family's defaults < a TOML file < command-line
flags. The command-line options, the TOML loader and validation all read the declarations below;
the effective config is printed at the start of a run and saved as `config.json` in the run folder.
`configs/*.toml` hold recipes (a test keeps them valid). This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from sentiment.errors import SentimentError
from sentiment.text.tokenize import TOKENIZERS


def setting(
    default,
    help: str = "",  # noqa: A002 - the word the CLI uses
    *,
    choices: tuple[str, ...] | None = None,
    at_least: float | None = None,
    above: float | None = None,
    flag: bool = True,
    models: tuple[str, ...] | None = None,
    loop: bool = False,
):
    """A declared setting. `at_least` / `above` bound numbers; `flag=False` keeps it out of the command
    line (TOML only); `models` names the model families it applies to (None: all); `loop` marks a
    setting of the training loop, which families fitted by their own solver do not use."""
    meta = {
        "help": help,
        "choices": choices,
        "at_least": at_least,
        "above": above,
        "flag": flag,
        "models": models,
        "loop": loop,
    }
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp32")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("none", "step", "cosine", "linear")
REDUCTIONS = ("mean", "sum")


@dataclass(kw_only=True)
class RunSettings:
    """What every run has, whatever it trains: optimisation, schedule, seed, device and output folder."""

    epochs: int = setting(5, at_least=1, loop=True)
    batch_size: int = setting(64, at_least=1, loop=True)
    optimizer: str = setting("adam", "adam, adamw or sgd", choices=OPTIMIZERS, loop=True)
    lr: float = setting(0.001, above=0, loop=True)
    momentum: float = setting(0.9, "for sgd", at_least=0, loop=True)
    weight_decay: float = setting(0.0, at_least=0, loop=True)
    head_lr_mult: float = setting(1.0, "head lr = lr x this; 1 = one group", above=0, loop=True)
    layer_decay: float = setting(
        1.0, "lr x this per block below the top (layer-wise decay); 1 = off", above=0, loop=True
    )
    no_decay_1d: bool = setting(False, "no weight decay on biases and norm weights", flag=False, loop=True)
    loss_reduction: str = setting(
        "mean", "step on the batch's mean or summed loss", choices=REDUCTIONS, flag=False, loop=True
    )
    schedule: str = setting(
        "none", "none, step, cosine (per epoch) or linear (per batch)", choices=SCHEDULES, loop=True
    )
    warmup: float = setting(0.1, "share of all steps the lr warms up over (linear)", at_least=0, loop=True)
    step_size: int = setting(1, "epochs between lr steps (step)", at_least=1, loop=True)
    gamma: float = setting(0.1, "lr factor at each step (step)", loop=True)
    grad_clip: float = setting(0.0, "clip the gradient norm; 0 = off", at_least=0, loop=True)
    micro_batch: int | None = setting(
        None,
        "examples per forward/backward; a batch's parts add their gradients before its one step "
        "(default: the whole batch; image runs: as many as fit the memory budget)",
        above=0,
        loop=True,
    )
    threads: int | None = setting(
        None, "CPU threads (default: the cores this process may use, shared with other trainings)", above=0, loop=True
    )
    seed: int = setting(0)
    device: str = setting("auto", "auto, cpu or cuda", choices=DEVICES)
    precision: str = setting("auto", "auto (bf16 where the hardware has it), bf16 or fp32", choices=PRECISIONS)
    out: str = setting("runs", "where run folders go")


GLOVE = ("textcnn", "birnn")  # the families that start from word vectors


@dataclass(kw_only=True)
class TextConfig(RunSettings):
    model: str = setting("textcnn", "textcnn, birnn, transformer or linear")
    # data
    data: str | None = setting(None, "aclImdb/ folder, IMDb tar archive, or a labeled CSV/TSV/JSONL file")
    test_data: str | None = setting(None, "test file for a labeled train file")
    text_col: str | None = setting(None, "the text column of a labeled file (default: text, review, ...)")
    label_col: str | None = setting(None, "the label column of a labeled file (default: label, sentiment, ...)")
    test_fraction: float = setting(0.2, "held out of a single file")
    tokenizer: str = setting("basic", "basic (the reference) or words", choices=tuple(TOKENIZERS), models=GLOVE)
    min_freq: int = setting(5, "keep tokens seen at least this often", at_least=1, models=GLOVE)
    max_len: int = setting(500, "the length reviews are cut to (in tokens)", at_least=1, models=(*GLOVE, "transformer"))
    vectors: str = setting("glove.6B.50d", "glove.6B.50d (offline wheel) or a GloVe .txt/.gz/.zip path", models=GLOVE)
    limit_train: int | None = setting(None, "a balanced random subset", above=0)
    limit_test: int | None = setting(None, "a balanced random subset", above=0)
    cache: bool = setting(True, "keep prepared ids under <data dir>/cache/ for the next run", flag=False, models=GLOVE)
    no_decay_1d: bool = setting(True, "no weight decay on biases and norm weights", flag=False, loop=True)
    # model
    freeze_embedding: bool = setting(True, "keep BiRNN's GloVe embedding fixed", flag=False, models=("birnn",))
    num_hiddens: int = setting(100, "LSTM width", at_least=1, flag=False, models=("birnn",))
    num_layers: int = setting(2, "LSTM layers", at_least=1, flag=False, models=("birnn",))
    kernel_sizes: list[int] = setting([3, 4, 5], "convolution widths", flag=False, models=("textcnn",))
    num_channels: list[int] = setting([100, 100, 100], "channels per width", flag=False, models=("textcnn",))
    dropout: float = setting(0.5, "before the classifier", at_least=0, flag=False, models=("textcnn", "transformer"))
    encoder: str = setting(
        "all-MiniLM-L6-v2", "all-MiniLM-L6-v2 (offline wheel), a model folder or a hub name", models=("transformer",)
    )
    pooling: str = setting(
        "mean", "mean or cls: how token states become one vector", choices=("mean", "cls"), models=("transformer",)
    )
    attention_dropout: float = setting(
        0.0,
        "dropout on the encoder's attention weights; at 0 PyTorch's fused attention runs, "
        "on CPU twice as fast and with half the memory of a training step",
        at_least=0,
        models=("transformer",),
    )
    ngrams: int = setting(2, "TF-IDF of 1- to N-word sequences", at_least=1, models=("linear",))
    min_df: int = setting(2, "keep n-grams seen in at least this many reviews", at_least=1, models=("linear",))
    c: float = setting(4.0, "inverse strength of the logistic regression's L2 penalty", above=0, models=("linear",))
    head_tokens: int = setting(
        64,
        "a review longer than --max-len keeps this many tokens from its start, the rest from its end",
        at_least=0,
        models=("transformer",),
    )


@dataclass(kw_only=True)
class ImageConfig(RunSettings):
    backbone: str = setting("resnet18", "resnet18, resnet34, resnet50 or efficientnet-lite0")
    # data
    data: str | None = setting(None, "a folder (or archive) with train/ and test/ or val/, one subfolder per class")
    limit_train: int | None = setting(None, above=0)
    limit_test: int | None = setting(None, above=0)
    num_workers: int = setting(2, "image decoding processes", at_least=0)
    color_jitter: float = setting(0.0, "brightness/contrast/saturation", at_least=0)
    # model
    weights: str = setting("imagenet", "imagenet (default) or a checkpoint file")
    scratch: bool = setting(False, "start from random weights")
    head_init: str | None = setting(None, "start head rows from ImageNet classes, e.g. imagenet:hotdog=934")
    freeze_backbone: bool = setting(False, "train the head only")
    # the reference recipe: SGD on the summed loss, head at 10x
    batch_size: int = setting(128, at_least=1)
    optimizer: str = setting("sgd", "sgd, adam or adamw", choices=OPTIMIZERS)
    lr: float = setting(5e-5, above=0)
    head_lr_mult: float = setting(10.0, "head lr = lr x this; 1 = one group", above=0)
    momentum: float = setting(0.0, at_least=0)
    weight_decay: float = setting(0.001, at_least=0)
    loss_reduction: str = setting("sum", "step on the batch's mean or summed loss", choices=REDUCTIONS, flag=False)


# Training from random weights, as in the reference comparison: 10x the configured learning rate,
# one learning rate for every layer (unless the flags say otherwise).
SCRATCH_LR_FACTOR = 10.0


@dataclass(frozen=True)
class Family:
    """A model family: the task module that trains and serves it (`module:Class`, imported when
    needed) and the defaults it changes."""

    kind: str  # what `config.json` records; `predict` takes text runs, `image-predict` image runs
    task: str
    defaults: dict = field(default_factory=dict)
    solver: bool = False  # fitted by its own solver: the optimisation settings do not apply


# The registry: a new family is one module and one line here.
FAMILIES: dict[str, Family] = {
    "textcnn": Family("text", "sentiment.text.task:TextTask", {"lr": 0.001}),
    "birnn": Family("text", "sentiment.text.task:TextTask", {"lr": 0.01}),
    "transformer": Family(
        "text",
        "sentiment.text.transformer:TransformerTask",
        {
            "optimizer": "adamw",
            "lr": 1e-4,
            "weight_decay": 0.01,
            "schedule": "linear",
            "warmup": 0.1,
            "layer_decay": 0.9,
            "head_lr_mult": 10.0,
            "grad_clip": 1.0,
            "max_len": 256,
            "batch_size": 16,
            "epochs": 3,
            "dropout": 0.1,
        },
    ),
    "linear": Family("text", "sentiment.text.linear:LinearTask", {}, solver=True),
    "image": Family("image", "sentiment.vision.task:ImageTask"),
}
TEXT_MODELS = tuple(name for name, f in FAMILIES.items() if f.kind == "text")
MODEL_DEFAULTS = {name: FAMILIES[name].defaults for name in TEXT_MODELS}


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


def text_config(model: str | None, config_file: str | None, overrides: dict) -> TextConfig:
    """Defaults for the model, then the config file, then the flags that were given (None = not given)."""
    file_values = read_toml(config_file) if config_file else {}
    name = overrides.get("model") or model or file_values.get("model") or "textcnn"
    if name not in TEXT_MODELS:
        raise SentimentError(f"unknown model {name!r}; choose one of: {', '.join(TEXT_MODELS)}")
    cfg = apply(TextConfig(model=name), FAMILIES[name].defaults, "built-in defaults")
    if file_values:
        cfg = apply(cfg, {**file_values, "model": name}, str(config_file))
    return apply(cfg, _given(overrides), "command line")


def image_config(config_file: str | None, overrides: dict) -> ImageConfig:
    """Recipe defaults, then the config file, then the flags given; `scratch` then scales the lr."""
    file_values = read_toml(config_file) if config_file else {}
    flags = _given(overrides)
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


def family_of(cfg) -> str:
    return "image" if isinstance(cfg, ImageConfig) else cfg.model


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def applicable(cfg) -> dict:
    """The settings that shape a run of `cfg`'s family (those declared for other families left out)."""
    family = family_of(cfg)
    solver = FAMILIES[family].solver
    return {
        f.name: getattr(cfg, f.name)
        for f in declared(type(cfg))
        if (f.metadata["models"] is None or family in f.metadata["models"]) and not (solver and f.metadata["loop"])
    }


def held_out_seed(seed: int) -> int:
    """The seed a test subset (`--limit-test`, `evaluate --limit`) is drawn with: not the training
    subset's, so the two draws are independent."""
    return seed + 1
