"""Run a benchmark's child process and keep its own peak memory (or its process tree's)."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable


def run_measured(
    argv: list[str], *, env: dict | None = None, tree: bool = False, stop: Callable[[str, int], bool] | None = None
) -> tuple[int, str, str, int]:
    """Runs `argv`; returns its exit code, stdout, stderr and peak resident memory in MB, the child's
    own: `os.wait4` gives the one process's resource usage, where RUSAGE_CHILDREN would give the
    largest of every child waited for so far. With `tree`, the peak is also sampled (every 0.2 s)
    as the sum over the child and every process below it, and the larger figure is returned. `stop`,
    asked every 0.2 s with the child's stdout so far and the tree's peak so far (MB; 0 without `tree`),
    interrupts it (SIGINT, as Ctrl-C) once it says so."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(argv, stdout=out, stderr=err, text=True, env=env)
        peak, done = [0], threading.Event()

        def sample() -> None:
            asked = stop is None
            while not done.wait(0.2):
                if tree:
                    peak[0] = max(peak[0], tree_rss_kb(child.pid))
                if not asked and stop(os.pread(out.fileno(), 1 << 20, 0).decode(errors="replace"), peak[0] // 1024):
                    child.send_signal(signal.SIGINT)
                    asked = True

        sampler = threading.Thread(target=sample, daemon=True) if tree or stop else None
        if sampler is not None:
            sampler.start()
        _, status, usage = os.wait4(child.pid, 0)
        done.set()
        if sampler is not None:
            sampler.join()
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return child.returncode, out.read(), err.read(), round(max(usage.ru_maxrss, peak[0]) / 1024)


def tree_rss_kb(pid: int) -> int:
    """Resident memory (kB) of process `pid` and every process below it, from /proc (0 once gone)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return total
