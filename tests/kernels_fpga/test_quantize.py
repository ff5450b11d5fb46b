"""Symmetric per-tensor int16 quantization (the FPGA path's numerics)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernels_fpga.quantize import from_int16, to_int16


def test_default_scale_maps_the_peak_to_32767() -> None:
    rng = np.random.default_rng(81)
    x = rng.normal(size=(7, 33)).astype(np.float32)
    q, scale = to_int16(x)
    assert q.dtype == np.int16 and q.shape == x.shape
    assert scale == pytest.approx(np.abs(x).max() / 32767)
    assert np.abs(q).max() == 32767
    assert np.abs(from_int16(q, scale) - x).max() <= scale / 2 * (1 + 1e-6)


def test_rounds_half_to_even_and_saturates() -> None:
    q, scale = to_int16(np.array([0.5, 1.5, 2.5, -0.5, -1.5, 40000.0, -40000.0]), scale=1.0)
    assert scale == 1.0
    np.testing.assert_array_equal(q, [0, 2, 2, 0, -2, 32767, -32768])


def test_accepts_torch_bf16() -> None:
    x = torch.randn(5, 128, generator=torch.Generator().manual_seed(82)).to(torch.bfloat16)
    q, scale = to_int16(x)
    assert scale == pytest.approx(x.float().abs().max().item() / 32767)
    np.testing.assert_array_equal(q, np.rint(x.float().numpy() / scale).astype(np.int16))


def test_zero_tensor_gets_unit_scale() -> None:
    q, scale = to_int16(np.zeros((3, 4)))
    assert scale == 1.0 and not q.any()


@pytest.mark.parametrize("bad", [np.array([1.0, np.nan]), np.array([np.inf])])
def test_rejects_non_finite_values(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        to_int16(bad)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_rejects_bad_scale(scale: float) -> None:
    with pytest.raises(ValueError, match="scale"):
        to_int16(np.ones(3), scale=scale)
