"""Everyday use as a new user meets it: a run remembers its data, lines are lines, logs stay clean."""

from __future__ import annotations

import json
import os
import signal

import pytest

from cli_helpers import jsonl, run_cli, three_class_csv

TRAIN = ["train", "--min-freq", "1", "--epochs", "1", "--batch-size", "8", "--device", "cpu"]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A small TextCNN run over the words of `three_class_csv`."""
    from sentiment.cli import main

    root = tmp_path_factory.mktemp("everyday-run")
    csv = three_class_csv(root / "reviews.csv", n=90)
    with pytest.raises(SystemExit) as e:
        main([*TRAIN, "--data", str(csv), "--out", str(root / "runs"), "--quiet"])
    assert e.value.code == 0
    return (root / "runs" / "latest").resolve()


def test_evaluate_and_resume_find_the_data_without_the_environment_it_was_trained_in(
    tiny_imdb_tar, tmp_path, capsys, monkeypatch
):
    """IMDb found through $SENTIMENT_IMDB at training time; later neither the variable nor the
    working folder is the same, and nothing may be downloaded."""
    monkeypatch.setenv("SENTIMENT_IMDB", str(tiny_imdb_tar))
    monkeypatch.chdir(tmp_path)
    stop_at_second_batch(monkeypatch)
    code, out, err = run_cli(capsys, *TRAIN, "--epochs", "3", "--quiet")
    assert code == 130, err
    run = next(p for p in (tmp_path / "runs").iterdir() if p.is_dir() and not p.is_symlink())
    assert json.loads((run / "config.json").read_text())["data_source"] == str(tiny_imdb_tar.resolve())
    monkeypatch.undo()
    monkeypatch.delenv("SENTIMENT_IMDB", raising=False)
    monkeypatch.setenv("SENTIMENT_DATA_DIR", str(tmp_path / "empty-data-dir"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, err = run_cli(capsys, "train", "--resume", run, "--quiet")
    assert code == 0, err
    code, out, err = run_cli(capsys, "evaluate", "--run", run, "--json")
    assert code == 0, err
    assert json.loads(out)["examples"] > 0


def stop_at_second_batch(monkeypatch):
    from sentiment.text import batching as task

    real_iter, seen = task.TextBatches.__iter__, [0]

    def iterate(self):
        for item in real_iter(self):
            if self.sampler.shuffle:
                seen[0] += 1
                if seen[0] == 2:
                    os.kill(os.getpid(), signal.SIGINT)
            yield item

    monkeypatch.setattr(task.TextBatches, "__iter__", iterate)


def test_resume_takes_data_that_moved(tiny_imdb_tar, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with monkeypatch.context() as mp:
        stop_at_second_batch(mp)
        code, _, err = run_cli(capsys, *TRAIN, "--data", tiny_imdb_tar, "--epochs", "3", "--quiet")
    assert code == 130, err
    run = next(p for p in (tmp_path / "runs").iterdir() if p.is_dir() and not p.is_symlink())
    moved = tmp_path / "moved.tar.gz"
    tiny_imdb_tar.rename(moved)
    code, out, err = run_cli(capsys, "train", "--resume", run, "--data", moved, "--quiet")
    assert code == 0, err


def test_a_run_trained_on_a_relative_path_is_evaluated_from_another_folder(tmp_path, capsys, monkeypatch):
    home = tmp_path / "project"
    home.mkdir()
    three_class_csv(home / "reviews.csv", n=90)
    monkeypatch.chdir(home)
    code, _, err = run_cli(capsys, *TRAIN, "--data", "reviews.csv", "--quiet")
    assert code == 0, err
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "evaluate", "--run", home / "runs" / "latest", "--json")
    assert code == 0, err
    assert json.loads(out)["examples"] == 18  # the held-out fifth, not every row


def test_lines_are_split_at_newlines_only(text_run, tmp_path, capsys):
    """U+0085 (NEXT LINE), U+2028 and form feeds occur inside real reviews; they end no line."""
    reviews = ["great film\x85truly", "awful\u2028boring", "a table\x0cby the river", "superb"]
    file = tmp_path / "reviews.txt"
    file.write_text("\n".join(reviews) + "\r\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "predict", "--file", file, "--run", text_run, "--json")
    assert code == 0, err
    assert [r["text"] for r in jsonl(out)] == reviews
    # JSON Lines that any splitter keeps whole: the Unicode line breaks are escaped, the rest readable
    assert [json.loads(line)["text"] for line in out.splitlines()] == reviews
    assert "\\u2028" in out and "\\u0085" in out and "\u2028" not in out and "\x85" not in out
    code, out, err = run_cli(capsys, "explain", "awful\u2028boring naïve", "--run", text_run, "--json")
    assert code == 0, err
    assert len(out.splitlines()) == 1 and "naïve" in out and "\u2028" not in out

    rows = [{"text": t, "label": lab} for t, lab in zip(reviews * 12, ["good", "bad", "meh", "good"] * 12, strict=True)]
    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    code, out, err = run_cli(capsys, "train", "--model", "linear", "--data", data, "--out", tmp_path, "--quiet")
    assert code == 0, err
    assert "not a JSON object" not in err


def test_logs_get_epoch_lines_and_no_progress_bar_debris(tmp_path, capsys, monkeypatch):
    three_class_csv(tmp_path / "reviews.csv", n=90)
    monkeypatch.chdir(tmp_path)
    for quiet in ([], ["--quiet"]):
        code, out, err = run_cli(capsys, *TRAIN, "--data", "reviews.csv", "--epochs", "2", *quiet)
        assert code == 0, err
        assert "\r" not in out + err and "\x1b[" not in out + err
        assert "epoch 1: train loss" in out and "epoch 2: train loss" in out


def test_a_text_of_unknown_words_is_flagged(text_run, capsys):
    code, out, err = run_cli(capsys, "predict", "zzzzqqq", "a great film", "--run", text_run, "--json")
    assert code == 0, err
    assert [r["no_known_words"] for r in jsonl(out)] == [True, False]
    assert err.startswith("note: 1 text has no word the model knows")


def test_a_csv_named_txt_is_called_what_it_looks_like(tmp_path, capsys):
    data = three_class_csv(tmp_path / "reviews.csv", n=30).rename(tmp_path / "reviews.txt")
    code, _, err = run_cli(capsys, "train", "--data", data, "--out", tmp_path)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "looks like CSV" in lines[0] and ".csv, .tsv or .jsonl" in lines[0]


def test_version_and_help_show_defaults(capsys):
    from importlib.metadata import version

    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"sentiment {version('sentiment')}"
    code, out, _ = run_cli(capsys, "train", "--help")
    out = " ".join(out.split())  # --help wraps to the terminal's width
    assert code == 0
    assert "[default: 64 (birnn, textcnn), 32 (fasttext), 16 (transformer)]" in out and "[default: auto]" in out
    assert "--text-col" in out and "the text column" in out


def test_evaluating_on_the_training_file_scores_its_held_out_part(tmp_path, capsys, monkeypatch):
    data = three_class_csv(tmp_path / "reviews.csv", n=90)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *TRAIN, "--data", data, "--quiet")
    assert code == 0, err
    code, out, err = run_cli(capsys, "evaluate", "--data", data, "--json")
    assert code == 0, err
    assert json.loads(out)["examples"] == 18  # the held-out 20%, not all 90 rows
    code, out, err = run_cli(capsys, "evaluate", "--data", data)
    assert "the file this run was trained on" in out


def test_evaluate_and_compare_name_the_run_not_latest(tmp_path, capsys, monkeypatch):
    three_class_csv(tmp_path / "reviews.csv", n=90)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *TRAIN, "--data", "reviews.csv", "--quiet")
    assert code == 0, err
    name = next(p.name for p in (tmp_path / "runs").iterdir() if not p.is_symlink())
    code, out, err = run_cli(capsys, "evaluate")
    assert code == 0, err
    assert name in out.splitlines()[0] and "latest" not in out
    code, out, err = run_cli(capsys, "compare", "runs/latest", "--out", "c.png")
    assert code == 0, err
    assert name in out and "latest" not in out


def test_each_kind_finds_its_own_latest_run(tmp_path, capsys, monkeypatch):
    """After an image run, `predict` still finds the newest text run, and `image-predict` the image run."""
    from test_cli_image import FAST, make_photos

    three_class_csv(tmp_path / "reviews.csv", n=90)
    photos = make_photos(tmp_path / "photos", n_train=4, n_test=2)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *TRAIN, "--data", "reviews.csv", "--quiet")
    assert code == 0, err
    code, _, err = run_cli(capsys, "image-finetune", "--data", photos, "--scratch", *FAST)
    assert code == 0, err
    code, out, err = run_cli(capsys, "predict", "a great film")
    assert code == 0, err
    code, out, err = run_cli(capsys, "image-predict", photos / "test")
    assert code == 0, err
    (tmp_path / "runs" / "latest-text").unlink()  # as in a folder written before latest-<kind> existed
    code, _, err = run_cli(capsys, "predict", "a great film")
    assert code == 2 and "name one with --run" in err, err


def test_compare_legend_tells_train_from_test_and_runs_apart(text_run):
    """The legend shows train dashed and validation solid, without markers hiding the dashes, and one
    entry per run in its colour (item 12)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sentiment.curves import figure
    from sentiment.runs import Run

    run = Run.open(text_run)
    fig = figure([run, run], labels=["first", "second"])
    for ax in fig.axes:
        legend = ax.get_legend()
        entries = {t.get_text(): h for t, h in zip(legend.get_texts(), legend.legend_handles, strict=True)}
        assert list(entries) == ["first", "second", "train", "validation"]
        assert entries["train"].get_linestyle() == "--" and entries["validation"].get_linestyle() == "-"
        assert all(entries[k].get_marker() in ("None", None, "") for k in ("train", "validation"))
        assert entries["first"].get_color() != entries["second"].get_color()
        assert legend.handlelength >= 3
    plt.close(fig)


def test_two_trainings_share_the_cores_instead_of_each_taking_all(text_run, tmp_path, capsys, monkeypatch):
    """Item 5: with another `sentiment train` running, a training takes its share of the cores this
    process may use, says so, and `--threads` / OMP_NUM_THREADS still decide when given."""
    import subprocess
    import sys

    import torch

    from sentiment import runtime

    csv = tmp_path / "reviews.csv"
    from cli_helpers import three_class_csv

    three_class_csv(csv, n=60)
    import uuid

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runtime, "usable_cores", lambda: 4)
    # Only the training this test starts counts, whatever else the machine runs meanwhile.
    token, recognise = uuid.uuid4().hex, runtime.is_training_command
    monkeypatch.setattr(runtime, "is_training_command", lambda argv: recognise(argv) and token in argv)
    before = torch.get_num_threads()
    args = [*TRAIN, "--data", csv, "--out", tmp_path / "runs", "--quiet"]
    try:
        code, out, err = run_cli(capsys, *args)
        assert code == 0, err
        assert "threads:" not in out and torch.get_num_threads() == 4
        # another training, as `ps` would show it
        argv = [sys.executable, "-c", "import time; time.sleep(120)", "sentiment", "train", token]
        other = subprocess.Popen(argv)
        try:
            import time

            deadline = time.monotonic() + 10
            while runtime.other_trainings() == 0 and time.monotonic() < deadline:
                time.sleep(0.05)  # until the child has replaced its forked command line with its own
            assert runtime.other_trainings() == 1
            code, out, err = run_cli(capsys, *args)
            assert code == 0, err
            assert "threads: 2 of 4 cores (1 other training running; --threads sets it)" in out
            assert torch.get_num_threads() == 2
            code, out, err = run_cli(capsys, *args, "--threads", "3")
            assert code == 0, err
            assert "threads:" not in out and torch.get_num_threads() == 3
            monkeypatch.setenv("OMP_NUM_THREADS", "1")
            code, out, err = run_cli(capsys, *args)
            assert code == 0, err
            assert torch.get_num_threads() == 1
        finally:
            other.kill()
            other.wait()
    finally:
        torch.set_num_threads(before)


def test_training_command_lines_are_recognised():
    from sentiment.runtime import is_training_command

    assert is_training_command(["/x/.venv/bin/python", "/x/.venv/bin/sentiment", "train", "--model", "birnn"])
    assert is_training_command(["python", "-m", "sentiment", "image-finetune"])
    assert not is_training_command(["python", "-m", "sentiment", "predict", "train"])
    assert not is_training_command(["vim", "sentiment/train.py"])


def test_auto_precision_is_bf16_for_both_models_on_a_bf16_cpu(tmp_path, capsys, monkeypatch):
    """Item 8: on a CPU with native bfloat16, `auto` trains TextCNN and BiRNN in bf16 (3 seeds on full
    IMDb showed no loss for either, README "bf16 or fp32 on CPU"); `--precision fp32` still works."""
    from cli_helpers import three_class_csv
    from sentiment import runtime

    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    csv = three_class_csv(tmp_path / "reviews.csv", n=60)
    base = [*TRAIN, "--data", csv, "--out", tmp_path / "runs", "--quiet"]
    for model, asked, expected in (
        ("textcnn", "auto", "bf16"),
        ("birnn", "auto", "bf16"),
        ("birnn", "fp32", "fp32"),
    ):
        code, out, err = run_cli(capsys, *base, "--model", model, "--precision", asked)
        assert code == 0, err
        assert f"device cpu, {expected}," in out, (model, asked, out)
