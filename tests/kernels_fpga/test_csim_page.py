"""page_topk (Quest / LServe) in C-simulation: bit-exact against the integer reference."""

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


def bounds(rng: np.random.Generator, rows: int, pages: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = int16(rng, rows, pages, D), int16(rng, rows, pages, D)
    return np.minimum(a, b), np.maximum(a, b)


def assert_same(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("seed", [31, 32, 33])
@pytest.mark.parametrize(
    ("rows", "group", "pages", "sub", "k"),
    [(1, 1, 1, 1, 1), (2, 4, 37, 4, 5), (3, 3, 100, 3, 64), (2, 16, 50, 1, 64), (1, 2, 5, 8, 3), (2, 4, 257, 4, 17)],
)
def test_matches_reference(
    lib: csim.CsimLibrary, seed: int, rows: int, group: int, pages: int, sub: int, k: int
) -> None:
    rng = np.random.default_rng(seed)
    q = int16(rng, rows, group, D)
    kmin, kmax = bounds(rng, rows, pages)
    got = lib.page_topk(q, kmin, kmax, k, sub)
    assert_same(got, ref.page_topk(q, kmin, kmax, k, sub))
    groups = -(-pages // sub)
    assert (got[0][:, : min(k, groups)] >= 0).all() and (got[0][:, min(k, groups) :] == -1).all()


def test_partial_last_group_takes_the_max_of_its_pages(lib: csim.CsimLibrary) -> None:
    q = np.zeros((1, 1, D), dtype=np.int16)
    q[0, 0, 0] = 1
    kmin = np.zeros((1, 10, D), dtype=np.int16)
    kmax = np.zeros((1, 10, D), dtype=np.int16)
    kmax[0, :, 0] = [5, 1, 2, 9, 0, 0, 3, 0, 0, 7]  # groups of 4: max 9, 3, 7 (last group has 2 pages)
    index, score = lib.page_topk(q, kmin, kmax, 3, sub=4)
    np.testing.assert_array_equal(index[0], [0, 2, 1])
    np.testing.assert_array_equal(score[0], [9, 7, 3])


def test_ties_and_extremes(lib: csim.CsimLibrary) -> None:
    rng = np.random.default_rng(34)
    extremes = np.array([-32768, 32767], dtype=np.int16)
    q = rng.choice(extremes, size=(2, 4, D))
    kmin = rng.choice(extremes, size=(2, 90, D))
    kmax = np.maximum(kmin, rng.choice(extremes, size=(2, 90, D)))
    assert_same(lib.page_topk(q, kmin, kmax, 64, 2), ref.page_topk(q, kmin, kmax, 64, 2))
    same = np.full((1, 70, D), -32768, dtype=np.int16)  # every page ties at the maximal bound 2^37
    q = np.full((1, 2, D), -32768, dtype=np.int16)
    index, score = lib.page_topk(q, same, same, 8, 1)
    np.testing.assert_array_equal(index[0], np.arange(8))
    assert (score[0] == D * 2**30).all()


def test_empty_and_tier_split(lib: csim.CsimLibrary) -> None:
    q = np.ones((2, 4, D), dtype=np.int16)
    empty = np.zeros((2, 0, D), dtype=np.int16)
    index, score = lib.page_topk(q, empty, empty, 6, 4)
    assert (index == -1).all() and (score == np.iinfo(np.int64).min).all()
    rng = np.random.default_rng(35)
    kmin, kmax = bounds(rng, 2, 1300)  # a stripe round is 8 x 64 = 512 pages
    want = ref.page_topk(q, kmin, kmax, 10, 4)
    for bram, uram in [(0, 0), (512, 512), (1024, 0), (3, 200)]:
        assert_same(lib.page_topk(q, kmin, kmax, 10, 4, bram_pages=bram, uram_pages=uram), want)
    assert_same(lib.page_topk(q, kmin, kmax, 10, 4, page_stride=1301), want)


@pytest.mark.parametrize(
    ("group", "sub", "k", "message"),
    [(17, 1, 4, "BENCH_MAX_GROUP"), (2, 0, 4, "sub"), (2, 1, 0, "k must be"), (2, 1, 65, "BENCH_K_MAX")],
)
def test_bad_arguments(lib: csim.CsimLibrary, group: int, sub: int, k: int, message: str) -> None:
    q = np.zeros((1, group, D), dtype=np.int16)
    pages = np.zeros((1, 3, D), dtype=np.int16)
    with pytest.raises(ValueError, match=message):
        lib.page_topk(q, pages, pages, k, sub)
    with pytest.raises(ValueError, match="kmin and kmax"):
        lib.page_topk(np.zeros((1, 2, D), np.int16), pages, np.zeros((1, 4, D), np.int16), 4)
