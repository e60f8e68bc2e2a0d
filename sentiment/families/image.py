"""Image classification with an ImageNet CNN (`sentiment image-finetune`): find the photos, build the
backbone under a new head; the recipe does the rest, as for text. This module is the whole family:
its settings (the reference hot dog recipe's defaults), its task and its classifier. The image data,
transforms and backbones it builds on are in `sentiment/vision/`.
"""

from __future__ import annotations

import dataclasses
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
EVAL_BATCH = 32  # photos scored at a time (validation, test)
RECIPES = ("auto", "few-shot", "standard")
# The few-shot recipe (`--recipe auto` picks it for pretrained weights, at most FEW_SHOT_MAX training
# photos and the loop's default settings): the backbone stays as it is; the head starts from ImageNet
# rows (`--head-init`, or the class names: `auto`) and is fitted in closed form on the frozen
# features of every training photo, its mirror image and a few crops, kept near that start
# (`sentiment.headfit`).
# A few hundred photos take the backbone's fine-tuning steps away from what ImageNet taught it
# faster than they teach it the task.
FEW_SHOT_MAX = 500
FEW_SHOT_CROPS = 6  # random crops of each photo the head is fitted on, besides the photo and its mirror image
FEW_SHOT_CROP = (0.35, 1.0)  # their share of the photo's area
LOOP_SETTINGS = ("epochs", "batch_size", "optimizer", "lr", "head_lr_mult", "momentum", "weight_decay",
                 "loss_reduction", "schedule", "layer_decay", "patience")  # fmt: skip


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
    head_init: str | None = setting(
        None, "start classes from ImageNet classifier rows, e.g. imagenet:hotdog=934,not-hotdog=food"
    )
    freeze_backbone: bool = setting(False, "train the head only")
    recipe: str = setting(
        "auto",
        f"auto (few-shot for pretrained weights and up to {FEW_SHOT_MAX} training photos, unless the loop's "
        "settings are changed), few-shot or standard",
        choices=RECIPES,
    )
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

    def few_shot(self, photos: int) -> bool:
        """Whether these settings train `photos` training photos with the few-shot recipe."""
        if self.recipe != "auto":
            return self.recipe == "few-shot"
        defaults = ImageSettings()
        changed = any(getattr(self, k) != getattr(defaults, k) for k in LOOP_SETTINGS)
        return not self.scratch and photos <= FEW_SHOT_MAX and not changed


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
    from torch.utils.data import Subset

    from sentiment.config import validation_seed
    from sentiment.subsets import validation_indices
    from sentiment.vision.transforms import eval_transform

    if cfg.val_fraction == 0:
        return train_set, None
    rows = np.asarray(getattr(train_set, "indices", range(len(train_ds))))
    labels = [train_ds.targets[i] for i in rows]
    held = validation_indices(labels, train_ds.classes, cfg.val_fraction, validation_seed(cfg.seed), what="photo")
    keep = np.setdiff1d(np.arange(len(rows)), held)
    plain = _train_folder(root, train_ds, eval_transform(resize_size=backbone.resize_size, **size))
    return Subset(train_ds, rows[keep].tolist()), Subset(plain, rows[held].tolist())


def _train_folder(root, train_ds, transform):
    """The training photos of `train_ds` read through another transform (its skipped files were
    reported when `train_ds` was read)."""
    from sentiment.vision.folder import ImageFolder, SkippedImagesWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImagesWarning)
        return ImageFolder(root, "train", transform, classes=train_ds.classes)


def _features(model, head, photos, runtime, views: int, *, mirror: bool = False) -> tuple:
    """`(features, labels)`: what `head` receives for `views` readings of each photo of `photos` (view
    v is the loader's epoch v, so random crops differ between views and repeat between runs), with
    the model in eval mode (BatchNorm on its running statistics); features `[views, photos, dim]`.
    `mirror` adds each reading flipped left to right, from the same decoded images, as the next view."""
    import torch

    from sentiment.vision.folder import make_loader

    seen: list = []
    hook = head.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].detach().float().cpu()))
    loader = make_loader(photos, 32, shuffle=False, seed=0, num_workers=0)
    flips = (False, True) if mirror else (False,)
    out: list[list] = [[] for _ in range(views * len(flips))]
    labels = []
    model.eval()
    try:
        with torch.inference_mode():
            for view in range(views):
                loader.set_epoch(view)
                for _, (images,), y in loader:
                    for k, flip in enumerate(flips):
                        batch = torch.flip(images, dims=[3]) if flip else images
                        with runtime.autocast():
                            model(batch.to(runtime.device, memory_format=torch.channels_last))
                        out[view * len(flips) + k].append(seen.pop())
                    if view == 0:
                        labels.append(y)
    finally:
        hook.remove()
    return torch.stack([torch.cat(chunks) for chunks in out]), torch.cat(labels)


def _fit_views(train_set, train_ds, root, backbone, size: dict):
    """The photos of `train_set` as the few-shot fit reads them: `(plain, cropped)`, read as the test
    split is, and as random crops of FEW_SHOT_CROP of each photo's area, mirrored half the time."""
    from torch.utils.data import Subset

    from sentiment.vision.transforms import (
        Compose,
        Normalize,
        RandomHorizontalFlip,
        RandomResizedCrop,
        eval_transform,
    )

    rows = list(getattr(train_set, "indices", range(len(train_ds))))
    crop = Compose([RandomResizedCrop(size["size"], scale=FEW_SHOT_CROP), RandomHorizontalFlip(),
                    Normalize(size["mean"], size["std"])])  # fmt: skip
    plain = _train_folder(root, train_ds, eval_transform(resize_size=backbone.resize_size, **size))
    return Subset(plain, rows), Subset(_train_folder(root, train_ds, crop), rows)


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
        self.solver = False  # True for the few-shot recipe, decided once the data is known
        self.fitted: dict | None = None

    def settings(self, data: TaskData) -> ImageSettings:
        """The few-shot recipe records itself: its name, the head start and the frozen backbone."""
        if not self.solver:
            return dataclasses.replace(self.cfg, recipe="standard") if self.cfg.recipe == "auto" else self.cfg
        return dataclasses.replace(
            self.cfg, recipe="few-shot", head_init=self.cfg.head_init or "auto", freeze_backbone=True
        )

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
        self.solver = cfg.few_shot(len(train_set))
        if self.solver:
            if cfg.scratch:
                raise SentimentError("--recipe few-shot fits a head on pretrained features; drop --scratch")
            val_set = None  # every photo fits the head; cross-validation on them chooses how far it moves
            self.fit_sets = _fit_views(train_set, train_ds, root, backbone, size)
        else:
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
        # Scoring keeps no activations for a backward pass, but a whole batch of 128 photos still
        # holds more at once than the training's micro-batches do; EVAL_BATCH photos at a time cost
        # no speed on a CPU and keep scoring within the training's memory.
        evaluation = min(cfg.batch_size, EVAL_BATCH)
        return TaskData(
            train=make_loader(train_set, cfg.batch_size, shuffle=True, **loader),
            test=make_loader(test_set, evaluation, shuffle=False, **loader),
            test_labels=test_labels,
            classes=classes,
            train_examples=len(train_set),
            test_examples=len(test_set),
            source=str(Path(root).resolve()),
            val=make_loader(val_set, evaluation, shuffle=False, **loader) if val_set is not None else None,
            val_labels=val_labels,
            val_examples=len(val_set or ()),
            train_labels=train_labels,
        )

    def model(self, data: TaskData, runtime, echo: Callable[[str], None]):
        import torch

        from sentiment.finetune import freeze
        from sentiment.vision.backbones import build_model
        from sentiment.vision.imagenet import auto_head_init, describe, parse_head_init, summary_line

        cfg, backbone = self.cfg, self.backbone
        head_init = None
        if cfg.head_init == "auto" and self.solver:  # no ImageNet classifier or class name: a zero start
            head_init = auto_head_init(data.classes) if cfg.weights == "imagenet" else None
        elif cfg.head_init:
            head_init = parse_head_init(cfg.head_init, data.classes)
        self.head_rows = describe(head_init, data.classes) if head_init else None
        self.weights = weights = None if cfg.scratch else cfg.weights
        if head_init and weights is None:
            raise SentimentError("--head-init needs pretrained weights; drop --scratch or --head-init")
        model, self.report = build_model(backbone, len(data.classes), weights=weights, head_init=head_init)
        echo(f"weights: {weights or 'random (scratch)'}" + (f"; {self.report.summary()}" if self.report else ""))
        if head_init:
            echo(summary_line(head_init, data.classes))
        elif self.solver:
            echo("head: no class name is an ImageNet class, so the head starts at zero (--head-init gives rows)")
            torch.nn.init.zeros_(getattr(model, backbone.head).weight)
        self.runtime = runtime
        if cfg.freeze_backbone:
            freeze(model, but=(backbone.head,))
        # channels-last lets the CPU (oneDNN) and cuDNN convolutions skip layout conversions (most for
        # EfficientNet-Lite0's depthwise convolutions)
        return model.to(runtime.device, memory_format=torch.channels_last)

    def fit(self, model, data: TaskData, echo: Callable[[str], None]) -> dict:
        """The few-shot recipe: the head fitted on the frozen features of every training photo (as it
        is, mirrored, and cropped), kept near its start; the backbone is not changed."""
        import time

        import torch

        from sentiment import headfit

        started = time.perf_counter()
        head = getattr(model, self.backbone.head)
        plain_set, cropped_set = self.fit_sets
        plain, labels = _features(model, head, plain_set, self.runtime, 1, mirror=True)  # as it is, mirrored
        cropped, _ = _features(model, head, cropped_set, self.runtime, FEW_SHOT_CROPS)
        views = torch.cat([plain, cropped])
        x = views.reshape(-1, views.shape[-1])
        y = labels.repeat(len(views))
        groups = torch.arange(len(labels)).repeat(len(views))
        scored = torch.zeros(len(views), len(labels), dtype=torch.bool)
        scored[0] = True  # held-out photos are scored as the test split is read
        w0, b0 = head.weight.detach().float().cpu().clone(), head.bias.detach().float().cpu().clone()
        result = headfit.choose_and_fit(x, y, w0, b0, groups=groups, scored=scored.reshape(-1), seed=self.cfg.seed)
        with torch.no_grad():
            head.weight.copy_(result.weight)
            head.bias.copy_(result.bias)
        seconds = time.perf_counter() - started
        logits = plain[0] @ result.weight.T + result.bias
        loss = float(torch.nn.functional.cross_entropy(logits, labels))
        acc = float((logits.argmax(1) == labels).float().mean())
        prior_acc = float(((plain[0] @ w0.T + b0).argmax(1) == labels).float().mean())
        self.fitted = {
            "head_c": result.c,
            "cv_folds": result.folds,
            "cv_accuracy": result.cv_accuracy,
            "cv_standard_error": round(result.cv_error, 4),
            "start_train_acc": round(prior_acc, 4),
        }
        chosen = result.cv_accuracy.get(f"{result.c:g}")
        how = (
            f"C {result.c:g} by {result.folds}-fold cross-validation on the training photos (accuracy "
            f"{chosen:.3f}; the smallest C within one standard error, {result.cv_error:.3f}, of the best)"
            if result.folds
            else f"C {result.c:g} (too few photos of a class to cross-validate)"
        )
        echo(
            f"few-shot recipe: head fitted on the frozen backbone's features of {len(labels)} photos (each as it "
            f"is, mirrored and {FEW_SHOT_CROPS} random crops), kept near its start; {how}; train acc "
            f"{prior_acc:.3f} at the start, {acc:.3f} fitted ({seconds:.1f} s)"
        )
        return {
            "epoch": 1,
            "train_loss": round(loss, 4),
            "train_acc": round(acc, 4),
            "train_examples": len(labels),
            "train_s": round(seconds, 3),
            "train_examples_per_s": round(len(labels) / max(seconds, 1e-9), 1),
        }

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
            "recipe": cfg.recipe,
            **(self.fitted or {}),
            "weights": self.weights or "scratch",
            "head_init": cfg.head_init,
            "head_rows": self.head_rows,
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
