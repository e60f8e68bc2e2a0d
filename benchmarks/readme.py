"""Write a benchmark's table into the README between its markers, so every figure there has a command."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from sentiment.fsutil import atomic_write_json, atomic_write_text

README = Path(__file__).resolve().parent.parent / "README.md"


def replace_section(name: str, body: str, readme: Path = README) -> None:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
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
