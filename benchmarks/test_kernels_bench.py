"""pytest-benchmark view of the roofline cases: one GPU test per BenchCase of the kernel modules.

Run on a GPU machine with ``python -m pytest benchmarks -m gpu --benchmark-enable`` (the repository's
addopts disable benchmarks by default; disabled, each test still runs the case's check once). Times are host
clock around a call plus ``torch.cuda.synchronize()``, one input set, so they include launch latency and may
be flattered by L2 for small cases; ``python -m kernels_gpu.benchmark`` gives the CUDA-event, graph-replayed,
L2-rotated roofline numbers.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from kernels_gpu.benchmark import CopyBandwidth, collect_cases, measure_copy_bandwidth
from kernels_gpu.registry import BenchCase

CASES, SKIPPED_MODULES = collect_cases()


def _case_id(case: BenchCase) -> str:
    return f"{case.kernel}[{case.label.replace(' ', '_')}]"


@pytest.fixture(scope="session")
def copy_bandwidth() -> CopyBandwidth:
    """The GPU's copy bandwidth, measured once per session."""
    return measure_copy_bandwidth(torch.device("cuda"))


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_kernel_bench(benchmark: Any, case: BenchCase, copy_bandwidth: CopyBandwidth) -> None:
    """Check the case, time its optimized path, record GB/s and the fraction of copy bandwidth."""
    device = torch.device("cuda")
    inputs = case.make_inputs(device)
    if case.check is not None:
        case.check(case.optimized(**inputs), case.torch_path(**inputs))

    def call() -> None:
        case.optimized(**inputs)
        torch.cuda.synchronize()

    benchmark.pedantic(call, rounds=50, warmup_rounds=5, iterations=1)
    if benchmark.stats is None:  # --benchmark-disable: the check above is the whole test
        return
    seconds = benchmark.stats.stats.median
    gbps = case.bytes_moved / seconds / 1e9
    benchmark.extra_info.update(
        kernel=case.kernel,
        label=case.label,
        bytes_moved=case.bytes_moved,
        gbps=gbps,
        copy_bw_fraction=gbps / copy_bandwidth.gbps,
        copy_gbps=copy_bandwidth.gbps,
        provenance="measured: host clock + device sync per call, median; includes launch latency",
    )
    assert seconds > 0
