"""The FPGA's numerics: int16 inputs, wide accumulator.

The reference FPGA kernels take int16 queries and keys and accumulate inner products in 40 bits
(paper.md section 4: "int16 q/k with 40-bit accumulators"). The GPU side works in bf16 or fp32, so the
FPGA path quantizes each tensor symmetrically to int16 with one scale per tensor:

    q = clamp(round_half_even(x / scale), -32768, 32767),    scale = max|x| / 32767 unless given,

and an integer score s of int16 queries (scale a) and keys (scale b) stands for the real score s * a * b.
A per-tensor scale multiplies every score of a row alike, so it never changes a top-k selection; only the
rounding of the inputs does.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

INT16_MIN = -32768
INT16_MAX = 32767


def _as_float64(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Any torch tensor (bf16 included, on any device) or numpy array as a float64 numpy array."""
    if type(x).__module__.startswith("torch"):
        # bf16 has no numpy dtype: widen to fp32 (exact) on the CPU first.
        x = x.detach().to(device="cpu").float().numpy()
    array = np.asarray(x)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"expected a real-valued tensor or array, got dtype {array.dtype}")
    return array.astype(np.float64)


def to_int16(x: torch.Tensor | np.ndarray, scale: float | None = None) -> tuple[np.ndarray, float]:
    """Quantizes a tensor symmetrically to int16 with one scale for the whole tensor.

    Values are divided by ``scale``, rounded half to even and saturated to [-32768, 32767]. With the
    default scale, max|x| maps to 32767; an all-zero tensor gets scale 1.0.

    Args:
        x: real tensor or array of any shape and float or integer dtype (torch bf16 included).
        scale: real value of one integer step, > 0; default max|x| / 32767.

    Returns:
        (int16 array of x's shape, the scale used).

    Raises:
        ValueError: if x holds NaN or infinity, or the scale is not a positive finite number.
    """
    values = _as_float64(x)
    if not np.isfinite(values).all():
        raise ValueError("cannot quantize NaN or infinite values to int16; clean the tensor first")
    if scale is None:
        peak = float(np.abs(values).max()) if values.size else 0.0
        scale = peak / INT16_MAX if peak > 0 else 1.0
    elif not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    quantized = np.clip(np.rint(values / scale), INT16_MIN, INT16_MAX).astype(np.int16)
    return quantized, float(scale)


def from_int16(q: np.ndarray, scale: float) -> np.ndarray:
    """The real values an int16 tensor stands for: q * scale.

    Args:
        q: int16 array from :func:`to_int16`.
        scale: the scale :func:`to_int16` returned.

    Returns:
        float32 array of q's shape.
    """
    return (np.asarray(q, dtype=np.float64) * scale).astype(np.float32)
