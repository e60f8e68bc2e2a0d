"""Users' own labeled text: CSV, TSV or JSON Lines with a text column and a label column.

Labels may be any strings or integers, two or more classes. Class names are sorted (numerically
when every label is an integer) so the same file always gives the same class order; that order
is saved with every run. A rating run's label column holds numbers; a multi-label run's holds a
list per text (JSON Lines) or names separated by `|`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from sentiment.errors import SentimentError

TEXT_COLUMNS = ("text", "sentence", "review", "content", "document")
LABEL_COLUMNS = ("label", "labels", "tags", "sentiment", "class", "category", "target")
SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}

Row = tuple[str, str, int]  # (text, raw label, line number); a rating file's label is a float,
# a multi-label file's a tuple of names
Rows = list[Row]


def is_labeled_file(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.suffix.lower() in SUFFIXES and not p.is_dir()


def _open_text(path: Path, newline: str):
    """`path` as UTF-8 text read as it goes (a leading byte-order mark dropped), and the binary
    file under it (whose position says how far reading has got)."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed by the caller, with the text file over it
    except FileNotFoundError:
        raise SentimentError(f"no file at {path}") from None
    except IsADirectoryError:
        raise SentimentError(f"{path} is a folder, not a labeled CSV/TSV/JSONL file") from None
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline=newline), raw


def not_utf8(path: Path) -> SentimentError:
    """The error for a file that is not UTF-8, naming the first line that is not."""
    line = 0
    with open(path, "rb") as f:
        for line, raw in enumerate(f, 1):  # noqa: B007 - the line where the loop stops is the answer
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                break
    return SentimentError(f"{path}, line {line}: not UTF-8 text; save the file as UTF-8")


def _pick(columns: list[str], wanted: str | None, defaults: tuple[str, ...], what: str, path: Path) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise SentimentError(f"{path} has no {what} column {wanted!r}; its columns are: {', '.join(columns)}")
        return wanted
    lowered = {c.lower(): c for c in columns}
    for name in defaults:
        if name in lowered:
            return lowered[name]
    flag = "--text-col" if what == "text" else "--label-col"
    raise SentimentError(
        f"{path} has none of the usual {what} columns ({', '.join(defaults)}); name one with {flag} "
        f"(its columns are: {', '.join(columns) or 'none'})"
    )


def _label_str(value, path: Path, line: int) -> str:
    from sentiment.targets import LABEL_SEPARATOR

    if value is None or (isinstance(value, str) and not value.strip()):
        raise SentimentError(f"{path}, line {line}: empty label")
    if isinstance(value, list) or isinstance(value, str) and LABEL_SEPARATOR in value:
        raise SentimentError(
            f"{path}, line {line}: label {value!r} holds several labels; a multi-label file needs --multi-label"
        )
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise SentimentError(f"{path}, line {line}: label {value!r} is not a class name or an integer")
    if isinstance(value, float):
        value = int(value)
    if not isinstance(value, (str, int)):
        raise SentimentError(f"{path}, line {line}: label {value!r} is not a class name or an integer")
    return str(value).strip()


def _text_str(value, path: Path, line: int) -> str:
    if not isinstance(value, str):
        raise SentimentError(f"{path}, line {line}: the text is {type(value).__name__}, not a string")
    return value


def _label_of(value, path: Path, line: int, target: str):
    if target == "label":
        return _label_str(value, path, line)
    from sentiment.targets import parse_labels, parse_rating

    if target == "multilabel":
        return parse_labels(value, f"{path}, line {line}")

    if value is None or (isinstance(value, str) and not value.strip()):
        raise SentimentError(f"{path}, line {line}: empty rating")
    return parse_rating(value, f"{path}, line {line}")


def _delimited_rows(path: Path, lines, delimiter: str, text_col, label_col, target: str, keep) -> Iterator[Row]:
    reader = csv.DictReader(lines, delimiter=delimiter)
    try:
        columns = [c for c in (reader.fieldnames or []) if c is not None]
        if not columns:
            raise SentimentError(f"{path} is empty: expected a header line naming the text and label columns")
        tcol = _pick(columns, text_col, TEXT_COLUMNS, "text", path)
        lcol = _pick(columns, label_col, LABEL_COLUMNS, "label", path)
        for rec in reader:
            line = reader.line_num
            if not any((v or "").strip() for k, v in rec.items() if k is not None):
                continue  # blank line
            t, lab = rec.get(tcol), rec.get(lcol)
            if t is None:
                raise SentimentError(f"{path}, line {line}: the row has too few fields")
            label = _label_of(lab, path, line, target)
            yield keep(t), label, line
    except csv.Error as e:
        raise SentimentError(f"{path}, line {reader.line_num}: {e}") from None


def _jsonl_rows(path: Path, lines, text_col, label_col, target: str, keep) -> Iterator[Row]:
    tcol = lcol = None
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise SentimentError(f"{path}, line {line_no}: not a JSON object ({e.msg})") from None
        if not isinstance(rec, dict):
            raise SentimentError(f"{path}, line {line_no}: expected a JSON object, got {type(rec).__name__}")
        if tcol is None:
            tcol = _pick(list(rec), text_col, TEXT_COLUMNS, "text", path)
            lcol = _pick(list(rec), label_col, LABEL_COLUMNS, "label", path)
        if tcol not in rec:
            raise SentimentError(f"{path}, line {line_no}: no {tcol!r} field")
        text = _text_str(rec[tcol], path, line_no)
        label = _label_of(rec.get(lcol), path, line_no, target)
        yield keep(text), label, line_no


def iter_labeled_rows(
    path: str | os.PathLike,
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    target: str = "label",
    keep: Callable[[str], str] | None = None,
    read_to: Callable[[int], None] | None = None,
) -> Iterator[Row]:
    """(text, label, line) for every non-blank record of a CSV, TSV or JSON Lines file, read as it
    goes (the file is never held whole). `keep(text)` is what a row carries as its text (a streamed
    preparation takes the text and keeps none); `read_to(bytes)` hears how far into the file
    reading has got. A bad row is an error naming its line, raised when reading reaches it."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise SentimentError(f"{path}: unknown file type; use .csv, .tsv or .jsonl")
    keep = keep or (lambda text: text)
    text, raw = _open_text(path, "" if kind != "jsonl" else "\n")
    with text:
        if kind == "jsonl":  # lines end at "\n" (or "\r\n") only, as `fsutil.split_lines` splits them
            lines = (line.rstrip("\n").removesuffix("\r") for line in text)
            rows = _jsonl_rows(path, lines, text_col, label_col, target, keep)
        else:
            rows = _delimited_rows(path, text, "," if kind == "csv" else "\t", text_col, label_col, target, keep)
        try:
            for n, row in enumerate(rows):
                yield row
                if read_to is not None and n % 1024 == 0:
                    read_to(raw.tell())
        except UnicodeDecodeError:
            raise not_utf8(path) from None
        if read_to is not None:
            read_to(raw.tell())


def read_labeled_rows(path: str | os.PathLike, **options) -> Rows:
    """Every row `iter_labeled_rows` reads, with its options (`target="rating"`: each label a
    float; "multilabel": a tuple of names, see `targets.parse_labels`); a file with none is an error."""
    rows = list(iter_labeled_rows(path, **options))
    if not rows:
        raise SentimentError(f"{path} holds no labeled rows")
    return rows


def class_order(labels) -> list[str]:
    """Sorted class names: numerically when all are integers, else alphabetically."""
    unique = set(labels)
    try:
        return sorted(unique, key=int)
    except ValueError:
        return sorted(unique)
