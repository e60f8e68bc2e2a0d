"""File helpers: atomic writes (a crash never leaves a half-written file behind), lines as review
files hold them, and a bar over the bytes of a file being read."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sentiment.errors import SentimentError

# mkstemp makes 0600 files; finished files get the usual permissions (0666 less the umask).
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` on success.

    The temporary file lives in the same folder so the final `os.replace` is a
    rename within one filesystem, which is atomic. On any exception the
    temporary file is removed and `target` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, _FILE_MODE)
        os.replace(tmp_path, target)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(e, OSError) and not isinstance(e, WriteError) and e.errno is not None:
            raise WriteError(e.errno, f"could not write {target}: {e.strerror}; it was left as it was") from None
        raise


class WriteError(SentimentError, OSError):
    """A file could not be written (a full disk, no permission): the user's to fix, and still an
    OSError for code that treats a failed write as optional."""

    def __str__(self) -> str:
        return " ".join(str(self.args[1] if len(self.args) > 1 else self.args[0]).split())


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | os.PathLike, obj, *, indent: int | None = 2) -> None:
    atomic_write_text(target, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def split_lines(text: str) -> list[str]:
    """The lines of a text file, split at "\n" and "\r\n" only. `str.splitlines()` also splits at
    U+0085, U+2028, form feeds and others, which reviews contain inside a line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def byte_bar(path: Path, desc: str, *, progress: bool = True):
    """A tqdm bar over the bytes of the file at `path` (on a terminal, for jobs over 1 s; never
    without `progress`) and the callback that moves it to a position; `(None, None)` for a folder."""
    from tqdm.auto import tqdm

    try:
        total = path.stat().st_size if path.is_file() else None
    except OSError:
        total = None
    if total is None:
        return None, None
    bar = tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, leave=False,
        disable=None if progress else True, delay=1.0, dynamic_ncols=True,
    )  # fmt: skip
    return bar, lambda at: bar.update(max(0, at - bar.n))
