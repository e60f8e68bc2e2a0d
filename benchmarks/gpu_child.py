"""`python -m benchmarks.gpu_child OUT.json ARGS...` runs `sentiment ARGS...` in this process, then
writes what the process did on its GPU to OUT.json: the device's name, and the most memory torch
allocated (`torch.cuda.max_memory_allocated`) and reserved there. A training's peak GPU memory is
read this way because only the process that trained can ask torch for it. Where CUDA was never used
(no GPU, or a family fitted on the CPU) the device is the CPU and the peaks are None.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> None:
    out, args = Path(sys.argv[1]), sys.argv[2:]
    from sentiment.cli import main as sentiment

    code = 0
    try:
        sentiment(args)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    import torch

    from benchmarks.accuracy import cpu_model
    from sentiment.fsutil import atomic_write_json

    used = torch.cuda.is_available() and torch.cuda.is_initialized()
    atomic_write_json(
        out,
        {
            "device_name": torch.cuda.get_device_name() if used else cpu_model(),
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20) if used else None,
            "peak_gpu_reserved_mb": round(torch.cuda.max_memory_reserved() / 2**20) if used else None,
            "torch": torch.__version__,
            "cuda": torch.version.cuda if used else None,
            "cudnn": torch.backends.cudnn.version() if used else None,
        },
    )
    sys.exit(code)


if __name__ == "__main__":
    main()
