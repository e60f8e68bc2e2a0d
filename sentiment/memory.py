"""How much memory a training step needs, and how many examples of a batch fit a memory budget.

A step's memory beyond the weights and optimizer state is mostly the activations autograd keeps for
the backward pass, and those grow linearly with the number of examples. `step_bytes_per_example`
measures that slope exactly: it runs the model's forward on 2 and on 4 examples with a hook on what
autograd saves, counts each saved storage once (parameters excluded), and takes the difference, so
fixed costs (bf16 copies of the weights, for example) cancel. Where little is trained (a frozen
backbone), autograd keeps little, but the forward still holds a few activations at once: the
estimate is never below three of the largest. The probe leaves no trace: random states and
BatchNorm statistics are put back and no gradient is kept.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from sentiment.runtime import Runtime

# The activations saved for backward are not all of a step's working memory: the backward pass holds
# gradients of activations while it runs, and kernels take workspace. On CPU (fp32, 224 pixels) each
# example raised the step's peak resident memory by at most this multiple of what autograd saved,
# for EfficientNet-Lite0 and ResNet-18 alike (docs/images.md, micro-batches).
STEP_OVERHEAD = 1.5
# Live tensors of the largest activation's size a forward holds at once when autograd keeps nothing.
TRANSIENT_TENSORS = 3
# The share of the memory this process may use that the activations of one step may take, and a
# ceiling, so a machine with much free memory still trains at a size a laptop could run.
BUDGET_SHARE = 0.25
BUDGET_CEILING = 1.5 * 2**30


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_bytes() -> int:
    """The memory this process may still use: the system's available memory, or what is left under
    its cgroup's limit if that is less."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            available = 8 * 2**30
    limit = _read_int("/sys/fs/cgroup/memory.max")
    used = _read_int("/sys/fs/cgroup/memory.current")
    if limit is not None and used is not None:
        available = min(available, max(limit - used, 0))
    return available


def default_budget(device: torch.device | None = None) -> int:
    """Bytes the activations of one training step may take by default: on a GPU a share of its free
    memory, elsewhere a share of the memory this process may use, up to `BUDGET_CEILING`."""
    if device is not None and device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.5 * free)
    return int(min(BUDGET_SHARE * available_bytes(), BUDGET_CEILING))


def step_bytes_per_example(model: torch.nn.Module, example: Callable[[int], tuple], runtime: Runtime) -> float:
    """Bytes per example a training step of `model` holds: what autograd keeps for backward, or,
    where that is less (little is trained), what the forward holds at once; `example(n)` makes the
    model's inputs for `n` examples."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    was_training = model.training

    def measure(n: int) -> tuple[int, int]:
        seen: dict[int, int] = {}
        largest = [0]

        def pack(t: torch.Tensor):
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in params:
                seen[ptr] = storage.nbytes()
            return t

        def output(module, args, out):
            if torch.is_tensor(out):
                largest[0] = max(largest[0], out.untyped_storage().nbytes())

        hooks = [m.register_forward_hook(output) for m in model.modules() if not list(m.children())]
        try:
            inputs = runtime.to_device(example(n))
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), runtime.autocast():
                out = model(*inputs)
            del out
        finally:
            for h in hooks:
                h.remove()
        return sum(seen.values()), largest[0]

    model.train()
    try:
        with torch.random.fork_rng(devices=[runtime.device] if runtime.device.type == "cuda" else []):
            (saved2, big2), (saved4, big4) = measure(2), measure(4)
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        model.train(was_training)
    saved = max(saved4 - saved2, 0) / 2
    # What a forward holds at once even when nothing is saved (a frozen backbone, evaluation): a
    # layer's input, its output and a temporary, each at most the largest activation.
    transient = TRANSIENT_TENSORS * max(big4 - big2, 0) / 2
    return max(saved, transient)


def plan_micro_batch(batch_size: int, per_example: float, budget: int) -> int:
    """The most examples of a batch whose step fits `budget` (at least 1, at most the batch)."""
    if per_example <= 0:
        return batch_size
    return max(1, min(batch_size, int(budget / (STEP_OVERHEAD * per_example))))
