"""The Python API: train a model into a run folder, load a run folder as a classifier, evaluate it.

    import sentiment

    run = sentiment.train(model="linear", limit_train=2000, limit_test=500, out="runs")
    clf = sentiment.load(run)
    for p in clf.predict(["a wonderful film", "a waste of time"]):
        print(p.label, round(p.probability, 3), p.scores)
    print(sentiment.evaluate(run)["accuracy"])

The command line is a layer over these: `sentiment train` is `train`, `predict` and `explain` are
`load(...).predict` / `.explain`, `evaluate` is `evaluate`. Imports no torch until a model is built.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sentiment import config, registry
from sentiment.errors import SentimentError
from sentiment.runs import Run


def _quiet(_: str) -> None:
    pass


def train(
    *,
    config_file: str | None = None,
    resume: str | Path | None = None,
    kind: str | None = None,
    progress: bool = False,
    echo: Callable[[str], None] | None = print,
    **settings,
) -> Path:
    """Train a model into a new run folder and return the folder's path.

    `settings` are those of `sentiment train --help` (or `image-finetune --help` with
    `model="image"`), as Python names: `model="transformer", epochs=2, data="reviews.csv"`. They
    layer over `config_file` (a TOML file like those in configs/) over the family's defaults.
    `kind` ("text" or "image") refuses a family of the other kind and picks the default family of
    that kind when none is named. `resume` continues an interrupted run folder instead (`data` /
    `test_data` may say where its data is now). `echo` receives the lines the command line prints
    (None: silent); `progress` draws bars.
    """
    from sentiment import distributed, recipe

    echo = echo or _quiet
    try:
        if resume is not None:
            moved = {k: settings.pop(k) for k in ("data", "test_data") if k in settings}
            if settings or config_file:
                shown = ", ".join(sorted(settings) + (["config_file"] if config_file else []))
                raise SentimentError(f"resume continues with the run's saved settings; drop {shown}")
            run = recipe.resume(resume, **moved, progress=progress, echo=echo)
        else:
            cfg = config.family_config(settings.get("model"), config_file, settings, kind=kind, note=echo)
            if distributed.is_main():
                echo("config: " + ", ".join(f"{k}={v}" for k, v in config.to_dict(cfg).items() if v is not None))
            run = recipe.fine_tune(cfg, progress=progress, echo=echo)
    finally:
        distributed.cleanup()
    return run.path


def load(
    run: str | Path | None = None,
    *,
    device: str = "cpu",
    kind: str | None = None,
    texts: int | None = None,
    backend: str = "torch",
):
    """A trained run folder as its family's classifier (`tasks.Classifier`): `.predict(inputs)` gives
    a `Prediction` (label, probability, scores) per input, `.explain(text)` says why, `.classes`
    names the labels. `run` defaults to the newest run (of `kind`: "text" or "image"); `texts`, the
    number of inputs about to be asked at once, picks the family's fastest form for that many.
    `backend` "onnx" or "onnx-int8" runs a text run's export (`sentiment export`) with onnxruntime."""
    if run is None:
        opened = Run.open(None, kind=kind or "text")
    else:
        opened = Run.open(run)
    kind = kind or opened.read_json("config.json").get("kind", "text")
    hint = "; use sentiment image-predict" if kind == "text" else "; use sentiment predict"
    if backend == "torch":
        return registry.open_classifier(opened, device, kind=kind, texts=texts, hint=hint)
    from sentiment import export

    if backend not in export.BACKENDS:
        raise SentimentError(f"unknown backend {backend!r}; one of {', '.join(export.BACKENDS)}")
    if device not in ("cpu", "auto"):
        raise SentimentError(f"--backend {backend} runs on the CPU (onnxruntime); drop --device {device}")
    clf = registry.open_classifier(opened, "cpu", kind=kind, hint=hint)  # the torch form: tokenization, batches
    return export.with_backend(clf, backend)


def evaluate(
    run: str | Path | None = None,
    data: str | Path | None = None,
    *,
    limit: int | None = None,
    seed: int | None = None,
    device: str = "auto",
    progress: bool = False,
    echo: Callable[[str], None] | None = None,
    backend: str = "torch",
) -> dict:
    """Accuracy, macro F1, per-class precision/recall/F1 and the confusion matrix of a text run.

    `data`: a labeled file (every row is test data), an IMDb folder or archive (its test split), or
    None: the test split the run was trained beside, read from where the run recorded it (the held-out
    part of its training file, or its test file). The training file itself scores its held-out part
    (and says so through `echo`). `limit` draws a balanced subset, with the seed training's
    `limit_test` drew with unless `seed` is given. The report's `run` and `source` name what was read."""
    from sentiment.text.classify import corpus_labels, report
    from sentiment.text.corpus import balanced_subset
    from sentiment.text.scoring import score_test

    clf = load(run, device=device, kind="text", backend=backend)
    meta = clf.run.read_json("config.json")
    if seed is None:  # the same subset that training's --limit-test drew
        seed = config.held_out_seed(meta["config"].get("seed", 0))
    notes = [echo or _quiet]

    def read(stream):
        corpus = test_corpus(clf.run, data, echo=notes[0], stream=stream)
        notes[0] = _quiet  # said once, not again on the second read
        return corpus

    def choose(corpus):
        if clf.rating is None:  # a label the run never saw: an error now, before any text is scored
            corpus_labels(corpus, clf.classes)
        return balanced_subset(corpus.test, limit, len(corpus.classes), seed)

    corpus, outputs = score_test(clf, read, choose, progress=progress)
    # the file read: a run trained with a test file is scored on that file, not on its training file
    source = meta.get("test_data_source") if data is None and meta.get("test_data_source") else corpus.source
    return report(clf, outputs, corpus) | {"run": str(clf.run.path), "source": source}


def test_corpus(run: Run, data: str | Path | None, *, echo: Callable[[str], None] = _quiet, stream=None):
    """The labeled examples `evaluate` scores a text run on (see there), as a `text.corpus.Corpus`;
    with `stream`, read for it (see `text.corpus.reading`)."""
    from sentiment.text.corpus import load_corpus, load_test_file
    from sentiment.text.labeled import is_labeled_file

    meta = run.read_json("config.json")
    cfg = meta["config"]
    trained_on = meta.get("data_source")
    data = str(data) if data is not None else None
    same_file = (
        data is not None
        and trained_on is not None
        and is_labeled_file(trained_on)
        and Path(data).resolve() == Path(trained_on)
    )
    if same_file and not meta.get("test_data_source"):  # the file it was trained on: its held-out part only
        data = None
        echo(
            f"{trained_on} is the file this run was trained on: scoring its held-out "
            f"{cfg.get('test_fraction', 0.2):.0%} (the rest was training data)"
        )
    if data is not None and is_labeled_file(data):  # a user's file: every row is test data
        return load_test_file(
            data,
            text_col=cfg.get("text_col"),
            label_col=cfg.get("label_col"),
            target=cfg.get("target", "label"),
            stream=stream,
        )
    # IMDb's test split, or the run's own held-out split, from where the run read it
    return load_corpus(
        data if data is not None else trained_on or cfg.get("data"),
        test_data=None if data is not None else meta.get("test_data_source") or cfg.get("test_data"),
        text_col=cfg.get("text_col"),
        label_col=cfg.get("label_col"),
        test_fraction=cfg.get("test_fraction", 0.2),
        seed=cfg.get("seed", 0),
        splits=("test",),
        target=cfg.get("target", "label"),
        stream=stream,
    )


def families(kind: str | None = None) -> list[str]:
    """The names of the registered model families (of `kind`: "text" or "image")."""
    return registry.names(kind)
