"""Verified downloads and cache folders.

`download` streams a URL into a temporary file beside its destination, checks its
digest while writing, and renames it into place only when it is complete and
correct: a failed or corrupt download never leaves anything behind.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from sentiment.errors import SentimentError
from sentiment.fsutil import atomic_path

CHUNK_SIZE = 1 << 20  # 1 MiB: large enough to keep Python overhead low, small enough for smooth progress

# Hex digest lengths, strongest algorithm first: that order decides which one is used.
_DIGEST_LENGTHS = {"sha256": 64, "sha1": 40, "md5": 32}

_HOW_TO_FIX = "check your network and retry, or download it by hand and put it at"


def data_dir() -> Path:
    """Where datasets land: `$SENTIMENT_DATA_DIR` if set, else `data` under the current folder."""
    value = os.environ.get("SENTIMENT_DATA_DIR")
    return Path(value).expanduser() if value else Path("data")


def _new_hash(algo: str):
    # md5/sha1 identify files here, they do not secure anything; saying so keeps FIPS builds working.
    return hashlib.new(algo, usedforsecurity=False)


def file_digest(path: str | os.PathLike, algo: str = "sha256") -> str:
    """Hex digest of the file at `path`, read in 1 MiB chunks."""
    h = _new_hash(algo)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            h.update(chunk)
    return h.hexdigest()


def _pick_checksum(md5: str | None, sha1: str | None, sha256: str | None) -> tuple[str, str] | None:
    """The (algorithm, expected hex digest) to check, strongest given first; None if none given."""
    given = {"sha256": sha256, "sha1": sha1, "md5": md5}
    for algo, length in _DIGEST_LENGTHS.items():
        expected = given[algo]
        if expected is None:
            continue
        expected = expected.strip().lower()
        # A malformed expected digest is a bug in the caller's weights/data record, not a user error.
        if len(expected) != length or any(c not in "0123456789abcdef" for c in expected):
            raise ValueError(f"{algo} must be {length} hex digits, got {given[algo]!r}")
        return algo, expected
    return None


def verify(
    path: str | os.PathLike,
    *,
    md5: str | None = None,
    sha1: str | None = None,
    sha256: str | None = None,
) -> None:
    """Raise `SentimentError` naming `path` if its digest differs from the one given."""
    path = Path(path)
    check = _pick_checksum(md5, sha1, sha256)
    if check is None:
        return
    algo, expected = check
    if not path.is_file():
        raise SentimentError(f"{path} not found: cannot verify its {algo} checksum")
    got = file_digest(path, algo)
    if got != expected:
        raise SentimentError(
            f"{path} is corrupt: {algo} checksum expected {expected}, got {got}; delete it and download it again"
        )


def _content_length(resp) -> int | None:
    value = resp.headers.get("Content-Length")
    return int(value) if value is not None and value.strip().isdigit() else None


def _describe(exc: BaseException) -> str:
    """A short reason for a network failure: 'HTTP 404 Not Found', 'timed out', ..."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        if not isinstance(exc.reason, BaseException):
            return str(exc.reason)
        exc = exc.reason  # the socket error underneath says more than "<urlopen error ...>"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _network_error(url: str, dest: Path, reason: str) -> SentimentError:
    return SentimentError(f"cannot download {url} to {dest}: {reason}; {_HOW_TO_FIX} {dest}")


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    md5: str | None = None,
    sha1: str | None = None,
    sha256: str | None = None,
    desc: str | None = None,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Download `url` to `dest`, verify its checksum, and return `dest`.

    An existing `dest` that matches the checksum (or any existing `dest` when no
    checksum is given) is returned untouched. Failures raise `SentimentError` and
    leave neither `dest` nor a temporary file behind.
    """
    dest = Path(dest)
    check = _pick_checksum(md5, sha1, sha256)
    if dest.is_dir():
        raise SentimentError(f"{dest} is a folder: give download() the path of the file to write")
    if dest.is_file():
        if check is None or file_digest(dest, check[0]) == check[1]:
            return dest
        # Known bad: remove it now so a failed retry cannot leave it looking like a finished download.
        dest.unlink()

    try:
        from importlib.metadata import version

        request = urllib.request.Request(url, headers={"User-Agent": f"sentiment/{version('sentiment')}"})
    except ValueError as e:  # not a URL at all, e.g. a bare path
        raise SentimentError(f"cannot download {url!r} to {dest}: {e}") from e

    hasher = _new_hash(check[0]) if check else None
    with atomic_path(dest) as tmp:
        try:
            resp = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as e:
            e.close()
            raise _network_error(url, dest, _describe(e)) from e
        except (OSError, http.client.HTTPException) as e:  # URLError, refused, timeout, reset
            raise _network_error(url, dest, _describe(e)) from e

        with resp:
            total = _content_length(resp)
            received = 0
            with (
                open(tmp, "wb") as f,
                tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=desc or dest.name,
                    disable=not progress,
                ) as bar,
            ):
                while True:
                    try:
                        chunk = resp.read(CHUNK_SIZE)
                    except (OSError, http.client.HTTPException) as e:
                        raise _network_error(url, dest, _describe(e)) from e
                    if not chunk:
                        break
                    try:
                        f.write(chunk)
                    except OSError as e:  # disk full, permissions: local, so don't blame the network
                        raise SentimentError(
                            f"cannot write {dest} while downloading {url}: {e}; "
                            f"free some space or set SENTIMENT_DATA_DIR to another folder"
                        ) from e
                    if hasher is not None:
                        hasher.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                f.flush()
                os.fsync(f.fileno())

        # urllib returns a short body without complaint when the connection drops early.
        if total is not None and received < total:
            raise _network_error(url, dest, f"connection closed after {received} of {total} bytes")
        if check is not None:
            algo, expected = check
            got = hasher.hexdigest()
            if got != expected:
                raise SentimentError(
                    f"checksum mismatch for {url} (meant for {dest}): {algo} expected {expected}, "
                    f"got {got}; retry, or download it by hand and put it at {dest}"
                )
    return dest
