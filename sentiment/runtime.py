"""Where and how a model runs: the device and precision resolved once into a `Runtime`, what the CPU
can do, and process-level settings that make CPU training faster without changing its results."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from dataclasses import dataclass

import torch

from sentiment.errors import SentimentError

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit
_tuned: str | None = None


def tune_allocator(*, keep_all: bool) -> bool:
    """Ask glibc's allocator to keep freed memory for reuse instead of handing it back to the kernel.

    Training allocates and frees the same activation buffers every step. By default glibc serves
    each large one with a fresh `mmap` and returns it with `munmap`, so every step pays for
    zero-filled pages again: measured here, EfficientNet-Lite0 spent as long in the kernel as in its
    own arithmetic.

    `keep_all=True` (images: fixed-size batches) serves every allocation from the heap and keeps up
    to 1 GiB of freed memory: a training step a third to a half shorter. `keep_all=False` (text:
    batch shapes change with every length bucket, and a heap holding every size fragments; BiRNN's
    peak memory doubled that way) serves blocks up to 32 MiB from the heap, larger ones by `mmap`,
    and keeps up to 256 MiB freed. Either only changes where memory comes from, never a computed
    value. Set SENTIMENT_MALLOC=system to opt out. Returns whether a setting was applied.
    """
    global _tuned
    mode = "keep_all" if keep_all else "bounded"
    if _tuned is not None:
        return _tuned == mode or _apply(mode)
    if os.environ.get("SENTIMENT_MALLOC") == "system" or not sys.platform.startswith("linux"):
        return False
    return _apply(mode)


def _apply(mode: str) -> bool:
    global _tuned
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if mode == "keep_all":
            ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
        else:
            ok = (
                libc.mallopt(_M_MMAP_MAX, 65536) == 1
                and libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
                and libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20) == 1
            )
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    _tuned = mode if ok else None
    return ok


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX-512 BF16 or AMX).

    Elsewhere bf16 is emulated, slowly, and oneDNN has no bf16 LSTM at all (an AVX2-only CPU
    fails to build the primitive), so BiRNN keeps its LSTMs in fp32 there.
    """
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(cpu, probe, None)
        if check is not None and check():
            return True
    return False


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SentimentError("--device cuda was asked for, but this machine has no CUDA GPU; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise SentimentError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)


@dataclass(frozen=True)
class Runtime:
    """The device a run computes on and its arithmetic: `precision` is "bf16" (autocast; weights and
    optimizer stay fp32) or "fp32". Resolved once, then handed to the loop and the models."""

    device: torch.device
    precision: str = "fp32"

    @classmethod
    def resolve(cls, device: str = "auto", precision: str = "auto", *, cpu_bf16: bool = True) -> Runtime:
        """`auto` precision is bf16 on CUDA, and on a CPU with native bfloat16 where the model family
        keeps its accuracy in it (`cpu_bf16`); fp32 elsewhere."""
        dev = resolve_device(device)
        if precision == "auto":
            precision = "bf16" if dev.type == "cuda" or (cpu_bf16 and cpu_has_bf16()) else "fp32"
        return cls(dev, precision)

    @property
    def pin_memory(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def to_device(self, tensors: tuple) -> tuple:
        non_blocking = self.device.type == "cuda"
        return tuple(x.to(self.device, non_blocking=non_blocking) for x in tensors)


# --------------------------------------------------------------------------- CPU threads

TRAINING_COMMANDS = ("train", "image-finetune")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), not every core of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _parent(pid: int) -> int:
    """The parent of process `pid`, from /proc (the field after the command name, which may hold spaces
    and brackets, hence the split at the last ")"); OSError or ValueError once it is gone."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    if len(fields) < 2:
        raise ValueError(f"unreadable /proc/{pid}/stat")
    return int(fields[1])


def _ancestors() -> set[int]:
    """This process and the processes it runs under (a wrapper such as `time` or a shell)."""
    out, pid = set(), os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            pid = _parent(pid)
        except (OSError, IndexError, ValueError):
            break
    return out


def is_training_command(argv: list[str]) -> bool:
    """Whether a command line is a `sentiment` training: `sentiment train`, `python -m sentiment
    image-finetune`, ..."""
    for word, following in zip(argv[:-1], argv[1:], strict=True):
        if os.path.basename(word) == "sentiment" and following in TRAINING_COMMANDS:
            return True
    return False


def other_trainings() -> int:
    """How many other `sentiment` trainings are running on this machine (Linux; 0 elsewhere)."""
    if not os.path.isdir("/proc"):
        return 0
    mine, found = _ancestors(), {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
            if is_training_command([a for a in argv if a]):
                found[int(entry.name)] = _parent(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    # A wrapper (`time sentiment train`, a shell) and the training it runs are one training.
    return sum(1 for parent in found.values() if parent not in found)


@dataclass(frozen=True)
class ThreadPlan:
    threads: int
    cores: int
    others: int  # other trainings sharing the cores
    reason: str  # why: "--threads", "OMP_NUM_THREADS", or "cores"

    def describe(self) -> str:
        others = f"{self.others} other training{'s' if self.others != 1 else ''} running"
        return f"threads: {self.threads} of {self.cores} cores ({others}; --threads sets it)"


def plan_threads(asked: int | None = None) -> ThreadPlan:
    """CPU threads for this training: `--threads` if given, else $OMP_NUM_THREADS if set, else the
    cores this process may use shared evenly with the other `sentiment` trainings running, so two
    trainings at once do not each start a thread per core and slow each other down many times."""
    cores = usable_cores()
    if asked:
        return ThreadPlan(asked, cores, 0, "--threads")
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return ThreadPlan(int(env), cores, 0, "OMP_NUM_THREADS")
    others = other_trainings()
    return ThreadPlan(max(1, cores // (others + 1)), cores, others, "cores")


def busy_cores() -> float:
    """The machine's load over the last minute (runnable processes), 0 where it is not known."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return 0.0
