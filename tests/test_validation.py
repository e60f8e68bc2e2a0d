"""Model selection on a validation split: held out of the training data, scored every epoch, early
stopping, the kept epoch, the test split scored once; and the bad input around it."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from cli_helpers import assert_user_error, run_cli, three_class_csv

TINY = ["--min-freq", "1", "--max-len", "40", "--batch-size", "16", "--quiet"]


def _summary(root):
    return json.loads((root / "runs" / "latest" / "summary.json").read_text())


def _metrics(root):
    text = (root / "runs" / "latest" / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_validation_is_held_out_of_training_and_scores_every_epoch(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = three_class_csv(tmp_path / "three.csv", n=300)
    code, out, err = run_cli(capsys, "train", "--data", data, "--epochs", "3", "--val-fraction", "0.2", *TINY)
    assert code == 0, err
    s = _summary(tmp_path)
    # 300 rows: 60 held out for test (0.2), then 20% of the other 240 for validation
    assert (s["train_examples"], s["val_examples"], s["test_examples"]) == (192, 48, 60)
    lines = _metrics(tmp_path)
    assert [m["epoch"] for m in lines] == [1, 2, 3]
    for m in lines:
        assert {"val_loss", "val_acc", "val_f1", "best_epoch"} <= set(m)
        assert not any(k.startswith("test_") for k in m), m  # the test split is not read while training
    for key in ("best_epoch", "stopped_early", "val_acc", "test_acc", "test_f1", "test_ece"):
        assert key in s, key
    assert s["stopped_early"] is False
    assert "kept epoch" in out and "validation acc" in out


def test_keep_best_keeps_the_best_validation_epoch_and_last_keeps_the_last(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = three_class_csv(tmp_path / "three.csv", n=300)
    # a learning rate high enough that validation goes up and down
    common = ["train", "--data", data, "--epochs", "6", "--lr", "0.05", "--no-calibrate", *TINY]
    for keep in ("best", "last"):
        code, _, err = run_cli(capsys, *common, "--keep", keep, "--out", f"runs-{keep}")
        assert code == 0, err
    for keep in ("best", "last"):
        run = (tmp_path / f"runs-{keep}" / "latest").resolve()
        s = json.loads((run / "summary.json").read_text())
        metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        best = max(metrics, key=lambda m: (m["val_acc"], -m["val_loss"]))["epoch"]
        assert s["best_epoch"] == best
        with safe_open(str(run / "model.safetensors"), framework="pt") as f:
            saved_epoch = int(f.metadata()["epoch"])
        assert saved_epoch == (best if keep == "best" else 6)
        # the test figure is the kept weights' (scored once): for `best`, not the last epoch's
        assert s["kept"] == keep


@pytest.mark.real_data
@pytest.mark.slow
def test_textcnn_on_3000_reviews_stops_early_and_keeps_its_best_epoch(real_imdb, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # at the default lr 0.001 validation still improves at epoch 11 on 3,000 reviews; at 0.01 the
    # model overfits within a few epochs, which is what this test needs to see
    args = ["train", "--model", "textcnn", "--data", real_imdb, "--limit-train", "3000", "--limit-test", "500",
            "--epochs", "12", "--patience", "2", "--lr", "0.01", "--max-len", "200"]  # fmt: skip
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    s = _summary(tmp_path)
    lines = _metrics(tmp_path)
    assert s["stopped_early"] is True and s["epochs"] < 12
    assert s["best_epoch"] == s["epochs"] - 2  # two epochs without improvement, then it stopped
    assert s["train_examples"] == 2700 and s["val_examples"] == 300
    assert all(not any(k.startswith("test_") for k in m) for m in lines)
    epoch_lines = [ln for ln in out.splitlines() if ln.startswith("epoch ")]
    assert epoch_lines and not any("test" in ln for ln in epoch_lines), out
    assert "stopping early" in out and "stopped early" in out
    # the test split is scored once, on the kept (best) epoch's weights
    code, ev, err = run_cli(capsys, "evaluate", "--limit", "500", "--json")
    assert code == 0, err
    assert json.loads(ev)["accuracy"] == pytest.approx(s["test_acc"], abs=1e-6)


def test_test_each_epoch_is_there_for_the_textbook_curve(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = three_class_csv(tmp_path / "three.csv", n=240)
    code, out, err = run_cli(capsys, "train", "--data", data, "--epochs", "2", "--test-each-epoch", *TINY)
    assert code == 0, err
    assert all("test_acc" in m and "val_acc" in m for m in _metrics(tmp_path))


def test_no_validation_split_keeps_the_last_epoch(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = three_class_csv(tmp_path / "three.csv", n=240)
    code, out, err = run_cli(capsys, "train", "--data", data, "--epochs", "2", "--val-fraction", "0", *TINY)
    assert code == 0, err
    s = _summary(tmp_path)
    assert s["val_examples"] == 0 and s["best_epoch"] == 2 and s["train_examples"] == 192
    assert "no validation split" in out


def test_val_data_file_is_the_validation_split(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = three_class_csv(tmp_path / "three.csv", n=240)
    val = three_class_csv(tmp_path / "val.csv", n=30, seed=5)
    code, _, err = run_cli(capsys, "train", "--data", data, "--val-data", val, "--epochs", "1", *TINY)
    assert code == 0, err
    s = _summary(tmp_path)
    assert (s["train_examples"], s["val_examples"]) == (192, 30)
    meta = json.loads((tmp_path / "runs" / "latest" / "config.json").read_text())
    assert meta["val_data_source"] == str(val.resolve())


@pytest.mark.parametrize("model", ["textcnn", "linear"])
def test_bad_validation_input_is_one_line_and_exit_2(model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = three_class_csv(tmp_path / "three.csv", n=60)
    base = ["train", "--model", model, "--data", data, "--epochs", "1", "--quiet"]
    # a class with one training example: a validation split would leave it on one side only
    rare = tmp_path / "rare.csv"
    rows = data.read_text().splitlines()
    rare.write_text("\n".join(rows + ['"a lone excellent superb review",rare']) + "\n")
    test = three_class_csv(tmp_path / "test.csv", n=30, seed=3)
    code, _, err = run_cli(capsys, "train", "--model", model, "--data", rare, "--test-data", test, "--quiet")
    assert_user_error(code, err, "--val-fraction", "'rare'")
    # validation labels the training set lacks
    other = tmp_path / "other.csv"
    other.write_text("text,label\nsomething great,great\nsomething bad,awful\n")
    code, _, err = run_cli(capsys, *base, "--val-data", other)
    assert_user_error(code, err, "'great'", "training classes")
    # one class only
    one = tmp_path / "one.csv"
    one.write_text("text,label\n" + "".join(f"review {i} was fine,good\n" for i in range(20)))
    code, _, err = run_cli(capsys, *base[:4], one, "--quiet")
    assert_user_error(code, err, "only one class")
    if model == "textcnn":  # patience without validation data
        code, _, err = run_cli(capsys, *base, "--patience", "2", "--val-fraction", "0")
        assert_user_error(code, err, "--patience", "validation")
        code, _, err = run_cli(capsys, *base, "--val-fraction", "1")
        assert_user_error(code, err, "--val-fraction")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
