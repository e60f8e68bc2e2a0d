"""The model families, each registered by the module that defines it.

A family is one module (`sentiment/families/<name>.py`, or a module of another package named in the
`sentiment.families` entry-point group) that calls `register(Family(...))` when it is imported: its
settings, its task (how the recipe trains it) and `open`, the one function that turns one of its run
folders into the classifier that answers fastest. Generic code asks the family; it never branches on
a family's name. A family's module is imported when that family is first asked for, so
`sentiment predict` with a TextCNN run imports only the TextCNN family; listing every family
imports them all. Family modules import no torch when they are imported.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from sentiment.errors import SentimentError

ENTRY_POINTS = "sentiment.families"  # the entry-point group of families that live outside this package
DEFAULTS = {"text": "textcnn", "image": "image"}  # the family a command trains when none is named


@dataclass(frozen=True)
class Family:
    """What a model family registers."""

    name: str  # `--model NAME`; recorded in every run's config.json
    kind: str  # "text" or "image": which commands use its runs
    settings: type  # its settings dataclass (built from config.py's pieces), with its own defaults
    task: type  # a `tasks.Task` subclass: how the recipe trains it
    # (run, device, texts) -> its classifier for that run folder: the form that answers `texts`
    # inputs fastest on `device` (None: any number)
    open: Callable
    summary: str = ""  # one line for --help and the docs


_registered: dict[str, Family] = {}
_loaded_all = False


def register(family: Family) -> Family:
    """Add `family`; a second family of the same name is refused."""
    known = _registered.get(family.name)
    if known is not None and known.task.__module__ != family.task.__module__:
        raise ValueError(f"model family {family.name!r} is registered twice ({known.task.__module__})")
    _registered[family.name] = family
    return family


def builtin_names() -> list[str]:
    """The families in `sentiment/families/`, by module name, without importing them."""
    import sentiment.families

    return sorted(m.name for m in pkgutil.iter_modules(sentiment.families.__path__) if not m.name.startswith("_"))


def _plugins() -> dict:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINTS)}


def _load(name: str) -> None:
    if name in builtin_names():
        importlib.import_module(f"sentiment.families.{name}")
    elif name in (plugins := _plugins()):
        plugins[name].load()


def get(name: str, *, kind: str | None = None) -> Family:
    """The family called `name` (of `kind`, when given); an unknown name is a user error that lists the known ones."""
    if name not in _registered:
        _load(name)
    family = _registered.get(name)
    if family is None or (kind is not None and family.kind != kind):
        known = ", ".join(f.name for f in families(kind))
        raise SentimentError(f"unknown model {name!r}; choose one of: {known}")
    return family


def families(kind: str | None = None) -> list[Family]:
    """Every family (of `kind`), the built-in ones and those of the entry-point group, by name."""
    global _loaded_all
    if not _loaded_all:
        for name in builtin_names():
            _load(name)
        for ep in _plugins().values():
            ep.load()
        _loaded_all = True
    return sorted((f for f in _registered.values() if kind is None or f.kind == kind), key=lambda f: f.name)


def names(kind: str | None = None) -> list[str]:
    return [f.name for f in families(kind)]


def default(kind: str | None) -> str:
    return DEFAULTS.get(kind or "text", DEFAULTS["text"])


def family_of_run(meta: dict, kind: str) -> str:
    """The family a run folder's config.json names (folders from before `family` was recorded name
    their text family as `config.model`, and image runs only by their kind)."""
    return meta.get("family") or (meta.get("config", {}).get("model") if kind == "text" else kind)


def open_classifier(run, device: str = "cpu", *, kind: str, texts: int | None = None, hint: str = ""):
    """A trained run of this `kind` as its family's classifier (see `tasks.Classifier`): the form
    that answers `texts` inputs fastest on `device`."""
    meta = run.read_meta(kind, hint)
    name = family_of_run(meta, kind)
    try:
        family = get(name, kind=kind)
    except SentimentError:
        raise SentimentError(f"{run.path} was trained as {name!r}, which this version does not know") from None
    return family.open(run, device, texts=texts)


def torch_forms(module: str, nets: Callable):
    """A family module's `__getattr__`: its torch modules are defined by `nets()` when first asked
    for (`from sentiment.families.textcnn import TextCNN`), so importing the module imports no torch."""

    def attribute(name: str):
        try:
            return getattr(nets(), name)
        except AttributeError:
            raise AttributeError(f"module {module!r} has no attribute {name!r}") from None

    return attribute


def task_for(cfg):
    """The task that trains `cfg`'s family."""
    return get(cfg.model).task(cfg)
