"""Write a benchmark's table into the README between its markers, so every figure there has a command."""

from __future__ import annotations

import re
from pathlib import Path

from sentiment.fsutil import atomic_write_text

README = Path(__file__).resolve().parent.parent / "README.md"


def replace_section(name: str, body: str, readme: Path = README) -> None:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    block = f"{start}\n{body.rstrip()}\n{end}"
    if not pattern.search(text):
        raise SystemExit(f"{readme} has no {start} ... {end} markers")
    atomic_write_text(readme, pattern.sub(lambda _: block, text))
