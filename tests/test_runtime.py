"""Device/dtype choice and per-sample seeding (results independent of batch size)."""

from __future__ import annotations

import sys

import pytest

torch = pytest.importorskip("torch")

from gaml_cli.core import runtime  # noqa: E402
from gaml_cli.core.errors import UsageError  # noqa: E402


def test_per_sample_noise_does_not_depend_on_batching():
    seeds = runtime.sample_seeds(123, range(10))
    whole = runtime.randn_per_sample((3, 4, 4), seeds)
    parts = torch.cat([runtime.randn_per_sample((3, 4, 4), seeds[i:i + 3]) for i in range(0, 10, 3)])
    assert torch.equal(whole, parts)
    # and sample 7 alone is sample 7 of the big batch
    assert torch.equal(runtime.randn_per_sample((3, 4, 4), [seeds[7]])[0], whole[7])


def test_per_sample_generators_stream_the_same_way():
    seeds = runtime.sample_seeds(5, range(6))
    big = runtime.PerSampleRNG(seeds)
    steps_big = [big.randn((2,)) for _ in range(3)]
    small = [runtime.PerSampleRNG(seeds[:3]), runtime.PerSampleRNG(seeds[3:])]
    steps_small = [torch.cat([g.randn((2,)) for g in small]) for _ in range(3)]
    for a, b in zip(steps_big, steps_small):
        assert torch.equal(a, b)


def test_sample_seeds_are_distinct_and_base_dependent():
    a = runtime.sample_seeds(0, range(1000))
    b = runtime.sample_seeds(1, range(1000))
    assert len(set(a)) == 1000 and not set(a) & set(b)
    assert runtime.sample_seed(0, 5) == runtime.sample_seed(0, 5)
    with pytest.raises(UsageError):
        runtime.sample_seed(-1, 0)


def test_device_choice():
    assert runtime.pick_device("cpu").type == "cpu"
    auto = runtime.pick_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA GPU"):
            runtime.pick_device("cuda")
    with pytest.raises(UsageError):
        runtime.pick_device("tpu")


def test_dtype_choice():
    assert runtime.pick_dtype("fp32") is torch.float32
    assert runtime.pick_dtype("bf16", "cpu") is torch.bfloat16
    with pytest.raises(UsageError, match="needs a GPU"):
        runtime.pick_dtype("fp16", "cpu")
    with pytest.raises(UsageError):
        runtime.pick_dtype("fp8")


def test_seed_everything_repeats():
    import random

    import numpy as np

    runtime.seed_everything(3)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    runtime.seed_everything(3)
    assert a == (random.random(), np.random.rand(), torch.rand(1).item())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_noise_is_identical_on_gpu():
    seeds = runtime.sample_seeds(1, range(4))
    cpu = runtime.randn_per_sample((8,), seeds)
    gpu = runtime.randn_per_sample((8,), seeds, device="cuda")
    assert torch.equal(cpu, gpu.cpu())


_FAULTS = """
import resource, sys
if sys.argv[1] == "keep":
    from gaml_cli.core.runtime import keep_freed_memory
    assert keep_freed_memory()
def rounds(k):
    for _ in range(k):  # a training step's pattern: many multi-MiB blocks made, then all freed
        bufs = [bytearray(4 << 20) for _ in range(10)]
        del bufs
rounds(2)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(10)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_stops_refaulting_freed_blocks():
    """With glibc's defaults, freeing 40 MiB of 4 MiB blocks trims the heap and the next round
    faults every page in again (~10k faults a round); after keep_freed_memory() the blocks are
    reused."""
    import subprocess

    def faults(mode):
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
        return int(out.stdout.strip())

    default, kept = faults("default"), faults("keep")
    assert default > 20_000, default  # the pattern does refault without the setting
    assert kept < default / 20, (kept, default)
