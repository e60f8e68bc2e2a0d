"""Image classification with an ImageNet CNN (`sentiment image-finetune`): find the photos, build the
backbone under a new head; the recipe does the rest, as for text. This module is the whole family:
its settings (the reference hot dog recipe's defaults), its task and its classifier. The image data,
transforms and backbones it builds on are in `sentiment/vision/`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sentiment.config import LoopSettings, RunSettings, apply, default, held_out_seed, setting
from sentiment.errors import SentimentError
from sentiment.registry import Family, register
from sentiment.runs import Run
from sentiment.tasks import ClassifierBase, Task, TaskData

# Training from random weights, as in the reference comparison: 10x the configured learning rate,
# one learning rate for every layer (unless the flags say otherwise).
SCRATCH_LR_FACTOR = 10.0


@dataclass(kw_only=True)
class ImageSettings(LoopSettings, RunSettings):
    model: str = setting("image", "the model family", flag=False)
    backbone: str = setting("resnet18", "resnet18, resnet34, resnet50 or efficientnet-lite0")
    # data
    data: str | None = setting(None, "a folder (or archive) with train/ and test/ or val/, one subfolder per class")
    limit_train: int | None = setting(None, above=0)
    limit_test: int | None = setting(None, above=0)
    val_fraction: float = setting(
        0.1, "share of the training photos held out for validation (stratified, seeded); 0 = none", at_least=0
    )
    num_workers: int = setting(2, "image decoding processes", at_least=0)
    color_jitter: float = setting(0.0, "brightness/contrast/saturation", at_least=0)
    # model
    weights: str = setting("imagenet", "imagenet (default) or a checkpoint file")
    scratch: bool = setting(False, "start from random weights")
    head_init: str | None = setting(None, "start head rows from ImageNet classes, e.g. imagenet:hotdog=934")
    freeze_backbone: bool = setting(False, "train the head only")
    # the reference recipe: SGD on the summed loss, head at 10x
    batch_size: int = default(LoopSettings, "batch_size", 128)
    optimizer: str = default(LoopSettings, "optimizer", "sgd")
    lr: float = default(LoopSettings, "lr", 5e-5)
    head_lr_mult: float = default(LoopSettings, "head_lr_mult", 10.0)
    momentum: float = default(LoopSettings, "momentum", 0.0)
    weight_decay: float = default(LoopSettings, "weight_decay", 0.001)
    loss_reduction: str = default(LoopSettings, "loss_reduction", "sum")

    def finish(self, given: dict) -> ImageSettings:
        """`--scratch` trains at 10x the lr with one lr for every layer, unless the flags set them."""
        if not self.scratch:
            return self
        return apply(
            self,
            {"lr": given.get("lr", self.lr * SCRATCH_LR_FACTOR), "head_lr_mult": given.get("head_lr_mult", 1.0)},
            "command line",
        )


def _subset(ds, n: int | None, seed: int):
    """A seeded random subset with the classes as even as the data allows; `None` keeps them all."""
    from torch.utils.data import Subset

    from sentiment.subsets import balanced_indices

    if n is None or n >= len(ds):
        return ds
    return Subset(ds, balanced_indices(ds.targets, n, len(ds.classes), seed).tolist())


def _validation(train_set, train_ds, root, backbone, size: dict, cfg):
    """`(train, validation)` subsets of the training folder: a stratified, seeded `val_fraction` of
    each class held out (at least one photo of each on both sides) and read as the test split is,
    without augmentation; `(train, None)` at 0."""
    import warnings

    from torch.utils.data import Subset

    from sentiment.config import validation_seed
    from sentiment.subsets import validation_indices
    from sentiment.vision.folder import ImageFolder, SkippedImagesWarning
    from sentiment.vision.transforms import eval_transform

    if cfg.val_fraction == 0:
        return train_set, None
    rows = np.asarray(getattr(train_set, "indices", range(len(train_ds))))
    labels = [train_ds.targets[i] for i in rows]
    held = validation_indices(labels, train_ds.classes, cfg.val_fraction, validation_seed(cfg.seed), what="photo")
    keep = np.setdiff1d(np.arange(len(rows)), held)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImagesWarning)
        plain = ImageFolder(root, "train", eval_transform(resize_size=backbone.resize_size, **size),
                            classes=train_ds.classes)  # fmt: skip
    return Subset(train_ds, rows[keep].tolist()), Subset(plain, rows[held].tolist())


class ImageTask(Task):
    """An ImageNet CNN with a new head, fine-tuned on a folder of photos (the hot dog recipe)."""

    kind = "image"
    allocator = "keep_all"  # fixed-size batches
    cpu_bf16 = False  # bf16 on CUDA; on CPU only when asked, as the image recipes were measured in fp32
    evaluate_before = True

    def __init__(self, cfg: ImageSettings):
        from sentiment.vision.backbones import get_backbone

        super().__init__(cfg)
        self.backbone = get_backbone(cfg.backbone)
        self.head = self.backbone.head

    def run_name(self) -> str:
        return self.cfg.backbone

    def data(self, runtime, echo: Callable[[str], None]) -> TaskData:
        import torch

        from sentiment.runtime import usable_cores
        from sentiment.vision.folder import ImageFolder, SkippedImagesWarning, find_image_data, make_loader
        from sentiment.vision.transforms import eval_transform, train_transform

        cfg, backbone = self.cfg, self.backbone
        self.root = root = find_image_data(cfg.data)
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
        self.skipped = [f"{p}: {r}" for p, r in train_ds.skipped + test_ds.skipped]
        classes = train_ds.classes
        train_set = _subset(train_ds, cfg.limit_train, cfg.seed)
        train_set, val_set = _validation(train_set, train_ds, root, backbone, size, cfg)
        test_set = _subset(test_ds, cfg.limit_test, held_out_seed(cfg.seed))
        test_labels = torch.tensor([test_ds.targets[i] for i in getattr(test_set, "indices", range(len(test_ds)))])
        val_labels = torch.tensor([train_ds.targets[i] for i in val_set.indices]) if val_set is not None else None
        train_labels = [train_ds.targets[i] for i in getattr(train_set, "indices", range(len(train_ds)))]
        echo(
            f"data: {root}: {len(train_set):,} train / {len(val_set or ()):,} validation / {len(test_set):,} test "
            f"images, classes {', '.join(classes)}"
        )
        cores = usable_cores()
        workers = min(cfg.num_workers, cores) if cores > 1 else 0  # one core: decode in the main process
        loader = dict(seed=cfg.seed, num_workers=workers, pin_memory=runtime.pin_memory)
        return TaskData(
            train=make_loader(train_set, cfg.batch_size, shuffle=True, **loader),
            test=make_loader(test_set, cfg.batch_size, shuffle=False, **loader),
            test_labels=test_labels,
            classes=classes,
            train_examples=len(train_set),
            test_examples=len(test_set),
            source=str(Path(root).resolve()),
            val=make_loader(val_set, cfg.batch_size, shuffle=False, **loader) if val_set is not None else None,
            val_labels=val_labels,
            val_examples=len(val_set or ()),
            train_labels=train_labels,
        )

    def model(self, data: TaskData, runtime, echo: Callable[[str], None]):
        import torch

        from sentiment.finetune import freeze
        from sentiment.vision.backbones import build_model, parse_head_init

        cfg, backbone = self.cfg, self.backbone
        head_init = parse_head_init(cfg.head_init, data.classes) if cfg.head_init else None
        self.weights = weights = None if cfg.scratch else cfg.weights
        if head_init and weights is None:
            raise SentimentError("--head-init needs pretrained weights; drop --scratch or --head-init")
        model, self.report = build_model(backbone, len(data.classes), weights=weights, head_init=head_init)
        echo(f"weights: {weights or 'random (scratch)'}" + (f"; {self.report.summary()}" if self.report else ""))
        if cfg.freeze_backbone:
            freeze(model, but=(backbone.head,))
        # channels-last lets the CPU (oneDNN) and cuDNN convolutions skip layout conversions (most for
        # EfficientNet-Lite0's depthwise convolutions)
        return model.to(runtime.device, memory_format=torch.channels_last)

    def example_inputs(self, n: int) -> tuple:
        import torch

        size = self.backbone.input_size
        return (torch.zeros(n, 3, size, size).contiguous(memory_format=torch.channels_last),)

    def record(self, data: TaskData) -> dict:
        backbone = self.backbone
        return {
            "backbone": backbone.name,
            "data_root": str(self.root),
            "input_size": backbone.input_size,
            "resize_size": backbone.resize_size,
            "mean": list(backbone.mean),
            "std": list(backbone.std),
            "skipped_images": self.skipped,
            "load_report": self.report.summary() if self.report else None,
        }

    def save(self, run: Run, data: TaskData) -> None:
        pass  # config.json holds all an image run needs to predict

    def summary(self, data: TaskData) -> dict:
        cfg = self.cfg
        return {
            "weights": self.weights or "scratch",
            "head_init": cfg.head_init,
            "freeze_backbone": cfg.freeze_backbone,
        }

    @classmethod
    def tiny_settings(cls, folder: Path) -> dict:
        return {"epochs": 1, "scratch": True, "batch_size": 4, "num_workers": 0}


class ImageClassifier(ClassifierBase):
    """A trained image run, ready to predict: backbone, classes and evaluation transform from its folder."""

    def __init__(self, run: Run, device: str = "cpu"):
        import torch

        from sentiment.runtime import Runtime
        from sentiment.vision.backbones import build_model, get_backbone
        from sentiment.vision.transforms import eval_transform

        meta = run.read_meta("image", "; use sentiment predict")
        self.run = run
        self.classes: list[str] = meta["classes"]
        self.runtime = Runtime.resolve(device, meta["config"].get("precision", "auto"), cpu_bf16=ImageTask.cpu_bf16)
        self.transform = eval_transform(
            size=meta["input_size"], resize_size=meta["resize_size"], mean=tuple(meta["mean"]), std=tuple(meta["std"])
        )
        self.model, _ = build_model(get_backbone(meta["backbone"]), len(self.classes), weights=None)
        run.load_into(self.model)
        self.model.to(self.runtime.device, memory_format=torch.channels_last).eval()

    @property
    def precision(self) -> str:
        return self.runtime.precision

    def scores(self, paths: Sequence[str | os.PathLike], **_):
        """`(probabilities, all True)`: every photo is something the model can read."""
        return self._probabilities(paths), [True] * len(paths)

    def knows(self, paths: Sequence[str | os.PathLike]) -> list[bool]:
        return [True] * len(paths)

    def evaluate(self, data, *, split: str = "test", limit: int | None = None, progress: bool = True) -> dict:
        """The report of `vision.report.evaluate_folder` on the photos of `data` (a folder or archive)."""
        from sentiment.vision.report import evaluate_folder

        return evaluate_folder(self, data, split=split, limit=limit, progress=progress)[0]

    def _probabilities(self, paths: Sequence[str | os.PathLike]):
        import torch

        from sentiment.loop import predict_logits
        from sentiment.vision.folder import load_image
        from sentiment.vision.transforms import to_tensor

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
        logits = predict_logits(self.model, batches, self.runtime, size=len(images), progress=False)
        return logits.softmax(dim=1)


def open_run(run: Run, device: str = "cpu", *, texts: int | None = None) -> ImageClassifier:
    return ImageClassifier(run, device)


register(
    Family(
        name="image",
        kind="image",
        settings=ImageSettings,
        task=ImageTask,
        open=open_run,
        summary="an ImageNet CNN (ResNet, EfficientNet-Lite0) with a new head, on a folder of photos",
    )
)
