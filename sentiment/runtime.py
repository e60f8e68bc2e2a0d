"""Process-level settings that make CPU training faster without changing its results."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_tuned = False


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory instead of handing it back to the kernel.

    Training allocates and frees the same large activation buffers every step. By default glibc
    serves each one with a fresh `mmap` and returns it with `munmap`, so every step pays for
    zero-filled pages again: measured here, EfficientNet-Lite0 spent as long in the kernel as in
    its own arithmetic. Keeping the memory cuts a training step by a third to a half. It only
    changes where memory comes from, never a computed value. Set SENTIMENT_MALLOC=system to opt out.
    Returns whether the setting was applied.
    """
    global _tuned
    if _tuned:
        return True
    if os.environ.get("SENTIMENT_MALLOC") == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    _tuned = ok
    return ok
