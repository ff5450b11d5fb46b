"""dsa_indexer_topk in C-simulation: bit-exact against the integer reference, up to top-2048."""

from __future__ import annotations

import numpy as np
import pytest

from kernels_fpga import csim
from kernels_fpga import reference as ref

D = 128


@pytest.fixture(scope="module")
def lib() -> csim.CsimLibrary:
    return csim.load()


def int16(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(-32768, 32767, size=shape, endpoint=True, dtype=np.int16)


def assert_same(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("seed", [51, 52, 53])
@pytest.mark.parametrize(
    ("rows", "heads", "n", "k"), [(1, 1, 1, 1), (2, 64, 300, 2048), (3, 17, 501, 100), (2, 16, 1000, 37)]
)
def test_matches_reference(lib: csim.CsimLibrary, seed: int, rows: int, heads: int, n: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    q, w, keys = int16(rng, rows, heads, D), int16(rng, rows, heads), int16(rng, rows, n, D)
    got = lib.dsa_indexer_topk(q, w, keys, k)
    assert_same(got, ref.dsa_indexer_topk(q, w, keys, k))
    assert got[0].shape == (rows, k) and (got[0][:, min(k, n) :] == -1).all()


def test_full_2048_selection_from_a_longer_row(lib: csim.CsimLibrary) -> None:
    rng = np.random.default_rng(54)
    q, w, keys = int16(rng, 1, 4, D), int16(rng, 1, 4), int16(rng, 1, 2600, D)
    index, score = lib.dsa_indexer_topk(q, w, keys, 2048)
    assert_same((index, score), ref.dsa_indexer_topk(q, w, keys, 2048))
    assert (index >= 0).all() and len(np.unique(index)) == 2048


def test_relu_ties_and_extremes(lib: csim.CsimLibrary) -> None:
    # Every head's dot product is 2^37; with w = -32768 on all 64 heads, I = -2^58 for every key.
    q = np.full((1, 64, D), -32768, dtype=np.int16)
    w = np.full((1, 64), -32768, dtype=np.int16)
    keys = np.full((1, 40, D), -32768, dtype=np.int16)
    keys[0, 5] = 0  # q . k = 0 -> ReLU 0 -> I = 0, the maximum here
    index, score = lib.dsa_indexer_topk(q, w, keys, 3)
    np.testing.assert_array_equal(index[0], [5, 0, 1])
    np.testing.assert_array_equal(score[0], [0, -(2**58), -(2**58)])
    rng = np.random.default_rng(55)
    extremes = np.array([-32768, 32767], dtype=np.int16)
    q, w, keys = (rng.choice(extremes, size=s) for s in [(2, 64, D), (2, 64), (2, 80, D)])
    assert_same(lib.dsa_indexer_topk(q, w, keys, 64), ref.dsa_indexer_topk(q, w, keys, 64))
    # Negative dot products vanish under the ReLU: many keys tie at I = 0.
    q = int16(rng, 1, 3, D)
    keys = np.ascontiguousarray(np.concatenate([-q[:, :1], q[:, :1]], axis=1).repeat(30, axis=1))
    got = lib.dsa_indexer_topk(q, np.ones((1, 3), np.int16), keys, 50)
    assert_same(got, ref.dsa_indexer_topk(q, np.ones((1, 3), np.int16), keys, 50))


def test_empty_and_tier_split(lib: csim.CsimLibrary) -> None:
    rng = np.random.default_rng(56)
    q, w = int16(rng, 2, 8, D), int16(rng, 2, 8)
    index, score = lib.dsa_indexer_topk(q, w, np.zeros((2, 0, D), np.int16), 16)
    assert (index == -1).all() and (score == np.iinfo(np.int64).min).all()
    keys = int16(rng, 2, 2100, D)
    want = ref.dsa_indexer_topk(q, w, keys, 16)
    for bram, uram in [(0, 0), (1024, 1024), (2048, 0), (1, 1)]:
        assert_same(lib.dsa_indexer_topk(q, w, keys, 16, bram_keys=bram, uram_keys=uram), want)
    assert_same(lib.dsa_indexer_topk(q, w, keys, 16, row_stride=2200), want)


@pytest.mark.parametrize(("heads", "k", "message"), [(65, 4, "BENCH_DSA_HEADS"), (4, 2049, "BENCH_DSA_K_MAX")])
def test_bad_arguments(lib: csim.CsimLibrary, heads: int, k: int, message: str) -> None:
    q, w = np.zeros((1, heads, D), np.int16), np.zeros((1, heads), np.int16)
    with pytest.raises(ValueError, match=message):
        lib.dsa_indexer_topk(q, w, np.zeros((1, 3, D), np.int16), k)
    with pytest.raises(ValueError, match="w"):
        lib.dsa_indexer_topk(q, np.zeros((1, heads + 1), np.int16), np.zeros((1, 3, D), np.int16), 4)
