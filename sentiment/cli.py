"""The `sentiment` command. Thin: flags -> library call -> printed result.

User errors (`SentimentError`, bad flags) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from sentiment import api, config, jsonlines, registry
from sentiment.config import TextData
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


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"sentiment {version('sentiment')}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Fine-tune pretrained representations on small classification tasks."""


# -- options from the declared settings (config.py) ------------------------------------------------


def _declarations(kind: str) -> dict[str, tuple[dataclasses.Field, type]]:
    """Every setting of the families of `kind`, by name: its declaration and a class declaring it."""
    out: dict[str, tuple[dataclasses.Field, type]] = {}
    for family in registry.families(kind):
        for f in config.declared(family.settings):
            out.setdefault(f.name, (f, family.settings))
    return out


def _shown_default(name: str, kind: str) -> str:
    """The default `--help` shows: the families' one, or each family's where they differ."""
    by_value: dict[str, list[str]] = {}
    for family in registry.families(kind):
        f = family.settings.__dataclass_fields__.get(name)
        if f is None:
            continue
        value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if value is None or value is False or value is dataclasses.MISSING:
            continue
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        by_value.setdefault(shown, []).append(family.name)
    if len(by_value) > 1:
        return ", ".join(f"{value} ({', '.join(names)})" for value, names in by_value.items())
    return next(iter(by_value), "")


def _setting_option(f: dataclasses.Field, cls, kind: str) -> inspect.Parameter:
    kind_ = config.hints(cls)[f.name]
    base = next((a for a in typing.get_args(kind_) if a is not type(None)), kind_)  # X | None -> X
    flag = "--" + f.name.replace("_", "-")
    names = [flag] if base is not bool or not f.default else [f"{flag}/--no-{flag[2:]}"]
    default = _shown_default(f.name, kind)
    helptext = f.metadata["help"]
    if f.name == "model":
        helptext = ", ".join(registry.names(kind))
    shown = " ".join(filter(None, [helptext, f"[default: {default}]" if default else ""]))
    option = typer.Option(*names, help=shown or None, show_default=False)
    return inspect.Parameter(
        f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[base | None, option]
    )


def with_settings(kind: str, *, only: tuple[str, ...] | None = None):
    """Give a command one option per declared setting of the families of `kind` (those with `flag`,
    or those in `only`). The command receives them as `settings`, a dict of the ones given (None =
    not given), after its own first parameter; its other parameters follow the settings in `--help`."""

    def decorate(fn):
        own = list(inspect.signature(fn, eval_str=True).parameters.values())
        declared = _declarations(kind)
        fields = [(f, cls) for f, cls in declared.values() if (f.name in only if only else f.metadata["flag"])]
        # the families' own settings first, then those every run has
        every = {g.name for g in dataclasses.fields(config.RunSettings)} | {
            g.name for g in dataclasses.fields(config.LoopSettings)
        }
        fields.sort(key=lambda fc: fc[0].name in every)
        names = {f.name for f, _ in fields}
        keyword = inspect.Parameter.KEYWORD_ONLY
        params = [p.replace(kind=keyword) for p in own[:1]]
        params += [_setting_option(f, cls, kind) for f, cls in fields] + [p.replace(kind=keyword) for p in own[2:]]

        def command(**kwargs):
            settings = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
            return fn(kwargs.pop(own[0].name), settings, **kwargs)

        command.__signature__ = inspect.Signature(params)
        command.__name__, command.__doc__ = fn.__name__, fn.__doc__
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


@app.command("data-stats")
@with_settings(
    "text", only=("data", "tokenizer", "min_freq", "max_len", "vectors", "text_col", "label_col", "test_data")
)
def data_stats_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object instead of a table")] = False,
    settings: dict | None = None,
):
    """Per split: review counts, lengths, vocabulary size and GloVe coverage."""
    from sentiment.text.corpus import load_corpus
    from sentiment.text.stats import data_stats, format_stats
    from sentiment.text.tokenize import get_tokenizer
    from sentiment.text.vectors import load_vectors

    cfg = config.text_config(registry.default("text"), None, settings)  # a word-vector family: its data settings
    get_tokenizer(cfg.tokenizer)
    vecs = load_vectors(cfg.vectors)
    corpus = load_corpus(cfg.data, test_data=cfg.test_data, text_col=cfg.text_col, label_col=cfg.label_col)
    stats = data_stats(corpus, tokenizer=cfg.tokenizer, min_freq=cfg.min_freq, vectors=vecs, max_len=cfg.max_len)
    typer.echo(json.dumps(stats) if as_json else format_stats(stats))


DataOpt = Annotated[str | None, typer.Option("--data", help=config.help_of(TextData, "data"))]
RunOpt = Annotated[str | None, typer.Option("--run", help="a text run folder (default: runs/latest-text)")]
ImageRunOpt = Annotated[str | None, typer.Option("--run", help="an image run folder (default: runs/latest-image)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON output")]
BackendOpt = Annotated[
    str,
    typer.Option(
        "--backend",
        help="torch, or the run's ONNX export run by onnxruntime: onnx, onnx-int8 (see sentiment export)",
    ),
]
PlotOpt = Annotated[
    str | None, typer.Option("--plot", help="draw a reliability diagram (PNG) of the probabilities here")
]


QuietOpt = Annotated[
    bool, typer.Option("--quiet", help="no progress bars (there are none when output is not a terminal)")
]


def _bars(quiet: bool = False) -> bool:
    """Progress bars only on a terminal: in a log file they are carriage returns and escape codes."""
    return not quiet and sys.stderr.isatty()


@app.command("train")
@with_settings("text")
def train_cmd(
    config_file: Annotated[str | None, typer.Option("--config", help="a TOML file of settings (see configs/)")] = None,
    settings: dict | None = None,
    quiet: QuietOpt = False,
    resume: Annotated[
        str | None, typer.Option("--resume", help="continue an interrupted run folder from its checkpoint")
    ] = None,
    nproc: Annotated[
        int | None, typer.Option("--nproc", help="train in N local processes (torchrun, DistributedDataParallel)")
    ] = None,
    multi_label: Annotated[
        bool,
        typer.Option(
            "--multi-label",
            help="any number of labels per text (a label column of lists, or names separated by |): "
            "the same as --target multilabel",
        ),
    ] = False,
):
    """Train a text classifier into a run folder (see --model for the families)."""
    from sentiment import distributed

    if nproc is not None and nproc < 1:
        raise SentimentError(f"--nproc must be at least 1, got {nproc}")
    if multi_label:
        if settings.get("target") not in (None, "multilabel"):
            raise SentimentError(f"--multi-label is --target multilabel; drop --target {settings['target']}")
        settings["target"] = "multilabel"
    moved = {k: settings.pop(k, None) for k in ("data", "test_data")} if resume is not None else {}
    given = [k for k, v in {**settings, "config": config_file}.items() if v is not None]
    if resume is not None and given:
        shown = ", ".join("--" + k.replace("_", "-") for k in given)
        raise SentimentError(f"--resume continues with the run's saved settings; drop {shown}")
    if nproc is not None and nproc > 1 and distributed.world_size() == 1:
        if resume is None:  # the settings' errors as one line here, not once per process
            cfg = config.text_config(None, config_file, settings)
            if registry.get(cfg.model).task.solver:
                raise SentimentError(f"--model {cfg.model} is fitted in one process; drop --nproc")
        flags = {**settings, **moved, "config": config_file, "resume": resume}
        return _torchrun(nproc, flags, quiet)
    given = {k: v for k, v in {**settings, **moved}.items() if v is not None}
    path = api.train(
        config_file=config_file, resume=resume, kind="text", progress=_bars(quiet), echo=typer.echo, **given
    )
    if not distributed.is_main():
        distributed.exit_worker()
    summary = json.loads((path / "summary.json").read_text())
    typer.echo(
        f"done: {_tested(summary)} after {_count(summary['epochs'], 'epoch')}{_kept(summary)}, "
        f"{summary['train_examples_per_s']:.0f} train examples/s, {summary['wall_s']:.0f} s; "
        f"run folder {path}{_size(summary)}"
    )


def _size(summary: dict) -> str:
    """The run folder's size, as the done line says it."""
    size = summary.get("folder_bytes")
    if size is None:
        return ""
    return f" ({size / 1e6:.1f} MB)" if size >= 1e5 else f" ({size / 1e3:.0f} kB)"


def _tested(summary: dict) -> str:
    """The test figure the done line leads with: accuracy, or a rating run's MAE and Spearman."""
    if summary.get("target") == "rating":
        return f"test MAE {summary['test_mae']:.4f} (Spearman {summary['test_spearman']:.4f})"
    if summary.get("target") == "multilabel":
        return f"test micro-F1 {summary['test_micro_f1']:.4f} (macro-F1 {summary['test_macro_f1']:.4f})"
    return f"test accuracy {summary['test_acc']:.4f}"


def _kept(summary: dict) -> str:
    """Which epoch's weights the run kept, as the done line says it."""
    figure = {"rating": "mae", "multilabel": "micro_f1"}.get(summary.get("target"), "acc")
    if summary.get(f"val_{figure}") is None or summary.get("best_epoch") is None:
        return ""
    epoch = summary["best_epoch"] if summary.get("kept") == "best" else summary["epochs"]
    early = "; stopped early" if summary.get("stopped_early") else ""
    shown = {"mae": "MAE", "micro_f1": "micro-F1"}.get(figure, "acc")
    return f" (kept epoch {epoch}: validation {shown} {summary[f'val_{figure}']:.4f}{early})"


def _torchrun(nproc: int, flags: dict, quiet: bool) -> int:
    """`sentiment train --nproc N ...` = `torchrun --standalone --nproc-per-node N -m sentiment train ...`."""
    import subprocess

    args = []
    for key, value in flags.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        elif value is not None:
            args += [flag, str(value)]
    if quiet:
        args.append("--quiet")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    rc = subprocess.call([*cmd, "-m", "sentiment", "train", *args])
    if rc != 0:
        raise SentimentError(f"distributed training stopped with exit code {rc} (its message is above)")
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


PREDICT_CHUNK = 4096  # lines of a --file answered, and written out, together


def _line_count(path: Path) -> int:
    """How many lines the file at `path` has, counted a megabyte at a time."""
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def _review_chunks(
    texts: list[str], file: str | None, *, progress: bool, size: int = PREDICT_CHUNK, command: str = "predict"
) -> tuple[int | None, Iterator[list[str]]]:
    """`(how many reviews there are, if known; the reviews in lists of at most `size`)`: the
    arguments, or the non-blank lines of `file` (- : stdin), read as they are answered (with a bar
    over the file's bytes); a missing, empty or undecodable file is an error."""
    if file is not None and texts:
        raise SentimentError("give texts as arguments or with --file, not both")
    if file is None:
        if not texts:
            raise SentimentError(f'nothing to {command}: give a text (sentiment {command} "a great film") or --file')
        return len(texts), iter([texts])
    if file == "-":
        return None, _chunks(None, "standard input", progress=False, size=size)
    path = Path(file)
    if path.is_dir():
        raise SentimentError(f"{path} is a folder; --file takes a text file, one review per line")
    try:
        count = _line_count(path)
    except FileNotFoundError:
        raise SentimentError(f"no file at {path}") from None
    return count, _chunks(path, str(path), progress=progress, size=size)


def _chunks(path: Path | None, name: str, *, progress: bool, size: int) -> Iterator[list[str]]:
    """The non-blank lines of the file at `path` (None: stdin), `size` at a time, split at "\n"
    and "\r\n" only (as `fsutil.split_lines` splits). A line that is not UTF-8 is an error naming
    it, raised once the lines before it have been given."""
    from sentiment.fsutil import byte_bar

    if path is None:
        lines = getattr(sys.stdin, "buffer", None) or sys.stdin  # a text stream where stdin has no bytes
        bar = move = None
    else:
        lines = open(path, "rb")  # noqa: SIM115 - closed below
        bar, move = byte_bar(path, f"predicting {path.name}", progress=progress)
    chunk: list[str] = []
    seen = 0
    try:
        for number, line in enumerate(lines, 1):
            try:
                text = line.decode("utf-8") if isinstance(line, bytes) else line
            except UnicodeDecodeError:
                yield from [chunk] if chunk else []
                raise SentimentError(f"{name}, line {number}: not UTF-8 text; save the file as UTF-8") from None
            text = text.removeprefix("\ufeff") if number == 1 else text
            text = text.removesuffix("\n").removesuffix("\r")
            if not text.strip():
                continue
            chunk.append(text)
            if len(chunk) >= size:
                seen += len(chunk)
                yield chunk
                chunk = []
                if move is not None:
                    move(lines.tell())
    finally:
        if bar is not None:
            bar.close()
        if path is not None:
            lines.close()
    if chunk:
        yield chunk
    elif not seen:
        raise SentimentError(f"{name} holds no reviews (one per line)")


@app.command("predict")
def predict_cmd(
    texts: Annotated[list[str] | None, typer.Argument(help="reviews to classify")] = None,
    run: RunOpt = None,
    file: Annotated[str | None, typer.Option("--file", help="one review per line; - reads stdin")] = None,
    as_json: JsonOpt = False,
    device: Annotated[str, typer.Option("--device")] = "cpu",
    backend: BackendOpt = "torch",
):
    """Classify texts with a trained run: label, probability and the text, one line each (a rating
    run: the rating and the text). A --file is read, answered and written out a few thousand lines
    at a time."""
    count, chunks = _review_chunks(texts or [], file, progress=_bars())
    clf = api.load(run, device=device, kind="text", texts=count, backend=backend)
    rating = getattr(clf, "rating", None) is not None
    multi = getattr(clf, "multi_label", None)
    answered = unknown = 0
    for lines in chunks:
        try:
            probs, known = clf.scores(lines)
        except SentimentError as e:  # a text's number within the chunk: within the whole input
            raise SentimentError(_renumbered(str(e), answered)) from None
        typer.echo("\n".join(_answer_rows(clf, lines, probs, known, as_json=as_json, rating=rating, multi=multi)))
        answered += len(lines)
        unknown += known.count(False)
    if unknown:
        which = "1 text has" if unknown == 1 else f"{unknown} of {answered} texts have"
        typer.echo(
            f"note: {which} no word the model knows; such {'a rating' if rating else 'a label'} is only the model's "
            "prior, not a reading of the text",
            err=True,
        )


def _renumbered(message: str, before: int) -> str:
    """A "text N ..." error about a chunk's N-th text, as the (before + N)-th of the input."""
    import re

    return re.sub(r"^text (\d+)", lambda m: f"text {before + int(m.group(1))}", message)


def _answer_rows(clf, lines: list[str], probs, known: list[bool], *, as_json: bool, rating: bool, multi) -> list[str]:
    """predict's output lines for `lines`: plain, or JSON objects with `as_json`."""
    best = probs.argmax(1).tolist()
    rows = []
    for text, p, b, k in zip(lines, probs.tolist(), best, known, strict=True):
        if rating:
            shown = {"text": text, "rating": p[0], "no_known_words": not k}
            rows.append(jsonlines.dumps(shown) if as_json else f"{p[0]:.2f}  {text}")
        elif multi is not None:
            chosen = multi.labels_of(p)
            if as_json:
                scores = dict(zip(clf.classes, p, strict=True))
                answer = {"text": text, "labels": chosen, "scores": scores, "no_known_words": not k}
                rows.append(jsonlines.dumps(answer))
            else:
                said = ", ".join(f"{c} {p[clf.classes.index(c)]:.2f}" for c in chosen) or "(none)"
                rows.append(f"{said}  {text}")
        elif as_json:
            answer = {
                "text": text,
                "label": clf.classes[b],
                "probability": p[b],
                "scores": dict(zip(clf.classes, p, strict=True)),
                "no_known_words": not k,
            }
            rows.append(jsonlines.dumps(answer))
        else:
            rows.append(f"{clf.classes[b]} {p[b]:.2f}  {text}")
    return rows


EXPLAIN_CHUNK = 16  # lines of an explain --file read together: explanations are slow


@app.command("explain")
def explain_cmd(
    text: Annotated[str | None, typer.Argument(help="the review to explain")] = None,
    run: RunOpt = None,
    file: Annotated[
        str | None, typer.Option("--file", help="explain every line of this file (- reads stdin), written as it goes")
    ] = None,
    as_json: JsonOpt = False,
    html_out: Annotated[str | None, typer.Option("--html", help="also write a page showing it to this file")] = None,
    top: Annotated[int, typer.Option("--top", help="how many of the strongest tokens to list", min=1)] = 8,
):
    """The label and how much every token pushed towards it (TextCNN and linear: exact; BiRNN and
    transformer: integrated gradients)."""
    import os

    from sentiment import explain_view

    if html_out and file is not None:
        raise SentimentError("--html draws one review's page; drop --file, or use --json for a file's explanations")
    given = [text] if text is not None else []
    count, chunks = _review_chunks(given, file, progress=_bars(), size=EXPLAIN_CHUNK, command="explain")
    clf = api.load(run, kind="text", texts=count)
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    first = True
    for lines in chunks:
        for line in lines:
            expl = clf.explain(line)
            if html_out:
                from sentiment.fsutil import atomic_write_text

                atomic_write_text(Path(html_out), explain_view.page(expl, clf.run.path.name))
            if as_json:
                typer.echo(jsonlines.dumps(expl.to_json()))
                continue
            typer.echo(("" if first else "\n") + explain_view.terminal(expl, colour=colour, top=top), color=colour)
            first = False
    if html_out and not as_json:
        typer.echo(f"wrote {html_out}")


@app.command("serve")
def serve_cmd(
    run: RunOpt = None,
    host: Annotated[str, typer.Option("--host", help="the address to listen on; 0.0.0.0 opens it to the network")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8000,
    workers: Annotated[int, typer.Option("--workers", help="server processes, each with the model", min=1)] = 1,
    max_batch: Annotated[int, typer.Option("--max-batch", help="most texts answered in one batch", min=1)] = 64,
    wait_ms: Annotated[
        float, typer.Option("--wait-ms", help="how long a batch waits for more requests to join it", min=0)
    ] = 2.0,
    threads: Annotated[int | None, typer.Option("--threads", help="torch threads (default: the usable cores)")] = None,
    access_log: Annotated[bool, typer.Option("--access-log", help="log every request")] = False,
    backend: BackendOpt = "torch",
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto: where the model answers")] = "cpu",
):
    """Serve a text run over HTTP: POST /predict and /explain, GET /health, /docs and a page at /."""
    import os

    import torch

    try:
        import uvicorn

        from sentiment.serve import (
            BACKEND_ENV,
            BATCH_ENV,
            DEVICE_ENV,
            RUN_ENV,
            THREADS_ENV,
            ServedModel,
            check_address,
            create_app,
        )
    except ImportError as e:
        raise SentimentError(f"serve needs {e.name}: pip install 'sentiment[serve]'") from None
    from sentiment.runs import Run
    from sentiment.runtime import resolve_device, usable_cores

    the_run = Run.open(run, kind="text")
    if backend != "torch" and device not in ("cpu", "auto"):
        raise SentimentError(f"--backend {backend} runs on the CPU (onnxruntime); drop --device {device}")
    # no GPU: one line now, not once the server (or each of its workers) has started
    device = str(resolve_device(device)) if backend == "torch" else "cpu"
    check_address(host, port)
    threads = threads or max(1, usable_cores() // workers)
    torch.set_num_threads(threads)
    where = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    settings = dict(host=host, port=port, access_log=access_log, log_level="info", timeout_graceful_shutdown=5)
    if workers > 1:  # each worker process builds its own app from the run named in the environment
        os.environ[RUN_ENV] = str(the_run.path.resolve())
        os.environ[THREADS_ENV] = str(threads)
        os.environ[BATCH_ENV] = f"{max_batch},{wait_ms}"
        os.environ[BACKEND_ENV] = backend
        os.environ[DEVICE_ENV] = device
        if backend != "torch":  # a missing export or onnxruntime: one line now, not in every worker
            from sentiment import export

            export.onnx_model(the_run, backend)
        typer.echo(f"serving {the_run.path} at {where} with {workers} workers (docs at {where}/docs); Ctrl-C stops")
        uvicorn.run("sentiment.serve:create_app_from_env", factory=True, workers=workers, **settings)
        return
    model = ServedModel(the_run, device=device, backend=backend)
    how = [model.family] + ([device] if device != "cpu" else []) + ([backend] if backend != "torch" else [])
    typer.echo(
        f"serving {the_run.path} ({', '.join(how)}; "
        f"{', '.join(model.classes)}) at {where} "
        f"(docs at {where}/docs); Ctrl-C stops"
    )
    uvicorn.run(create_app(model, max_batch=max_batch, wait_ms=wait_ms), **settings)


@app.command("export")
def export_cmd(
    run: Annotated[str, typer.Argument(help="a text run folder")],
    format: Annotated[
        str, typer.Option("--format", help="onnx (TextCNN, BiRNN, fastText, transformer) or hf (transformer)")
    ] = "onnx",
    quantize: Annotated[
        str | None, typer.Option("--quantize", help="int8: also onnxruntime's dynamic int8 quantization")
    ] = None,
    out: Annotated[
        str | None,
        typer.Option("--out", help="a folder to ship (with the tokenizer's files); default: RUN/export, for --backend"),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="replace an export that is there")] = False,
):
    """Export a text run's network to ONNX (--backend onnx runs it) or a transformer run as a Hugging
    Face model folder; each checked against the run before it is kept."""
    from sentiment import export

    if format not in ("onnx", "hf"):
        raise SentimentError(f"--format {format!r}: this version writes onnx or hf")
    if format == "hf":
        if quantize:
            raise SentimentError("--quantize is for --format onnx")
        files = export.hf(run, out=out, force=force, echo=typer.echo)
        typer.echo(f"export: {files[0].parent}")
        return
    if quantize not in (None, "int8"):
        raise SentimentError(f"--quantize {quantize!r}: the one quantization is int8")
    files = export.onnx(run, quantize=quantize, out=out, force=force, echo=typer.echo)
    typer.echo(f"export: {files[0].parent}")


@app.command("evaluate")
def evaluate_cmd(
    run: RunOpt = None,
    data: DataOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", help="a balanced random subset of the test split")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="for --limit; default: the run's test subset")] = None,
    as_json: JsonOpt = False,
    device: Annotated[str, typer.Option("--device")] = "auto",
    plot: PlotOpt = None,
    backend: BackendOpt = "torch",
):
    """Accuracy, balanced accuracy, macro F1, calibration (ECE), per-class precision/recall/F1 and
    the confusion matrix on a test split."""
    notes: list[str] = []
    target = _target_of(run) if plot else "label"
    if target == "rating":
        raise SentimentError("--plot draws a reliability diagram of probabilities; a rating run has none")
    if target == "multilabel":
        raise SentimentError(
            "--plot draws a reliability diagram of one-label probabilities; a multi-label run has none"
        )
    report = api.evaluate(run, data, limit=limit, seed=seed, device=device, progress=not as_json and _bars(),
                          echo=notes.append, backend=backend)  # fmt: skip
    if plot:
        report["reliability_plot"] = str(_reliability_plot(report, plot, f"{Path(report['run']).name} on "
                                                                        f"{Path(report['source']).name}"))  # fmt: skip
    if not as_json:
        for note in notes:
            typer.echo(note)
    if as_json:
        typer.echo(json.dumps(report))
        return
    typer.echo(f"run {report['run']} on {report['source']}: {report['examples']:,} reviews")
    _print_report(report)


def _reliability_plot(report: dict, out: str, title: str) -> Path:
    from sentiment import calibration

    figures = {"ECE": report["ece"], "ECE floor": report["ece_floor"], "mean confidence": report["mean_confidence"],
               "accuracy": report["accuracy"]}  # fmt: skip
    path = calibration.plot(report["reliability"], out, title=title, figures=figures)
    return path


def _target_of(run: str | None) -> str:
    from sentiment.runs import Run

    return Run.open(run, kind="text").read_json("config.json").get("target", "label")


def _print_report(report: dict) -> None:
    """`loop.classification_report` (or a rating run's `targets.rating_report`, a multi-label run's
    `targets.multilabel_report`) as a terminal reads it."""
    if report.get("target") == "rating":
        typer.echo(
            f"MAE {report['mae']:.4f}   RMSE {report['rmse']:.4f}   Spearman {report['spearman']:.4f}   "
            f"(mean rating {report['mean_rating']:.2f}, mean prediction {report['mean_prediction']:.2f})"
        )
        return
    if report.get("target") == "multilabel":
        typer.echo(
            f"micro F1 {report['micro_f1']:.4f}   macro F1 {report['macro_f1']:.4f}   exact match "
            f"{report['exact_match']:.4f}   (labels per text {report['labels_per_text']:.2f}, predicted "
            f"{report['predicted_per_text']:.2f})"
        )
        width = max(len(c) for c in report["classes"]) + 2
        typer.echo(f"{'':{width}}precision  recall  f1      support  threshold")
        for name, m in report["per_label"].items():
            typer.echo(f"{name:{width}}{m['precision']:.4f}     {m['recall']:.4f}  {m['f1']:.4f}  "
                       f"{m['support']:<7}  {m['threshold']:.2f}")  # fmt: skip
        return
    typer.echo(
        f"accuracy {report['accuracy']:.4f}   balanced accuracy {report['balanced_accuracy']:.4f}   "
        f"macro F1 {report['f1']:.4f}"
    )
    if "ece" in report:
        typer.echo(
            f"calibration: ECE {report['ece']:.4f} (15 bins), mean confidence {report['mean_confidence']:.4f}"
            + (f"; reliability diagram {report['reliability_plot']}" if report.get("reliability_plot") else "")
        )
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
    from sentiment.curves import plot_runs
    from sentiment.runs import Run

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
    figures = ("val_acc", "test_acc")
    if all(s.get("target") == "rating" for s in summaries):
        figures = ("val_mae", "test_mae", "test_spearman")
    elif all(s.get("target") == "multilabel" for s in summaries):
        figures = ("val_micro_f1", "test_micro_f1", "test_macro_f1")
    keys = ("model", "epochs", "best_epoch", "train_examples", *figures, "train_examples_per_s", "wall_s")
    header = ["run", *keys]
    table = [[Path(s["run"]).name, *(_fmt(s.get(k), k) for k in keys)] for s in summaries]
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(len(header))]
    for row in [header, *table]:
        typer.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)))
    typer.echo(f"picture: {path}")


def _fmt(v, key: str) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if key.endswith(("acc", "mae", "spearman", "f1")) else f"{v:.1f}"
    return "-" if v is None else str(v)


@app.command("image-finetune")
@with_settings("image")
def image_finetune_cmd(
    config_file: Annotated[
        str | None, typer.Option("--config", help="a TOML file of settings (see configs/hotdog.toml)")
    ] = None,
    settings: dict | None = None,
    quiet: QuietOpt = False,
):
    """Fine-tune an ImageNet CNN on a folder of photos (the hot dog recipe by default)."""
    given = {k: v for k, v in settings.items() if v is not None}
    path = api.train(config_file=config_file, kind="image", progress=_bars(quiet), echo=typer.echo, **given)
    s = json.loads((path / "summary.json").read_text())
    initial = s.get("initial_val_acc")
    typer.echo(
        f"done: test accuracy {s['test_acc']:.4f} after {_count(s['epochs'], 'epoch')}{_kept(s)}"
        + (f" (validation {initial:.4f} before training)" if initial is not None else "")
        + f", {s['train_examples_per_s']:.1f} train images/s, {s['wall_s']:.0f} s; run folder {path}{_size(s)}"
    )


def _image_files(paths: list[str]) -> list[str]:
    """The paths given, each folder replaced by the images in it and below it (sorted)."""
    from sentiment.vision.folder import IMAGE_EXTENSIONS, list_images

    out = []
    for p in paths:
        folder = Path(p)
        if not folder.is_dir():
            out.append(p)
            continue
        found = sorted(str(f) for f in list_images(folder))
        if not found:
            raise SentimentError(f"{folder} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
        out += found
    return out


@app.command("image-predict")
def image_predict_cmd(
    images: Annotated[list[str], typer.Argument(help="image files, or folders of them")],
    run: ImageRunOpt = None,
    as_json: JsonOpt = False,
    device: Annotated[str, typer.Option("--device")] = "cpu",
):
    """Classify images with a trained image run: class, probability and the file, one line each."""
    images = _image_files(images)
    clf = api.load(run, device=device, kind="image")
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


@app.command("image-evaluate")
def image_evaluate_cmd(
    run: ImageRunOpt = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="photos: a folder (or archive) with test/ or val/, or one folder per class; "
            "default: where the run was trained",
        ),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="which split of --data: test (or val) or train")] = "test",
    limit: Annotated[int | None, typer.Option("--limit", help="a balanced random subset", min=1)] = None,
    mistakes: Annotated[
        str | None, typer.Option("--mistakes", help="write a contact sheet (PNG) of the worst mistakes here")
    ] = None,
    top: Annotated[int, typer.Option("--top", help="how many mistakes the sheet and the list show", min=1)] = 16,
    as_json: JsonOpt = False,
    device: Annotated[str, typer.Option("--device")] = "cpu",
    plot: PlotOpt = None,
):
    """Accuracy, per-class precision/recall, calibration (ECE) and the confusion matrix of an image
    run on a folder of photos, the mistakes it was surest of, and optionally a contact sheet of them."""
    from sentiment.vision.report import evaluate_folder, mistakes_sheet, worst_mistakes

    clf = api.load(run, device=device, kind="image")
    meta = clf.run.read_json("config.json")
    where = data or meta.get("data_source") or meta.get("data_root")
    if where is None:
        raise SentimentError(f"{clf.run.path} does not record its photos; give --data")
    report, outcomes = evaluate_folder(clf, where, split=split, limit=limit, progress=not as_json and _bars())
    if plot:
        report["reliability_plot"] = str(_reliability_plot(report, plot, f"{clf.run.path.name} on {report['data']}"))
    worst = worst_mistakes(outcomes, top)
    sheet = mistakes_sheet(worst, mistakes) if mistakes and worst else None
    if as_json:
        typer.echo(
            json.dumps(
                report | {"run": str(clf.run.path), "mistakes": worst, "mistakes_sheet": str(sheet) if sheet else None}
            )
        )
        return
    typer.echo(f"run {clf.run.path} on {report['data']}: {report['examples']:,} images")
    _print_report(report)
    wrong = sum(o["predicted"] != o["label"] for o in outcomes)
    if wrong:
        typer.echo(f"{wrong} mistake{'s' if wrong > 1 else ''}; the {len(worst)} surest:")
        for m in worst:
            typer.echo(f"  {m['predicted']} {m['probability']:.2f} (is {m['label']})  {m['image']}")
    if sheet:
        typer.echo(f"contact sheet: {sheet}")
    elif mistakes:
        typer.echo(f"no mistakes: {mistakes} not written")


def _image_settings():
    return registry.get("image").settings


@app.command("image-augment")
def image_augment_cmd(
    data: Annotated[str | None, typer.Option("--data", help=config.help_of(_image_settings(), "data"))] = None,
    out: Annotated[str, typer.Option("--out", help="the contact sheet (PNG) to write")] = "augment.png",
    backbone: Annotated[
        str, typer.Option("--backbone", help="whose input size and normalisation")
    ] = _image_settings().backbone,
    color_jitter: Annotated[
        float, typer.Option("--color-jitter", help=config.help_of(_image_settings(), "color_jitter"), min=0)
    ] = 0.0,
    images: Annotated[int, typer.Option("--images", help="training photos, one row each", min=1)] = 4,
    versions: Annotated[int, typer.Option("--versions", help="augmented versions of each", min=1)] = 5,
    seed: Annotated[int, typer.Option("--seed")] = 0,
):
    """A contact sheet of training photos as the augmentation turns them into model inputs."""
    from sentiment.vision.backbones import get_backbone
    from sentiment.vision.report import augmentation_sheet

    b = get_backbone(backbone)
    path = augmentation_sheet(
        data,
        out,
        size=b.input_size,
        mean=b.mean,
        std=b.std,
        color_jitter=color_jitter or None,
        images=images,
        versions=versions,
        seed=seed,
    )
    typer.echo(f"wrote {path}: {images} training photos, {versions} model inputs each ({backbone}, {b.input_size} px)")


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
