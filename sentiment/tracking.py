"""Training metrics where practitioners watch runs: TensorBoard event files in every run folder
(`tensorboard --logdir runs` shows them all), and an MLflow tracking server on request
(`--log mlflow`, wherever `MLFLOW_TRACKING_URI` points).

Both get the same record: the config (as text / params), the training loss and learning rate of
every optimizer step, every epoch's figures (train, validation, test where scored), and the final
figures of the kept weights. The x-axis is the optimizer step; an epoch's figures sit at the step
that ended it. `metrics.jsonl` stays the record `sentiment` itself reads; these are for looking.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from sentiment.config import LOGS  # noqa: F401 - the choices of --log
from sentiment.errors import SentimentError
from sentiment.fsutil import atomic_write_json

MLFLOW_FILE = "mlflow.json"  # the MLflow run a run folder logs to, so --resume continues it
SPLITS = ("train", "val", "test")


def tag(key: str) -> str:
    """A metrics.jsonl key as a grouped TensorBoard tag: val_acc -> val/acc, wall_s -> run/wall_s."""
    split, _, rest = key.partition("_")
    return f"{split}/{rest}" if split in SPLITS and rest else f"run/{key}"


def numbers(metrics: dict) -> dict[str, float]:
    """The entries that are figures (not flags, names or missing values)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and v == v and k != "epoch"
    }


class Tracker:
    """Where a run's figures go besides its folder; this one sends them nowhere."""

    def start(self, folder: Path, config: dict, resumed_at: int | None = None) -> None:
        """Begin logging the run in `folder` (`resumed_at`: the first step of a resumed run; what an
        interrupted one logged from there on is dropped)."""

    def step(self, step: int, loss: float, lr: float) -> None: ...

    def epoch(self, step: int, metrics: dict) -> None: ...

    def finish(self, step: int, figures: dict, files: list[Path]) -> None: ...

    def close(self, status: str = "completed") -> None: ...


class Trackers(Tracker):
    """Several trackers as one."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def start(self, folder, config, resumed_at=None):
        for t in self.trackers:
            t.start(folder, config, resumed_at)

    def step(self, step, loss, lr):
        for t in self.trackers:
            t.step(step, loss, lr)

    def epoch(self, step, metrics):
        for t in self.trackers:
            t.epoch(step, metrics)

    def finish(self, step, figures, files):
        for t in self.trackers:
            t.finish(step, figures, files)

    def close(self, status="completed"):
        for t in self.trackers:
            t.close(status)


class TensorBoard(Tracker):
    """Event files in the run folder. A resumed run starts a new file whose `purge_step` tells
    TensorBoard to drop what the interrupted one wrote after the checkpoint, so the curves join up."""

    def __init__(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise SentimentError(
                "TensorBoard logs need the tensorboard package (pip install tensorboard); --log none trains without"
            ) from None
        self.make_writer, self.writer = SummaryWriter, None

    def start(self, folder, config, resumed_at=None):
        self.writer = self.make_writer(log_dir=str(folder), purge_step=resumed_at, flush_secs=30)
        text = json.dumps(config, indent=2, default=str)
        self.writer.add_text("config", "    " + text.replace("\n", "\n    "), 0)  # indented: shown as code

    def step(self, step, loss, lr):
        self.writer.add_scalar("train/loss_step", loss, step)
        self.writer.add_scalar("train/lr", lr, step)

    def epoch(self, step, metrics):
        for key, value in numbers(metrics).items():
            if key != "lr":
                self.writer.add_scalar(tag(key), value, step)
        if "epoch" in metrics:
            self.writer.add_scalar("run/epoch", metrics["epoch"], step)

    def finish(self, step, figures, files):
        for key, value in numbers(figures).items():
            self.writer.add_scalar(f"final/{key}", value, step)
        self.writer.add_text("summary", "    " + json.dumps(figures, indent=2).replace("\n", "\n    "), step)

    def close(self, status="completed"):
        if self.writer is not None:
            self.writer.close()


class MLflow(Tracker):
    """One MLflow run per run folder, in the experiment `MLFLOW_EXPERIMENT_NAME` (default
    "sentiment") at `MLFLOW_TRACKING_URI` (default MLflow's own). Step losses are sent in batches
    (every `every` seconds and at each epoch's end), so a remote server costs no time per step."""

    def __init__(self, every: float = 10.0):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise SentimentError(
                "--log mlflow needs the mlflow package: pip install 'sentiment[tracking]' (or mlflow-skinny)"
            ) from None
        self.experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "sentiment")
        with _said_in_one_line():  # before any training: a tracking server that cannot be reached costs nothing
            self.client = MlflowClient()
            found = self.client.get_experiment_by_name(self.experiment)
            self.experiment_id = found.experiment_id if found else self.client.create_experiment(self.experiment)
        self.every, self.pending, self.last, self.run_id = every, [], time.monotonic(), None

    def start(self, folder, config, resumed_at=None):
        from mlflow.entities import Param

        saved = folder / MLFLOW_FILE
        if resumed_at is not None and saved.is_file():  # resumed: the run exists with its params
            self.run_id = json.loads(saved.read_text())["run_id"]
            self.client.update_run(self.run_id, "RUNNING")
            return
        tags = {"sentiment.run_folder": str(folder.resolve())}
        self.run_id = self.client.create_run(self.experiment_id, run_name=folder.name, tags=tags).info.run_id
        where = {"run_id": self.run_id, "experiment": self.experiment, "tracking_uri": self.client.tracking_uri}
        atomic_write_json(saved, where)
        params = [Param(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in sorted(config.items())]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params a call
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def _metric(self, key: str, value: float, step: int):
        from mlflow.entities import Metric

        return Metric(key, value, int(time.time() * 1000), step)

    def _flush(self) -> None:
        for i in range(0, len(self.pending), 1000):
            self.client.log_batch(self.run_id, metrics=self.pending[i : i + 1000])
        self.pending, self.last = [], time.monotonic()

    def step(self, step, loss, lr):
        self.pending += [self._metric("train_loss_step", loss, step), self._metric("lr", lr, step)]
        if time.monotonic() - self.last >= self.every:
            self._flush()

    def epoch(self, step, metrics):
        self.pending += [self._metric(k, v, step) for k, v in numbers(metrics).items() if k != "lr"]
        self._flush()

    def finish(self, step, figures, files):
        self.pending += [self._metric(f"final_{k}", v, step) for k, v in numbers(figures).items()]
        self._flush()
        for f in files:
            if f.is_file():
                self.client.log_artifact(self.run_id, str(f))

    def close(self, status="completed"):
        if self.run_id is None:
            return
        if self.pending:
            self._flush()
        state = {"completed": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")
        self.client.set_terminated(self.run_id, state)


def open_trackers(log: str) -> Tracker:
    """The trackers `--log` asks for: tensorboard (event files in the run folder), mlflow (those and
    an MLflow run) or none. Made before the run folder, so that a missing package or a tracking
    server that cannot be reached is one line of error before anything is written."""
    if log == "none":
        return Tracker()
    trackers: list[Tracker] = [TensorBoard()]
    if log == "mlflow":
        trackers.append(MLflow())
    return Trackers(trackers)


@contextlib.contextmanager
def _said_in_one_line():
    """MLflow's errors (a store it refuses, a server it cannot reach) as one line of SentimentError."""
    try:
        yield
    except SentimentError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the tracking client raises means the same to the user
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SentimentError(f"--log mlflow: {first[:800]}") from None


def step_logger(tracker: Tracker, lr: Callable[[], float]) -> Callable[[int, float], None]:
    """The loop's `after_step` hook that logs each step's loss and learning rate."""

    def log(step: int, loss: float) -> None:
        tracker.step(step, loss, lr())

    return log
