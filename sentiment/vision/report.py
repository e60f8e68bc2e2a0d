"""A look at an image run's data and mistakes: scores on a folder of photos, a contact sheet of the
worst mistakes with their probabilities, and a contact sheet of training photos as the augmentation
turns them into the model's inputs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageOps

from sentiment.config import held_out_seed
from sentiment.errors import SentimentError
from sentiment.loop import classification_report, predict_logits
from sentiment.subsets import balanced_indices
from sentiment.vision.folder import ImageFolder, find_image_data, load_image, make_loader
from sentiment.vision.transforms import to_tensor, train_transform

TILE = 192
CAPTION = 30


def evaluate_folder(
    clf,
    data: str | os.PathLike,
    *,
    split: str = "test",
    limit: int | None = None,
    seed: int | None = None,
    workers: int = 0,
    progress: bool = False,
) -> tuple[dict, list[dict]]:
    """`classification_report` of the run on `data`'s split (or on `data` itself when it holds the
    class folders), and every image's outcome: path, true and predicted class, probabilities."""
    root = Path(find_image_data(data))
    classes = clf.classes
    # A folder whose subfolders are the run's classes is the split itself.
    if root.is_dir() and {e.name for e in root.iterdir() if e.is_dir()} >= set(classes):
        split_arg = None
    else:
        split_arg = split
    ds = ImageFolder(root, split_arg, clf.transform, classes=classes)
    indices = list(range(len(ds)))
    if limit is not None and limit < len(ds):
        seed = held_out_seed(clf.run.read_json("config.json")["config"].get("seed", 0)) if seed is None else seed
        indices = balanced_indices(ds.targets, limit, len(classes), seed).tolist()
    subset = torch.utils.data.Subset(ds, indices)
    loader = make_loader(subset, 32, shuffle=False, seed=0, num_workers=workers)
    logits = predict_logits(
        clf.model, loader, clf.runtime, size=len(indices), desc="evaluate", progress=progress, total=len(loader)
    )
    probs = logits.softmax(dim=1)
    labels = torch.tensor([ds.targets[i] for i in indices])
    predicted = probs.argmax(dim=1)
    report = classification_report(labels, predicted, classes, probs) | {"data": str(ds.root)}
    outcomes = [
        {
            "image": str(ds.samples[i][0]),
            "label": classes[int(labels[k])],
            "predicted": classes[int(predicted[k])],
            "probability": float(probs[k, predicted[k]]),
            "scores": dict(zip(classes, probs[k].tolist(), strict=True)),
        }
        for k, i in enumerate(indices)
    ]
    return report, outcomes


def worst_mistakes(outcomes: Sequence[dict], n: int) -> list[dict]:
    """The `n` wrong predictions made with the highest probability."""
    wrong = [o for o in outcomes if o["predicted"] != o["label"]]
    return sorted(wrong, key=lambda o: -o["probability"])[:n]


def _fit(img: Image.Image, size: int = TILE) -> Image.Image:
    return ImageOps.pad(img.convert("RGB"), (size, size), color=(255, 255, 255))


def contact_sheet(tiles: Sequence[tuple[Image.Image, str]], out: str | os.PathLike, *, columns: int = 4) -> Path:
    """Images in a grid, each with a caption (one or two lines) under it, written as a PNG."""
    if not tiles:
        raise SentimentError("nothing to draw: no images for the contact sheet")
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * TILE, rows * (TILE + CAPTION)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (img, caption) in enumerate(tiles):
        x, y = (k % columns) * TILE, (k // columns) * (TILE + CAPTION)
        sheet.paste(_fit(img), (x, y))
        draw.multiline_text((x + 4, y + TILE + 2), caption, fill=(0, 0, 0), spacing=2)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def mistakes_sheet(mistakes: Sequence[dict], out: str | os.PathLike) -> Path:
    tiles = [
        (
            load_image(m["image"]),
            f"{Path(m['image']).name[:28]}\nis {m['label']}, said {m['predicted']} {m['probability']:.2f}",
        )
        for m in mistakes
    ]
    return contact_sheet(tiles, out)


def _viewable(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> Image.Image:
    """A normalised `[3, H, W]` model input back as a picture."""
    x = x * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    array = (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array)


def augmentation_sheet(
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    color_jitter: float | None = None,
    images: int = 4,
    versions: int = 5,
    seed: int = 0,
) -> Path:
    """Per row: one training photo as it is, then `versions` of it as the training transform makes
    them (random crop, flip, jitter), shown after undoing the normalisation."""
    ds = ImageFolder(find_image_data(data), "train", verify=False)
    picks = balanced_indices(ds.targets, min(images, len(ds)), len(ds.classes), seed).tolist()
    transform = train_transform(size=size, mean=mean, std=std, color_jitter=color_jitter)
    tiles = []
    for i in picks:
        path, label = ds.samples[i]
        img = load_image(path)
        tiles.append((img, f"{ds.classes[label]}: {path.name[:20]}\nas stored {img.width}x{img.height}"))
        x = to_tensor(img)
        for v in range(versions):
            g = torch.Generator().manual_seed(seed * 1000 + i * versions + v)
            tiles.append((_viewable(transform(x, generator=g), mean, std), f"input {v + 1} ({size}x{size})"))
    return contact_sheet(tiles, out, columns=versions + 1)
