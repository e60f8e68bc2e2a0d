"""The text commands as a user types them: train, predict, evaluate, compare, data-stats."""

import json
import re
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cli_helpers import assert_user_error, jsonl, run_cli, three_class_csv
from sentiment.runs import Run

LINE = re.compile(r"^(positive|negative) (0\.\d\d|1\.00)  (.+)$")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A TextCNN run on a small CSV, trained once for the format and bad-input tests."""
    root = tmp_path_factory.mktemp("small")
    csv = root / "reviews.csv"
    good, bad = ["a great wonderful film", "loved it, superb"], ["an awful boring film", "hated it, terrible"]
    csv.write_text("text,label\n" + "".join(f'"{t}",positive\n"{b}",negative\n' for t in good for b in bad * 10))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        from sentiment.cli import main

        with pytest.raises(SystemExit) as e:
            main(
                [
                    "train",
                    "--model",
                    "textcnn",
                    "--data",
                    str(csv),
                    "--epochs",
                    "2",
                    "--min-freq",
                    "1",
                    "--quiet",
                    "--out",
                    str(root / "runs"),
                ]
            )
        assert e.value.code == 0
    return root / "runs" / "latest"


def test_run_folder_contents(small_run):
    files = {p.name for p in small_run.iterdir()}
    assert {"config.json", "vocab.json", "model.safetensors", "metrics.jsonl", "curves.png", "summary.json"} <= files
    assert not [f for f in files if f.endswith(".part")]
    assert (small_run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((small_run / "summary.json").read_text())
    for key in (
        "model",
        "epochs",
        "train_examples",
        "test_examples",
        "test_acc",
        "train_examples_per_s",
        "wall_s",
        "vocab_size",
        "oov_words",
    ):
        assert key in summary
    assert summary["status"] == "completed" and summary["epochs"] == 2
    metrics = [json.loads(x) for x in (small_run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    config = json.loads((small_run / "config.json").read_text())
    assert config["classes"] == ["negative", "positive"]
    assert config["config"]["tokenizer"] == "words" and config["config"]["min_freq"] == 1


def test_predict_plain_and_json(small_run, capsys):
    code, out, _ = run_cli(capsys, "predict", "--run", small_run, "this movie is so great", "so boring")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2 and all(LINE.match(ln) for ln in lines)
    assert lines[0].endswith("  this movie is so great")
    code, out, _ = run_cli(capsys, "predict", "--run", small_run, "--json", "this movie is so great")
    (row,) = jsonl(out)
    assert set(row) == {"text", "label", "probability", "scores", "no_known_words"}
    assert set(row["scores"]) == {"negative", "positive"}
    assert row["probability"] == pytest.approx(row["scores"][row["label"]])
    assert sum(row["scores"].values()) == pytest.approx(1.0, abs=1e-5)


def test_predict_from_file_and_stdin(small_run, capsys, tmp_path, monkeypatch):
    f = tmp_path / "reviews.txt"
    f.write_text("a great film\n\nawful and boring\n")
    code, out, _ = run_cli(capsys, "predict", "--run", small_run, "--file", f)
    assert code == 0 and len(out.splitlines()) == 2
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("one\ntwo\nthree\n"))
    code, out, _ = run_cli(capsys, "predict", "--run", small_run, "--file", "-", "--json")
    assert [r["text"] for r in jsonl(out)] == ["one", "two", "three"]


def test_evaluate_on_a_labeled_file(small_run, capsys, tmp_path):
    f = tmp_path / "test.csv"
    f.write_text("review,sentiment\nwonderful great film,positive\nterrible awful film,negative\n")
    code, out, _ = run_cli(capsys, "evaluate", "--run", small_run, "--data", f, "--json")
    assert code == 0
    report = json.loads(out)
    assert {"accuracy", "f1", "confusion"} <= set(report)
    assert sum(map(sum, report["confusion"])) == 2
    code, out, _ = run_cli(capsys, "evaluate", "--run", small_run, "--data", f)
    assert "accuracy" in out and "confusion" in out


def test_three_class_csv_predicts_its_class_names(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv = three_class_csv(tmp_path / "three.csv")
    code, out, err = run_cli(
        capsys,
        "train",
        "--model",
        "textcnn",
        "--data",
        csv,
        "--min-freq",
        "1",
        "--epochs",
        "4",
        "--lr",
        "0.005",
        "--batch-size",
        "16",
        "--quiet",
    )
    assert code == 0, err
    summary = json.loads(Path("runs/latest/summary.json").read_text())
    assert summary["classes"] == ["bad", "good", "meh"]
    assert summary["test_acc"] >= 0.9
    code, out, _ = run_cli(
        capsys,
        "predict",
        "--json",
        "great wonderful excellent film",
        "awful terrible horrible film",
        "table chair window street",
    )
    assert [r["label"] for r in jsonl(out)] == ["good", "bad", "meh"]
    assert all(set(r["scores"]) == {"bad", "good", "meh"} for r in jsonl(out))


def test_compare_draws_runs(small_run, capsys, tmp_path):
    out_png = tmp_path / "cmp.png"
    code, out, _ = run_cli(capsys, "compare", small_run, small_run.resolve(), "--out", out_png)
    assert code == 0 and out_png.read_bytes()[:4] == b"\x89PNG"
    assert "test_acc" in out
    code, out, _ = run_cli(capsys, "compare", small_run, small_run, "--labels", "first,second", "--out", out_png)
    assert code == 0
    code, _, err = run_cli(capsys, "compare", small_run, small_run, "--labels", "only-one", "--out", out_png)
    assert_user_error(code, err, "--labels names 1 runs")


def test_interrupt_keeps_the_last_completed_epoch(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv = three_class_csv(tmp_path / "three.csv", n=60)
    import sentiment.loop as train_mod

    real_epoch = train_mod.train_epoch
    calls = []

    def interrupted_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_epoch", interrupted_epoch)
    code, _, err = run_cli(capsys, "train", "--data", csv, "--min-freq", "1", "--epochs", "3", "--quiet")
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    run = Run.open("runs/latest")
    assert len(run.metrics) == 1
    assert json.loads(run.file("summary.json").read_text())["status"] == "interrupted"
    assert load_file(str(run.file("model.safetensors")))  # readable, complete
    assert not list(run.path.glob("*.part")) and not list(run.path.glob(".*"))


# -- bad input: one line, exit 2, nothing written -------------------------------------------------


def test_train_bad_inputs_write_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv = three_class_csv(tmp_path / "three.csv", n=30)
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("epochz = 2\n")
    cases = [
        (["train", "--model", "gpt", "--data", csv], "unknown model 'gpt'"),
        (["train", "--config", bad_toml, "--data", csv], "unknown setting 'epochz'"),
        (["train", "--data", csv, "--epochs", "0"], "epochs must be at least 1"),
        (["train", "--data", csv, "--batch-size", "-1"], "batch_size must be at least 1"),
        (["train", "--data", csv, "--tokenizer", "bpe"], "tokenizer must be one of"),
        (["train", "--data", tmp_path / "missing.csv"], "missing.csv"),
        (["train", "--data", csv, "--bogus"], "No such option"),
        (["train", "--data", csv, "--vectors", "glove.42B"], "glove.42B"),
    ]
    for args, needle in cases:
        code, _, err = run_cli(capsys, *args)
        assert_user_error(code, err, needle)
    assert not (tmp_path / "runs").exists()


def test_device_cuda_without_cuda(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    csv = three_class_csv(tmp_path / "three.csv", n=30)
    code, _, err = run_cli(capsys, "train", "--data", csv, "--device", "cuda", "--min-freq", "1")
    assert_user_error(code, err, "no CUDA")
    assert not (tmp_path / "runs").exists()


def test_predict_and_evaluate_bad_inputs(small_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "predict", "a fine film")
    assert_user_error(code, err, "no run found", "sentiment train")
    code, _, err = run_cli(capsys, "predict", "--run", tmp_path, "a fine film")
    assert_user_error(code, err, "not a complete run folder")
    code, _, err = run_cli(capsys, "predict", "--run", tmp_path / "nope", "a fine film")
    assert_user_error(code, err, "not a run folder")
    code, _, err = run_cli(capsys, "predict", "--run", small_run, "   ")
    assert_user_error(code, err, "empty")
    code, _, err = run_cli(capsys, "predict", "--run", small_run, "x" * 1_000_000)
    assert_user_error(code, err, "1,000,000 characters")
    code, _, err = run_cli(capsys, "predict", "--run", small_run)
    assert_user_error(code, err, "nothing to predict")
    code, _, err = run_cli(capsys, "predict", "--run", small_run, "--file", tmp_path / "none.txt")
    assert_user_error(code, err, "none.txt")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("text,label\nfine,neutral\n")
    code, _, err = run_cli(capsys, "evaluate", "--run", small_run, "--data", wrong)
    assert_user_error(code, err, "'neutral' is not one of the run's classes")


def _copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_damaged_run_folders(small_run, tmp_path, capsys):
    mismatched = _copy_run(small_run, tmp_path / "mismatched")
    vocab = json.loads((mismatched / "vocab.json").read_text())
    vocab["itos"] = vocab["itos"][:-3]
    (mismatched / "vocab.json").write_text(json.dumps(vocab))
    code, _, err = run_cli(capsys, "predict", "--run", mismatched, "a film")
    assert_user_error(code, err, "do not belong together")

    truncated = _copy_run(small_run, tmp_path / "truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(capsys, "predict", "--run", truncated, "a film")
    assert_user_error(code, err, "model.safetensors")

    garbage = _copy_run(small_run, tmp_path / "garbage")
    (garbage / "model.safetensors").write_bytes(struct.pack("<Q", 10**12) + b"{}")
    code, _, err = run_cli(capsys, "predict", "--run", garbage, "a film")
    assert_user_error(code, err, "model.safetensors")

    bad_config = _copy_run(small_run, tmp_path / "badconfig")
    (bad_config / "config.json").write_text("{oops")
    code, _, err = run_cli(capsys, "predict", "--run", bad_config, "a film")
    assert_user_error(code, err, "config.json")


def test_no_arguments_shows_help(capsys):
    code, out, _ = run_cli(capsys)
    assert code == 0 and "train" in out and "predict" in out


def test_data_stats_on_small_data(tiny_imdb_tar, capsys, tmp_path):
    code, out, _ = run_cli(capsys, "data-stats", "--data", tiny_imdb_tar, "--min-freq", "1", "--json")
    assert code == 0
    s = json.loads(out)
    assert s["train"] == {"neg": 3, "pos": 3} and s["test"] == {"neg": 3, "pos": 3}
    assert {"vocab_size", "oov_words", "token_coverage", "lengths"} <= set(s)
    code, out, _ = run_cli(capsys, "data-stats", "--data", tiny_imdb_tar, "--tokenizer", "words")
    assert code == 0 and "train" in out and "tokens p50" in out
    three = three_class_csv(tmp_path / "three.csv", n=30)
    code, out, _ = run_cli(capsys, "data-stats", "--data", three, "--json", "--min-freq", "1")
    assert json.loads(out)["train"] == {"bad": 8, "good": 8, "meh": 8}
    code, _, err = run_cli(capsys, "data-stats", "--data", tmp_path / "nope.tar.gz")
    assert_user_error(code, err, "nope.tar.gz")


def test_schedules_and_optimizers(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv = three_class_csv(tmp_path / "three.csv", n=30)
    base = ["train", "--data", csv, "--min-freq", "1", "--epochs", "3", "--quiet", "--lr", "0.01"]
    code, _, err = run_cli(
        capsys,
        *base,
        "--schedule",
        "step",
        "--step-size",
        "1",
        "--gamma",
        "0.5",
        "--optimizer",
        "sgd",
        "--momentum",
        "0.9",
    )
    assert code == 0, err
    lrs = [m["lr"] for m in Run.open("runs/latest").metrics]
    assert lrs == pytest.approx([0.01, 0.005, 0.0025])
    code, _, err = run_cli(capsys, *base, "--schedule", "cosine", "--optimizer", "adamw", "--weight-decay", "0.01")
    assert code == 0, err
    lrs = [m["lr"] for m in Run.open("runs/latest").metrics]
    assert lrs[0] == pytest.approx(0.01) and lrs[0] > lrs[1] > lrs[2] > 0


def test_same_seed_same_weights_on_cpu(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv = three_class_csv(tmp_path / "three.csv", n=30)
    weights = []
    for seed in (3, 3, 4):
        code, _, err = run_cli(
            capsys,
            "train",
            "--model",
            "birnn",
            "--data",
            csv,
            "--min-freq",
            "1",
            "--epochs",
            "2",
            "--quiet",
            "--seed",
            str(seed),
            "--device",
            "cpu",
        )
        assert code == 0, err
        weights.append(load_file(str(Run.open("runs/latest").file("model.safetensors"))))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
