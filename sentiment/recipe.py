"""The fine-tuning recipe, written once for every model family:

    runtime -> data -> model -> param groups -> optimizer and schedule -> run folder -> fit -> summary

A family (one module in sentiment/families/, found through `sentiment.registry`) declares a
`tasks.Task`: how its data is read and batched, how its model and head are built and what is frozen,
and what the run folder must keep to predict. Everything else, resuming and several processes
included, is here.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import torch

from sentiment import distributed, tracking
from sentiment.config import apply, saved, to_dict
from sentiment.curves import plot_runs
from sentiment.errors import SentimentError
from sentiment.finetune import count_parameters, layer_decay_scales, param_groups
from sentiment.loop import (
    PER_STEP_SCHEDULES,
    StopRequested,
    TrainingSetup,
    fit,
    make_optimizer,
    make_scheduler,
    seed_everything,
    split_batch,
)
from sentiment.memory import default_budget, plan_micro_batch, step_bytes_per_example
from sentiment.registry import task_for
from sentiment.runs import Run
from sentiment.runtime import Runtime, ThreadPlan, busy_cores, plan_threads, tune_allocator
from sentiment.targets import select_for
from sentiment.tasks import Task, TaskData


def _quiet(_: str) -> None:
    pass


def fine_tune(
    cfg,
    *,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    after_epoch: Callable[[dict], None] | None = None,
    run: Run | None = None,
    state: dict | None = None,
) -> Run:
    """Train the model `cfg` describes into a new run folder and return it; with `run` and `state`
    (from `resume`), continue that run instead. `after_epoch(metrics)` is called once an epoch is on
    disk. Under torchrun every process calls this; rank 0 writes and prints."""
    started = time.perf_counter()
    _check_target(cfg)
    task = task_for(cfg)
    tune_allocator(keep_all=task.allocator == "keep_all")
    main = distributed.is_main()
    if not main:
        progress, echo = False, _quiet
    runtime = Runtime.resolve(cfg.device, cfg.precision, cpu_bf16=task.cpu_bf16)
    runtime = dataclasses.replace(runtime, device=distributed.setup(runtime.device))
    threads = None if task.solver else _size_threads(cfg, runtime, echo)
    tracker = tracking.open_trackers(cfg.log) if main else tracking.Tracker()

    seed_everything(cfg.seed)
    data = task.data(runtime, echo)
    if not data.test_examples:
        raise SentimentError("the test split is empty")
    if not task.solver and cfg.patience is not None and not data.val_examples:
        raise SentimentError("--patience needs a validation split: give --val-fraction above 0 or --val-data")
    cfg = task.cfg = task.settings(data)
    seed_everything(cfg.seed)
    model = task.model(data, runtime, echo)
    if data.rating is not None and not task.head_started:
        start_rating_head(model, task.head, data.rating)
    if data.target == "multilabel" and not task.head_started:
        start_multilabel_head(model, task.head, data.train_labels)
    trainable, total = count_parameters(model)
    setup = None
    if not task.solver:
        model = distributed.wrap(model, runtime.device)
        setup = _training_setup(task, cfg, model, data, runtime, progress, echo)

    name = task.run_name()
    if run is not None:  # resuming: the folder, its config and what predicting needs are there already
        task.check_resume(run, data)
        echo(f"resuming {run.path} after {state['epoch']} complete epoch(s)")
    elif main:
        run = Run.create(cfg.out, name)
        run.save_json(
            "config.json",
            {
                "kind": task.kind,
                "family": cfg.model,
                "config": to_dict(cfg),
                "data_source": data.source,
                "test_data_source": data.test_source,
                "val_data_source": data.val_source,
                "classes": data.classes,
                **_target_record(data),
                **task.record(data),
                "parameters": {"trainable": trainable, "total": total},
                "device": str(runtime.device),
                "precision": runtime.precision,
                "processes": distributed.world_size(),
                "micro_batch": setup.micro_batch if setup is not None else None,
            },
        )
        task.save(run, data)
    else:
        run = Run(Path(cfg.out) / f"(rank {distributed.rank()})")  # keeps metrics in memory, writes nothing
    processes = distributed.world_size()
    echo(
        f"run: {run.path}  ({name}, {trainable:,} trainable of {total:,} parameters, device {runtime.device}, "
        f"{runtime.precision}, {processes} process{'es' if processes > 1 else ''})"
    )

    steps_per_epoch = len(setup.train_batches) if setup is not None else 0
    if main:
        resumed_at = None if state is None else int(state["epoch"]) * steps_per_epoch + _step_of(state) + 1
        tracker.start(run.path, to_dict(cfg), resumed_at)
        if setup is not None:
            setup.after_step = tracking.step_logger(tracker, lambda: setup.optimizer.param_groups[0]["lr"])
    told = after_epoch

    def after_epoch(metrics: dict) -> None:
        tracker.epoch(metrics["epoch"] * steps_per_epoch, metrics)
        if told is not None:
            told(metrics)

    final: dict = {}  # the kept weights' validation and test figures, once training has ended

    def summary(status: str) -> dict:
        headline = run.headline()
        if data.target != "label":  # a rating or multi-label run has no accuracy
            headline = {k: v for k, v in headline.items() if not k.endswith("test_acc")}
        return {
            "model": name,
            "status": status,
            **headline,
            **final,
            "train_examples": data.train_examples,
            "val_examples": data.val_examples,
            "test_examples": data.test_examples,
            "wall_s": round(time.perf_counter() - started, 2),
            **task.summary(data),
            "classes": data.classes,
            **_target_record(data),
            "device": str(runtime.device),
            "precision": runtime.precision,
        }

    try:
        if setup is None:
            _fit_with_solver(run, task, model, data, echo, after_epoch)
        else:
            _fit_into(run, task.kind, model, setup, summary, echo, after_epoch, state, threads)
        digests = distributed.weight_digests(model) if processes > 1 else None  # every process ends the same
        if main:
            final.update(_finish(run, task, cfg, model, data, runtime, setup, progress, echo))
            if setup is not None and not cfg.keep_checkpoint:
                run.drop_checkpoint()
            final["folder_bytes"] = run.size_bytes()
            run.save_json("summary.json", summary("completed"))
            # after summary.json is final: the trackers receive it as written
            last_step = (run.headline()["epochs"] or 0) * steps_per_epoch
            tracker.finish(last_step, final, [run.file(n) for n in ("summary.json", "curves.png", "calibration.json")])
    except BaseException as e:
        tracker.close("interrupted" if isinstance(e, KeyboardInterrupt) else "failed")
        raise
    finally:
        task.close()
    if main:
        tracker.close()
        run.mark_latest(task.kind)
        if digests is not None:
            run.save_json("summary.json", {**run.read_json("summary.json"), "rank_weight_digests": digests})
    return run


def _check_target(cfg) -> None:
    """What a rating or multi-label run cannot be asked for, as one-line errors before any data is read."""
    target = getattr(cfg, "target", "label")
    if getattr(cfg, "select", None) is not None:  # families the loop fits
        select_for(target, cfg.select)
    if target == "rating" and getattr(cfg, "class_weights", "none") != "none":
        raise SentimentError("--class-weights weights classes; a rating run (--target rating) has none")
    if target == "multilabel" and getattr(cfg, "class_weights", "none") != "none":
        raise SentimentError("--class-weights weights the classes of a one-label run; drop it for --multi-label")


def _target_record(data: TaskData) -> dict:
    """What config.json and summary.json say of a rating or multi-label run's target."""
    if data.rating is not None:
        return {"target": "rating", "rating": data.rating.record()}
    return {"target": "multilabel"} if data.target == "multilabel" else {}


def start_multilabel_head(model, head: str | None, train_labels) -> None:
    """A multi-label run's head with each label's bias at the log-odds of its share of the training
    texts, so the first answers are the labels' frequencies rather than 0.5 for all."""
    import numpy as np

    from sentiment import calibration

    weights_of = distributed.unwrap(model)
    share = np.asarray(train_labels, dtype=np.float64).mean(0).clip(0.01, 0.99)
    keys = calibration.head_keys(weights_of.state_dict(), head, len(share))
    if keys is None:
        return
    params = dict(weights_of.named_parameters())
    with torch.no_grad():
        params[keys[1]].copy_(torch.from_numpy(np.log(share / (1 - share))).to(params[keys[1]].dtype))


def start_rating_head(model, head: str | None, rating) -> None:
    """A rating run's head with its bias at the training ratings' mean (its weights as the family
    starts them), so the first answers are near the mean and the output is in the ratings' units."""
    from sentiment import calibration

    weights_of = distributed.unwrap(model)
    keys = calibration.head_keys(weights_of.state_dict(), head, 1)
    if keys is None:
        return
    params = dict(weights_of.named_parameters())
    with torch.no_grad():
        params[keys[1]].fill_(rating.mean)


def objective_of(cfg, data: TaskData):
    """The loop's objective: a classifier's, or a rating run's with its loss."""
    from sentiment.loop import MultiLabelObjective, Objective, RatingObjective

    if data.target == "multilabel":
        return MultiLabelObjective()
    if data.rating is None:
        return Objective()
    return RatingObjective(data.rating, getattr(cfg, "loss", "mse"))


def _step_of(state: dict) -> int:
    """The optimizer steps a checkpoint taken mid-epoch had made in that epoch."""
    position = state.get("position")
    return int(position.get("step", 0)) if isinstance(position, dict) else 0


def _finish(run: Run, task: Task, cfg, model, data: TaskData, runtime: Runtime, setup, progress, echo) -> dict:
    """After training: the kept weights (the best validation epoch's, or the last) scored once on the
    test split, their probabilities calibrated on the validation split (see `calibration`); returns
    the figures summary.json records."""
    from sentiment import calibration

    weights_of = distributed.unwrap(model)
    out: dict = {}
    if setup is not None:
        sel = setup.selection
        out |= {"best_epoch": sel.best_epoch, "stopped_early": sel.stopped_early, "kept": cfg.keep}
        if data.val_examples and cfg.keep == "best" and sel.best_epoch != run.headline()["epochs"]:
            run.load_into(weights_of)  # the best epoch's weights, which are on disk
            echo(f"kept: epoch {sel.best_epoch}, the best on validation ({setup.select})")
    if task.refit(weights_of, data, runtime, echo):
        run.save_weights(weights_of.state_dict(), {"epoch": out.get("best_epoch", 1), "refit": True})
    splits = {"val": task.logits(model, data, "val", runtime, progress=progress)} if data.val_examples else {}
    labels = {s: getattr(data, f"{s}_labels") for s in ("val", "test")}
    head = calibration.head_keys(weights_of.state_dict(), task.head, len(data.classes))
    temperature = None
    if data.target == "multilabel":
        return out | _finish_multilabel(run, task, model, data, runtime, splits, labels, progress, echo)
    if not cfg.calibrate or data.rating is not None:  # a rating has no probabilities to calibrate
        pass
    elif "val" not in splits:
        echo("calibration: no validation split, so probabilities are left as trained")
    elif data.val_examples < calibration.MIN_EXAMPLES:
        echo(f"calibration: {data.val_examples} validation examples are too few to fit a temperature to; "
             f"probabilities are left as trained")  # fmt: skip
    elif head is None:
        echo("calibration: this family's model has no linear head to scale; probabilities are left as trained")
    else:
        val_logits = splits["val"].numpy()
        temperature = calibration.fit_temperature(val_logits, labels["val"].numpy())
        before = calibration.ece(calibration.softmax(val_logits), labels["val"].numpy())
        after = calibration.ece(calibration.softmax(val_logits / temperature), labels["val"].numpy())
        state = dict(weights_of.state_dict())
        for key in head:
            state[key] = state[key] / temperature
        weights_of.load_state_dict(state)
        run.save_weights(state, {"epoch": out.get("best_epoch", 1), "temperature": temperature})
        splits = {"val": splits["val"] / temperature}
        run.save_json(
            calibration.FILE,
            {
                "method": "temperature",
                "temperature": temperature,
                "prior": calibration.PRIOR,
                "maximum_likelihood": calibration.fit_temperature(val_logits, labels["val"].numpy(), prior=None),
                "fitted_on": "validation",
                "examples": data.val_examples,
                "val_ece_before": before,
                "val_ece_after": after,
                "scaled": list(head),
            },
        )
        echo(f"calibration: temperature {temperature:.3f} (validation ECE {before:.3f} -> {after:.3f})")
    task.keep(run, temperature)
    # the test split scored once, by the weights as saved (calibrated), as `evaluate` will score it
    splits["test"] = task.logits(model, data, "test", runtime, progress=progress)
    objective = objective_of(cfg, data)
    for split, logits in splits.items():
        y = labels[split]
        out |= {f"{split}_{k}": v for k, v in objective.split_figures(logits, y).items()}
        if data.rating is None:
            out[f"{split}_ece"] = calibration.ece(logits.softmax(dim=1).numpy(), y.numpy())
    if data.rating is not None:
        echo(
            f"test (once, on the kept weights): loss {out['test_loss']:.4f} MAE {out['test_mae']:.4f} "
            f"RMSE {out['test_rmse']:.4f} Spearman {out['test_spearman']:.4f}"
        )
        return out
    out["temperature"] = temperature
    echo(
        f"test (once, on the kept weights): loss {out['test_loss']:.4f} acc {out['test_acc']:.4f} "
        f"macro-F1 {out['test_f1']:.4f} ECE {out['test_ece']:.4f}"
    )
    return out


def _finish_multilabel(run: Run, task: Task, model, data: TaskData, runtime, splits, labels, progress, echo) -> dict:
    """A multi-label run's end: every label's threshold tuned on the validation split (0.5 without
    one) into thresholds.json, then the test split scored once at those thresholds."""
    from sentiment.targets import DEFAULT_THRESHOLD, THRESHOLDS, multilabel_report, tune_thresholds

    objective = objective_of(task.cfg, data)
    if "val" in splits:
        thresholds = tune_thresholds(splits["val"].sigmoid().numpy(), labels["val"].numpy())
        fitted = "validation"
        echo("thresholds (tuned on validation): " + ", ".join(
            f"{c} {t:.2f}" for c, t in zip(data.classes, thresholds, strict=True)))  # fmt: skip
    else:
        thresholds, fitted = [DEFAULT_THRESHOLD] * len(data.classes), "none"
        echo(f"thresholds: no validation split to tune them on, so every label's is {DEFAULT_THRESHOLD}")
    run.save_json(THRESHOLDS, {"thresholds": dict(zip(data.classes, thresholds, strict=True)), "fitted_on": fitted,
                               "examples": data.val_examples})  # fmt: skip
    splits["test"] = task.logits(model, data, "test", runtime, progress=progress)
    out: dict = {"thresholds": dict(zip(data.classes, thresholds, strict=True))}
    for split, logits in splits.items():
        report = multilabel_report(logits.sigmoid().numpy(), labels[split].numpy(), data.classes, thresholds)
        out |= {f"{split}_loss": objective.mean_loss(logits, labels[split])}
        out |= {f"{split}_{k}": report[k] for k in ("micro_f1", "macro_f1", "exact_match")}
    echo(
        f"test (once, on the kept weights and thresholds): loss {out['test_loss']:.4f} micro-F1 "
        f"{out['test_micro_f1']:.4f} macro-F1 {out['test_macro_f1']:.4f} exact match {out['test_exact_match']:.4f}"
    )
    return out


def _size_threads(cfg, runtime: Runtime, echo: Callable[[str], None]) -> ThreadPlan | None:
    """Size torch's CPU thread pool (see `runtime.plan_threads`) and say so when it is not every core
    or when the machine is already busy."""
    if runtime.device.type != "cpu":
        return None
    plan = plan_threads(cfg.threads)
    torch.set_num_threads(plan.threads)
    if plan.reason == "cores" and plan.threads < plan.cores:
        echo(plan.describe())
    elif plan.reason == "cores" and (load := busy_cores()) >= plan.cores - 0.5:
        echo(
            f"note: this machine's load is {load:.1f} on {plan.cores} cores: other work is using them, so "
            "training will be slower (--threads sets how many this run takes)"
        )
    return plan


REPLAN_S = 20.0  # how often a training looks again at how many others share the cores


class ThreadWatch:
    """Re-sizes torch's thread pool while training runs: at most every `REPLAN_S` seconds (called
    after each optimizer step), another training may have started or ended since it was sized, so a
    training that gave up cores takes them back soon after the other one ends."""

    def __init__(self, plan: ThreadPlan | None, say: Callable[[str], None], every: float = REPLAN_S):
        self.plan, self.say, self.every = plan, say, every
        self.last = time.monotonic()

    def __call__(self, *_step) -> None:
        if self.plan is None or self.plan.reason != "cores" or time.monotonic() - self.last < self.every:
            return
        self.last = time.monotonic()
        new = plan_threads()
        if new.threads != torch.get_num_threads():
            torch.set_num_threads(new.threads)
            self.say(new.describe().replace("threads: ", "threads: now ", 1))
        self.plan = new


def _training_setup(
    task: Task,
    cfg,
    model: torch.nn.Module,
    data: TaskData,
    runtime: Runtime,
    progress: bool,
    echo: Callable[[str], None],
):
    """Param groups, optimizer, schedule and the loop's settings for a gradient-trained family."""
    head = task.head if cfg.head_lr_mult != 1 else None
    model = distributed.unwrap(model)  # the same parameters, under the names the family declares
    groups = param_groups(
        model,
        cfg.lr,
        head=head,
        head_lr_mult=cfg.head_lr_mult,
        weight_decay=cfg.weight_decay,
        no_decay_1d=cfg.no_decay_1d,
        lr_scales=layer_decay_scales(model, cfg.layer_decay, head=task.head) if cfg.layer_decay != 1 else None,
    )
    optimizer = make_optimizer(cfg.optimizer, groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    micro_batch = cfg.micro_batch
    if micro_batch is None and task.example_inputs is not None:
        per_example = step_bytes_per_example(model, task.example_inputs, runtime)
        budget = default_budget(runtime.device)
        micro_batch = plan_micro_batch(cfg.batch_size, per_example, budget)
        parts = len(split_batch(cfg.batch_size, micro_batch))
        echo(
            f"memory: {per_example / 2**20:.0f} MB of activations per example; "
            + (
                f"each batch of {cfg.batch_size} in {parts} parts of at most {micro_batch} (gradient accumulation) "
                if parts > 1
                else f"batches of {cfg.batch_size} in one part "
            )
            + f"to stay within {budget / 2**30:.1f} GB (--micro-batch sets the part size)"
        )
    return TrainingSetup(
        train_batches=data.train,
        test_batches=data.test,
        test_labels=data.test_labels,
        val_batches=data.val if data.val_examples else None,
        val_labels=data.val_labels if data.val_examples else None,
        test_each_epoch=cfg.test_each_epoch,
        patience=cfg.patience,
        select=select_for(getattr(cfg, "target", "label"), cfg.select),
        objective=objective_of(cfg, data),
        keep=cfg.keep,
        class_weights=class_weights(cfg, data, echo),
        optimizer=optimizer,
        scheduler=make_scheduler(
            cfg.schedule,
            optimizer,
            epochs=cfg.epochs,
            step_size=cfg.step_size,
            gamma=cfg.gamma,
            steps_per_epoch=len(data.train),
            warmup=cfg.warmup,
        ),
        scheduler_per_step=cfg.schedule in PER_STEP_SCHEDULES,
        runtime=runtime,
        epochs=cfg.epochs,
        grad_clip=cfg.grad_clip,
        loss_reduction=cfg.loss_reduction,
        evaluate_before=task.evaluate_before,
        progress=progress,
        report=echo,
        micro_batch=micro_batch,
    )


def class_weights(cfg, data: TaskData, echo: Callable[[str], None]) -> torch.Tensor | None:
    """`--class-weights auto`: each class's loss weighted by n / (classes x its count in training)
    (scikit-learn's "balanced"), so every class weighs as much in total; None for `none`."""
    if cfg.class_weights == "none":
        return None
    import numpy as np

    counts = np.bincount(np.asarray(data.train_labels), minlength=len(data.classes)).astype(np.float64)
    weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
    echo("class weights: " + ", ".join(f"{c} {w:.3f}" for c, w in zip(data.classes, weights, strict=True)))
    return torch.tensor(weights, dtype=torch.float32)


def _fit_with_solver(
    run: Run,
    task: Task,
    model: torch.nn.Module,
    data: TaskData,
    echo: Callable[[str], None],
    after_epoch: Callable[[dict], None] | None,
) -> None:
    """A family with its own solver: one fit, recorded as one epoch (weights, metrics, curves)."""
    metrics = task.fit(model, data, echo)
    if not distributed.is_main():
        return
    run.save_weights(model.state_dict(), {"epoch": 1})
    run.log_epoch(metrics)
    plot_runs([run], run.file("curves.png"), title=run.path.name)
    if after_epoch is not None:
        after_epoch(metrics)


def resume(
    run_path: str | Path,
    *,
    data: str | None = None,
    test_data: str | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    after_epoch: Callable[[dict], None] | None = None,
) -> Run:
    """Continue an interrupted run from its `checkpoint.pt`, with the config it was started with, on
    the data it recorded (`data` / `test_data` name where that data is now, if it moved)."""
    from sentiment import registry

    run = Run.open_for_resume(run_path)
    meta = run.read_json("config.json")
    kind = meta.get("kind")
    try:
        family = registry.get(registry.family_of_run(meta, kind), kind=kind) if kind in registry.DEFAULTS else None
    except SentimentError:
        family = None
    if family is None:
        raise SentimentError(f"{run.path} is not a run this version can resume (kind {kind!r})")
    values = saved(family.settings, meta["config"])
    cfg = apply(family.settings(model=family.name), values, str(run.file("config.json")))
    where = {
        "data": data or meta.get("data_source"),
        "test_data": test_data or meta.get("test_data_source"),
        "val_data": meta.get("val_data_source"),
        "encoder": meta.get("encoder_source"),
        # the part size the run chose from memory, so the continued run splits its batches the same way
        "micro_batch": cfg.micro_batch or meta.get("micro_batch"),
    }
    own = {f.name for f in dataclasses.fields(cfg)}
    cfg = apply(cfg, {k: v for k, v in where.items() if v is not None and k in own}, "--resume")
    state = run.load_checkpoint()
    if int(state["epoch"]) >= cfg.epochs and not state.get("position"):
        raise SentimentError(f"{run.path} already finished its {cfg.epochs} epochs; nothing to resume")
    if (state.get("selection") or {}).get("stopped_early"):
        raise SentimentError(f"{run.path} stopped early after {state['epoch']} epochs (--patience); nothing to resume")
    return fine_tune(cfg, progress=progress, echo=echo, after_epoch=after_epoch, run=run, state=state)


def _fit_into(
    run: Run,
    kind: str,
    model: torch.nn.Module,
    setup: TrainingSetup,
    summary: Callable[[str], dict],
    echo: Callable[[str], None],
    after_epoch: Callable[[dict], None] | None,
    state: dict | None,
    threads: ThreadPlan | None = None,
) -> None:
    """`fit` with the run folder as its record: after every trained epoch the weights, metrics,
    curves, summary, `latest` link and a resumable `checkpoint.pt` are updated, so an interrupt
    keeps the last completed epoch; SIGINT/SIGTERM also checkpoint the batch in progress. In a
    distributed run only rank 0 writes."""
    main = distributed.is_main()
    weights_of = distributed.unwrap(model)

    def on_epoch_end(metrics: dict) -> None:
        trained = metrics["epoch"] >= 1  # epoch 0 is an evaluation before training: no new weights
        kept = setup.keep == "last" or metrics.get("best_epoch") == metrics["epoch"]
        if main and trained and kept:  # weights first: metrics never name an epoch whose weights are not on disk
            run.save_weights(weights_of.state_dict(), {"epoch": metrics["epoch"]})
        if main:
            run.log_epoch(metrics)
        else:
            run.metrics.append(metrics)
        if main and trained:
            plot_runs([run], run.file("curves.png"), title=run.path.name)
            run.save_json("summary.json", summary("running"))
            run.mark_latest(kind)
        if trained and after_epoch is not None:
            after_epoch(metrics)

    def save_checkpoint(training_state: dict) -> None:
        if main:
            run.save_checkpoint(training_state)

    if threads is not None:
        from tqdm.auto import tqdm

        watch, logged = ThreadWatch(threads, tqdm.write if setup.progress else echo), setup.after_step

        def after_step(step: int, loss: float) -> None:
            watch()
            if logged is not None:
                logged(step, loss)

        setup.after_step = after_step
    try:
        fit(model, setup, on_epoch_end=on_epoch_end, save_checkpoint=save_checkpoint, resume=state)
    except StopRequested as e:
        if main:
            run.save_json("summary.json", summary("interrupted"))
            done = run.headline()["epochs"]
            where = f"step {e.position.step} of epoch {done + 1}" if e.position.step else f"the end of epoch {done}"
            echo(f"interrupted: checkpoint at {where}; continue with: sentiment train --resume {run.path}")
        raise KeyboardInterrupt from None
    except KeyboardInterrupt:
        if main:
            done = run.headline()["epochs"]
            if done:
                run.save_json("summary.json", summary("interrupted"))
                echo(f"interrupted: {run.path} keeps the weights of epoch {done}")
            else:
                echo(f"interrupted before the first epoch ended: {run.path} holds no weights")
        raise
    if main:
        run.save_json("summary.json", summary("completed"))
