"""Image runs end to end: find the photos, build the backbone, fine-tune with the shared loop, and use
the run folder afterwards. The same `param_groups`, `freeze`, `load_matching`, training loop and run
folders as text.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Subset

from sentiment import hub
from sentiment.config import ImageConfig, to_dict
from sentiment.errors import SentimentError
from sentiment.finetune import count_parameters, freeze, param_groups
from sentiment.runs import Run
from sentiment.runtime import tune_allocator
from sentiment.subsets import balanced_indices
from sentiment.train import (
    Loop,
    make_optimizer,
    make_scheduler,
    predict_logits,
    resolve_device,
    resolve_precision,
    seed_everything,
)
from sentiment.vision.backbones import build_model, get_backbone, parse_head_init
from sentiment.vision.folder import ImageFolder, SkippedImagesWarning, load_image, make_loader, open_image_root
from sentiment.vision.transforms import eval_transform, to_tensor, train_transform

HOTDOG_URL = "http://d2l-data.s3-accelerate.amazonaws.com/hotdog.zip"
HOTDOG_SHA1 = "fba480ffa8aa7e0febbb511d181409f899b9baa5"


def find_image_data(data: str | os.PathLike | None) -> Path:
    """`--data`, then $SENTIMENT_HOTDOG, then data/hotdog, then a download of the hot dog photos."""
    if data is not None:
        return open_image_root(data)
    env = os.environ.get("SENTIMENT_HOTDOG")
    if env:
        if not Path(env).exists():
            raise SentimentError(f"$SENTIMENT_HOTDOG points to {env}, which does not exist")
        return open_image_root(env)
    root = hub.data_dir()
    if (root / "hotdog").is_dir():
        return root / "hotdog"
    archive = hub.download(HOTDOG_URL, root / "hotdog.zip", sha1=HOTDOG_SHA1, desc="hot dog photos")
    return open_image_root(archive)


def _subset(ds: ImageFolder, n: int | None, seed: int):
    """A seeded random subset with the classes as even as the data allows; `None` keeps them all."""
    if n is None or n >= len(ds):
        return ds
    return Subset(ds, balanced_indices(ds.targets, n, len(ds.classes), seed).tolist())


def train_images(cfg: ImageConfig, *, progress: bool = True, echo: Callable[[str], None] = print) -> Run:
    """Fine-tune `cfg.backbone` on an image folder (train/ and test/ or val/) into a run folder."""
    started = time.perf_counter()
    tune_allocator(keep_all=True)
    device = resolve_device(cfg.device)
    backbone = get_backbone(cfg.backbone)
    seed_everything(cfg.seed)
    root = find_image_data(cfg.data)
    size = dict(size=backbone.input_size, mean=backbone.mean, std=backbone.std)
    with warnings.catch_warnings():  # the skipped files are reported below, on one line each split
        warnings.simplefilter("ignore", SkippedImagesWarning)
        train_ds = ImageFolder(root, "train", train_transform(**size, color_jitter=cfg.color_jitter or None))
        test_ds = ImageFolder(
            root, "test", eval_transform(resize_size=backbone.resize_size, **size), classes=train_ds.classes
        )
    for ds in (train_ds, test_ds):
        if ds.skipped_message:
            echo(ds.skipped_message)
    classes = train_ds.classes
    train_set = _subset(train_ds, cfg.limit_train, cfg.seed)
    test_set = _subset(test_ds, cfg.limit_test, cfg.seed + 1)
    test_labels = torch.tensor([test_ds.targets[i] for i in getattr(test_set, "indices", range(len(test_ds)))])
    echo(f"data: {root}: {len(train_set):,} train / {len(test_set):,} test images, classes {', '.join(classes)}")

    head_init = parse_head_init(cfg.head_init, classes) if cfg.head_init else None
    weights = None if cfg.scratch else cfg.weights
    if head_init and weights is None:
        raise SentimentError("--head-init needs pretrained weights; drop --scratch or --head-init")
    seed_everything(cfg.seed)
    model, report = build_model(backbone, len(classes), weights=weights, head_init=head_init)
    echo(f"weights: {weights or 'random (scratch)'}" + (f"; {report.summary()}" if report else ""))
    if cfg.freeze_backbone:
        freeze(model, but=(backbone.head,))
    # channels-last lets the CPU (oneDNN) and cuDNN convolutions skip layout conversions; measured
    # here, 1.2x (ResNet-18) to 1.8x (EfficientNet-Lite0's depthwise convolutions) per training step.
    model.to(device, memory_format=torch.channels_last)
    trainable, total = count_parameters(model)
    head = backbone.head if cfg.head_lr_mult != 1 else None
    groups = param_groups(
        model,
        cfg.lr,
        head=head,
        head_lr_mult=cfg.head_lr_mult,
        weight_decay=cfg.weight_decay,
        no_decay_1d=cfg.no_decay_1d,
    )
    optimizer = make_optimizer(cfg.optimizer, groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(cfg.schedule, optimizer, epochs=cfg.epochs, step_size=cfg.step_size, gamma=cfg.gamma)
    pin = device.type == "cuda"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(cfg.num_workers, cores) if cores > 1 else 0  # one core: decode in the main process
    loop = Loop(
        train_batches=make_loader(
            train_set, cfg.batch_size, shuffle=True, seed=cfg.seed, num_workers=workers, pin_memory=pin
        ),
        test_batches=make_loader(
            test_set, cfg.batch_size, shuffle=False, seed=cfg.seed, num_workers=workers, pin_memory=pin
        ),
        test_labels=test_labels,
        optimizer=optimizer,
        scheduler=scheduler,
        device=device,
        epochs=cfg.epochs,
        grad_clip=cfg.grad_clip,
        loss_reduction=cfg.loss_reduction,
        evaluate_before=True,
        progress=progress,
        # bf16 on CUDA; on CPU only when asked (--precision bf16), as the image recipes were measured in fp32
        precision=resolve_precision(cfg.precision, device, cpu_auto=False),
    )

    run = Run.create(cfg.out, cfg.backbone)
    run.save_json(
        "config.json",
        {
            "kind": "image",
            "config": to_dict(cfg),
            "classes": classes,
            "backbone": backbone.name,
            "data_root": str(root),
            "input_size": backbone.input_size,
            "resize_size": backbone.resize_size,
            "mean": list(backbone.mean),
            "std": list(backbone.std),
            "skipped_images": [f"{p}: {r}" for p, r in train_ds.skipped + test_ds.skipped],
            "load_report": report.summary() if report else None,
            "parameters": {"trainable": trainable, "total": total},
            "device": str(device),
        },
    )
    echo(f"run: {run.path}  ({backbone.name}, {trainable:,} trainable of {total:,} parameters, device {device})")

    def summary(status: str) -> dict:
        return {
            "model": backbone.name,
            "status": status,
            **run.figures(),
            "train_examples": len(train_set),
            "test_examples": len(test_set),
            "wall_s": round(time.perf_counter() - started, 2),
            "weights": weights or "scratch",
            "head_init": cfg.head_init,
            "freeze_backbone": cfg.freeze_backbone,
            "classes": classes,
            "device": str(device),
        }

    run.train(model, loop, summary, echo)
    return run


class ImageClassifier:
    """A trained image run, ready to predict: backbone, classes and evaluation transform from its folder."""

    def __init__(self, run: Run, device: str = "cpu"):
        meta = run.read_meta("image", "; use sentiment predict")
        self.run = run
        self.classes: list[str] = meta["classes"]
        self.device = resolve_device(device)
        self.precision = resolve_precision(meta["config"].get("precision", "auto"), self.device, cpu_auto=False)
        self.transform = eval_transform(
            size=meta["input_size"], resize_size=meta["resize_size"], mean=tuple(meta["mean"]), std=tuple(meta["std"])
        )
        self.model, _ = build_model(get_backbone(meta["backbone"]), len(self.classes), weights=None)
        run.load_into(self.model)
        self.model.to(self.device, memory_format=torch.channels_last).eval()

    def probabilities(self, paths: Sequence[str | os.PathLike]) -> torch.Tensor:
        images = []
        for p in paths:
            if not Path(p).is_file():
                raise SentimentError(f"no image file at {p}")
            images.append(self.transform(to_tensor(load_image(p))))
        batches = [
            (
                torch.arange(i, min(i + 32, len(images))),
                (torch.stack(images[i : i + 32]),),
                torch.zeros(min(32, len(images) - i), dtype=torch.long),
            )
            for i in range(0, len(images), 32)
        ]
        logits = predict_logits(
            self.model, batches, self.device, size=len(images), progress=False, precision=self.precision
        )
        return logits.softmax(dim=1)
