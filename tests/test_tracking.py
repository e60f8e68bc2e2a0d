"""Training figures for TensorBoard (every run) and MLflow (`--log mlflow`, a local file store)."""

import json
import sys
from pathlib import Path

import pytest

from cli_helpers import assert_user_error, logged, run_cli, three_class_csv
from sentiment.runs import Run

TRAIN = ["train", "--model", "textcnn", "--min-freq", "1", "--epochs", "2", "--batch-size", "8", "--quiet"]


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    return three_class_csv(tmp_path_factory.mktemp("tracking") / "three.csv", n=90)


def _text(folder, tag: str) -> str:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    (tensor,) = events.Tensors(tag)
    return tensor.tensor_proto.string_val[0].decode()


def test_every_run_writes_tensorboard_events(csv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *TRAIN, "--data", csv)
    assert code == 0, err
    run = Run.open("runs/latest")
    assert list(run.path.glob("events.out.tfevents.*"))
    steps = [s for s, _ in logged(run.path, "train/loss_step")]
    per_epoch = len(steps) // 2
    assert steps == list(range(1, 2 * per_epoch + 1)) and per_epoch == -(-run.metrics[0]["train_examples"] // 8)
    assert [v for _, v in logged(run.path, "train/lr")] == pytest.approx([0.001] * len(steps))
    # each epoch's figures at the step that ended it, equal to metrics.jsonl's
    assert logged(run.path, "val/acc") == [(per_epoch * m["epoch"], pytest.approx(m["val_acc"])) for m in run.metrics]
    assert logged(run.path, "train/loss")[-1][1] == pytest.approx(run.metrics[-1]["train_loss"])
    summary = run.read_json("summary.json")
    assert logged(run.path, "final/test_acc") == [(2 * per_epoch, pytest.approx(summary["test_acc"]))]
    assert '"model": "textcnn"' in _text(run.path, "config/text_summary")

    code, _, err = run_cli(capsys, "train", "--model", "linear", "--data", csv, "--quiet", "--out", "lin")
    assert code == 0, err
    linear = Run.open("lin/latest")
    assert logged(linear.path, "final/test_acc")[0][1] == pytest.approx(linear.read_json("summary.json")["test_acc"])

    code, _, err = run_cli(capsys, *TRAIN, "--data", csv, "--log", "none", "--out", "quiet")
    assert code == 0, err
    assert not list(Run.open("quiet/latest").path.glob("events.out.tfevents.*"))


def test_mlflow_gets_the_same_figures(csv, tmp_path, capsys, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the local file store the test reads back
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "reviews")
    code, _, err = run_cli(capsys, *TRAIN, "--data", csv, "--log", "mlflow")
    assert code == 0, err
    run = Run.open("runs/latest")
    run_id = run.read_json("mlflow.json")["run_id"]
    client = MlflowClient()
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == run.path.name
    assert got.info.experiment_id == client.get_experiment_by_name("reviews").experiment_id
    assert json.loads(got.data.params["lr"]) == 0.001 and got.data.params["model"] == "textcnn"
    history = client.get_metric_history(run_id, "train_loss_step")
    assert [(m.step, pytest.approx(m.value)) for m in sorted(history, key=lambda m: m.step)] == logged(
        run.path, "train/loss_step"
    )
    assert [m.value for m in client.get_metric_history(run_id, "val_acc")] == pytest.approx(
        [m["val_acc"] for m in run.metrics]
    )
    assert got.data.metrics["final_test_acc"] == pytest.approx(run.read_json("summary.json")["test_acc"])
    assert {a.path for a in client.list_artifacts(run_id)} >= {"summary.json", "curves.png"}
    sent = json.loads(Path(client.download_artifacts(run_id, "summary.json", str(tmp_path))).read_text())
    assert sent["status"] == "completed" and sent == run.read_json("summary.json")


def test_mlflow_that_is_missing_or_refuses_is_one_line_before_any_run(csv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with monkeypatch.context() as mp:
        mp.setitem(sys.modules, "mlflow", None)
        mp.setitem(sys.modules, "mlflow.tracking", None)
        code, _, err = run_cli(capsys, *TRAIN, "--data", csv, "--log", "mlflow")
    assert_user_error(code, err, "--log mlflow needs the mlflow package")
    assert not (tmp_path / "runs").exists()
    if "mlflow" not in sys.modules:
        pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unknown-scheme://nowhere")
    code, _, err = run_cli(capsys, *TRAIN, "--data", csv, "--log", "mlflow")
    assert_user_error(code, err, "--log mlflow: ")
    assert not (tmp_path / "runs").exists()
