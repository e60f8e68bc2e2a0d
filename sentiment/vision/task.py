"""Image classification with an ImageNet CNN as a fine-tuning task, and its trained runs: find the
photos, build the backbone under a new head; the recipe does the rest, as for text.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Subset

from sentiment import hub
from sentiment.config import ImageConfig, held_out_seed
from sentiment.errors import SentimentError
from sentiment.finetune import freeze
from sentiment.runs import Run
from sentiment.runtime import Runtime, usable_cores
from sentiment.subsets import balanced_indices
from sentiment.tasks import TaskData
from sentiment.train import predict_logits
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


class ImageTask:
    """An ImageNet CNN with a new head, fine-tuned on a folder of photos (the hot dog recipe)."""

    kind = "image"
    allocator = "keep_all"  # fixed-size batches
    cpu_bf16 = False  # bf16 on CUDA; on CPU only when asked, as the image recipes were measured in fp32
    evaluate_before = True
    solver = False

    def __init__(self, cfg: ImageConfig):
        self.cfg = cfg
        self.backbone = get_backbone(cfg.backbone)
        self.head = self.backbone.head

    def data(self, runtime: Runtime, echo: Callable[[str], None]) -> TaskData:
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
        test_set = _subset(test_ds, cfg.limit_test, held_out_seed(cfg.seed))
        test_labels = torch.tensor([test_ds.targets[i] for i in getattr(test_set, "indices", range(len(test_ds)))])
        echo(f"data: {root}: {len(train_set):,} train / {len(test_set):,} test images, classes {', '.join(classes)}")
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
        )

    def model(self, data: TaskData, runtime: Runtime, echo: Callable[[str], None]) -> torch.nn.Module:
        cfg, backbone = self.cfg, self.backbone
        head_init = parse_head_init(cfg.head_init, data.classes) if cfg.head_init else None
        self.weights = weights = None if cfg.scratch else cfg.weights
        if head_init and weights is None:
            raise SentimentError("--head-init needs pretrained weights; drop --scratch or --head-init")
        model, self.report = build_model(backbone, len(data.classes), weights=weights, head_init=head_init)
        echo(f"weights: {weights or 'random (scratch)'}" + (f"; {self.report.summary()}" if self.report else ""))
        if cfg.freeze_backbone:
            freeze(model, but=(backbone.head,))
        # channels-last lets the CPU (oneDNN) and cuDNN convolutions skip layout conversions; measured
        # here, 1.2x (ResNet-18) to 1.8x (EfficientNet-Lite0's depthwise convolutions) per training step.
        return model.to(runtime.device, memory_format=torch.channels_last)

    def example_inputs(self, n: int) -> tuple:
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

    def check_resume(self, run: Run, data: TaskData) -> None:
        classes = run.read_json("config.json")["classes"]
        if classes != data.classes:
            raise SentimentError(f"the photos now have classes {data.classes}, {run.path} was trained on {classes}")

    def summary(self, data: TaskData) -> dict:
        cfg = self.cfg
        return {
            "weights": self.weights or "scratch",
            "head_init": cfg.head_init,
            "freeze_backbone": cfg.freeze_backbone,
        }

    @classmethod
    def classifier(cls, run: Run, device: str) -> ImageClassifier:
        return ImageClassifier(run, device)


class ImageClassifier:
    """A trained image run, ready to predict: backbone, classes and evaluation transform from its folder."""

    def __init__(self, run: Run, device: str = "cpu"):
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
        logits = predict_logits(self.model, batches, self.runtime, size=len(images), progress=False)
        return logits.softmax(dim=1)
