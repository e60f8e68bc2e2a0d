"""`image-finetune` and `image-predict` end to end on photos made in the test."""

import json
import random

import pytest
import torch
from PIL import Image

from cli_helpers import assert_user_error, jsonl, run_cli
from conftest import serve_bytes
from sentiment.finetune import param_groups
from sentiment.runs import Run
from sentiment.vision.resnet import resnet18, resnet50

MODES = ["RGB", "L", "P", "RGBA", "CMYK"]


def _photo(colour: str, rng: random.Random, size) -> Image.Image:
    """A mostly red or mostly blue picture with some noise blobs, so the classes differ by colour."""
    base = (200 + rng.randint(0, 55), rng.randint(0, 60), rng.randint(0, 60))
    if colour == "blue":
        base = base[::-1]
    img = Image.new("RGB", size, base)
    for _ in range(6):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        img.paste((rng.randint(0, 255),) * 3, (x, y, min(size[0], x + 12), min(size[1], y + 12)))
    return img


def make_photos(root, n_train=16, n_test=8, seed=0):
    """root/{train,test}/{blue,red}/ with mixed sizes, modes and formats (JPEG and PNG)."""
    rng = random.Random(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for colour in ("blue", "red"):
            folder = root / split / colour
            folder.mkdir(parents=True)
            for i in range(n):
                size = (rng.randint(60, 180), rng.randint(60, 180))
                mode = MODES[i % len(MODES)]
                img = _photo(colour, rng, size)
                img = img.convert(mode) if mode != "P" else img.convert("P", palette=Image.Palette.ADAPTIVE)
                if mode == "CMYK" or (mode in ("RGB", "L") and i % 2 == 0):  # PNG has no CMYK
                    img.save(folder / f"{colour} {i}.jpg", quality=90)
                else:
                    img.save(folder / f"{colour}_{i}.png")
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_photos(tmp_path_factory.mktemp("photos") / "colours")


@pytest.fixture(scope="module")
def torchvision_checkpoint(tmp_path_factory):
    """A checkpoint in torchvision's resnet18 layout (1000-way head), as `torch.save` writes it.

    Random weights, but BatchNorm statistics measured on photo-like inputs, as a trained network's
    would be; with the default statistics (mean 0, variance 1) evaluation would see other features
    than training for the first hundreds of steps."""
    torch.manual_seed(0)
    model = resnet18()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # a plain average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(4):
            colours = torch.rand(16, 3, 1, 1)
            model((colours + 0.2 * torch.randn(16, 3, 96, 96) - 0.45) / 0.25)
    for bn in bns:
        bn.momentum = 0.1
    path = tmp_path_factory.mktemp("ckpt") / "resnet18-test.pth"
    torch.save(model.state_dict(), path)
    return path


FAST = ["--epochs", "1", "--batch-size", "8", "--num-workers", "0", "--quiet", "--optimizer", "adam", "--lr", "1e-4"]


@pytest.fixture(scope="module")
def trained(photos, torchvision_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    from sentiment.cli import main

    with pytest.raises(SystemExit) as e:
        main(
            [
                "image-finetune",
                "--data",
                str(photos),
                "--weights",
                str(torchvision_checkpoint),
                "--out",
                str(out),
                *FAST,
            ]
        )
    assert e.value.code == 0
    return out / "latest"


def test_finetune_learns_and_writes_a_run(trained):
    run = Run.open(trained)
    summary = run.read_json("summary.json")
    assert summary["epochs"] == 1 and summary["test_examples"] == 16
    assert (summary["train_examples"], summary["val_examples"]) == (28, 4)  # 10% of each class held out
    assert summary["test_acc"] >= 0.75  # 16 held-out photos; chance is 0.5
    assert [m["epoch"] for m in run.metrics] == [0, 1]  # epoch 0: before any step, on validation
    config = run.read_json("config.json")
    assert config["kind"] == "image" and config["classes"] == ["blue", "red"]
    assert config["load_report"].count("fc.") == 2 and "skipped" in config["load_report"]
    assert (trained / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_image_predict_reads_the_run(trained, photos, capsys):
    red = sorted((photos / "test" / "red").iterdir())[:2]
    blue = sorted((photos / "test" / "blue").iterdir())[:2]
    code, out, _ = run_cli(capsys, "image-predict", "--run", trained, *red, *blue)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 4 and all(ln.split()[0] in ("blue", "red") for ln in lines)
    assert lines[0].endswith(str(red[0]))
    code, out, _ = run_cli(capsys, "image-predict", "--run", trained, "--json", red[0])
    (row,) = jsonl(out)
    assert set(row) == {"image", "label", "probability", "scores"} and set(row["scores"]) == {"blue", "red"}


def test_head_gets_ten_times_the_learning_rate():
    groups = param_groups(resnet18(num_classes=2), 5e-5, head="fc", head_lr_mult=10)
    at_10x = sorted(n for g in groups if g["lr"] == pytest.approx(5e-4) for n in g["names"])
    assert at_10x == ["fc.bias", "fc.weight"]
    assert all(g["lr"] == pytest.approx(5e-5) for g in groups if "fc.weight" not in g["names"])


def test_freeze_backbone_leaves_every_backbone_tensor_unchanged(photos, torchvision_checkpoint, tmp_path, capsys):
    code, _, err = run_cli(
        capsys,
        "image-finetune",
        "--data",
        photos,
        "--weights",
        torchvision_checkpoint,
        "--freeze-backbone",
        "--out",
        tmp_path,
        *FAST,
    )
    assert code == 0, err
    before = torch.load(torchvision_checkpoint, weights_only=True)
    after = Run.open(tmp_path / "latest").load_weights()
    backbone = [k for k in after if not k.startswith("fc.")]
    assert len(backbone) == len(before) - 2
    for k in backbone:  # weights and BatchNorm running statistics alike
        assert torch.equal(after[k], before[k]), k
    assert not torch.equal(after["fc.weight"], torch.zeros_like(after["fc.weight"]))


def test_scratch_uses_the_scratch_recipe(photos, tmp_path, capsys):
    code, out, err = run_cli(
        capsys,
        "image-finetune",
        "--data",
        photos,
        "--scratch",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--num-workers",
        "0",
        "--quiet",
        "--out",
        tmp_path,
    )
    assert code == 0, err
    cfg = Run.open(tmp_path / "latest").read_json("config.json")["config"]
    assert cfg["scratch"] and cfg["lr"] == 5e-4 and cfg["head_lr_mult"] == 1.0


def test_bad_images_are_skipped_with_a_count(photos, torchvision_checkpoint, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(photos, data)
    (data / "train" / "red" / "notes.jpg").write_text("not an image")
    good = next((data / "train" / "blue").glob("*.jpg")).read_bytes()
    (data / "train" / "blue" / "cut.jpg").write_bytes(good[: len(good) // 2])
    code, out, err = run_cli(
        capsys, "image-finetune", "--data", data, "--weights", torchvision_checkpoint, "--out", tmp_path / "runs", *FAST
    )
    assert code == 0, err
    assert "skipped 2 unreadable image files" in out


def test_bad_image_inputs(photos, torchvision_checkpoint, tmp_path, capsys):
    import shutil

    no_test = tmp_path / "no_test"
    shutil.copytree(photos / "train", no_test / "train")
    code, _, err = run_cli(capsys, "image-finetune", "--data", no_test, "--weights", torchvision_checkpoint, *FAST)
    assert_user_error(code, err, "test")

    empty = tmp_path / "empty_class"
    shutil.copytree(photos, empty)
    (empty / "train" / "green").mkdir()
    (empty / "test" / "green").mkdir()
    code, _, err = run_cli(capsys, "image-finetune", "--data", empty, "--weights", torchvision_checkpoint, *FAST)
    assert_user_error(code, err, "green")

    other = tmp_path / "resnet50.pth"
    torch.save(resnet50().state_dict(), other)
    code, _, err = run_cli(capsys, "image-finetune", "--data", photos, "--weights", other, *FAST)
    assert_user_error(code, err, "resnet50.pth")

    code, _, err = run_cli(capsys, "image-finetune", "--data", photos, "--backbone", "vgg16", *FAST)
    assert_user_error(code, err, "vgg16")

    code, _, err = run_cli(
        capsys,
        "image-finetune",
        "--data",
        photos,
        "--weights",
        torchvision_checkpoint,
        "--head-init",
        "imagenet:purple=3",
        *FAST,
    )
    assert_user_error(code, err, "purple")

    code, _, err = run_cli(capsys, "image-predict", "--run", tmp_path / "nowhere", photos / "x.jpg")
    assert_user_error(code, err, "not a run folder")
    assert not (tmp_path / "runs").exists()


def test_image_predict_bad_inputs(trained, tmp_path, capsys):
    code, _, err = run_cli(capsys, "image-predict", "--run", trained, tmp_path / "missing.jpg")
    assert_user_error(code, err, "missing.jpg")
    bogus = tmp_path / "bogus.png"
    bogus.write_text("not a picture")
    code, _, err = run_cli(capsys, "image-predict", "--run", trained, bogus)
    assert_user_error(code, err, "bogus.png")


def test_predict_refuses_an_image_run_and_vice_versa(trained, capsys):
    code, _, err = run_cli(capsys, "predict", "--run", trained, "a fine film")
    assert_user_error(code, err, "not a text run")


def test_summary_lists_the_initial_accuracy(trained):
    summary = json.loads((trained / "summary.json").read_text())
    assert 0.0 <= summary["initial_val_acc"] <= 1.0 and "initial_test_acc" not in summary


def test_without_data_the_hot_dog_photos_are_downloaded(photos, tmp_path, monkeypatch):
    """No --data, no $SENTIMENT_HOTDOG, no data/hotdog: fetch hotdog.zip (here from 127.0.0.1), check its
    SHA-1, extract it safely, and read it."""
    import hashlib
    import io
    import zipfile

    from sentiment.vision import folder as pipeline

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(photos.rglob("*")):
            if p.is_file():
                z.write(p, f"hotdog/{p.relative_to(photos)}")
    payload = buf.getvalue()

    with serve_bytes(payload) as base:
        monkeypatch.delenv("SENTIMENT_HOTDOG", raising=False)
        monkeypatch.setattr(pipeline, "HOTDOG_URL", f"{base}/hotdog.zip")
        monkeypatch.setattr(pipeline, "HOTDOG_SHA1", hashlib.sha1(payload).hexdigest())
        root = pipeline.find_image_data(None)
        assert sorted(p.name for p in root.iterdir()) == ["test", "train"]
        assert (tmp_path / "data" / "hotdog.zip").read_bytes() == payload
        monkeypatch.setenv("SENTIMENT_HOTDOG", str(photos))
        assert pipeline.find_image_data(None) == photos


def test_image_predict_takes_a_folder_of_photos(trained, photos, tmp_path, capsys):
    code, out, err = run_cli(capsys, "image-predict", photos / "test" / "red", "--run", trained, "--json")
    assert code == 0, err
    rows = jsonl(out)
    assert len(rows) == len([p for p in (photos / "test" / "red").iterdir() if not p.name.startswith(".")])
    assert sum(r["label"] == "red" for r in rows) >= len(rows) - 1
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "image-predict", tmp_path / "empty", "--run", trained)
    assert_user_error(code, err, "holds no image files")


def test_image_runs_resume_exactly(photos, torchvision_checkpoint, tmp_path, capsys, monkeypatch):
    """Stopped mid-epoch by SIGINT, `sentiment train --resume` (the command the run prints) ends with
    the weights of a run that was never stopped."""
    import os
    import signal

    from safetensors.torch import load_file
    from torch.utils.data import RandomSampler

    from sentiment.vision.folder import SeededLoader

    args = ["image-finetune", "--data", photos, "--weights", torchvision_checkpoint, "--seed", "3", *FAST]
    args[args.index("--epochs") + 1] = "2"
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "whole")
    assert code == 0, err
    real_iter, seen = SeededLoader.__iter__, [0]

    def stop_at_batch_6(self):
        for item in real_iter(self):
            if isinstance(self.sampler, RandomSampler):  # training batches only
                seen[0] += 1
                if seen[0] == 6:  # batch 2 of epoch 2
                    os.kill(os.getpid(), signal.SIGINT)
            yield item

    with monkeypatch.context() as mp:
        mp.setattr(SeededLoader, "__iter__", stop_at_batch_6)
        code, out, err = run_cli(capsys, *args, "--out", tmp_path / "parts")
    assert code == 130, err
    assert "continue with: sentiment train --resume" in out
    part = next(p for p in (tmp_path / "parts").iterdir() if p.is_dir() and not p.is_symlink())
    code, out, err = run_cli(capsys, "train", "--resume", part, "--quiet")
    assert code == 0, err
    whole = (tmp_path / "whole" / "latest").resolve()
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(part / "model.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_batches_are_split_to_fit_memory_or_as_asked(photos, torchvision_checkpoint, tmp_path, capsys):
    """By default the recipe measures a step's activations and says how it splits the batch; the run
    records the part size, and `--micro-batch` sets it."""
    base = ["image-finetune", "--data", photos, "--weights", torchvision_checkpoint, *FAST]
    code, out, err = run_cli(capsys, *base, "--out", tmp_path / "auto")
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("memory: "))
    assert "MB of activations per example" in line and "--micro-batch" in line
    auto = Run.open(tmp_path / "auto" / "latest").read_json("config.json")
    assert auto["micro_batch"] >= 1
    code, out, err = run_cli(capsys, *base, "--micro-batch", "3", "--out", tmp_path / "three")
    assert code == 0, err
    assert "memory: " not in out
    three = Run.open(tmp_path / "three" / "latest").read_json("config.json")
    assert three["micro_batch"] == 3 and three["config"]["micro_batch"] == 3
    code, _, err = run_cli(capsys, *base, "--micro-batch", "0", "--out", tmp_path / "zero")
    assert code == 2 and "micro" in err


def test_image_evaluate_prints_and_writes_the_report(trained, photos, tmp_path, capsys):
    code, out, err = run_cli(capsys, "image-evaluate", "--run", trained, "--data", photos, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["examples"] == 16 and report["classes"] == ["blue", "red"]
    confusion = torch.tensor(report["confusion"])
    assert confusion.sum(1).tolist() == [8, 8]  # rows: true classes
    assert report["accuracy"] == pytest.approx(confusion.trace().item() / 16)
    for name, m in report["per_class"].items():
        i = report["classes"].index(name)
        assert m["recall"] == pytest.approx(confusion[i, i].item() / 8)
    wrong = report["mistakes"]
    assert all(m["predicted"] != m["label"] for m in wrong)
    assert len(wrong) == min(16, 16 - confusion.trace().item())
    assert [m["probability"] for m in wrong] == sorted((m["probability"] for m in wrong), reverse=True)

    # the split folder itself works too, and so does the text form
    code, out, err = run_cli(capsys, "image-evaluate", "--run", trained, "--data", photos / "test")
    assert code == 0, err
    assert "accuracy" in out and "confusion (rows: true, columns: predicted)" in out and "16 images" in out


def test_image_evaluate_draws_the_worst_mistakes(trained, photos, tmp_path, capsys):
    """A run that knows nothing (a scrambled head) makes mistakes; the sheet shows the surest ones."""
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(trained.resolve(), bad)
    weights = load_file(str(bad / "model.safetensors"))
    head = [k for k in weights if k.startswith("fc.")]
    weights = {k: (-v if k in head else v) for k, v in weights.items()}  # swap what the head says
    save_file(weights, str(bad / "model.safetensors"))
    sheet = tmp_path / "mistakes.png"
    code, out, err = run_cli(
        capsys, "image-evaluate", "--run", bad, "--data", photos, "--mistakes", sheet, "--top", "3"
    )
    assert code == 0, err
    assert "surest" in out and f"contact sheet: {sheet}" in out
    img = Image.open(sheet)
    assert img.size[0] >= 3 * 150 and img.size[1] > 150


def test_image_evaluate_bad_inputs(trained, photos, tmp_path, capsys):
    code, _, err = run_cli(capsys, "image-evaluate", "--run", trained, "--data", tmp_path / "nothing")
    assert_user_error(code, err)
    other = tmp_path / "other" / "test"
    for name in ("cat", "dog"):
        (other / name).mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(other / name / "a.png")
    code, _, err = run_cli(capsys, "image-evaluate", "--run", trained, "--data", tmp_path / "other")
    assert_user_error(code, err, "classes")


def test_image_augment_draws_training_inputs(photos, tmp_path, capsys):
    out = tmp_path / "augment.png"
    code, stdout, err = run_cli(
        capsys, "image-augment", "--data", photos, "--out", out, "--images", "2", "--versions", "3"
    )
    assert code == 0, err
    assert "2 training photos, 3 model inputs each" in stdout
    sheet = Image.open(out)
    columns, rows = 4, 2  # each photo as stored, then its 3 model inputs
    tile = sheet.size[0] // columns
    assert sheet.size[0] == columns * tile and sheet.size[1] > rows * tile
