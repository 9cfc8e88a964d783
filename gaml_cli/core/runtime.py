"""Device and dtype choice, seeding, and per-sample random streams.

Per-sample seeding: sample i of a run with base seed S draws its noise from its own
generator seeded with `sample_seed(S, i)`, so the i-th sample is the same whatever the
batch size or the number of samples asked for (as EDM's generate.py does with one seed
per image). torch is imported inside the functions only.
"""

from __future__ import annotations

import os
import random
from contextlib import contextmanager
from typing import Iterable, Sequence

from .errors import UsageError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")


def pick_device(name: str = "auto"):
    """'auto' -> cuda if available, else mps, else cpu. Asking for a missing one is an error."""
    import torch

    name = (name or "auto").lower()
    base = name.split(":")[0]
    if base not in DEVICES:
        raise UsageError(f"--device must be one of {', '.join(DEVICES)} (got {name!r})")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but this torch build sees no CUDA GPU "
                         f"(torch {torch.__version__}); use --device cpu or auto")
    if base == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UsageError("--device mps asked for, but MPS is not available")
    return torch.device(name)


def keep_freed_memory() -> bool:
    """Tells glibc's malloc to keep freed memory for reuse (blocks up to 32 MiB from the heap rather
    than fresh mmaps, and no trimming of the heap's top below 1 GiB). A CPU training step that
    allocates and frees dozens of multi-megabyte tensors otherwise gets new pages from the kernel
    for most of them: on `gaml graphgen train` (community-small, 2 threads) minor page faults fell
    from 716k to 150k and system time from 1.9 to 0.65 s over 80 steps. Results are unchanged
    (the numbers do not depend on where a tensor lives). The process keeps its peak memory.
    Returns whether glibc took both settings (False elsewhere, e.g. macOS or musl)."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False


@contextmanager
def thread_pool_share(workers: int):
    """A pool of `workers` threads for work run at once on the CPU, with torch's intra-op threads
    shared out among them (each gets threads // workers, at least 1) while it is open; both are
    undone on exit. On 2 cores, two tasks at 1 intra-op thread each keep both cores busy where one
    task at 2 threads leaves one idle between thousands of small operations (`gaml graphgen`'s
    training parts and sampling batches)."""
    import torch
    from concurrent.futures import ThreadPoolExecutor

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // workers))
    try:
        with ThreadPoolExecutor(workers) as pool:
            yield pool
    finally:
        torch.set_num_threads(threads)


def pick_dtype(precision: str, device=None):
    """fp32 | bf16 | fp16 -> torch dtype; refuses fp16 on CPU (no fast kernels, NaN-prone)."""
    import torch

    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in table:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    if precision == "fp16" and device is not None and torch.device(device).type == "cpu":
        raise UsageError("--precision fp16 needs a GPU; use fp32 or bf16 on CPU")
    return table[precision]


def rank_world() -> tuple[int, int]:
    """(rank, world) when launched by torchrun / `accelerate launch` (WORLD_SIZE > 1; the process
    group is initialised: nccl when CUDA is present, gloo otherwise), else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def distributed(device=None) -> tuple[int, int, "object"]:
    """(rank, world size, device) of this process: rank_world(), and under several processes a
    CUDA device becomes this process's own (LOCAL_RANK); otherwise (0, 1, device)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, device
    import torch

    if device is not None and getattr(device, "type", None) == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    rank, world = rank_world()
    return rank, world, device


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (when present) global generators."""
    random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:  # pragma: no cover
        pass
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def sample_seed(base_seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for sample `index` of a run seeded with `base_seed`."""
    import numpy as np

    if base_seed < 0 or index < 0:
        raise UsageError("seeds and sample indices must be non-negative")
    state = np.random.SeedSequence([int(base_seed), int(index)]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def sample_seeds(base_seed: int, indices: Iterable[int]) -> list[int]:
    return [sample_seed(base_seed, i) for i in indices]


def randn_per_sample(shape: Sequence[int], seeds: Sequence[int], device="cpu", dtype=None):
    """Stack of standard normal tensors, row i drawn from a generator seeded with seeds[i].

    Drawn on the CPU generator then moved, so values are identical on every device.
    """
    import torch

    dtype = dtype or torch.float32
    rows = []
    for s in seeds:
        g = torch.Generator(device="cpu").manual_seed(int(s))
        rows.append(torch.randn(tuple(shape), generator=g, dtype=torch.float32))
    out = torch.stack(rows) if rows else torch.empty((0, *shape))
    return out.to(device=device, dtype=dtype)


class PerSampleRNG:
    """One torch.Generator per sample for samplers that draw noise at every step."""

    def __init__(self, seeds: Sequence[int]):
        import torch

        self.generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]

    def randn(self, shape: Sequence[int], device="cpu", dtype=None):
        import torch

        rows = [torch.randn(tuple(shape), generator=g) for g in self.generators]
        return torch.stack(rows).to(device=device, dtype=dtype or torch.float32)

    def randint(self, high: int, device="cpu"):
        import torch

        rows = [torch.randint(high, (1,), generator=g) for g in self.generators]
        return torch.cat(rows).to(device)


def describe(device_name: str = "auto") -> dict:
    """Facts for `gaml info`: versions, devices, dtypes."""
    import torch

    dev = pick_device(device_name)
    info = {
        "torch": torch.__version__,
        "device": str(dev),
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "bf16_supported": bool(dev.type == "cpu" or (dev.type == "cuda" and torch.cuda.is_bf16_supported())),
        "threads": torch.get_num_threads(),
    }
    return info


def require_finite(step: int, **losses) -> None:
    """Stop a training run whose loss is no longer a finite number, before the step reaches the
    weights: one line naming the step and the loss; no model is written (the command's output
    group drops it) and the last checkpoint stays as it was (StepLoop saves none on this error).

        require_finite(step, loss=loss)   # step counts from 0, as the loops do"""
    import math

    from .errors import RuntimeFailure

    for name, value in losses.items():
        v = float(value.detach() if hasattr(value, "detach") else value)
        if not math.isfinite(v):
            raise RuntimeFailure(f"training diverged at step {step + 1}: the {name.replace('_', ' ')} is {v}; "
                                 "no model was written and the last checkpoint is kept (try a lower --lr)")
