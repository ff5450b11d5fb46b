"""Shared test set-up: GPU tests are skipped without CUDA; Triton runs in its CPU interpreter there.

Uninitialized memory is poisoned: every ``torch.empty``/``empty_like``/``new_empty`` in a test session comes
back filled with NaN (floats), ``True`` (bools) or an out-of-range integer, so code that reads memory it never
wrote fails every time instead of now and then (a KV-cache row past the length once leaked NaN through a zero
softmax weight and failed CI on one run in many). Benchmarks do not load this file and time the real thing.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    # Must be set before any @triton.jit function is defined (kernels_gpu imports triton lazily).
    os.environ.setdefault("TRITON_INTERPRET", "1")

_POISON_INT = {torch.uint8: 0xA5, torch.int8: -123, torch.int16: -12345}


def _poisoned(t: torch.Tensor) -> torch.Tensor:
    if t.numel() == 0 or t.device.type == "meta":
        return t
    if t.is_floating_point() or t.is_complex():
        return t.fill_(float("nan"))
    if t.dtype == torch.bool:
        return t.fill_(True)
    return t.fill_(_POISON_INT.get(t.dtype, -1234567))


def _poison(fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> torch.Tensor:
        return _poisoned(fn(*args, **kwargs))

    wrapper.__wrapped__ = fn
    return wrapper


torch.empty = _poison(torch.empty)
torch.empty_like = _poison(torch.empty_like)
torch.Tensor.new_empty = _poison(torch.Tensor.new_empty)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` when no CUDA device is present, saying why."""
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none detected); runs on the GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
