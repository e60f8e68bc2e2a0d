"""ImageNet-1k's classes by name, and the head-init specs that start a new head from their rows.

`imagenet_classes.txt` lists the 1000 classes in the order of an ImageNet classifier's rows, one line
each, its WordNet synonyms separated by ", " ("hotdog, hot dog, red hot" is row 934).

A head-init spec maps each class of a run to ImageNet rows: `imagenet:hotdog=934,not-hotdog=food`.
`auto` starts each class whose folder name is an ImageNet class from its row (see `auto_head_init`).
A class's rows are `+`-joined items, each a row number (`963`), a range (`924-933`), a class name
(`pizza`, `cheeseburger`; any synonym, any case, `_` for a space) or a group (`food`; `all`). A row
belongs to one class: a group leaves out the rows another class names, so `not-hotdog=food` beside
`hotdog=934` is every food row but the hot dog.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from sentiment.errors import SentimentError

IMAGENET_CLASSES = 1000  # the rows of an ImageNet-1k classifier
NAMES_FILE = Path(__file__).with_name("imagenet_classes.txt")
PREFIX = "imagenet:"
# The dishes, breads, fruits and vegetables: WordNet's food synsets among the 1000 classes, less
# hay (fodder) and cup (a measure), which are not what a photo of food shows.
FOOD_ROWS = tuple(row for row in range(923, 970) if row not in (958, 968))
GROUPS = {"food": FOOD_ROWS, "all": tuple(range(IMAGENET_CLASSES))}


@cache
def class_names() -> tuple[str, ...]:
    """The 1000 class names, in row order (each the full synonym list)."""
    names = tuple(NAMES_FILE.read_text(encoding="utf-8").splitlines())
    if len(names) != IMAGENET_CLASSES:
        raise RuntimeError(f"{NAMES_FILE} lists {len(names)} classes, not {IMAGENET_CLASSES}")
    return names


def short_name(row: int) -> str:
    """The first synonym of row `row`: 'hotdog' for 934."""
    return class_names()[row].split(", ")[0]


@cache
def _rows_by_name() -> dict[str, tuple[int, ...]]:
    by_name: dict[str, list[int]] = {}
    for row, names in enumerate(class_names()):
        for name in names.split(", "):
            by_name.setdefault(_key(name), []).append(row)
    return {name: tuple(dict.fromkeys(rows)) for name, rows in by_name.items()}


def _key(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def _item_rows(item: str, cls: str) -> tuple[tuple[int, ...], bool]:
    """`(rows, is_group)` of one `+`-joined item of class `cls`'s spec."""
    text = item.strip()
    if re.fullmatch(r"[0-9]+", text):
        rows = (int(text),)
    elif m := re.fullmatch(r"([0-9]+)\s*-\s*([0-9]+)", text):
        first, last = int(m[1]), int(m[2])
        if first > last:
            raise SentimentError(f"head-init range {text!r} for class {cls!r} runs backwards; write {last}-{first}")
        rows = tuple(range(first, last + 1))
    elif text.lower() in GROUPS:
        return GROUPS[text.lower()], True
    elif text:
        rows = _rows_by_name().get(_key(text), ())
        if not rows:
            raise SentimentError(
                f"head-init item {text!r} for class {cls!r} is not an ImageNet class name, a row number "
                f"(0-{IMAGENET_CLASSES - 1}), a range like 924-933 or a group ({', '.join(GROUPS)})"
            )
        if len(rows) > 1:
            listed = ", ".join(f"{row} ({class_names()[row]})" for row in rows)
            raise SentimentError(f"head-init name {text!r} for class {cls!r} is more than one ImageNet class: {listed}")
    else:
        raise SentimentError(f"head-init for class {cls!r} has an empty item; join items with '+', e.g. 963+933")
    for row in rows:
        if not 0 <= row < IMAGENET_CLASSES:
            raise SentimentError(
                f"head-init row {row} for class {cls!r} must be an ImageNet class index from 0 to "
                f"{IMAGENET_CLASSES - 1}"
            )
    return rows, False


def parse_head_init(spec: str, classes: list[str]) -> dict[int, tuple[int, ...]]:
    """`"imagenet:hotdog=934,not-hotdog=food"` -> {class index in `classes`: its ImageNet rows};
    `"auto"`: see `auto_head_init`."""
    text = spec.strip()
    if text == "auto":
        rows = auto_head_init(classes)
        if rows is None:
            raise SentimentError(
                f"head-init auto: no class name ({', '.join(classes)}) is an ImageNet class name; give the rows, "
                "e.g. 'imagenet:hotdog=934'"
            )
        return rows
    if not text.startswith(PREFIX):
        raise SentimentError(
            f"head-init {spec!r} must start with {PREFIX!r}, e.g. 'imagenet:hotdog=934' (class name = ImageNet rows)"
        )
    items = [item.strip() for item in text[len(PREFIX) :].split(",")]
    if not any(items):
        raise SentimentError(f"head-init {spec!r} names no class; write class=rows pairs, e.g. 'imagenet:hotdog=934'")
    explicit: dict[int, list[int]] = {}
    grouped: dict[int, list[int]] = {}
    for item in items:
        name, sep, rows_text = item.rpartition("=")
        name = name.strip()
        if not sep or not name:
            raise SentimentError(f"head-init item {item!r} in {spec!r} is not of the form class=rows")
        if name not in classes:
            raise SentimentError(
                f"head-init names class {name!r}, which is not one of the classes: {', '.join(classes)}"
            )
        index = classes.index(name)
        if index in explicit:
            raise SentimentError(f"head-init names class {name!r} twice in {spec!r}")
        explicit[index], grouped[index] = [], []
        for part in rows_text.split("+"):
            rows, is_group = _item_rows(part, name)
            (grouped if is_group else explicit)[index].extend(rows)
    owner: dict[int, int] = {}
    for index, rows in explicit.items():
        for row in rows:
            if owner.setdefault(row, index) != index:
                raise SentimentError(
                    f"head-init gives ImageNet row {row} ({short_name(row)}) to both {classes[owner[row]]!r} "
                    f"and {classes[index]!r}; a row can start one class only"
                )
    out: dict[int, tuple[int, ...]] = {}
    for index in explicit:
        rows = explicit[index] + [row for row in grouped[index] if owner.get(row, index) == index]
        rows = list(dict.fromkeys(rows))
        if not rows:
            raise SentimentError(f"head-init leaves class {classes[index]!r} no ImageNet row of its own")
        out[index] = tuple(rows)
    shared = {row for index, rows in out.items() for row in rows if row not in owner}
    for row in shared:
        users = [classes[index] for index, rows in out.items() if row in rows]
        if len(users) > 1:
            raise SentimentError(
                f"head-init groups give ImageNet row {row} ({short_name(row)}) to {' and '.join(map(repr, users))}; "
                "name the rows of one of them"
            )
    return out


def ranges(rows: tuple[int, ...]) -> str:
    """`(924, 925, 926, 963)` -> `"924-926+963"`: rows as the spec writes them."""
    out, ordered = [], sorted(rows)
    start = prev = ordered[0]
    for row in [*ordered[1:], None]:
        if row is not None and row == prev + 1:
            prev = row
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if row is not None:
            start = prev = row
    return "+".join(out)


def describe(head_init: dict[int, tuple[int, ...]], classes: list[str], *, names: int = 10) -> dict[str, dict]:
    """What each class starts from, for config.json and summary.json: its rows (as ranges), how many,
    and the names of the first `names` of them."""
    return {
        classes[index]: {"rows": ranges(rows), "count": len(rows), "names": [short_name(r) for r in rows[:names]]}
        for index, rows in sorted(head_init.items())
    }


def summary_line(head_init: dict[int, tuple[int, ...]], classes: list[str], *, most: int = 4) -> str:
    """`head: hotdog from ImageNet 934 hotdog; not-hotdog from 44 ImageNet rows (guacamole, ...)`."""
    parts = []
    for index, rows in sorted(head_init.items()):
        names = [short_name(row) for row in rows]
        others = {row for i, r in head_init.items() if i != index for row in r}
        if len(rows) > 1 and set(rows) == set(GROUPS["all"]) - others:
            parts.append(f"{classes[index]} from every other ImageNet row ({len(rows)})")
        elif len(rows) == 1:
            parts.append(f"{classes[index]} from ImageNet row {rows[0]} ({names[0]})")
        else:
            shown = ", ".join(names[:most]) + (", ..." if len(names) > most else "")
            parts.append(f"{classes[index]} from the mean of {len(rows)} ImageNet rows ({shown})")
    left = [c for i, c in enumerate(classes) if i not in head_init]
    if left:
        parts.append(f"{', '.join(left)} from the negated mean of those")
    return "head: " + "; ".join(parts)


def _rows_for_class_name(name: str) -> tuple[int, ...]:
    """The ImageNet rows a class folder's name names: a synonym as it is, or as a singular ('ants')."""
    key = _key(name.replace("-", " "))
    by_name = _rows_by_name()
    for candidate in (key, key[:-1] if key.endswith("s") else None, key[:-2] if key.endswith("es") else None):
        if candidate and candidate in by_name:
            return by_name[candidate]
    return ()


def auto_head_init(classes: list[str]) -> dict[int, tuple[int, ...]] | None:
    """The head start `--head-init auto` picks: each class whose name is an ImageNet class ('hotdog',
    'ants') starts from that row; when one class is left (say 'not-hotdog'), it starts from every
    other row, ImageNet's own "anything else". None when no class name is an ImageNet class."""
    named = {i: _rows_for_class_name(c) for i, c in enumerate(classes)}
    out = {i: rows for i, rows in named.items() if rows}
    if not out:
        return None
    taken = {row for rows in out.values() for row in rows}
    left = [i for i in range(len(classes)) if i not in out]
    if len(left) == 1:
        out[left[0]] = tuple(row for row in GROUPS["all"] if row not in taken)
    return dict(sorted(out.items()))
