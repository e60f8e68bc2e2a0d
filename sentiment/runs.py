"""A run folder: everything that shaped a model, and everything it produced.

    runs/<YYYYmmdd-HHMMSS>-<model>/
        config.json        the full effective config, plus what the data decided (classes, vocab size)
        vocab.json         the vocabulary (text runs)
        model.safetensors  the weights kept: the best validation epoch's (or the last, --keep last),
                           calibrated at the end (see calibration.py)
        calibration.json   the temperature fitted on the validation split
        metrics.jsonl      one line per epoch: train and validation figures
        curves.png         loss and accuracy per epoch, train vs validation
        events.out.tfevents.*  TensorBoard's record (see tracking.py); mlflow.json with --log mlflow
        summary.json       the headline figures
        checkpoint.pt      weights, optimizer, schedule, random states and batch position (--resume);
                           removed when the run completes unless --keep-checkpoint
    runs/latest -> the newest run

`predict` and `evaluate` need nothing but this folder. Every write is atomic. This module only
reads and writes the folder; `recipe.py` decides what goes into it and when.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from sentiment.errors import SentimentError
from sentiment.fsutil import atomic_path, atomic_write_json, atomic_write_text, split_lines

LATEST = "latest"
REQUIRED = ("config.json", "model.safetensors")


class Run:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.metrics: list[dict] = []

    # -- creating -------------------------------------------------------------------------------
    @classmethod
    def create(cls, out: str | os.PathLike, model: str) -> Run:
        root = Path(out)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(1, 1000):
            name = f"{stamp}-{model}" if n == 1 else f"{stamp}-{model}-{n}"
            try:
                (root / name).mkdir(parents=True)
                return cls(root / name)
            except FileExistsError:
                continue
        raise SentimentError(f"could not create a new run folder in {root}")

    def file(self, name: str) -> Path:
        return self.path / name

    def save_json(self, name: str, obj) -> None:
        atomic_write_json(self.file(name), obj)

    def log_epoch(self, metrics: dict) -> None:
        """Append one epoch's metrics; the whole file is rewritten atomically."""
        self.metrics.append(metrics)
        atomic_write_text(self.file("metrics.jsonl"), "".join(json.dumps(m) + "\n" for m in self.metrics))

    def headline(self) -> dict:
        """Headline numbers over the training epochs so far (an epoch-0 line, if any, only sets
        `initial_val_acc` / `initial_test_acc`). `test_acc` here is per epoch (`--test-each-epoch`);
        a finished run's summary.json replaces it with the kept weights' one test score."""
        trained = [m for m in self.metrics if m.get("epoch", 0) >= 1]
        tested = [m["test_acc"] for m in trained if m.get("test_acc") is not None]
        out = {
            "epochs": len(trained),
            "test_acc": tested[-1] if tested else None,
            "best_test_acc": max(tested) if tested else None,
            "train_examples_per_s": _mean(m.get("train_examples_per_s") for m in trained),
            "epoch_s": _mean(m.get("train_s") for m in trained),
        }
        initial = [m for m in self.metrics if m.get("epoch") == 0]
        for split in ("val", "test"):
            if initial and initial[0].get(f"{split}_acc") is not None:
                out[f"initial_{split}_acc"] = initial[0][f"{split}_acc"]
        return out

    def save_weights(self, state_dict: dict, metadata: dict | None = None) -> None:
        from safetensors.torch import save_file

        tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
        with atomic_path(self.file("model.safetensors")) as tmp:
            save_file(tensors, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})

    def load_into(self, model, state: dict | None = None) -> None:
        """Load this run's weights into `model`, which must have been built from the run's config."""
        state = self.load_weights() if state is None else state
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise SentimentError(f"{self.file('model.safetensors')} does not fit the run's config: {first}") from None

    # -- resuming -------------------------------------------------------------------------------
    CHECKPOINT = "checkpoint.pt"

    def save_checkpoint(self, state: dict) -> None:
        import torch

        state = {**state, "metrics": list(self.metrics)}
        with atomic_path(self.file(self.CHECKPOINT)) as tmp:
            torch.save(state, tmp)

    def drop_checkpoint(self) -> None:
        """Remove the resumable state: a completed run needs only its weights."""
        with contextlib.suppress(FileNotFoundError):
            self.file(self.CHECKPOINT).unlink()

    def size_bytes(self) -> int:
        """What the folder's files take on disk, in bytes."""
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file() and not p.is_symlink())

    def load_checkpoint(self) -> dict:
        """The saved training state, its metrics restored into this run; a clear error if it is
        missing or damaged."""
        import torch

        path = self.file(self.CHECKPOINT)
        if not path.is_file():
            raise SentimentError(f"{self.path} has no {self.CHECKPOINT} to resume from (runs save one every epoch)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            metrics = list(state["metrics"])
            int(state["epoch"])
        except Exception as e:  # noqa: BLE001 - any failure to read it means the same thing to the user
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise SentimentError(f"{path} is damaged or not a checkpoint ({first}); it cannot be resumed") from None
        self.metrics = metrics
        return state

    def mark_latest(self, kind: str | None = None) -> None:
        """Point `<out>/latest`, and `<out>/latest-<kind>` (text, image) when given, at this run."""
        for name in (LATEST, f"{LATEST}-{kind}") if kind else (LATEST,):
            self._link(name)

    def _link(self, name: str) -> None:
        """A relative symlink `<out>/<name>` to this run, swapped in atomically."""
        link = self.path.parent / name
        tmp = self.path.parent / f".{name}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        try:
            os.symlink(self.path.name, tmp, target_is_directory=True)
            os.replace(tmp, link)
        except OSError:  # no symlinks here: a text file naming the run instead
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            if not link.is_dir():
                atomic_write_text(link, self.path.name + "\n")

    # -- reading --------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike | None = None, *, default_root: str = "runs", kind: str | None = None) -> Run:
        """An existing run folder; `None` means the newest: `<default_root>/latest-<kind>` when a kind
        (text, image) is asked for and such a link exists, else `<default_root>/latest`."""
        if path is None:
            link = Path(default_root) / LATEST
            of_kind = Path(default_root) / f"{LATEST}-{kind}"
            if kind and (of_kind.is_dir() or of_kind.is_file()):
                link = of_kind
            if link.is_file():
                path = link.parent / link.read_text().strip()
            elif link.is_dir():
                path = link
            else:
                raise SentimentError(
                    f"no run found at {link}: train one first (sentiment train) or name one with --run"
                )
            found = cls(path).read_json("config.json").get("kind") if kind and link.name == LATEST else kind
            if found != kind:  # runs of this version have latest-<kind>; an older folder may not
                raise SentimentError(f"the newest run in {default_root}/ is not a {kind} run; name one with --run")
        path = Path(path)
        if path.is_symlink():  # `latest`: name the run itself in everything that shows it
            path = path.parent / os.readlink(path)
        if not path.is_dir():
            raise SentimentError(f"{path} is not a run folder (no such folder)")
        missing = [n for n in REQUIRED if not (path / n).is_file()]
        if missing:
            raise SentimentError(f"{path} is not a complete run folder: {', '.join(missing)} missing")
        run = cls(path)
        if run.file("metrics.jsonl").is_file():
            run.metrics = run.read_metrics()
        return run

    @classmethod
    def open_for_resume(cls, path: str | os.PathLike) -> Run:
        """A run folder to continue: its config and checkpoint must be there (weights may not be yet)."""
        path = Path(path)
        if not path.is_dir():
            raise SentimentError(f"{path} is not a run folder (no such folder)")
        if not (path / "config.json").is_file():
            raise SentimentError(f"{path} cannot be resumed: config.json is missing")
        if not (path / cls.CHECKPOINT).is_file():
            try:
                status = cls(path).read_json("summary.json").get("status")
                looped = "keep_checkpoint" in cls(path).read_json("config.json").get("config", {})
            except SentimentError:
                status = looped = None
            if status == "completed":
                why = f" (a completed run keeps no {cls.CHECKPOINT} unless trained with --keep-checkpoint)"
                raise SentimentError(f"{path} completed; nothing to resume{why if looped else ''}")
            raise SentimentError(f"{path} cannot be resumed: {cls.CHECKPOINT} is missing")
        return cls(path)

    def read_json(self, name: str) -> dict:
        p = self.file(name)
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SentimentError(f"{p} is missing; the run folder is incomplete") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise SentimentError(f"{p} is not valid JSON ({e}); the run folder is damaged") from None

    def read_meta(self, kind: str, hint: str = "") -> dict:
        """`config.json` of a run that must be of this `kind` ("text" or "image"); `hint` ends the error."""
        meta = self.read_json("config.json")
        if meta.get("kind") != kind:
            article = "an" if kind[0] in "aeiou" else "a"
            raise SentimentError(f"{self.path} is not {article} {kind} run (kind {meta.get('kind')!r}){hint}")
        return meta

    def read_metrics(self) -> list[dict]:
        p = self.file("metrics.jsonl")
        try:
            return [json.loads(line) for line in split_lines(p.read_text(encoding="utf-8")) if line.strip()]
        except FileNotFoundError:
            return []
        except ValueError as e:
            raise SentimentError(f"{p} is not valid JSON Lines ({e})") from None

    def load_weights(self, framework: str = "pt") -> dict:
        """The weights as torch tensors (`pt`) or numpy arrays (`numpy`, which needs no torch import)."""
        from safetensors import SafetensorError, safe_open

        p = self.file("model.safetensors")
        try:
            with safe_open(str(p), framework=framework) as f:
                return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        except (SafetensorError, OSError, ValueError) as e:
            raise SentimentError(f"{p} is not a readable safetensors file ({e}); the run folder is damaged") from None


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 2) if values else None
