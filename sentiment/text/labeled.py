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
from pathlib import Path

from sentiment.errors import SentimentError
from sentiment.fsutil import split_lines

TEXT_COLUMNS = ("text", "sentence", "review", "content", "document")
LABEL_COLUMNS = ("label", "labels", "tags", "sentiment", "class", "category", "target")
SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}

Rows = list[tuple[str, str, int]]  # (text, raw label, line number); a rating file's label is a float,
# a multi-label file's a tuple of names


def is_labeled_file(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.suffix.lower() in SUFFIXES and not p.is_dir()


def _decode(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SentimentError(f"no file at {path}") from None
    except IsADirectoryError:
        raise SentimentError(f"{path} is a folder, not a labeled CSV/TSV/JSONL file") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise SentimentError(f"{path}, line {line}: not UTF-8 text; save the file as UTF-8") from None


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


def _read_delimited(path: Path, text: str, delimiter: str, text_col, label_col, target: str = "label") -> Rows:
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    columns = [c for c in (reader.fieldnames or []) if c is not None]
    if not columns:
        raise SentimentError(f"{path} is empty: expected a header line naming the text and label columns")
    tcol = _pick(columns, text_col, TEXT_COLUMNS, "text", path)
    lcol = _pick(columns, label_col, LABEL_COLUMNS, "label", path)
    rows: Rows = []
    try:
        for rec in reader:
            line = reader.line_num
            if not any((v or "").strip() for k, v in rec.items() if k is not None):
                continue  # blank line
            t, lab = rec.get(tcol), rec.get(lcol)
            if t is None:
                raise SentimentError(f"{path}, line {line}: the row has too few fields")
            rows.append((t, _label_of(lab, path, line, target), line))
    except csv.Error as e:
        raise SentimentError(f"{path}, line {reader.line_num}: {e}") from None
    return rows


def _read_jsonl(path: Path, text: str, text_col, label_col, target: str = "label") -> Rows:
    rows: Rows = []
    tcol = lcol = None
    for line_no, line in enumerate(split_lines(text), 1):
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
        rows.append((_text_str(rec[tcol], path, line_no), _label_of(rec.get(lcol), path, line_no, target), line_no))
    return rows


def read_labeled_rows(
    path: str | os.PathLike, *, text_col: str | None = None, label_col: str | None = None, target: str = "label"
) -> Rows:
    """(text, label, line) for every non-blank record of a CSV, TSV or JSON Lines file; with
    `target="rating"`, the label column holds numbers and each label is a float; with "multilabel",
    each label is a tuple of names (see `targets.parse_labels`)."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise SentimentError(f"{path}: unknown file type; use .csv, .tsv or .jsonl")
    text = _decode(path)
    if kind == "jsonl":
        rows = _read_jsonl(path, text, text_col, label_col, target)
    else:
        rows = _read_delimited(path, text, "," if kind == "csv" else "\t", text_col, label_col, target)
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
