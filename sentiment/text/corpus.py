"""A corpus: train and test examples plus the class names, from IMDb or from users' own files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sentiment.errors import SentimentError
from sentiment.subsets import balanced_indices, stratified_indices, validation_indices
from sentiment.text import imdb
from sentiment.text.examples import Example
from sentiment.text.labeled import class_order, is_labeled_file, read_labeled_rows


@dataclass
class Corpus:
    train: list[Example]
    test: list[Example]
    classes: list[str]  # display names, index = label
    label_keys: list[str]  # the labels as the data spells them (IMDb: "neg", "pos")
    source: str
    target: str = "label"  # "rating": every example's label is 0 (one output) and its rating the target;
    # "multilabel": every example's `labels` are the target

    def targets(self, examples: list[Example]) -> np.ndarray:
        """What a model of this corpus learns from `examples` (`targets_of` with its target)."""
        return targets_of(examples, self.target, len(self.classes))

    def counts(self, split: str) -> dict[str, int]:
        """Texts per class (a multi-label corpus: texts with each label)."""
        examples = getattr(self, split)
        if self.target == "multilabel":
            n = targets_of(examples, "multilabel", len(self.classes)).sum(0).astype(int)
        else:
            n = np.bincount([ex.label for ex in examples], minlength=len(self.classes))
        return {key: int(c) for key, c in zip(self.label_keys, n, strict=True)}


def _examples(
    rows, classes: list[str], path: str | os.PathLike, keys: list[str] | None = None, target: str = "label"
) -> list[Example]:
    """Rows as examples whose label is the index of its class (by name, or as `keys` spell it); a
    label outside `classes` is an error. A rating file's rows: label 0, the row's number as rating."""
    name = Path(path).name
    if target == "rating":
        return [
            Example(text=text, label=0, rating=value, id=f"{name}:{line}", slot=i)
            for i, (text, value, line) in enumerate(rows)
        ]
    index = {c: i for i, c in enumerate(classes)} | {k: i for i, k in enumerate(keys or [])}
    if target == "multilabel":
        return _multilabel_examples(rows, classes, index, path)
    out = []
    for i, (text, lab, line) in enumerate(rows):
        if lab not in index:
            raise SentimentError(
                f"{path}, line {line}: label {lab!r} is not among the training classes ({', '.join(classes)})"
            )
        out.append(Example(text=text, label=index[lab], id=f"{name}:{line}", slot=i))
    return out


def _multilabel_examples(rows, classes: list[str], index: dict[str, int], path) -> list[Example]:
    """A multi-label file's rows as examples: `labels` the indices of the text's labels, `label` the
    one of them the training split has fewest of (what stratified splits balance)."""
    name = Path(path).name
    for _, labs, line in rows:
        for lab in labs:
            if lab not in index:
                raise SentimentError(
                    f"{path}, line {line}: label {lab!r} is not among the training labels ({', '.join(classes)})"
                )
    frequency = np.bincount([index[lab] for _, labs, _ in rows for lab in labs], minlength=len(classes))
    out = []
    for slot, (text, labs, line) in enumerate(rows):
        chosen = tuple(sorted(index[lab] for lab in labs))
        rarest = min(chosen, key=lambda i: (frequency[i], i))
        out.append(Example(text=text, label=rarest, labels=chosen, id=f"{name}:{line}", slot=slot))
    return out


def label_names(train_rows, target: str, where) -> list[str]:
    """The classes (or a multi-label file's labels) a training file's rows give, sorted as
    `class_order` sorts them; fewer than two, or a multi-label file with one label per text, is an error."""
    classes = _names(train_rows, target)
    if target == "rating":
        return classes
    if target == "multilabel":
        if len(classes) < 2:
            raise SentimentError(f"{where} has only one label ({classes[0]!r}); a multi-label run needs at least two")
        if all(len(labs) == 1 for _, labs, _ in train_rows):
            raise SentimentError(
                f"every text in {where} has exactly one label; train a classifier (drop --multi-label) instead"
            )
        return classes
    if len(classes) < 2:
        raise SentimentError(f"{where} has only one class ({classes[0]!r}); at least two are needed")
    return classes


def _names(rows, target: str) -> list[str]:
    """The classes `rows` name (a multi-label file's: every label of every row), in `class_order`;
    a rating file's one output."""
    from sentiment.targets import RATING_CLASSES

    if target == "rating":
        return list(RATING_CLASSES)
    if target == "multilabel":
        return class_order(lab for _, labs, _ in rows for lab in labs)
    return class_order(lab for _, lab, _ in rows)


def load_labeled(
    train_path: str | os.PathLike,
    test_path: str | os.PathLike | None = None,
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    target: str = "label",
    stream=None,
) -> Corpus:
    """A corpus from a CSV/TSV/JSONL train file plus a test file, or one file split by `test_fraction`;
    `target="rating"` reads the label column as numbers, `"multilabel"` as lists of labels. With
    `stream` (see `reading`), each file's texts go to it as they are read and the examples keep none."""
    from sentiment.targets import Rating

    columns = dict(text_col=text_col, label_col=label_col, target=target)
    train_rows = read_labeled_rows(train_path, **columns, **reading(stream, train_path))
    test_rows = read_labeled_rows(test_path, **columns, **reading(stream, test_path)) if test_path else None
    if target == "rating":
        Rating.of([lab for _, lab, _ in train_rows], str(train_path))  # two values at least
    classes = label_names(train_rows, target, train_path)
    name = Path(train_path).name
    train = _examples(train_rows, classes, train_path, target=target)
    if test_rows is not None:
        test = _examples(test_rows, classes, test_path, target=target)
    else:
        if not 0.0 < test_fraction < 1.0:
            raise SentimentError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
        held = set(stratified_indices([ex.label for ex in train], test_fraction, seed).tolist())
        test = [ex for i, ex in enumerate(train) if i in held]
        train = [ex for i, ex in enumerate(train) if i not in held]
        if not test or not train:
            raise SentimentError(f"{train_path} is too small to split into train and test")
    return Corpus(train=train, test=test, classes=classes, label_keys=classes, source=name, target=target)


def load_corpus(
    data: str | os.PathLike | None = None,
    *,
    test_data: str | os.PathLike | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    splits: tuple[str, ...] = ("train", "test"),
    target: str = "label",
    stream=None,
) -> Corpus:
    """IMDb (folder or archive, found as `imdb.find_imdb` says) or a user's labeled file; with
    `target="rating"`, IMDb's star ratings (from its file names) or the file's numeric labels.
    With `stream`, texts go to it as they are read (see `reading`)."""
    given = dict(
        text_col=text_col, label_col=label_col, test_fraction=test_fraction, seed=seed, target=target, stream=stream
    )
    if data is not None and is_labeled_file(data):
        return load_labeled(data, test_data, **given)
    path = imdb.find_imdb(data)
    if is_labeled_file(path):  # $SENTIMENT_IMDB may name a user's file too
        return load_corpus(path, test_data=test_data, **given)
    if target == "multilabel":
        raise SentimentError(
            "IMDb has one label per review; --multi-label needs a labeled file whose label column holds lists "
            "(JSON Lines) or '|'-separated labels"
        )
    read = imdb.read_imdb_splits(path, splits, **reading(stream, path))
    if target == "rating":
        from sentiment.targets import RATING_CLASSES

        return Corpus(
            train=as_ratings(read.get("train", [])),
            test=as_ratings(read.get("test", [])),
            classes=list(RATING_CLASSES),
            label_keys=list(RATING_CLASSES),
            source=str(path),
            target="rating",
        )
    return Corpus(
        train=read.get("train", []),
        test=read.get("test", []),
        classes=list(imdb.CLASSES),
        label_keys=list(imdb.LABELS),
        source=str(path),
    )


def as_ratings(examples: list[Example]) -> list[Example]:
    """IMDb's reviews as a rating run reads them: label 0 (one output), their stars as the target."""
    return [Example(text=ex.text, label=0, rating=float(ex.rating), id=ex.id, slot=ex.slot) for ex in examples]


def reading(stream, path) -> dict:
    """How a reader reads `path` for `stream` (a streamed preparation: `stream.reading(path)` gives
    the `keep` and `read_to` the readers take); nothing without one, and texts are kept."""
    return stream.reading(Path(path)) if stream is not None else {}


def targets_of(examples: list[Example], target: str = "label", num_classes: int = 0) -> np.ndarray:
    """What a model learns from `examples`: their class indices (int64), their ratings (float32), or
    (multi-label, of `num_classes` labels) which labels each has (float32 `[n, num_classes]` 0/1)."""
    if target == "rating":
        return np.array([ex.rating for ex in examples], dtype=np.float32)
    if target == "multilabel":
        from sentiment.targets import multi_hot

        return multi_hot([ex.labels for ex in examples], num_classes)
    return np.array([ex.label for ex in examples], dtype=np.int64)


def load_test_file(
    path: str | os.PathLike,
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    target: str = "label",
    stream=None,
) -> Corpus:
    """Every row of a labeled file as a test split (for evaluating a trained run on new data); with
    `stream`, its texts go to it as they are read (see `reading`)."""
    rows = read_labeled_rows(path, text_col=text_col, label_col=label_col, target=target, **reading(stream, path))
    classes = _names(rows, target)
    test = _examples(rows, classes, path, target=target)
    return Corpus(train=[], test=test, classes=classes, label_keys=classes, source=str(path), target=target)


def data_sources(cfg) -> tuple[str, str | None, str | None]:
    """Absolute paths of the data `cfg` reads (`--data`, or IMDb found as `imdb.find_imdb` says) and of
    its separate test and validation files, if any: what a run records so that `evaluate` and
    `--resume` find them from any folder and without the environment it was trained in."""
    data = Path(cfg.data) if cfg.data is not None and is_labeled_file(cfg.data) else imdb.find_imdb(cfg.data)
    test = str(Path(cfg.test_data).resolve()) if cfg.test_data else None
    val = str(Path(cfg.val_data).resolve()) if cfg.val_data else None
    return str(data.resolve()), test, val


def validation_split(cfg, corpus: Corpus, train: list[Example], stream=None) -> tuple[list[Example], list[Example]]:
    """`(train, validation)`: the rows of `cfg.val_data` (read for `stream`, if given), or a
    stratified, seeded `cfg.val_fraction` of `train` (at least one example of each class on both
    sides), or no validation at 0."""
    from sentiment.config import validation_seed

    if cfg.val_data:
        rows = read_labeled_rows(
            cfg.val_data,
            text_col=cfg.text_col,
            label_col=cfg.label_col,
            target=corpus.target,
            **reading(stream, cfg.val_data),
        )
        return train, _examples(rows, corpus.classes, cfg.val_data, corpus.label_keys, target=corpus.target)
    fraction = cfg.val_fraction
    if fraction == 0:
        return train, []
    labels = [ex.label for ex in train]
    hint = "give --val-data or --val-fraction 0"
    if corpus.target == "multilabel":  # stratified by each text's rarest label; a label may be no text's rarest
        if not fraction < 1:
            raise SentimentError(f"--val-fraction must be below 1 (0 = no validation split), got {fraction}")
        held = set(stratified_indices(labels, fraction, validation_seed(cfg.seed)).tolist())
    else:
        held = set(validation_indices(labels, corpus.classes, fraction, validation_seed(cfg.seed), hint=hint).tolist())
    return [ex for i, ex in enumerate(train) if i not in held], [ex for i, ex in enumerate(train) if i in held]


def load_subsets(cfg, *, split_validation: bool = True) -> tuple[Corpus, list[Example], list[Example], list[Example]]:
    """The corpus `cfg` names (`data`, `test_data`, columns, `test_fraction`) and its training,
    validation and test examples: `--limit-train` / `--limit-test` (balanced, seeded; the test draw
    with its own seed), then the validation split out of the training examples (`validation_split`;
    with `split_validation=False`, the validation list is empty and the caller splits)."""
    from sentiment.config import held_out_seed

    corpus = load_corpus(
        cfg.data,
        test_data=cfg.test_data,
        text_col=cfg.text_col,
        label_col=cfg.label_col,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
        target=getattr(cfg, "target", "label"),
    )
    k = len(corpus.classes)
    train = balanced_subset(corpus.train, cfg.limit_train, k, cfg.seed)
    train, val = validation_split(cfg, corpus, train) if split_validation else (train, [])
    test = balanced_subset(corpus.test, cfg.limit_test, k, held_out_seed(cfg.seed))
    return corpus, train, val, test


def balanced_subset(examples: list[Example], n: int | None, num_classes: int, seed: int) -> list[Example]:
    """A seeded random subset of `n` examples with the classes as even as the data allows, in the
    original order (see `sentiment.subsets.balanced_indices`); `None` keeps them all."""
    if n is None:
        return examples
    chosen = balanced_indices([ex.label for ex in examples], n, num_classes, seed)
    return [examples[i] for i in chosen]
