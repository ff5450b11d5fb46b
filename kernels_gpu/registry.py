"""Benchmark cases that the roofline benchmark runs: one per kernel family and size."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class BenchCase:
    """One kernel at one size, with both GPU paths and the bytes and FLOPs the optimized path must move.

    Attributes:
        kernel: Kernel family, e.g. ``"relevancy_topk"``.
        label: Size label shown in the table, e.g. ``"B=1 N=131072 k=64"``.
        make_inputs: Builds seeded random inputs on the given device, as keyword arguments.
        optimized: The Triton path, called as ``optimized(**inputs)``.
        torch_path: The framework-native path, called as ``torch_path(**inputs)``: what a user writes with
            torch ops (``native_<op>``: no tie rule, scores in the dtype matmul returns), the baseline of
            ``speedup_vs_torch``.
        bytes_moved: Fewest bytes the kernel must read plus write in device memory (each input read once).
        flops: Floating-point (or integer multiply-add) operations, counting a multiply-add as two.
        targets: Speed targets this case is held to, e.g. ``{"bw_fraction": 0.7}`` or ``{"speedup_vs_torch": 2}``.
        check: Compares the two paths' outputs, in either order; raises AssertionError on a mismatch (run
            before timing).
    """

    kernel: str
    label: str
    make_inputs: Callable[[torch.device], dict[str, Any]]
    optimized: Callable[..., Any]
    torch_path: Callable[..., Any]
    bytes_moved: int
    flops: int
    targets: dict[str, float] = field(default_factory=dict)
    check: Callable[[Any, Any], None] | None = None
