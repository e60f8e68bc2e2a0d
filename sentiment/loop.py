"""The one training loop (`sentiment.loop`), for text and images alike.

Data comes as iterables of `(index, inputs, labels)` batches: `inputs` is a tuple passed to the
model as `model(*inputs)`, `index` says which examples the batch holds (so predictions can be put
back in data order). The loop moves batches to the device, runs bf16 autocast when asked, shows a
progress bar with running loss, accuracy and examples/s, and evaluates after every epoch.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from sentiment.errors import SentimentError
from sentiment.finetune import set_bn_eval
from sentiment.runtime import Runtime


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(name: str, groups, *, lr: float, momentum: float = 0.9, weight_decay: float = 0.0):
    """`name` is one of `config.OPTIMIZERS` (checked where the setting is declared)."""
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adagrad":  # a step size per parameter, and the one of these that takes sparse gradients
        return torch.optim.Adagrad(groups, lr=lr, weight_decay=weight_decay)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    groups = list(groups)
    try:  # one fused kernel per step instead of a dozen passes over every parameter
        return cls(groups, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # a device or build without the fused kernel
        return cls(groups, lr=lr, weight_decay=weight_decay)


PER_STEP_SCHEDULES = ("linear",)


def make_scheduler(
    schedule: str,
    optimizer,
    *,
    epochs: int,
    step_size: int = 1,
    gamma: float = 0.1,
    steps_per_epoch: int = 1,
    warmup: float = 0.0,
):
    """`schedule` is one of `config.SCHEDULES`. `step` and `cosine` are stepped once per epoch; `linear`
    (see PER_STEP_SCHEDULES) once per batch: a linear warm-up over the first `warmup` share of all
    steps, then a linear decay to 0."""
    if schedule == "linear":
        total = max(epochs * steps_per_epoch, 1)
        warm = int(warmup * total)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / (warm + 1)
            return max(total - step, 0) / max(total - warm, 1)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    return None


class Objective:
    """What training minimises and how a split is scored, for a classifier: cross-entropy; accuracy
    while training; loss, accuracy and macro-F1 per split. `RatingObjective` is the rating run's."""

    running = "acc"  # the figure the progress bar and `train_<running>` carry

    def loss_fn(self, reduction: str, weights: torch.Tensor | None = None):
        return nn.CrossEntropyLoss(reduction=reduction, weight=weights)

    def mean_loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> float:
        """A scored split's mean loss (no class weights)."""
        return nn.functional.cross_entropy(outputs, labels).item()

    def hits(self, outputs: torch.Tensor, labels: torch.Tensor):
        """The running figure's sum over a batch: correct answers."""
        return int((outputs.argmax(1) == labels).sum().item())

    def split_figures(self, outputs: torch.Tensor, labels: torch.Tensor) -> dict:
        return {
            "loss": self.mean_loss(outputs, labels),
            "acc": (outputs.argmax(1) == labels).float().mean().item(),
            "f1": macro_f1(labels, outputs.argmax(1), outputs.shape[1]),
        }

    def score(self, metrics: dict, select: str) -> list[float]:
        """The validation figures as a tuple to maximise: `select`'s figure first, lower loss breaking ties."""
        if select == "loss":
            return [-metrics["val_loss"]]
        return [metrics[f"val_{'acc' if select == 'auto' else select}"], -metrics["val_loss"]]

    def shown(self, metrics: dict, split: str) -> str:
        return f"{split} loss {metrics[f'{split}_loss']:.4f} acc {metrics[f'{split}_acc']:.3f}"


class RatingObjective(Objective):
    """A rating run's (`rating`: a `targets.Rating`): the squared (or Huber) error of the model's one
    output, each error divided by the training ratings' standard deviation (so the loss is in
    standardized units whatever the scale); mean absolute error while training; loss, MAE, RMSE and
    Spearman per split, of the answers clipped to the training range as `predict` gives them."""

    running = "mae"

    def __init__(self, rating, loss: str = "mse"):
        self.rating, self.std, self.kind = rating, float(rating.std), loss

    def loss_fn(self, reduction: str, weights: torch.Tensor | None = None):
        base = nn.MSELoss(reduction=reduction) if self.kind == "mse" else nn.HuberLoss(reduction=reduction, delta=1.0)
        std = self.std

        def loss(outputs: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
            return base(outputs[:, 0] / std, ratings.to(outputs.dtype) / std)

        return loss

    def mean_loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> float:
        return self.loss_fn("mean")(outputs, labels).item()

    def hits(self, outputs: torch.Tensor, labels: torch.Tensor):
        """The running figure's sum over a batch: absolute errors."""
        return float((outputs[:, 0] - labels).abs().sum().item())

    def split_figures(self, outputs: torch.Tensor, labels: torch.Tensor) -> dict:
        from sentiment.targets import rating_report

        report = rating_report(self.rating.clip(outputs[:, 0].numpy()), labels.numpy())
        return {
            "loss": self.mean_loss(outputs, labels),
            "mae": report["mae"],
            "rmse": report["rmse"],
            "spearman": report["spearman"],
        }

    def score(self, metrics: dict, select: str) -> list[float]:
        if select == "loss":
            return [-metrics["val_loss"]]
        if select == "spearman":
            return [metrics["val_spearman"], -metrics["val_loss"]]
        return [-metrics["val_mae"], -metrics["val_loss"]]

    def shown(self, metrics: dict, split: str) -> str:
        return f"{split} loss {metrics[f'{split}_loss']:.4f} mae {metrics[f'{split}_mae']:.3f}"


class MultiLabelObjective(Objective):
    """A multi-label run's: binary cross-entropy of every label's logit; while training, the share of
    (text, label) decisions right at 0.5 (`label_acc`); per split, loss, micro- and macro-F1 and
    the share of texts whose labels are exactly right, every threshold at 0.5 (they are tuned once
    training ends)."""

    running = "label_acc"

    def loss_fn(self, reduction: str, weights: torch.Tensor | None = None):
        return nn.BCEWithLogitsLoss(reduction=reduction)

    def mean_loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> float:
        return nn.functional.binary_cross_entropy_with_logits(outputs, labels.to(outputs.dtype)).item()

    def hits(self, outputs: torch.Tensor, labels: torch.Tensor):
        """The running figure's sum over a batch: each text's share of right decisions."""
        return float(((outputs > 0) == (labels > 0.5)).float().mean(1).sum().item())

    def split_figures(self, outputs: torch.Tensor, labels: torch.Tensor) -> dict:
        from sentiment.targets import multilabel_report

        k = outputs.shape[1]
        report = multilabel_report(outputs.sigmoid().numpy(), labels.numpy(), [str(i) for i in range(k)], [0.5] * k)
        return {
            "loss": self.mean_loss(outputs, labels),
            "micro_f1": report["micro_f1"],
            "macro_f1": report["macro_f1"],
            "exact_match": report["exact_match"],
        }

    def score(self, metrics: dict, select: str) -> list[float]:
        if select == "loss":
            return [-metrics["val_loss"]]
        return [metrics["val_micro_f1"], -metrics["val_loss"]]

    def shown(self, metrics: dict, split: str) -> str:
        return f"{split} loss {metrics[f'{split}_loss']:.4f} micro-F1 {metrics[f'{split}_micro_f1']:.3f}"


@dataclass
class EpochResult:
    loss: float
    acc: float  # the objective's running figure: accuracy, a rating run's MAE, a multi-label run's label_acc
    examples: int
    seconds: float

    @property
    def examples_per_s(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class EpochPosition:
    """How far into an epoch training got: batches done and the running sums so far."""

    step: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0


class StopRequested(Exception):  # noqa: N818 - a request, not an error
    """Raised at a batch boundary after SIGINT/SIGTERM; carries where the epoch stood."""

    def __init__(self, position: EpochPosition):
        super().__init__(f"stopped after step {position.step}")
        self.position = position


class StopSignals:
    """While active, SIGINT and SIGTERM ask training to stop at the next batch boundary (a second
    SIGINT stops at once). Only the main thread can install handlers; elsewhere nothing changes."""

    def __init__(self):
        self.requested = False
        self._previous: dict = {}

    def __enter__(self) -> StopSignals:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        import signal

        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def train_epoch(
    model: nn.Module,
    batches: Iterable,
    optimizer: torch.optim.Optimizer,
    runtime: Runtime,
    *,
    grad_clip: float = 0.0,
    loss_reduction: str = "mean",
    desc: str = "train",
    progress: bool = True,
    total: int | None = None,
    position: EpochPosition | None = None,
    stop: StopSignals | None = None,
    step_scheduler=None,
    micro_batch: int | None = None,
    class_weights: torch.Tensor | None = None,
    after_step: Callable[[int, float], None] | None = None,
    objective: Objective | None = None,
) -> EpochResult:
    """One pass over `batches`. `loss_reduction="sum"` steps on the batch's summed loss, as the
    reference image recipe does (its learning rates assume it); the reported loss is always the mean.

    `position` resumes an epoch: its first `position.step` batches are skipped (the batch order is a
    function of the seed and epoch) and its sums carried on. With `stop`, a stop request raises
    `StopRequested` after the batch in progress. In a distributed run the sums cover every process.
    `step_scheduler` is stepped after every optimizer step.

    `micro_batch` splits every batch into parts of at most that many examples whose gradients add
    up before the one optimizer step of the batch (gradient accumulation): the same steps, schedule
    and resume points as the whole batch, with the activation memory of a part. Each part's loss is
    weighted by its share of the batch, so the gradient is the whole batch's (to float rounding),
    except that BatchNorm normalises each part with that part's own statistics.

    `after_step(step, loss)` is called after every optimizer step with the step's number in this
    epoch and the batch's mean loss (the recipe logs it and re-sizes the thread pool there).
    `class_weights` weights each example's loss by its class (`--class-weights auto`); the mean is
    then the weighted mean over the whole batch, whatever its parts. `objective` says what the loss
    and the running figure are (default: a classifier's).
    """
    from sentiment import distributed

    model.train()
    set_bn_eval(model)  # a frozen BatchNorm keeps its running statistics too
    weights = None if class_weights is None else runtime.to_device((class_weights,))[0]
    objective = objective or Objective()
    loss_fn = objective.loss_fn(loss_reduction if weights is None else "sum", weights)
    pos = EpochPosition() if position is None else EpochPosition(**vars(position))
    skip = pos.step
    trainable = [p for p in model.parameters() if p.requires_grad]
    start = time.perf_counter() - pos.seconds
    bar = tqdm(
        batches,
        desc=desc,
        total=total,
        initial=0,
        disable=not progress,
        unit="batch",
        leave=False,
        dynamic_ncols=True,
    )
    for step, (_, inputs, labels) in enumerate(bar, 1):
        if step <= skip:
            continue
        inputs, (labels,) = runtime.to_device(inputs), runtime.to_device((labels,))
        n = labels.shape[0]
        parts = split_batch(n, micro_batch)
        # a weighted mean divides by the whole batch's weight, so its parts add up to it
        weight_sum = weights[labels].sum() if weights is not None and loss_reduction == "mean" else None
        optimizer.zero_grad(set_to_none=True)
        loss_before = pos.loss_sum
        for k, part in enumerate(parts):
            last = k == len(parts) - 1
            part_inputs, part_labels = tuple(_rows(x, part, n) for x in inputs), labels[part]
            # Under DDP the gradients are averaged across processes once, with the batch's last part.
            sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
            with sync:
                with runtime.autocast():
                    logits = model(*part_inputs)
                    loss = loss_fn(logits.float(), part_labels)
                    if weight_sum is not None:
                        loss = loss / weight_sum
                if not torch.isfinite(loss):
                    raise SentimentError(
                        f"the loss became {loss.item()} at step {step} of {desc}; lower the learning rate "
                        f"(--lr) or set grad_clip; the last good checkpoint is kept"
                    )
                plain_mean = loss_reduction == "mean" and weight_sum is None
                share = part_labels.shape[0] / n if plain_mean else 1.0
                (loss * share).backward()  # a whole batch's share is exactly 1
            pos.loss_sum += loss.item() * (part_labels.shape[0] if plain_mean else n if weight_sum is not None else 1)
            pos.correct += objective.hits(logits.float(), part_labels)
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(trainable, grad_clip)
        optimizer.step()
        if step_scheduler is not None:
            step_scheduler.step()
        pos.seen += n
        pos.step = step
        if after_step is not None:
            after_step(step, (pos.loss_sum - loss_before) / n)
        if progress and (step % 10 == 0 or step == total):
            elapsed = time.perf_counter() - start
            bar.set_postfix(
                loss=f"{pos.loss_sum / pos.seen:.4f}",
                **{objective.running: f"{pos.correct / pos.seen:.3f}"},
                ex_s=f"{pos.seen / elapsed:.0f}",
            )
        if stop is not None and distributed.any_rank(stop.requested) and step != total:
            pos.seconds = time.perf_counter() - start
            bar.close()
            raise StopRequested(pos)
    bar.close()
    loss_sum, correct, seen = distributed.sum_all([pos.loss_sum, float(pos.correct), float(pos.seen)])
    if seen == 0:
        raise SentimentError("there is nothing to train on: the training split is empty")
    return EpochResult(loss_sum / seen, correct / seen, int(seen), time.perf_counter() - start)


def split_batch(n: int, micro_batch: int | None) -> list[slice]:
    """`n` examples as parts of at most `micro_batch`, as even as possible (130 by 64: 44, 43, 43)."""
    if not micro_batch or micro_batch >= n:
        return [slice(0, n)]
    parts = -(-n // micro_batch)
    size, extra = divmod(n, parts)
    bounds = [0]
    for i in range(parts):
        bounds.append(bounds[-1] + size + (1 if i < extra else 0))
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _rows(x, part: slice, n: int):
    """The rows `part` of a batch input; what is not per example (no leading batch dimension) as is."""
    if torch.is_tensor(x) and x.dim() > 0 and x.shape[0] == n:
        return x[part]
    return x


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    batches: Iterable,
    runtime: Runtime,
    *,
    size: int,
    desc: str = "predict",
    progress: bool = True,
    total: int | None = None,
    micro_batch: int | None = None,
) -> torch.Tensor:
    """Logits `[size, classes]` in data order, whatever order the batches came in; with
    `micro_batch`, each batch goes through the model in parts of at most that many examples."""
    model.eval()
    out: torch.Tensor | None = None
    bar = tqdm(batches, desc=desc, total=total, disable=not progress, unit="batch", leave=False, dynamic_ncols=True)
    for index, inputs, _ in bar:
        inputs = runtime.to_device(inputs)
        index = torch.as_tensor(index)
        n = len(index)
        for part in split_batch(n, micro_batch):
            with runtime.autocast():
                logits = model(*(tuple(_rows(x, part, n) for x in inputs))).float().cpu()
            if out is None:
                out = torch.empty(size, logits.shape[1])
            out[index[part]] = logits
    if out is None:
        raise SentimentError("there is nothing to predict: no examples")
    return out


def evaluate(
    model: nn.Module,
    batches: Iterable,
    labels: torch.Tensor,
    runtime: Runtime,
    *,
    desc: str = "test",
    progress: bool = True,
    total: int | None = None,
    micro_batch: int | None = None,
    objective: Objective | None = None,
) -> tuple[EpochResult, torch.Tensor]:
    """Scores a split: (its loss and running figure, the outputs in data order)."""
    start = time.perf_counter()
    logits = predict_logits(
        model, batches, runtime, size=len(labels), desc=desc, progress=progress, total=total, micro_batch=micro_batch
    )
    objective = objective or Objective()
    loss = objective.mean_loss(logits, labels)
    figure = objective.hits(logits, labels) / max(len(labels), 1)
    return EpochResult(loss, figure, len(labels), time.perf_counter() - start), logits


@dataclass
class Selection:
    """Which epoch is best on the validation split so far, and whether training stopped early."""

    best_epoch: int = 0
    best_score: list[float] | None = None  # compared as a tuple: higher is better
    since_best: int = 0  # epochs since the best one
    stopped_early: bool = False


@dataclass
class TrainingSetup:
    """Everything `fit` needs besides the model: data, optimiser, schedule, runtime and settings."""

    train_batches: object  # iterable with __len__ and optionally set_epoch(epoch)
    test_batches: object | None
    test_labels: torch.Tensor | None
    optimizer: torch.optim.Optimizer
    runtime: Runtime
    epochs: int
    scheduler: object | None = None
    scheduler_per_step: bool = False  # stepped after every batch instead of every epoch
    grad_clip: float = 0.0
    loss_reduction: str = "mean"
    evaluate_before: bool = False  # an "epoch 0" line: how good the model is before any step
    progress: bool = True  # progress bars (on a terminal)
    report: Callable[[str], None] | None = None  # where the per-epoch lines go, bars or not
    micro_batch: int | None = None  # gradient accumulation: parts of at most this many examples
    val_batches: object | None = None  # the validation split: scored after every epoch, chooses the best
    val_labels: torch.Tensor | None = None
    test_each_epoch: bool = False  # also score the test split after every epoch (for curves, never for choosing)
    patience: int | None = None  # stop after this many epochs without a better validation score
    select: str = "acc"  # what "better" means: "acc" (ties: lower loss), "f1", "loss"; ratings: "mae", "spearman"
    keep: str = "best"  # which epoch's weights the run keeps: "best" (validation) or "last"
    class_weights: torch.Tensor | None = None  # per-class loss weights
    after_step: Callable[[int, float], None] | None = None  # (global optimizer step, batch loss), after each
    selection: Selection = field(default_factory=Selection)  # where fit stands; updated as it goes
    objective: Objective = field(default_factory=Objective)  # the loss and figures: a classifier's or a rating's


def macro_f1(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> float:
    """The mean over classes of each class's F1 (a class never seen nor predicted counts 0), as
    `classification_report` computes it."""
    return classification_report(labels, predicted, [str(c) for c in range(num_classes)])["f1"]


def split_metrics(model: nn.Module, loop: TrainingSetup, split: str) -> dict:
    """The objective's figures of the `val` or `test` split (a classifier's: loss, accuracy and
    macro-F1), as `<split>_loss` ...; `<split>_s`."""
    from sentiment import distributed

    batches, labels = getattr(loop, f"{split}_batches"), getattr(loop, f"{split}_labels")
    result, logits = evaluate(
        distributed.unwrap(model),  # every process holds the same weights: no need to go through DDP
        batches,
        labels,
        loop.runtime,
        desc=split,
        progress=loop.progress,
        total=len(batches),
        micro_batch=loop.micro_batch,  # what fits a training step fits an evaluation one
        objective=loop.objective,
    )
    figures = loop.objective.split_figures(logits, labels)
    return {f"{split}_{k}": v for k, v in figures.items()} | {f"{split}_s": round(result.seconds, 3)}


def score(metrics: dict, select: str, objective: Objective | None = None) -> list[float]:
    """The validation figures as a tuple to maximise: `select`'s figure first, lower loss breaking ties."""
    return (objective or Objective()).score(metrics, select)


def _report(loop: TrainingSetup, line: str) -> None:
    if loop.progress:
        tqdm.write(line)  # above the bars, which stay at the bottom
    elif loop.report is not None:
        loop.report(line)


def training_state(model: nn.Module, loop: TrainingSetup, epoch: int, position: EpochPosition | None) -> dict:
    """Everything needed to continue exactly: weights, optimizer, schedule, random states, where
    in which epoch training stands (`epoch` epochs complete, `position` into the next) and the
    validation record so far. Plain types and tensors only, so it loads with
    `torch.load(weights_only=True)`."""
    from sentiment import distributed

    return {
        "format": 1,
        "epoch": epoch,
        "position": vars(position) if position is not None else None,
        "selection": vars(loop.selection).copy(),
        "model": {k: v.detach().cpu() for k, v in distributed.unwrap(model).state_dict().items()},
        "optimizer": loop.optimizer.state_dict(),
        "scheduler": loop.scheduler.state_dict() if loop.scheduler is not None else None,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": _numpy_state(),
            "python": list(random.getstate()[1]) + [random.getstate()[2]],
        },
    }


def _numpy_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "gauss": [int(has_gauss), float(cached)]}


def restore_random_states(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    n = rng["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["gauss"][0], n["gauss"][1]))
    py = rng["python"]
    random.setstate((3, tuple(py[:-1]), py[-1]))


def restore_training_state(model: nn.Module, loop: TrainingSetup, state: dict) -> tuple[int, EpochPosition | None]:
    """Load a `training_state` into `model` and `loop`; return (epochs complete, position in the next)."""
    from sentiment import distributed

    distributed.unwrap(model).load_state_dict(state["model"])
    loop.optimizer.load_state_dict(state["optimizer"])
    if loop.scheduler is not None and state.get("scheduler") is not None:
        loop.scheduler.load_state_dict(state["scheduler"])
    if state.get("selection"):  # checkpoints written before validation splits have none
        loop.selection = Selection(**state["selection"])
    position = EpochPosition(**state["position"]) if state.get("position") else None
    return int(state["epoch"]), position


def _choose(loop: TrainingSetup, metrics: dict) -> None:
    """Update `loop.selection` with an epoch's metrics; record the best epoch so far in them."""
    sel = loop.selection
    if "val_loss" not in metrics:  # nothing to choose with: the newest epoch is the one kept
        sel.best_epoch, sel.since_best = metrics["epoch"], 0
    else:
        now = loop.objective.score(metrics, loop.select)
        if sel.best_score is None or now > sel.best_score:
            sel.best_epoch, sel.best_score, sel.since_best = metrics["epoch"], now, 0
        else:
            sel.since_best += 1
    metrics["best_epoch"] = sel.best_epoch


def fit(
    model: nn.Module,
    loop: TrainingSetup,
    *,
    on_epoch_end: Callable[[dict], None] | None = None,
    save_checkpoint: Callable[[dict], None] | None = None,
    resume: dict | None = None,
) -> list[dict]:
    """Train for `loop.epochs` epochs; after each, score the validation split (and, with
    `test_each_epoch`, the test split), note the best epoch (`loop.selection`) and hand the metrics
    to `on_epoch_end`, then the full training state to `save_checkpoint`. With `patience`, stop once
    that many epochs in a row have not beaten the best.

    SIGINT/SIGTERM stop training at the next batch boundary: the state at that point goes to
    `save_checkpoint` and `StopRequested` is raised. `resume` (a saved training state) continues
    from exactly where it was taken: same weights, optimizer, schedule, random states, batch and
    validation record.
    """
    history = []
    start_epoch, position = 0, None
    if resume is not None:
        start_epoch, position = restore_training_state(model, loop, resume)
    has_val = loop.val_batches is not None
    if loop.evaluate_before and resume is None and (has_val or loop.test_each_epoch):
        metrics = {"epoch": 0, "lr": loop.optimizer.param_groups[0]["lr"]}
        shown = []
        for split in ("val",) * has_val + ("test",) * loop.test_each_epoch:
            metrics.update(split_metrics(model, loop, split))
            shown.append(loop.objective.shown(metrics, split))
        history.append(metrics)
        _report(loop, f"epoch 0 (before training): {', '.join(shown)}")
        if on_epoch_end is not None:
            on_epoch_end(metrics)
    if resume is not None:  # last, so that nothing above draws from the restored generators
        restore_random_states(resume["rng"])
    epoch_bar = tqdm(
        range(start_epoch + 1, loop.epochs + 1),
        desc="epochs",
        disable=not loop.progress,
        unit="epoch",
        dynamic_ncols=True,
    )
    with StopSignals() as stop:
        for epoch in epoch_bar:
            if hasattr(loop.train_batches, "set_epoch"):
                loop.train_batches.set_epoch(epoch)
            lr = loop.optimizer.param_groups[0]["lr"]
            steps_before = (epoch - 1) * len(loop.train_batches)
            step_hook = None
            if loop.after_step is not None:

                def step_hook(step: int, loss: float, _before: int = steps_before) -> None:
                    loop.after_step(_before + step, loss)

            try:
                tr = train_epoch(
                    model,
                    loop.train_batches,
                    loop.optimizer,
                    loop.runtime,
                    grad_clip=loop.grad_clip,
                    loss_reduction=loop.loss_reduction,
                    desc=f"epoch {epoch}/{loop.epochs}",
                    progress=loop.progress,
                    total=len(loop.train_batches),
                    position=position if epoch == start_epoch + 1 else None,
                    stop=stop,
                    step_scheduler=loop.scheduler if loop.scheduler_per_step else None,
                    micro_batch=loop.micro_batch,
                    class_weights=loop.class_weights,
                    after_step=step_hook,
                    objective=loop.objective,
                )
            except StopRequested as e:
                if save_checkpoint is not None:
                    save_checkpoint(training_state(model, loop, epoch - 1, e.position))
                epoch_bar.close()
                raise
            if loop.scheduler is not None and not loop.scheduler_per_step:
                loop.scheduler.step()
            metrics = {
                "epoch": epoch,
                "lr": lr,
                "train_loss": tr.loss,
                f"train_{loop.objective.running}": tr.acc,
                "train_examples": tr.examples,
                "train_s": round(tr.seconds, 3),
                "train_examples_per_s": round(tr.examples_per_s, 1),
            }
            if has_val:
                metrics.update(split_metrics(model, loop, "val"))
            if loop.test_each_epoch and loop.test_batches is not None:
                metrics.update(split_metrics(model, loop, "test"))
            _choose(loop, metrics)
            sel = loop.selection
            if loop.patience is not None and sel.since_best >= loop.patience and epoch < loop.epochs:
                sel.stopped_early = True
            history.append(metrics)
            shown = f"epoch {epoch}: train loss {tr.loss:.4f} {loop.objective.running} {tr.acc:.3f}"
            for split in ("val", "test"):
                if f"{split}_loss" in metrics:
                    shown += ", " + loop.objective.shown(metrics, split)
            if has_val:
                shown += " (best)" if sel.best_epoch == epoch else f" (best: epoch {sel.best_epoch})"
            shown += f" ({tr.examples_per_s:.0f} examples/s)"
            _report(loop, shown)
            if on_epoch_end is not None:
                on_epoch_end(metrics)
            if save_checkpoint is not None:
                save_checkpoint(training_state(model, loop, epoch, None))
            if sel.stopped_early:
                _report(
                    loop,
                    f"stopping early: validation has not improved for {sel.since_best} epochs; "
                    f"epoch {sel.best_epoch} was the best",
                )
                break
            if stop.requested and epoch < loop.epochs:
                epoch_bar.close()
                raise StopRequested(EpochPosition())
    epoch_bar.close()
    return history


def classification_report(
    labels: torch.Tensor, predicted: torch.Tensor, classes: list[str], probs: torch.Tensor | None = None
) -> dict:
    """Accuracy, balanced accuracy, per-class precision/recall/F1, macro F1 and the confusion matrix
    (rows: true class); with `probs`, calibration too: `ece` (15 equal-width bins of the top
    probability), `ece_floor` (the ECE a calibrated model would show on this many examples),
    `mean_confidence` and the `reliability` table (see `sentiment.calibration`)."""
    k = len(classes)
    confusion = torch.zeros(k, k, dtype=torch.long)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    per_class = {}
    for i, name in enumerate(classes):
        tp = confusion[i, i].item()
        predicted_i = confusion[:, i].sum().item()
        actual_i = confusion[i, :].sum().item()
        precision = tp / predicted_i if predicted_i else 0.0
        recall = tp / actual_i if actual_i else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": actual_i}
    present = [c["recall"] for c in per_class.values() if c["support"]]
    return {
        "examples": len(labels),
        "accuracy": (labels == predicted).float().mean().item(),
        "balanced_accuracy": float(np.mean(present)) if present else 0.0,  # the mean recall over classes
        "f1": float(np.mean([c["f1"] for c in per_class.values()])),
        "per_class": per_class,
        "classes": classes,
        "confusion": confusion.tolist(),
    } | (_calibration(probs, labels) if probs is not None else {})


def _calibration(probs: torch.Tensor, labels: torch.Tensor) -> dict:
    from sentiment import calibration

    p, y = probs.double().numpy(), labels.numpy()
    figures = calibration.summary(p, y)
    return {"ece": figures["ece"], "ece_floor": figures["ece_floor"], "mean_confidence": figures["mean_confidence"],
            "reliability": calibration.reliability(p, y)}  # fmt: skip
