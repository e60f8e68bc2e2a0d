"""Write a benchmark's table into the documentation between its markers, so every figure there has a command.

A table lives between `<!-- NAME:start -->` and `<!-- NAME:end -->` in exactly one of README.md and
docs/*.md; `replace_section` finds that file, so a table can move between pages without touching
the benchmark that writes it."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from sentiment.fsutil import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def section_file(name: str) -> Path:
    """The one file among README.md and docs/*.md that holds `name`'s markers."""
    start, end = _markers(name)
    candidates = [README, *sorted(DOCS.glob("*.md"))]
    holders = [p for p in candidates if p.is_file() and start in p.read_text(encoding="utf-8")]
    if not holders:
        raise SystemExit(f"neither {README.name} nor {DOCS.name}/*.md has {start} ... {end} markers")
    if len(holders) > 1:
        raise SystemExit(f"{start} markers in more than one file: {', '.join(str(p) for p in holders)}")
    return holders[0]


def link(target: Path, name: str) -> str:
    """`target` as a relative link from the file that holds `name`'s markers (from the repository
    root when no file has them yet), for pictures and links inside a generated section."""
    try:
        base = section_file(name).parent
    except SystemExit:
        base = ROOT
    return Path(os.path.relpath(Path(target).resolve(), base)).as_posix()


def replace_section(name: str, body: str, readme: Path | None = None) -> None:
    start, end = _markers(name)
    readme = section_file(name) if readme is None else readme
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    block = f"{start}\n{body.rstrip()}\n{end}"
    if not pattern.search(text):
        raise SystemExit(f"{readme} has no {start} ... {end} markers")
    atomic_write_text(readme, pattern.sub(lambda _: block, text))


def merge_results(path: Path, fresh: list[dict], key: Callable[[dict], object]) -> list[dict]:
    """The rows in `path` with those of the same `key` as a fresh row replaced by it, written back.
    Read now, after the runs, not before them: another run of a benchmark may have added rows meanwhile."""
    previous = json.loads(path.read_text()) if path.is_file() else []
    replaced = {key(r) for r in fresh}
    results = [r for r in previous if key(r) not in replaced] + fresh
    atomic_write_json(path, results)
    return results
