"""JSON for line-based output: one object per line that any line splitter keeps whole.

`json.dumps(..., ensure_ascii=False)` writes U+2028, U+2029 and U+0085 as they are. That is valid
JSON, but `str.splitlines()`, JavaScript before ES2019 and some log shippers treat them as line
ends and cut a record in two. They are escaped here (only inside strings can they occur, where
`\\uXXXX` means the same character); every other character stays readable.
"""

from __future__ import annotations

import json
from typing import Any

_LINE_BREAKS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\u0085": "\\u0085"}
_TABLE = str.maketrans(_LINE_BREAKS)


def dumps(obj: Any) -> str:
    """`obj` as one line of JSON, non-ASCII text kept readable, Unicode line breaks escaped."""
    return json.dumps(obj, ensure_ascii=False).translate(_TABLE)
