"""relevancy_topk in C-simulation: bit-exact against the integer reference, ties, edges, extremes, recall."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernels_fpga import csim, quantize
from kernels_fpga import reference as ref

D = 128


@pytest.fixture(scope="module")
def lib() -> csim.CsimLibrary:
    return csim.load()


def int16(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(-32768, 32767, size=shape, endpoint=True, dtype=np.int16)


def assert_same(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    assert got[0].dtype == np.int32 and got[1].dtype == np.int64
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("seed", [11, 12, 13])
@pytest.mark.parametrize(("rows", "n", "k"), [(1, 1, 1), (3, 37, 5), (2, 203, 64), (4, 1001, 17), (2, 10, 64)])
def test_matches_reference(lib: csim.CsimLibrary, seed: int, rows: int, n: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    q, keys = int16(rng, rows, D), int16(rng, rows, n, D)
    got = lib.relevancy_topk(q, keys, k)
    assert_same(got, ref.relevancy_topk(q, keys, k))
    assert got[0].shape == (rows, k)


def test_ties_keep_the_lowest_indices(lib: csim.CsimLibrary) -> None:
    rng = np.random.default_rng(21)
    distinct = int16(rng, 3, D)
    choice = rng.integers(0, 3, size=(2, 301))
    keys = np.ascontiguousarray(distinct[choice])  # only 3 distinct scores per row
    q = int16(rng, 2, D)
    index, score = lib.relevancy_topk(q, keys, 40)
    assert_same((index, score), ref.relevancy_topk(q, keys, 40))
    for r in range(2):
        best = score[r, 0]
        tied = np.flatnonzero(ref.inner_product_scores(q, keys)[r] == best)
        expect = tied[:40]
        np.testing.assert_array_equal(index[r, : len(expect)], expect)


@pytest.mark.parametrize("ascending", [True, False])
def test_monotone_scores_every_key_or_none_hits(lib: csim.CsimLibrary, ascending: bool) -> None:
    n = 517
    keys = np.zeros((1, n, D), dtype=np.int16)
    keys[0, :, 0] = np.arange(n) if ascending else np.arange(n)[::-1]
    q = np.zeros((1, D), dtype=np.int16)
    q[0, 0] = 3
    index, score = lib.relevancy_topk(q, keys, 64)
    top = np.arange(n - 1, n - 65, -1) if ascending else np.arange(64)
    np.testing.assert_array_equal(index[0], top)
    np.testing.assert_array_equal(score[0], 3 * keys[0, top, 0].astype(np.int64))


def test_extreme_values_need_the_wide_accumulator(lib: csim.CsimLibrary) -> None:
    keys = np.full((1, 19, D), -32768, dtype=np.int16)
    keys[0, 7] = 32767
    q = np.full((1, D), -32768, dtype=np.int16)
    index, score = lib.relevancy_topk(q, keys, 3)
    assert score[0, 0] == D * 2**30  # 2^37: beyond int32, within the 40-bit accumulator
    np.testing.assert_array_equal(index[0], [0, 1, 2])
    rng = np.random.default_rng(22)
    q = rng.choice(np.array([-32768, 32767], dtype=np.int16), size=(3, D))
    keys = rng.choice(np.array([-32768, 32767], dtype=np.int16), size=(3, 77, D))
    assert_same(lib.relevancy_topk(q, keys, 64), ref.relevancy_topk(q, keys, 64))


def test_empty_inputs_give_empty_slots(lib: csim.CsimLibrary) -> None:
    q = np.zeros((2, D), dtype=np.int16)
    index, score = lib.relevancy_topk(q, np.zeros((2, 0, D), dtype=np.int16), 4)
    assert (index == -1).all() and (score == np.iinfo(np.int64).min).all() and index.shape == (2, 4)
    index, score = lib.relevancy_topk(np.zeros((0, D), np.int16), np.zeros((0, 5, D), np.int16), 4)
    assert index.shape == (0, 4) and score.shape == (0, 4)


def test_tier_split_and_row_stride_never_change_results(lib: csim.CsimLibrary) -> None:
    rng = np.random.default_rng(23)
    q, keys = int16(rng, 2, D), int16(rng, 2, 2500, D)
    want = ref.relevancy_topk(q, keys, 9)
    # whole 1024-key stripes: BRAM only, BRAM + URAM + HBM, URAM + HBM, all HBM, requests that round down
    for bram, uram in [(8192, 0), (1024, 1024), (0, 2048), (0, 0), (1500, 3000), (5, 7)]:
        assert_same(lib.relevancy_topk(q, keys, 9, bram_keys=bram, uram_keys=uram), want)
    assert_same(lib.relevancy_topk(q, keys, 9, row_stride=4097, bram_keys=1024, uram_keys=1024), want)
    with pytest.raises(ValueError, match="row stride"):
        lib.relevancy_topk(q, keys, 9, row_stride=2499)


def test_module_function_uses_the_default_build() -> None:
    rng = np.random.default_rng(24)
    q, keys = int16(rng, 1, D), int16(rng, 1, 33, D)
    assert_same(csim.relevancy_topk(q, keys, 5), ref.relevancy_topk(q, keys, 5))


@pytest.mark.parametrize(
    ("q", "keys", "k", "message"),
    [
        (np.zeros((1, D), np.int32), np.zeros((1, 4, D), np.int16), 1, "dtype int16"),
        (np.zeros((1, D), np.int16), np.zeros((1, 4, D), np.float32), 1, "to_int16"),
        (np.zeros((1, 64), np.int16), np.zeros((1, 4, 64), np.int16), 1, "BENCH_D"),
        (np.zeros((2, D), np.int16), np.zeros((1, 4, D), np.int16), 1, "shape"),
        (np.zeros((1, D), np.int16), np.zeros((1, 4, 2 * D), np.int16)[:, :, ::2], 1, "C-contiguous"),
        (np.zeros((1, D), np.int16), np.zeros((1, 4, D), np.int16), 0, "k must be"),
        (np.zeros((1, D), np.int16), np.zeros((1, 4, D), np.int16), 65, "BENCH_K_MAX"),
    ],
)
def test_bad_input_is_a_clear_value_error(
    lib: csim.CsimLibrary, q: np.ndarray, keys: np.ndarray, k: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        lib.relevancy_topk(q, keys, k)


def test_recall_against_bf16_gpu_scoring(lib: csim.CsimLibrary) -> None:
    """The int16 FPGA path selects nearly the same keys as a bf16 matmul + topk on random gate data."""
    gen = torch.Generator().manual_seed(25)
    rows, n, k = 4, 1500, 64
    q_bf16 = torch.randn(rows, D, generator=gen).to(torch.bfloat16)
    k_bf16 = torch.randn(rows, n, D, generator=gen).to(torch.bfloat16)
    gpu_scores = torch.einsum("rnd,rd->rn", k_bf16, q_bf16)  # bf16 in, bf16 out, as a GPU kernel would
    gpu_idx = torch.topk(gpu_scores.float(), k, dim=1).indices.numpy()
    q16, _ = quantize.to_int16(q_bf16)
    k16, _ = quantize.to_int16(k_bf16)
    fpga_idx, _ = lib.relevancy_topk(q16, k16, k)
    recall = ref.topk_recall(fpga_idx, gpu_idx)
    print(f"int16 C-sim vs bf16 torch top-{k} recall over {rows} x {n} keys: {recall:.4f}")
    assert recall >= 0.9
