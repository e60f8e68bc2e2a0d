"""Exact resume: a run stopped by SIGINT/SIGTERM (after an epoch, or mid-epoch) and continued with
`sentiment train --resume RUN` ends with the weights of a run that was never stopped."""

import json
import os
import re
import signal

import pytest
import torch
from safetensors.torch import load_file

from cli_helpers import assert_user_error, logged, run_cli, three_class_csv
from sentiment.runs import Run
from sentiment.text import batching as pipeline

EPOCHS = 3


def _train_args(csv, model):
    return [
        "train",
        "--model",
        model,
        "--data",
        csv,
        "--min-freq",
        "1",
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        "8",
        "--seed",
        "5",
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--patience",  # the validation record (best epoch, epochs since) is resumed too
        "3",
        "--quiet",
    ]


def _signal_at(monkeypatch, batch: int, sig=signal.SIGINT):
    """Send `sig` to this process while training batch number `batch` (counted over all epochs)."""
    real_iter = pipeline.TextBatches.__iter__
    seen = [0]

    def counting_iter(self):
        for item in real_iter(self):
            if self.sampler.shuffle:  # training batches only
                seen[0] += 1
                if seen[0] == batch:
                    os.kill(os.getpid(), sig)
            yield item

    monkeypatch.setattr(pipeline.TextBatches, "__iter__", counting_iter)


def _weights(run_dir):
    return load_file(str(Run.open(run_dir).file("model.safetensors")))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    return three_class_csv(root / "three.csv", n=60)  # 48 train reviews: 6 batches of 8 an epoch


@pytest.mark.parametrize(
    ("model", "stop_batch", "sig"),
    [
        ("textcnn", 6, signal.SIGINT),  # the last batch of epoch 1: stops after the epoch
        ("textcnn", 9, signal.SIGTERM),  # batch 3 of epoch 2: stops mid-epoch
        ("birnn", 6, signal.SIGTERM),
        ("birnn", 8, signal.SIGINT),
    ],
)
def test_stopped_and_resumed_equals_uninterrupted(model, stop_batch, sig, data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *_train_args(data, model), "--out", "whole")
    assert code == 0, err
    whole = _weights("whole/latest")

    with monkeypatch.context() as mp:
        _signal_at(mp, stop_batch, sig)
        code, out, err = run_cli(capsys, *_train_args(data, model), "--out", "parts")
    assert code == 130 and "Traceback" not in err, err
    assert "continue with: sentiment train --resume" in out
    run_dir = next(p for p in (tmp_path / "parts").iterdir() if p.is_dir() and not p.is_symlink())
    assert (run_dir / "checkpoint.pt").is_file()
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    assert summary.get("status", "interrupted") == "interrupted"
    assert not list(run_dir.glob("*.part")) and not list(run_dir.glob(".*"))

    code, out, err = run_cli(capsys, "train", "--resume", run_dir, "--quiet")
    assert code == 0, err
    assert "resuming" in out
    resumed = _weights(run_dir)
    assert resumed.keys() == whole.keys()
    assert all(torch.equal(resumed[k], whole[k]) for k in whole), "resumed weights differ from the uninterrupted run"
    metrics = Run.open(run_dir).metrics
    assert [m["epoch"] for m in metrics] == list(range(1, EPOCHS + 1))
    whole_metrics = Run.open("whole/latest").metrics
    assert [m["val_acc"] for m in metrics] == [m["val_acc"] for m in whole_metrics]
    assert [m["best_epoch"] for m in metrics] == [m["best_epoch"] for m in whole_metrics]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    # TensorBoard: the resumed run's step losses join up with no step twice, as the whole run's
    assert logged(run_dir, "train/loss_step") == logged(Run.open("whole/latest").path, "train/loss_step")


def test_resume_refuses_what_it_cannot_continue(data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "nowhere", "--quiet")
    assert_user_error(code, err, "not a run folder")
    code, out, err = run_cli(capsys, *_train_args(data, "textcnn"), "--epochs", "1", "--out", "lean")
    assert code == 0, err
    lean = Run.open("lean/latest")
    assert not lean.file("checkpoint.pt").exists(), "a completed run drops its optimizer state"
    summary = lean.read_json("summary.json")
    assert summary["folder_bytes"] == pytest.approx(lean.size_bytes(), rel=0.05)
    assert re.search(r"run folder \S+ \(\d+(\.\d)? [kM]B\)", out)
    code, _, err = run_cli(capsys, "train", "--resume", lean.path, "--quiet")
    assert_user_error(code, err, "completed")
    code, _, err = run_cli(capsys, *_train_args(data, "textcnn"), "--epochs", "1", "--out", "done", "--keep-checkpoint")
    assert code == 0, err
    finished = Run.open("done/latest").path
    code, _, err = run_cli(capsys, "train", "--resume", finished, "--quiet")
    assert_user_error(code, err, "already finished")
    code, _, err = run_cli(capsys, "train", "--resume", finished, "--lr", "0.5")
    assert_user_error(code, err, "drop --lr")
    (finished / "checkpoint.pt").write_bytes(b"\x80\x02garbage")
    code, _, err = run_cli(capsys, "train", "--resume", finished, "--quiet")
    assert_user_error(code, err, "checkpoint.pt is damaged")
    (finished / "checkpoint.pt").unlink()
    code, _, err = run_cli(capsys, "train", "--resume", finished, "--quiet")
    assert_user_error(code, err, "completed", "nothing to resume")
    summary = json.loads((finished / "summary.json").read_text())
    (finished / "summary.json").write_text(json.dumps(summary | {"status": "interrupted"}))
    code, _, err = run_cli(capsys, "train", "--resume", finished, "--quiet")
    assert_user_error(code, err, "checkpoint.pt is missing")


def test_non_finite_loss_names_the_step_and_keeps_the_last_good_checkpoint(data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import sentiment.loop as train_mod

    real = train_mod.nn.CrossEntropyLoss
    calls = [0]

    class PoisonedLoss(real):
        def forward(self, logits, labels):
            calls[0] += 1
            loss = super().forward(logits, labels)
            return loss * float("nan") if calls[0] == 9 else loss  # step 3 of epoch 2

    monkeypatch.setattr(train_mod.nn, "CrossEntropyLoss", PoisonedLoss)
    code, _, err = run_cli(capsys, *_train_args(data, "textcnn"), "--out", "nan")
    assert_user_error(code, err, "the loss became nan at step 3 of epoch 2/3")
    run = Run.open("nan/latest")
    assert [m["epoch"] for m in run.metrics] == [1]
    state = torch.load(run.file("checkpoint.pt"), weights_only=True)
    assert state["epoch"] == 1 and state["position"] is None
