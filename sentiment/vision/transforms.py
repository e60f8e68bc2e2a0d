"""Image transforms on tensors, compatible with torchvision's (which cannot be imported here).

Pillow is used only to decode: `to_rgb` turns an image of any mode into RGB and `to_tensor` makes
it a float tensor `[3, H, W]` in [0, 1]. Everything after that works on tensors `[..., C, H, W]`.

One calling convention for every transform: `t(x, generator=None)`. Deterministic transforms
ignore `generator`; random ones draw every random number from it, or from torch's global RNG when
it is None. With the global RNG they draw the same numbers, in the same order, as torchvision's
tensor transforms, so a torchvision pipeline seeded the same way crops and flips the same way.
Giving each sample its own seeded generator (as `folder.make_loader` does) makes augmentation
reproducible whatever the worker count or the order samples are loaded in.

Normalisation is a per-channel affine `(x - mean) / std`, which covers every convention in use:
ImageNet's mean/std, and EfficientNet-Lite's `(255 * x - 127) / 128`, which is exactly
`mean = 127/255`, `std = 128/255` per channel (see `EFFICIENTNET_LITE_MEAN` / `_STD`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from sentiment.errors import SentimentError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# (255 * x - 127) / 128 == (x - 127/255) / (128/255): the same map written as mean/std.
EFFICIENTNET_LITE_MEAN = (127 / 255,) * 3
EFFICIENTNET_LITE_STD = (128 / 255,) * 3

Size = int | tuple[int, int]
Transform = Callable[..., torch.Tensor]

# Modes that carry transparency; they are composited on white so that transparent pixels do not
# show whatever colour happens to be stored under them (torchvision's `convert("RGB")` drops alpha).
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


# --------------------------------------------------------------------------- decoding


def to_rgb(img: Image.Image) -> Image.Image:
    """The image as 8-bit RGB, whatever its mode.

    Alpha (RGBA, LA, PA, palette with a transparent colour) is composited on white. 16-bit and
    32-bit integer greyscale (I;16*, I) are scaled from 0..65535 to 0..255 rather than clipped;
    float greyscale (F) is clipped to 0..255. Other modes (L, 1, P, CMYK, YCbCr, ...) use Pillow's
    own conversion. EXIF orientation is not applied, as in torchvision's loader.
    """
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT_MODES:
        grey = np.asarray(img, dtype=np.float64) * (255 / 65535)
        return Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        grey = np.clip(np.rint(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode in _ALPHA_MODES or (img.mode in ("P", "L", "RGB") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def to_tensor(img: Image.Image) -> torch.Tensor:
    """A float tensor `[3, H, W]` in [0, 1] (RGB bytes / 255), converting the mode first if needed."""
    array = np.array(to_rgb(img), dtype=np.uint8)  # a writable copy: torch must not alias Pillow's buffer
    return torch.from_numpy(array).permute(2, 0, 1).contiguous().float().div_(255)


# --------------------------------------------------------------------------- geometry


def _pair(size: Size, what: str) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise SentimentError(f"{what} must be a positive size, got {size}; use e.g. 224")
    return int(h), int(w)


def _resize_to(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if tuple(x.shape[-2:]) == (h, w):
        return x
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:]).float()
    out = torch.nn.functional.interpolate(flat, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return out.reshape(*lead, *out.shape[-3:])


def resize(x: torch.Tensor, size: Size) -> torch.Tensor:
    """Bilinear, antialiased resize. An int sets the shorter side (aspect ratio kept, the longer
    side rounded down, as torchvision does); a pair `(h, w)` sets both."""
    if not isinstance(size, int):
        return _resize_to(x, *_pair(size, "resize size"))
    _pair(size, "resize size")
    h, w = x.shape[-2:]
    short, long = (h, w) if h <= w else (w, h)
    new_short, new_long = size, int(size * long / short)
    new_h, new_w = (new_short, new_long) if h <= w else (new_long, new_short)
    return _resize_to(x, new_h, new_w)


def crop(x: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """The box `[top, top + height) x [left, left + width)`; parts outside the image are zero."""
    h, w = x.shape[-2:]
    if top >= 0 and left >= 0 and top + height <= h and left + width <= w:
        return x[..., top : top + height, left : left + width]
    out = x.new_zeros(*x.shape[:-2], height, width)
    y0, y1 = max(top, 0), min(top + height, h)
    x0, x1 = max(left, 0), min(left + width, w)
    if y0 < y1 and x0 < x1:
        out[..., y0 - top : y1 - top, x0 - left : x1 - left] = x[..., y0:y1, x0:x1]
    return out


def center_crop(x: torch.Tensor, size: Size) -> torch.Tensor:
    """The central `size` box (rounded like torchvision: offset = round((H - h) / 2)); zero-padded
    if the image is smaller than the box."""
    ch, cw = _pair(size, "crop size")
    h, w = x.shape[-2:]
    return crop(x, int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0)), ch, cw)


def resized_crop(x: torch.Tensor, top: int, left: int, height: int, width: int, size: Size) -> torch.Tensor:
    """Crop the box, then resize it to exactly `size` (an int means a square)."""
    return _resize_to(crop(x, top, left, height, width), *_pair(size, "crop size"))


def hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


# --------------------------------------------------------------------------- colour


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma `[..., 1, H, W]` with the ITU-R 601 weights torchvision uses."""
    r, g, b = x.unbind(-3)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: float) -> torch.Tensor:
    return (factor * x + (1.0 - factor) * other).clamp(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factor: float) -> torch.Tensor:
    return _blend(x, torch.zeros_like(x), factor)


def adjust_contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    mean = rgb_to_grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean, factor)


def adjust_saturation(x: torch.Tensor, factor: float) -> torch.Tensor:
    return _blend(x, rgb_to_grayscale(x), factor)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] to HSV, every channel in [0, 1] (hue as a fraction of a turn)."""
    r, g, b = x.unbind(-3)
    value, argmax = x.max(dim=-3)
    chroma = value - x.min(dim=-3).values
    grey = chroma == 0
    safe_chroma = torch.where(grey, torch.ones_like(chroma), chroma)
    saturation = chroma / torch.where(value == 0, torch.ones_like(value), value)
    # Hue sector by which channel is largest (ties resolved red, then green, then blue).
    red_max, green_max = (g - b) / safe_chroma, 2.0 + (b - r) / safe_chroma
    blue_max = 4.0 + (r - g) / safe_chroma
    hue = torch.where(argmax == 0, red_max, torch.where(argmax == 1, green_max, blue_max))
    hue = torch.where(grey, torch.zeros_like(hue), (hue / 6.0) % 1.0)
    return torch.stack((hue, saturation, value), dim=-3)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `rgb_to_hsv`."""
    h, s, v = x.unbind(-3)
    # The standard formula: channel n is v - v*s*max(0, min(k, 4 - k, 1)), k = (n + 6h) mod 6.
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = (n + 6.0 * h) % 6.0
        channels.append(v - v * s * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(channels, dim=-3).clamp(0.0, 1.0)


def adjust_hue(x: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate hue by `shift` turns (in [-0.5, 0.5])."""
    hsv = rgb_to_hsv(x)
    hue = (hsv[..., 0, :, :] + shift) % 1.0
    return hsv_to_rgb(torch.stack((hue, hsv[..., 1, :, :], hsv[..., 2, :, :]), dim=-3))


# --------------------------------------------------------------------------- transform objects


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return float(torch.empty(1).uniform_(low, high, generator=generator).item())


@dataclass(frozen=True)
class Resize:
    size: Size

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return resize(x, self.size)


@dataclass(frozen=True)
class CenterCrop:
    size: Size

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return center_crop(x, self.size)


@dataclass(frozen=True)
class RandomResizedCrop:
    """A random box of `scale` x the image area and aspect ratio (w/h) in `ratio`, resized to `size`.

    torchvision's sampler: up to 10 tries of (area uniform in scale, log-ratio uniform), keeping the
    first box that fits; otherwise the central box of the whole image, clamped to the ratio range.
    """

    size: Size = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __post_init__(self):
        _pair(self.size, "crop size")
        if not (0 < self.scale[0] <= self.scale[1]) or not (0 < self.ratio[0] <= self.ratio[1]):
            raise SentimentError(
                f"random crop scale {self.scale} and ratio {self.ratio} must be positive (low, high) pairs; "
                "use e.g. scale=(0.08, 1.0), ratio=(0.75, 1.333)"
            )

    def get_params(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
        """`(top, left, height, width)` of the box to crop."""
        height, width = x.shape[-2:]
        area = height * width
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target_area = area * _uniform(self.scale[0], self.scale[1], generator)
            aspect = math.exp(_uniform(log_low, log_high, generator))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
                left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
                return top, left, h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            w, h = int(round(height * self.ratio[1])), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return resized_crop(x, *self.get_params(x, generator), self.size)


@dataclass(frozen=True)
class RandomHorizontalFlip:
    p: float = 0.5

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return hflip(x) if torch.rand(1, generator=generator).item() < self.p else x


def _jitter_range(name: str, value: float | tuple[float, float], center: float, bound: float):
    """torchvision's convention: v means [center - v, center + v] (floored at 0); a pair is used as is.
    A range that is just `center` means the adjustment is off (None)."""
    if isinstance(value, int | float):
        if value < 0:
            raise SentimentError(f"color jitter {name} must be >= 0, got {value}; use e.g. 0.4, or 0 for none")
        low, high = center - value, center + value
        if center == 1.0:
            low = max(low, 0.0)
    else:
        low, high = (float(v) for v in value)
    if not (-bound <= low <= high <= bound) or (center == 1.0 and low < 0):
        raise SentimentError(f"color jitter {name} range ({low}, {high}) is out of bounds; use a smaller value")
    return None if low == high == center else (low, high)


@dataclass(frozen=True)
class ColorJitter:
    """Random brightness (scale), contrast (blend with the mean grey), saturation (blend with grey)
    and hue (HSV rotation), applied in a random order, each clamped to [0, 1].

    Factors are drawn uniformly from [max(0, 1 - v), 1 + v] (hue: [-v, v], v <= 0.5), as in torchvision.
    All factors 0 means the identity (the random order is still drawn, like torchvision).
    """

    brightness: float | tuple[float, float] = 0
    contrast: float | tuple[float, float] = 0
    saturation: float | tuple[float, float] = 0
    hue: float | tuple[float, float] = 0

    def __post_init__(self):
        ranges = [_jitter_range(n, getattr(self, n), 1.0, math.inf) for n in ("brightness", "contrast", "saturation")]
        ranges.append(_jitter_range("hue", self.hue, 0.0, 0.5))
        object.__setattr__(self, "_ranges", tuple(ranges))  # frozen dataclass: set once, here

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        order = torch.randperm(4, generator=generator).tolist()
        factors = [None if r is None else _uniform(r[0], r[1], generator) for r in self._ranges]
        adjust = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
        for i in order:
            if factors[i] is not None:
                x = adjust[i](x, factors[i])
        return x


@dataclass(frozen=True)
class Normalize:
    """`(x - mean) / std` per channel; one value applies to every channel."""

    mean: Sequence[float]
    std: Sequence[float]

    def __post_init__(self):
        if len(self.mean) != len(self.std) or not len(self.mean):
            raise SentimentError(
                f"normalize mean {tuple(self.mean)} and std {tuple(self.std)} must have the same length "
                "(1, or one per channel)"
            )
        if any(s == 0 for s in self.std):
            raise SentimentError(f"normalize std {tuple(self.std)} has a zero; every std must be non-zero")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x - mean) / std


class Compose:
    """Apply transforms in order, handing each the same generator."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for t in self.transforms:
            x = t(x, generator=generator)
        return x

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


# --------------------------------------------------------------------------- presets


def train_transform(
    size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    color_jitter: float | None = None,
) -> Compose:
    """RandomResizedCrop(size) + RandomHorizontalFlip + optional ColorJitter + Normalize.

    `color_jitter=c` jitters brightness, contrast and saturation by c and hue by c/4 (capped at 0.5),
    SimCLR's proportions; hue rotations are the most destructive, so they get the smallest share.
    """
    steps: list[Transform] = [RandomResizedCrop(size), RandomHorizontalFlip()]
    if color_jitter:
        c = float(color_jitter)
        steps.append(ColorJitter(brightness=c, contrast=c, saturation=c, hue=min(c / 4, 0.5)))
    steps.append(Normalize(mean, std))
    return Compose(steps)


def eval_transform(
    size: int = 224,
    resize_size: int = 256,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Compose:
    """Resize(resize_size) + CenterCrop(size) + Normalize: the standard ImageNet evaluation."""
    return Compose([Resize(resize_size), CenterCrop(size), Normalize(mean, std)])
