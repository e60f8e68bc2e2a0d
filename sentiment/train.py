"""The one training loop, for text and images alike.

Data comes as iterables of `(index, inputs, labels)` batches: `inputs` is a tuple passed to the
model as `model(*inputs)`, `index` says which examples the batch holds (so predictions can be put
back in data order). The loop moves batches to the device, runs bf16 autocast when asked, shows a
progress bar with running loss, accuracy and examples/s, and evaluates after every epoch.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from sentiment.errors import SentimentError
from sentiment.finetune import set_bn_eval


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SentimentError("--device cuda was asked for, but this machine has no CUDA GPU; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise SentimentError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(name: str, groups, *, lr: float, momentum: float = 0.9, weight_decay: float = 0.0):
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise SentimentError(f"unknown optimizer {name!r}; choose adam, adamw or sgd")


def make_scheduler(name: str, optimizer, *, epochs: int, step_size: int = 1, gamma: float = 0.1):
    """Stepped once per epoch."""
    if name == "none":
        return None
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    raise SentimentError(f"unknown schedule {name!r}; choose none, step or cosine")


def _to(inputs: tuple, labels: torch.Tensor, device: torch.device):
    non_blocking = device.type == "cuda"
    return (
        tuple(x.to(device, non_blocking=non_blocking) for x in inputs),
        labels.to(device, non_blocking=non_blocking),
    )


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX-512 BF16 or AMX); elsewhere it is emulated and slow."""
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(cpu, probe, None)
        if check is not None and check():
            return True
    return False


def resolve_precision(name: str, device: torch.device, *, cpu_auto: bool = True) -> str:
    """`"bf16"` or `"fp32"`: the arithmetic the model runs in (weights and optimizer stay fp32).

    `auto` means bf16 autocast on CUDA, and on a CPU with native bfloat16 when `cpu_auto`; fp32 elsewhere.
    """
    if name not in ("auto", "bf16", "fp32"):
        raise SentimentError(f"unknown precision {name!r}; choose auto, bf16 or fp32")
    if name == "auto":
        native = device.type == "cuda" or (cpu_auto and cpu_has_bf16())
        return "bf16" if native else "fp32"
    return name


def _autocast(device: torch.device, precision: str = "fp32"):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@dataclass
class EpochResult:
    loss: float
    acc: float
    examples: int
    seconds: float

    @property
    def examples_per_s(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else float("nan")


def train_epoch(
    model: nn.Module,
    batches: Iterable,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    grad_clip: float = 0.0,
    loss_reduction: str = "mean",
    desc: str = "train",
    progress: bool = True,
    total: int | None = None,
    precision: str = "fp32",
) -> EpochResult:
    """One pass over `batches`. `loss_reduction="sum"` steps on the batch's summed loss, as the
    reference image recipe does (its learning rates assume it); the reported loss is always the mean."""
    model.train()
    set_bn_eval(model)  # a frozen BatchNorm keeps its running statistics too
    loss_fn = nn.CrossEntropyLoss(reduction=loss_reduction)
    loss_sum, correct, seen = 0.0, 0, 0
    trainable = [p for p in model.parameters() if p.requires_grad]
    start = time.perf_counter()
    bar = tqdm(batches, desc=desc, total=total, disable=not progress, unit="batch", leave=False, dynamic_ncols=True)
    for step, (_, inputs, labels) in enumerate(bar, 1):
        inputs, labels = _to(inputs, labels, device)
        with _autocast(device, precision):
            logits = model(*inputs)
            loss = loss_fn(logits.float(), labels)
        if not torch.isfinite(loss):
            raise SentimentError(
                f"the loss became {loss.item()} at step {step} of {desc}; lower the learning rate "
                f"(--lr) or set grad_clip; the last completed epoch's checkpoint is kept"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(trainable, grad_clip)
        optimizer.step()
        n = labels.shape[0]
        loss_sum += loss.item() * (n if loss_reduction == "mean" else 1)
        correct += (logits.argmax(1) == labels).sum().item()
        seen += n
        if progress and (step % 10 == 0 or step == total):
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}", ex_s=f"{seen / elapsed:.0f}")
    bar.close()
    if seen == 0:
        raise SentimentError("there is nothing to train on: the training split is empty")
    return EpochResult(loss_sum / seen, correct / seen, seen, time.perf_counter() - start)


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    batches: Iterable,
    device: torch.device,
    *,
    size: int,
    desc: str = "predict",
    progress: bool = True,
    total: int | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """Logits `[size, classes]` in data order, whatever order the batches came in."""
    model.eval()
    out: torch.Tensor | None = None
    bar = tqdm(batches, desc=desc, total=total, disable=not progress, unit="batch", leave=False, dynamic_ncols=True)
    for index, inputs, labels in bar:
        inputs, _ = _to(inputs, labels, device)
        with _autocast(device, precision):
            logits = model(*inputs).float().cpu()
        if out is None:
            out = torch.empty(size, logits.shape[1])
        out[torch.as_tensor(index)] = logits
    if out is None:
        raise SentimentError("there is nothing to predict: no examples")
    return out


def evaluate(
    model: nn.Module,
    batches: Iterable,
    labels: torch.Tensor,
    device: torch.device,
    *,
    desc: str = "test",
    progress: bool = True,
    total: int | None = None,
    precision: str = "fp32",
) -> tuple[EpochResult, torch.Tensor]:
    start = time.perf_counter()
    logits = predict_logits(
        model, batches, device, size=len(labels), desc=desc, progress=progress, total=total, precision=precision
    )
    loss = nn.functional.cross_entropy(logits, labels).item()
    acc = (logits.argmax(1) == labels).float().mean().item()
    return EpochResult(loss, acc, len(labels), time.perf_counter() - start), logits


@dataclass
class Loop:
    """Everything `fit` needs besides the model: data, optimiser, schedule, device."""

    train_batches: object  # iterable with __len__ and optionally set_epoch(epoch)
    test_batches: object | None
    test_labels: torch.Tensor | None
    optimizer: torch.optim.Optimizer
    device: torch.device
    epochs: int
    scheduler: object | None = None
    grad_clip: float = 0.0
    loss_reduction: str = "mean"
    evaluate_before: bool = False  # an "epoch 0" line: how good the model is before any step
    progress: bool = True
    precision: str = "fp32"  # resolved: "fp32" or "bf16" (autocast)


def _test_metrics(model: nn.Module, loop: Loop) -> dict:
    te, _ = evaluate(
        model,
        loop.test_batches,
        loop.test_labels,
        loop.device,
        progress=loop.progress,
        total=len(loop.test_batches),
        precision=loop.precision,
    )
    return {"test_loss": te.loss, "test_acc": te.acc, "test_s": round(te.seconds, 3)}


def fit(
    model: nn.Module,
    loop: Loop,
    *,
    on_epoch_end: Callable[[dict], None] | None = None,
    start_epoch: int = 0,
) -> list[dict]:
    """Train for `loop.epochs` epochs; after each, evaluate and hand the metrics to `on_epoch_end`.

    `on_epoch_end` is where a run saves its checkpoint, so an interrupt (Ctrl-C) between epochs
    loses at most the epoch in progress.
    """
    history = []
    if loop.evaluate_before and start_epoch == 0 and loop.test_batches is not None:
        metrics = {"epoch": 0, "lr": loop.optimizer.param_groups[0]["lr"], **_test_metrics(model, loop)}
        history.append(metrics)
        if loop.progress:
            tqdm.write(f"epoch 0 (before training): test loss {metrics['test_loss']:.4f} acc {metrics['test_acc']:.3f}")
        if on_epoch_end is not None:
            on_epoch_end(metrics)
    epoch_bar = tqdm(
        range(start_epoch + 1, loop.epochs + 1),
        desc="epochs",
        disable=not loop.progress,
        unit="epoch",
        dynamic_ncols=True,
    )
    for epoch in epoch_bar:
        if hasattr(loop.train_batches, "set_epoch"):
            loop.train_batches.set_epoch(epoch)
        lr = loop.optimizer.param_groups[0]["lr"]
        tr = train_epoch(
            model,
            loop.train_batches,
            loop.optimizer,
            loop.device,
            grad_clip=loop.grad_clip,
            loss_reduction=loop.loss_reduction,
            desc=f"epoch {epoch}/{loop.epochs}",
            progress=loop.progress,
            total=len(loop.train_batches),
            precision=loop.precision,
        )
        if loop.scheduler is not None:
            loop.scheduler.step()
        metrics = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": tr.loss,
            "train_acc": tr.acc,
            "train_examples": tr.examples,
            "train_s": round(tr.seconds, 3),
            "train_examples_per_s": round(tr.examples_per_s, 1),
        }
        if loop.test_batches is not None:
            metrics.update(_test_metrics(model, loop))
        history.append(metrics)
        shown = f"epoch {epoch}: train loss {tr.loss:.4f} acc {tr.acc:.3f}"
        if "test_acc" in metrics:
            shown += f", test loss {metrics['test_loss']:.4f} acc {metrics['test_acc']:.3f}"
        shown += f" ({tr.examples_per_s:.0f} examples/s)"
        if loop.progress:
            epoch_bar.write(shown)
        if on_epoch_end is not None:
            on_epoch_end(metrics)
    epoch_bar.close()
    return history
