"""Run a benchmark's child process and keep its own peak memory."""

from __future__ import annotations

import os
import subprocess
import tempfile


def run_measured(argv: list[str]) -> tuple[int, str, str, int]:
    """Runs `argv`; returns its exit code, stdout, stderr and peak resident memory in MB, the child's
    own: `os.wait4` gives the one process's resource usage, where RUSAGE_CHILDREN would give the
    largest of every child waited for so far."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(argv, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return child.returncode, out.read(), err.read(), round(usage.ru_maxrss / 1024)
