"""Bad input, everywhere: every case ends with one line `error: ...`, exit code 2, no traceback,
and no file left half-written (no `.part` files, nothing outside the folders the command owns).

Each case builds its input in a fresh folder and names the command line and a piece of the message.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import pickle
import struct
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from cli_helpers import assert_user_error, run_cli, three_class_csv

TRAIN = ["train", "--min-freq", "1", "--epochs", "1", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A trained text run, shared by the cases that damage a copy of it."""
    root = tmp_path_factory.mktemp("textrun")
    csv = three_class_csv(root / "three.csv", n=30)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        from sentiment.cli import main

        with pytest.raises(SystemExit) as e:
            main([*TRAIN, "--data", str(csv), "--out", str(root / "runs"), "--keep-checkpoint"])
        assert e.value.code == 0
    return (root / "runs" / "latest").resolve()


def _copy_run(text_run: Path, tmp: Path) -> Path:
    import shutil

    dst = tmp / "run"
    shutil.copytree(text_run, dst)
    return dst


def _csv(tmp: Path, body: str | bytes, name="data.csv") -> Path:
    p = tmp / name
    p.write_bytes(body if isinstance(body, bytes) else body.encode())
    return p


def _images(tmp: Path, bad: dict | None = None) -> Path:
    """A tiny image folder: train/test x two classes x two photos; `bad` adds files by relative path."""
    root = tmp / "photos"
    for split in ("train", "test"):
        for i, colour in enumerate(("red", "blue")):
            (root / split / colour).mkdir(parents=True)
            for j in range(2):
                Image.new("RGB", (40, 40), (200 * (1 - i), 30 * j, 200 * i)).save(root / split / colour / f"{j}.png")
    for rel, data in (bad or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


# -- the cases: (id, build(tmp, text_run) -> argv, expected piece of the message) ----------------------

CASES = [
    # archives and data files
    ("archive-missing", lambda t, r: [*TRAIN, "--data", t / "nope.tar.gz"], "no data at"),
    ("archive-empty", lambda t, r: [*TRAIN, "--data", _csv(t, b"", "aclImdb_v1.tar.gz")], "not a readable tar"),
    (
        "archive-corrupt",
        lambda t, r: [*TRAIN, "--data", _csv(t, b"\x1f\x8b\x08garbage" * 50, "aclImdb_v1.tar.gz")],
        "not a readable tar",
    ),
    (
        "archive-without-reviews",
        lambda t, r: [*TRAIN, "--data", _tar(t / "other.tar.gz", {"readme.txt": b"hello"})],
        "holds no reviews",
    ),
    (
        "archive-truncated",
        lambda t, r: [
            *TRAIN,
            "--data",
            _csv(
                t,
                _tar(
                    t / "full.tar.gz", {f"aclImdb/train/pos/{i}_9.txt": b"good film " * 200 for i in range(50)}
                ).read_bytes()[:300],
                "aclImdb_v1.tar.gz",
            ),
        ],
        "aclImdb_v1.tar.gz",
    ),
    (
        "archive-review-not-utf8",
        lambda t, r: [
            *TRAIN,
            "--data",
            _tar(
                t / "aclImdb_v1.tar.gz",
                {"aclImdb/train/pos/0_9.txt": b"fine", "aclImdb/train/neg/1_2.txt": b"\xff\xfe"},
            ),
        ],
        "not UTF-8",
    ),
    ("data-stats-corrupt", lambda t, r: ["data-stats", "--data", _csv(t, b"PK\x03\x04junk", "a.tar.gz")], "tar"),
    ("csv-not-utf8", lambda t, r: [*TRAIN, "--data", _csv(t, b"text,label\n\xff\xfe bad,pos\n")], "not UTF-8"),
    ("csv-empty", lambda t, r: [*TRAIN, "--data", _csv(t, "")], "is empty"),
    ("csv-empty-label", lambda t, r: [*TRAIN, "--data", _csv(t, "text,label\na film,\n")], "empty label"),
    ("csv-one-class", lambda t, r: [*TRAIN, "--data", _csv(t, "text,label\n" + "a film,pos\n" * 20)], "class"),
    ("csv-no-text-column", lambda t, r: [*TRAIN, "--data", _csv(t, "body,label\nx,pos\n")], "text"),
    ("jsonl-garbage", lambda t, r: [*TRAIN, "--data", _csv(t, "{not json}\n", "d.jsonl")], "not a JSON object"),
    ("unknown-file-type", lambda t, r: [*TRAIN, "--data", _csv(t, "x", "d.parquet2")], "not an IMDb archive"),
    # word vectors
    (
        "vectors-ragged",
        lambda t, r: [
            *TRAIN,
            "--data",
            three_class_csv(t / "d.csv", n=30),
            "--vectors",
            _csv(t, "the 0.1 0.2 0.3\nfilm 0.1 0.2\n", "v.txt"),
        ],
        "line 2",
    ),
    (
        "vectors-wrong-dimension-header",
        lambda t, r: [
            *TRAIN,
            "--data",
            three_class_csv(t / "d.csv", n=30),
            "--vectors",
            _csv(t, "2 5\nthe 0.1 0.2 0.3\nfilm 0.1 0.2 0.3\n", "v.txt"),
        ],
        "line 2",
    ),
    (
        "vectors-gz-truncated",
        lambda t, r: [
            *TRAIN,
            "--data",
            three_class_csv(t / "d.csv", n=30),
            "--vectors",
            _csv(t, gzip.compress(b"the 0.1 0.2\n" * 500)[:40], "v.txt.gz"),
        ],
        "v.txt.gz",
    ),
    # settings
    (
        "config-unknown-key",
        lambda t, r: [*TRAIN, "--config", _csv(t, "learning_rte = 0.1\n", "c.toml")],
        "unknown setting",
    ),
    ("config-wrong-type", lambda t, r: [*TRAIN, "--config", _csv(t, 'epochs = "five"\n', "c.toml")], "epochs must be"),
    ("config-not-toml", lambda t, r: [*TRAIN, "--config", _csv(t, "epochs = = 3\n", "c.toml")], "not valid TOML"),
    ("epochs-zero", lambda t, r: ["train", "--epochs", "0"], "epochs"),
    ("epochs-negative", lambda t, r: ["train", "--epochs", "-2"], "epochs"),
    ("batch-size-zero", lambda t, r: ["train", "--batch-size", "0"], "batch_size"),
    ("batch-size-not-a-number", lambda t, r: ["train", "--batch-size", "many"], "batch-size"),
    ("unknown-model", lambda t, r: ["train", "--model", "gpt-9"], "unknown model"),
    ("unknown-tokenizer", lambda t, r: ["train", "--tokenizer", "bpe"], "tokenizer"),
    ("unknown-precision", lambda t, r: ["train", "--precision", "fp8"], "precision"),
    # run folders and weights
    (
        "safetensors-garbage",
        lambda t, r: ["predict", "--run", _damage(r, t, lambda p: p.write_bytes(b"\x00" * 64)), "great"],
        "model.safetensors",
    ),
    (
        "safetensors-truncated",
        lambda t, r: ["predict", "--run", _damage(r, t, lambda p: p.write_bytes(p.read_bytes()[:200])), "great"],
        "model.safetensors",
    ),
    ("vocab-mismatch", lambda t, r: ["predict", "--run", _vocab_mismatch(r, t), "great"], "do not belong together"),
    ("config-json-broken", lambda t, r: ["predict", "--run", _broken_config(r, t), "great"], "config.json"),
    ("not-a-run-folder", lambda t, r: ["predict", "--run", t, "great"], "not a complete run folder"),
    ("predict-empty-text", lambda t, r: ["predict", "--run", r, "   "], "empty"),
    ("predict-file-not-utf8", lambda t, r: ["predict", "--run", r, "--file", _csv(t, b"\xff\xfe\n", "r.txt")], "UTF-8"),
    ("evaluate-unknown-labels", lambda t, r: ["evaluate", "--run", r, "--data", _csv(t, "text,label\nx,zzz\n")], "zzz"),
    ("resume-damaged-checkpoint", lambda t, r: ["train", "--resume", _bad_checkpoint(r, t), "--quiet"], "damaged"),
    ("export-not-a-run-folder", lambda t, r: ["export", t], "not a complete run folder"),
    ("export-unknown-format", lambda t, r: ["export", r, "--format", "tflite"], "onnx or hf"),
    ("export-hf-of-textcnn", lambda t, r: ["export", r, "--format", "hf"], "writes transformer runs"),
    ("predict-no-export", lambda t, r: ["predict", "--run", r, "--backend", "onnx", "great"], "no export/"),
    ("predict-unknown-backend", lambda t, r: ["predict", "--run", r, "--backend", "tpu", "great"], "unknown backend"),
    # images and checkpoints
    (
        "image-not-an-image",
        lambda t, r: ["image-predict", _csv(t, b"GIF89a nope", "cat.jpg"), "--run", _image_run(t)],
        "cat.jpg",
    ),
    (
        "image-class-without-images",
        lambda t, r: ["image-finetune", "--data", _images(t, {"train/green/x.jpg": b"no"}), "--quiet"],
        "green",
    ),
    (
        "checkpoint-wrong-architecture",
        lambda t, r: ["image-finetune", "--data", _images(t), "--weights", _wrong_arch(t), "--quiet"],
        "does not fit",
    ),
    ("pth-with-code", lambda t, r: ["image-finetune", "--data", _images(t), "--weights", _evil(t), "--quiet"], "evil"),
    (
        "tar-path-traversal",
        lambda t, r: ["image-finetune", "--data", _tar(t / "photos.tar.gz", {"../escaped.txt": b"x"}), "--quiet"],
        "..",
    ),
    (
        "tar-absolute-path",
        lambda t, r: ["image-finetune", "--data", _tar(t / "photos.tar.gz", {"/tmp/abs_escaped.txt": b"x"}), "--quiet"],
        "photos.tar.gz",
    ),
]


_IMAGE_RUN: list[Path] = []


def _image_run(tmp: Path) -> Path:
    """A small image run (ResNet-18 from scratch, one epoch on the tiny folder), made once."""
    if not _IMAGE_RUN:
        from sentiment.config import image_config
        from sentiment.recipe import fine_tune

        root = tmp.parent / "imagerun"
        root.mkdir()
        cfg = image_config(
            None,
            {"data": str(_images(root)), "scratch": True, "epochs": 1, "batch_size": 4, "num_workers": 0},
        )
        cfg = type(cfg)(**{**vars(cfg), "out": str(root / "runs")})
        _IMAGE_RUN.append(fine_tune(cfg, progress=False, echo=lambda _: None).path)
    return _IMAGE_RUN[0]


def _damage(run: Path, tmp: Path, how) -> Path:
    dst = _copy_run(run, tmp)
    how(dst / "model.safetensors")
    return dst


def _vocab_mismatch(run: Path, tmp: Path) -> Path:
    dst = _copy_run(run, tmp)
    vocab = json.loads((dst / "vocab.json").read_text())
    vocab["itos"] = vocab["itos"][:-3]
    (dst / "vocab.json").write_text(json.dumps(vocab))
    return dst


def _broken_config(run: Path, tmp: Path) -> Path:
    dst = _copy_run(run, tmp)
    (dst / "config.json").write_text('{"kind": "text", ')
    return dst


def _bad_checkpoint(run: Path, tmp: Path) -> Path:
    dst = _copy_run(run, tmp)
    (dst / "checkpoint.pt").write_bytes((dst / "checkpoint.pt").read_bytes()[:100])
    return dst


def _wrong_arch(tmp: Path) -> Path:
    path = tmp / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "classifier.6.weight": torch.zeros(1000, 4096)}, path)
    return path


def _evil(tmp: Path) -> Path:
    path = tmp / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"fc.weight": _Evil()}, f)
    return path


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize(("build", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(build, needle, text_run, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    args = build(work, text_run)
    before = _files(tmp_path)
    code, _, err = run_cli(capsys, *args)
    assert_user_error(code, err, needle)
    after = _files(tmp_path)
    assert not [p for p in after if p.name.endswith(".part")], "a temporary file was left behind"
    assert not (work / "pwned").exists() and not Path("pwned").exists(), "code in a checkpoint ran"
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/abs_escaped.txt").exists()
    if args[0] == "train" and "--resume" not in args:
        assert not (work / "runs").exists() or not any((work / "runs").iterdir()), "a failed train wrote a run"
    if args[0] in ("predict", "evaluate", "image-predict"):
        assert after == before, "a read-only command changed files"


def test_cuda_asked_for_without_cuda(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run_cli(capsys, *TRAIN, "--data", three_class_csv(tmp_path / "d.csv", n=30), "--device", "cuda")
    assert_user_error(code, err, "no CUDA GPU")
    assert not (tmp_path / "runs").exists()


def test_full_disk_while_saving_weights(tmp_path, capsys, monkeypatch):
    """The disk fills up while the weights are written: one line naming the file, no partial file."""
    import safetensors.torch

    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(struct.pack("<Q", 10**6))  # a few bytes made it to disk before the device filled up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    code, _, err = run_cli(capsys, *TRAIN, "--data", three_class_csv(tmp_path / "d.csv", n=30))
    assert_user_error(code, err, "model.safetensors", "No space left on device")
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob("model.safetensors"))


def test_the_table_is_long_enough():
    assert len(CASES) + 2 >= 30
