"""threshold_select in C-simulation: bitmaps and counts bit-exact against the integer reference."""

from __future__ import annotations

import numpy as np
import pytest

from kernels_fpga import csim
from kernels_fpga import reference as ref

D = 128
INT64 = np.iinfo(np.int64)


@pytest.fixture(scope="module")
def lib() -> csim.CsimLibrary:
    return csim.load()


def int16(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(-32768, 32767, size=shape, endpoint=True, dtype=np.int16)


@pytest.mark.parametrize("seed", [41, 42, 43])
@pytest.mark.parametrize(("rows", "n"), [(1, 1), (2, 63), (3, 64), (2, 65), (1, 333)])
@pytest.mark.parametrize("quantile", [0.0, 0.5, 0.9])
def test_matches_reference(lib: csim.CsimLibrary, seed: int, rows: int, n: int, quantile: float) -> None:
    rng = np.random.default_rng(seed)
    q, keys = int16(rng, rows, D), int16(rng, rows, n, D)
    threshold = int(np.quantile(ref.inner_product_scores(q, keys), quantile, method="lower"))
    bitmap, count = lib.threshold_select(q, keys, threshold)
    want_bitmap, want_count = ref.threshold_select(q, keys, threshold)
    assert bitmap.dtype == np.uint64 and bitmap.shape == (rows, -(-n // 64)) and count.dtype == np.int32
    np.testing.assert_array_equal(bitmap, want_bitmap)
    np.testing.assert_array_equal(count, want_count)
    bits = np.unpackbits(bitmap.view(np.uint8), axis=1, bitorder="little")
    np.testing.assert_array_equal(bits.sum(axis=1), count)  # popcount agrees; bits past n are 0


def test_equal_score_is_selected_and_extreme_thresholds(lib: csim.CsimLibrary) -> None:
    q = np.full((1, D), -32768, dtype=np.int16)
    keys = np.full((1, 70, D), -32768, dtype=np.int16)
    keys[0, 1::2] = 0
    bitmap, count = lib.threshold_select(q, keys, D * 2**30)  # even keys score exactly 2^37
    assert count[0] == 35
    assert bitmap[0, 0] == np.uint64(0x5555555555555555) and bitmap[0, 1] == np.uint64(0b010101)
    assert lib.threshold_select(q, keys, int(INT64.min))[1][0] == 70
    assert lib.threshold_select(q, keys, int(INT64.max))[1][0] == 0


def test_empty_and_tier_split(lib: csim.CsimLibrary) -> None:
    bitmap, count = lib.threshold_select(np.zeros((2, D), np.int16), np.zeros((2, 0, D), np.int16), 0)
    assert bitmap.shape == (2, 0) and (count == 0).all()
    rng = np.random.default_rng(44)
    q, keys = int16(rng, 2, D), int16(rng, 2, 2150, D)
    want = ref.threshold_select(q, keys, 0)
    for bram, uram in [(0, 0), (1024, 1024), (2048, 0), (1, 2)]:
        got = lib.threshold_select(q, keys, 0, bram_keys=bram, uram_keys=uram, row_stride=3000)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("threshold", [2**63, -(2**63) - 1, 1.5, True])
def test_bad_threshold(lib: csim.CsimLibrary, threshold: object) -> None:
    with pytest.raises(ValueError, match="threshold"):
        lib.threshold_select(np.zeros((1, D), np.int16), np.zeros((1, 2, D), np.int16), threshold)  # type: ignore[arg-type]
