"""Fine-tuning helpers shared by the text and vision models.

Each helper is a small function over `named_parameters()` or `state_dict()`:

- `param_groups` builds optimizer groups. Frozen parameters are left out, the head trains at a
  higher learning rate, and 1-D parameters (biases, norm weights) get no weight decay.
- `freeze`, `unfreeze` and `set_bn_eval` choose what trains.
- `load_matching` loads the checkpoint tensors whose names and shapes fit the model (for example a
  pretrained body under a new head) and reports what it skipped.

Names are matched by module prefix: "fc" covers "fc.weight" and "fc.0.bias" but not "fc2.weight".
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from sentiment.errors import SentimentError

M = TypeVar("M", bound=nn.Module)

Shape = tuple[int, ...]

# Wrappers that put a prefix on every state_dict key: DistributedDataParallel / DataParallel, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


# --- names -------------------------------------------------------------------------------------------


def _prefixes(names: str | Sequence[str] | None) -> tuple[str, ...]:
    if names is None:
        return ()
    if isinstance(names, str):
        names = (names,)
    return tuple(name.rstrip(".") for name in names)


def _under(name: str, prefix: str) -> bool:
    """True if `name` is the module or parameter `prefix` or lies below it."""
    return name == prefix or name.startswith(prefix + ".")


def _under_any(name: str, prefixes: Iterable[str]) -> bool:
    return any(_under(name, prefix) for prefix in prefixes)


def _top_level(model: nn.Module) -> str:
    names = [n for n, _ in model.named_children()] + [n for n, _ in model.named_parameters(recurse=False)]
    return ", ".join(names) or "(none)"


def _first(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# --- optimizer groups --------------------------------------------------------------------------------


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that require gradients, each shared tensor once, in `named_parameters()` order."""
    return [p for p in model.parameters() if p.requires_grad]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) number of scalars; a tensor shared by several modules counts once."""
    params = list(model.parameters())  # already de-duplicated by identity
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def param_groups(
    model: nn.Module,
    lr: float,
    *,
    head: str | Sequence[str] | None = None,
    head_lr_mult: float = 10.0,
    weight_decay: float = 0.0,
    no_decay_1d: bool = True,
    lr_scales: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups for fine-tuning `model`.

    - Frozen parameters (`requires_grad=False`) are left out.
    - Parameters under the `head` module prefixes (e.g. "fc", "decoder") train at `lr * head_lr_mult`.
      With `head=None` or `head_lr_mult == 1` there is no separate head group.
    - With `no_decay_1d` and `weight_decay > 0`, parameters with ndim <= 1 (biases, norm weights) get
      weight decay 0. Decaying them only pulls the model towards zero-mean, unit-free features.
    - `lr_scales` (e.g. from `layer_decay_scales`) multiplies each named parameter's lr; parameters
      with the same scale share a group.

    Each group has `params`, `lr`, `weight_decay` and `names` (parameter names, for logging). Torch
    optimizers keep extra keys in a group, so the result goes straight to `torch.optim.AdamW(groups)`.
    Groups come in a fixed order (body, body without decay, head, head without decay), and empty groups
    are dropped. A tensor shared by several modules (tied weights) appears once, under its first name
    in `named_parameters()`.

    Raises `SentimentError` if nothing is trainable, or if a head prefix matches no trainable parameter.
    """
    for what, value in (("lr", lr), ("head_lr_mult", head_lr_mult), ("weight_decay", weight_decay)):
        if not (math.isfinite(value) and value >= 0):
            raise SentimentError(f"{what} must be a finite number >= 0, got {value!r}; fix it in the run config")
    heads = _prefixes(head)
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        total = sum(1 for _ in model.parameters())
        state = f"all {total} of its parameter tensors are frozen" if total else "it has no parameters"
        raise SentimentError(
            f"{type(model).__name__} has nothing to train: {state}; unfreeze some before building the optimizer"
        )
    for prefix in heads:
        if not any(_under(name, prefix) for name, _ in named):
            raise _no_trainable_match(model, prefix)

    split_head = bool(heads) and head_lr_mult != 1
    split_decay = no_decay_1d and weight_decay > 0
    scales = sorted({(lr_scales or {}).get(name, 1.0) for name, _ in named})
    groups: dict[tuple[float, bool, bool], dict[str, Any]] = {
        (scale, is_head, no_decay): {
            "params": [],
            "lr": lr * scale * (head_lr_mult if is_head else 1.0),
            "weight_decay": 0.0 if no_decay else weight_decay,
            "names": [],
        }
        for scale in scales
        for is_head in (False, True)
        for no_decay in (False, True)
    }
    for name, p in named:
        scale = (lr_scales or {}).get(name, 1.0)
        key = (scale, split_head and _under_any(name, heads), split_decay and p.ndim <= 1)
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return [group for group in groups.values() if group["params"]]


_LAYER_INDEX = re.compile(r"(?:^|\.)_?(?:layers?|blocks)\.?(\d+)\.")


def layer_depth(name: str) -> int | None:
    """The block a parameter belongs to, counted from the input: `encoder.layer.3.*` (BERT),
    `transformer.layer.3.*` (DistilBERT), `layer3.*` (ResNet), `_blocks.3.*` (EfficientNet) give 3;
    None for parameters outside the numbered blocks."""
    match = _LAYER_INDEX.search(name)
    return int(match.group(1)) if match else None


def layer_decay_scales(model: nn.Module, decay: float, *, head: str | Sequence[str] | None = None) -> dict[str, float]:
    """Layer-wise learning-rate decay: a factor per parameter name, 1 for the head and whatever sits
    above the last numbered block, `decay ** k` for a block k blocks below the top, and the lowest
    (embeddings, stem) one step below the first block. `decay = 1` gives 1 everywhere."""
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    depths = {name: layer_depth(name) for name in names}
    numbered = [d for d in depths.values() if d is not None]
    if not numbered:
        return dict.fromkeys(names, 1.0)
    first, last = min(numbered), max(numbered)
    heads = _prefixes(head)
    scales = {}
    seen_block = False
    for name in names:  # named_parameters() runs from the input upwards: before the first block is the stem
        depth = depths[name]
        if depth is not None:
            seen_block = True
        if _under_any(name, heads):
            depth = last + 1
        elif depth is None:
            depth = last + 1 if seen_block else first - 1
        scales[name] = decay ** (last + 1 - depth)
    return scales


def _no_trainable_match(model: nn.Module, prefix: str) -> SentimentError:
    aliases = [(n, p) for n, p in model.named_parameters(remove_duplicate=False) if _under(n, prefix)]
    if aliases and not any(p.requires_grad for _, p in aliases):
        why = f" (its parameters {_first([n for n, _ in aliases])} are all frozen: unfreeze them first)"
    elif aliases:
        why = " (its parameters are shared with another module and grouped under that module's name)"
    else:
        why = ""
    return SentimentError(
        f"head {prefix!r} matches no trainable parameter of {type(model).__name__}{why}; "
        f"top-level children: {_top_level(model)}; name one of them or a dotted path below one"
    )


# --- freezing ----------------------------------------------------------------------------------------


def freeze(module: M, *, but: str | Sequence[str] = ()) -> M:
    """Set `requires_grad=False` on every parameter of `module`, except those under the `but` prefixes.

    Parameters under `but` (e.g. `but=("fc",)`) are made trainable, whatever they were before, so the
    result does not depend on earlier calls. A tensor shared by several modules stays trainable if any
    of its names is under `but`. Returns `module`.

    Freezing stops gradient updates only. A frozen BatchNorm layer in train mode still updates its
    running mean and variance on every forward pass, drifting away from the pretrained statistics:
    call `set_bn_eval(module)` after each `module.train()` to keep them fixed.
    """
    keep = _prefixes(but)
    named = list(module.named_parameters(remove_duplicate=False))
    for prefix in keep:
        if not any(_under(name, prefix) for name, _ in named):
            raise SentimentError(
                f"cannot keep {prefix!r} trainable: it matches no parameter of {type(module).__name__}; "
                f"top-level children: {_top_level(module)}"
            )
    for _, p in named:
        p.requires_grad_(False)
    for name, p in named:
        if _under_any(name, keep):
            p.requires_grad_(True)
    return module


def unfreeze(module: M) -> M:
    """Set `requires_grad=True` on every parameter of `module`. Returns `module`."""
    for p in module.parameters():
        p.requires_grad_(True)
    return module


def set_bn_eval(module: M) -> M:
    """Put every BatchNorm layer whose parameters are all frozen into eval mode. Returns `module`.

    In eval mode a BatchNorm layer normalises with its stored running statistics and stops updating
    them. `module.train()` undoes this, so call it again after every `train()`.
    """
    for layer in module.modules():
        if isinstance(layer, _BatchNorm) and not any(p.requires_grad for p in layer.parameters()):
            layer.eval()
    return module


# --- loading a checkpoint that partly fits -----------------------------------------------------------


@dataclass
class LoadReport:
    """What `load_matching` did with each tensor name.

    `loaded`: model tensors copied from the checkpoint; `missing`: model tensors the checkpoint lacks;
    `unexpected`: checkpoint entries the model lacks; `mismatched`: (name, model shape, checkpoint shape)
    for names in both whose shapes differ. Missing and mismatched tensors keep their old values.
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, Shape, Shape]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True if every model tensor was loaded and every checkpoint entry was used."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 5) -> str:
        """One line, e.g. "loaded 120 tensors; skipped: shape mismatch fc.weight (2, 512) vs (1000, 512)"."""
        n = len(self.loaded)
        line = f"loaded {n} tensor{'' if n == 1 else 's'}"
        skipped = []
        if self.missing:
            skipped.append(f"missing {_first(self.missing, limit)}")
        if self.unexpected:
            skipped.append(f"unexpected {_first(self.unexpected, limit)}")
        if self.mismatched:
            skipped.append(f"shape mismatch {_first([_mismatch(*m) for m in self.mismatched], limit)}")
        return f"{line}; skipped: {'; '.join(skipped)}" if skipped else f"{line}; nothing skipped"


def _mismatch(name: str, model_shape: Shape, checkpoint_shape: Shape) -> str:
    return f"{name} {model_shape} vs {checkpoint_shape}"


def strip_prefix(state_dict: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """A copy of `state_dict` with `prefix` (e.g. "module." from DistributedDataParallel) removed from
    the keys that start with it; other keys are kept as they are."""
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        new = key[len(prefix) :] if prefix and key.startswith(prefix) else key
        if new in out:
            raise SentimentError(
                f"cannot strip {prefix!r} from the checkpoint keys: {key!r} and {new!r} would collide; "
                "the checkpoint mixes wrapped and unwrapped keys"
            )
        out[new] = value
    return out


def _unwrap(state_dict: Mapping[str, Any], model_keys: Mapping[str, Any]) -> Mapping[str, Any]:
    """Strip wrapper prefixes ("module.", "_orig_mod.", nested too) if more keys then match the model."""
    if not any(key.startswith(_WRAPPER_PREFIXES) for key in state_dict):
        return state_dict
    stripped: dict[str, Any] = {}
    for key, value in state_dict.items():
        bare = key
        while bare.startswith(_WRAPPER_PREFIXES):
            bare = bare.split(".", 1)[1]
        if bare in stripped:
            return state_dict  # wrapped and unwrapped copies of one key: keep the names as they are
        stripped[bare] = value
    if sum(key in model_keys for key in stripped) > sum(key in model_keys for key in state_dict):
        return stripped
    return state_dict


def load_matching(
    model: nn.Module,
    state_dict: Mapping[str, Any],
    *,
    strict_prefixes: str | Sequence[str] | None = None,
    min_match: float = 0.5,
) -> LoadReport:
    """Copy into `model` the checkpoint tensors whose names and shapes match; leave the rest as they are.

    Parameters and buffers (`model.state_dict()` keys) are both considered. Values are copied in place
    under `torch.no_grad()`, so the model keeps its dtype and device. A "module." (DDP) or "_orig_mod."
    (torch.compile) prefix on the checkpoint keys is stripped when that makes more of them match.

    Nothing is copied if any check fails. Each raises `SentimentError`:
    - fewer than `min_match` of the model's tensors match (a checkpoint of another architecture;
      `min_match=0` turns this check off);
    - a model tensor under one of `strict_prefixes` (e.g. the pretrained body, "layer") is missing or
      has another shape.

    Returns a `LoadReport`; `report.summary()` is a one-line account for the log.
    """
    if not isinstance(state_dict, Mapping):
        raise SentimentError(
            f"expected a state_dict (a mapping of names to tensors), got {type(state_dict).__name__}; "
            "if it is a training checkpoint, pass its model entry"
        )
    if not (0 <= min_match <= 1):
        raise SentimentError(f"min_match must be between 0 and 1, got {min_match!r}")
    target = model.state_dict(keep_vars=True)
    source = _unwrap(state_dict, target)

    report = LoadReport()
    problems = []  # in model order, for the error message
    for name, tensor in target.items():
        if name not in source:
            report.missing.append(name)
            problems.append(f"missing {name}")
            continue
        value = source[name]
        if not isinstance(value, torch.Tensor):
            raise SentimentError(
                f"checkpoint entry {name!r} is a {type(value).__name__}, not a tensor; is it a state_dict?"
            )
        if value.shape != tensor.shape:
            mismatch = (name, tuple(tensor.shape), tuple(value.shape))
            report.mismatched.append(mismatch)
            problems.append(f"shape mismatch {_mismatch(*mismatch)}")
            continue
        report.loaded.append(name)
    report.unexpected = [key for key in source if key not in target]

    strict = _prefixes(strict_prefixes)
    for prefix in strict:
        if not any(_under(name, prefix) for name in target):
            raise SentimentError(
                f"strict prefix {prefix!r} matches no tensor of {type(model).__name__}; "
                f"top-level children: {_top_level(model)}"
            )
    failed = [p for p, name in _named_problems(report) if _under_any(name, strict)]
    if failed:
        raise SentimentError(
            f"checkpoint does not fit {type(model).__name__} under {', '.join(strict)}: {len(failed)} "
            f"tensor(s) missing or of another shape, first {_first(failed)}; nothing was loaded"
        )

    if target and len(report.loaded) < min_match * len(target):
        raise SentimentError(
            f"checkpoint does not fit {type(model).__name__}: only {len(report.loaded)} of {len(target)} "
            f"model tensors match by name and shape (need {min_match:.0%}); {len(report.missing)} missing, "
            f"{len(report.mismatched)} of another shape, {len(report.unexpected)} unexpected; "
            f"first: {_first(problems)}; is it a checkpoint of another architecture? "
            "Nothing was loaded (min_match=0 loads whatever matches)"
        )

    with torch.no_grad():
        for name in report.loaded:
            target[name].copy_(source[name])
    return report


def _named_problems(report: LoadReport) -> list[tuple[str, str]]:
    return [(f"missing {n}", n) for n in report.missing] + [
        (f"shape mismatch {_mismatch(*m)}", m[0]) for m in report.mismatched
    ]
