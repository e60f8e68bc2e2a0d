"""Two CPU processes (torchrun, gloo) train one run: the same weights on both, the accuracy of a
single process with the same global batch."""

import json
import os
import subprocess
import sys

from cli_helpers import assert_user_error, run_cli, three_class_csv


def _train(csv, out, *extra):
    args = ["train", "--model", "textcnn", "--data", str(csv), "--min-freq", "1", "--epochs", "3"]
    args += ["--device", "cpu", "--precision", "fp32", "--quiet", "--out", str(out), "--seed", "2", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "sentiment", *args], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((out / "latest" / "summary.json").read_text()), proc


def test_two_processes_train_one_run(tmp_path):
    csv = three_class_csv(tmp_path / "three.csv", n=240)
    two, proc = _train(csv, tmp_path / "ddp", "--nproc", "2", "--batch-size", "8")
    digests = two["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    config = json.loads((tmp_path / "ddp" / "latest" / "config.json").read_text())
    assert config["processes"] == 2
    assert proc.stdout.count("done: test accuracy") == 1  # only rank 0 reports and writes
    one, _ = _train(csv, tmp_path / "single", "--batch-size", "16")
    assert two["epochs"] == one["epochs"] == 3
    assert two["train_examples"] == one["train_examples"]
    assert abs(two["test_acc"] - one["test_acc"]) <= 0.1, (two["test_acc"], one["test_acc"])
    assert two["test_acc"] > 0.6  # three classes: chance is 0.33


def test_nproc_must_be_positive(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "train", "--nproc", "0")
    assert_user_error(code, err, "--nproc must be at least 1")


def test_two_processes_fine_tune_a_transformer(tmp_path):
    """Every encoder parameter the classifier uses gets a gradient on both ranks (DDP refuses unused
    ones, such as a BERT pooler the classifier never reads), also when each rank accumulates its
    batch over micro-batches (the gradients are averaged across ranks once, with the last part)."""
    from encoders import tiny_encoder

    csv = three_class_csv(tmp_path / "three.csv", n=96)
    encoder = tiny_encoder(tmp_path / "encoder")
    args = ["train", "--model", "transformer", "--encoder", str(encoder), "--data", str(csv), "--epochs", "1"]
    args += ["--max-len", "32", "--batch-size", "8", "--micro-batch", "3", "--device", "cpu", "--quiet"]
    args += ["--out", str(tmp_path / "ddp")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "sentiment", *args, "--nproc", "2"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    digests = json.loads((tmp_path / "ddp" / "latest" / "summary.json").read_text())["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert json.loads((tmp_path / "ddp" / "latest" / "config.json").read_text())["micro_batch"] == 3


def test_families_fitted_in_one_go_refuse_nproc(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv = three_class_csv(tmp_path / "three.csv", n=30)
    code, _, err = run_cli(capsys, "train", "--model", "linear", "--data", csv, "--nproc", "2")
    assert_user_error(code, err, "drop --nproc")
    code, _, err = run_cli(capsys, "train", "--nproc", "2", "--epochs", "0")
    assert_user_error(code, err, "epochs must be at least 1")


def test_a_finished_worker_leaves_with_success_and_its_output():
    """A worker rank ends without interpreter teardown, but what it wrote to a pipe still arrives and
    the exit status is 0 (torchrun counts any other as a failed run)."""
    code = "from sentiment import distributed\nprint('written', end='')\ndistributed.exit_worker()\nprint('never')"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # a pipe's output is then buffered
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert (proc.returncode, proc.stdout) == (0, "written"), proc.stderr
