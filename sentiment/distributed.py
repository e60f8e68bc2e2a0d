"""Several processes, one training run: PyTorch's own DistributedDataParallel, started by torchrun.

`torchrun --nproc-per-node N -m sentiment train ...` (or `sentiment train --nproc N`, which starts
the same thing) gives every process RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT.
Each process trains on its own shard of the batches; DDP averages the gradients, so every rank
holds the same weights after every step. Rank 0 alone writes the run folder and shows progress.
gloo on CPU, NCCL on CUDA. Without those variables everything here is a no-op for one process.
"""

from __future__ import annotations

import os
import sys

import torch

from sentiment.errors import SentimentError


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's number on its own machine."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def setup(device: torch.device) -> torch.device:
    """Join the process group torchrun describes (if any); return this process's device."""
    if world_size() <= 1 or active():
        return device
    import torch.distributed as dist

    if not dist.is_available():
        raise SentimentError("this PyTorch build has no torch.distributed; train in one process")
    if device.type == "cuda":
        local = local_rank()
        if local >= torch.cuda.device_count():
            raise SentimentError(
                f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA GPU(s): start at most that many"
            )
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def barrier() -> None:
    """Wait until every process has got here (nothing in one process)."""
    if active():
        import torch.distributed as dist

        dist.barrier()


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP around `model` when several processes train it; the model itself otherwise."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def sum_all(values: list[float]) -> list[float]:
    """Element-wise sums over every process (the values themselves in one process)."""
    if not active():
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def any_rank(flag: bool) -> bool:
    """True on every process when it is true on any (so they all stop at the same step)."""
    return bool(sum_all([float(flag)])[0]) if active() else flag


def cleanup() -> None:
    if active():
        import torch.distributed as dist

        dist.destroy_process_group()


def exit_worker() -> None:
    """End a worker process (rank above 0) whose run has finished, skipping interpreter teardown.
    Rank 0 writes the run folder, so a worker has nothing left to save; the C++ teardown of its
    gloo connections at interpreter exit can abort (SIGABRT) when it overlaps rank 0 closing its
    own, which torchrun reports as a failed run."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def weight_digests(model: torch.nn.Module) -> list[str]:
    """Every process's sha256 of its weights, in rank order (one entry in a single process): after
    DDP training they must all be equal."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(unwrap(model).state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    mine = h.digest()
    if not active():
        return [mine.hex()]
    import torch.distributed as dist

    local = torch.tensor(list(mine), dtype=torch.uint8)
    if dist.get_backend() == "nccl":
        local = local.cuda()
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    return [bytes(t.cpu().tolist()).hex() for t in gathered]
