"""The numpy integer references: top-k order, packing, reductions, BM25 fixed point, recall."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernels_fpga import reference as ref

EMPTY = np.iinfo(np.int64).min


def test_topk_orders_by_score_then_lower_index_and_pads() -> None:
    scores = np.array([[5, 9, 5, 9, 1], [0, 0, 0, 0, 0]], dtype=np.int64)
    index, value = ref.topk(scores, 7)
    np.testing.assert_array_equal(index, [[1, 3, 0, 2, 4, -1, -1], [0, 1, 2, 3, 4, -1, -1]])
    np.testing.assert_array_equal(value[0, :5], [9, 9, 5, 5, 1])
    assert (value[:, 5:] == EMPTY).all() and index.dtype == np.int32


def test_topk_matches_a_brute_force_sort() -> None:
    rng = np.random.default_rng(91)
    scores = rng.integers(-5, 5, size=(4, 57))
    index, value = ref.topk(scores, 11)
    for r in range(4):
        ranked = sorted(range(57), key=lambda i: (-scores[r, i], i))[:11]
        np.testing.assert_array_equal(index[r], ranked)
        np.testing.assert_array_equal(value[r], scores[r, ranked])


def test_inner_products_are_exact_beyond_int32() -> None:
    q = np.full((1, 128), -32768, dtype=np.int16)
    keys = np.full((1, 2, 128), -32768, dtype=np.int16)
    np.testing.assert_array_equal(ref.inner_product_scores(q, keys), [[2**37, 2**37]])


def test_max_reduce_handles_a_partial_last_group() -> None:
    scores = np.array([[1, 7, 3, -2, 4]], dtype=np.int64)
    np.testing.assert_array_equal(ref.max_reduce(scores, 2), [[7, 3, 4]])
    np.testing.assert_array_equal(ref.max_reduce(scores, 9), [[7]])
    assert ref.max_reduce(np.zeros((2, 0), np.int64), 4).shape == (2, 0)


def test_page_scores_follow_the_quest_bound() -> None:
    rng = np.random.default_rng(92)
    q = rng.integers(-9, 9, size=(1, 2, 4)).astype(np.int16)
    kmin = rng.integers(-9, 0, size=(1, 3, 4)).astype(np.int16)
    kmax = rng.integers(0, 9, size=(1, 3, 4)).astype(np.int16)
    for p in range(3):
        bound = max(
            sum(max(int(q[0, g, d]) * int(kmin[0, p, d]), int(q[0, g, d]) * int(kmax[0, p, d])) for d in range(4))
            for g in range(2)
        )
        assert ref.page_scores(q, kmin, kmax)[0, p] == bound


def test_pack_bits_puts_key_i_at_bit_i_mod_64() -> None:
    selected = np.zeros((1, 70), dtype=bool)
    selected[0, [0, 63, 64, 69]] = True
    np.testing.assert_array_equal(ref.pack_bits(selected), [[(1 << 63) | 1, (1 << 5) | 1]])


def test_dsa_scores_apply_relu_then_weights() -> None:
    q = np.array([[[1, 0], [0, 1]]], dtype=np.int16)
    w = np.array([[3, -2]], dtype=np.int16)
    keys = np.array([[[5, 7], [-5, 7], [5, -7]]], dtype=np.int16)
    np.testing.assert_array_equal(ref.dsa_index_scores(q, w, keys), [[3 * 5 - 2 * 7, -2 * 7, 3 * 5]])


def test_bm25_idf_q16_rounds_and_clamps() -> None:
    idf = ref.bm25_idf_q16([0, 1, 10, 50, 60, 100], 100)
    for got, df in zip(idf, [0, 1, 10, 50, 60, 100], strict=True):
        exact = max(0.0, math.log((100 - df + 0.5) / (df + 0.5))) * 65536
        assert got == round(exact)  # Python's round is half to even, as the helper documents
    assert idf[3] == 0 and idf[4] == 0 and idf.dtype == np.int32
    with pytest.raises(ValueError, match="document frequency"):
        ref.bm25_idf_q16([101], 100)


def test_bm25_tf_factor_is_floored_q16_of_the_saturation_curve() -> None:
    tf = np.array([0, 1, 2, 3, 100, 65535])
    factor = ref.bm25_tf_factor_q16(tf)
    assert factor[0] == 0 and factor[1] == 65536
    k1 = ref.BM25_K1_Q16 / 65536
    exact = tf * (k1 + 1) / (tf + k1) * 65536
    assert ((exact - factor >= 0) & (exact - factor < 1 + 1e-9)).all()
    assert ref.BM25_K1_Q16 == 78643


def test_bm25_integer_scores_track_the_float_formula() -> None:
    rng = np.random.default_rng(93)
    lengths = rng.integers(0, 30, size=50)
    doc_ptr = np.concatenate(([0], np.cumsum(lengths)))
    term_ids = rng.integers(0, 40, size=doc_ptr[-1])
    tfs = rng.integers(1, 9, size=doc_ptr[-1])
    docs = [set(term_ids[doc_ptr[d] : doc_ptr[d + 1]].tolist()) for d in range(50)]
    df = np.array([sum(term in doc for doc in docs) for term in range(40)])
    idf = ref.bm25_idf_q16(df, 50)
    mask = ref.bm25_query_mask([3, 5, 8], 40)
    scores = ref.bm25_scores(doc_ptr, term_ids, tfs, mask, idf) / 65536
    idf_float = np.maximum(0, np.log((50 - df + 0.5) / (df + 0.5)))
    for d in range(50):
        span = slice(doc_ptr[d], doc_ptr[d + 1])
        want = sum(
            idf_float[t] * f * (1.2 + 1) / (f + 1.2) for t, f in zip(term_ids[span], tfs[span], strict=True) if mask[t]
        )
        assert scores[d] == pytest.approx(want, abs=2e-4 * (1 + lengths[d]))  # < 1.5e-4 rounding per term


def test_query_mask_accepts_ids_or_a_mask() -> None:
    mask = ref.bm25_query_mask([2, 2, 5], 8)
    np.testing.assert_array_equal(mask, [0, 0, 1, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(ref.bm25_query_mask(mask, 8), mask)
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        ref.bm25_query_mask([8], 8)
    with pytest.raises(ValueError, match="shape"):
        ref.bm25_query_mask(np.zeros(7, bool), 8)


def test_topk_recall() -> None:
    fpga = np.array([[1, 2, 3, -1], [4, 5, 6, 7]])
    gpu = np.array([[1, 2, 9, -1], [4, 5, 6, 7]])
    assert ref.topk_recall(fpga, gpu) == pytest.approx((2 / 3 + 1) / 2)
    assert ref.topk_recall(np.array([1, 2]), np.array([2, 1])) == 1.0  # order does not matter
    assert ref.topk_recall(np.array([[-1, -1]]), np.array([[-1, -1]])) == 1.0  # nothing to recall
    assert ref.topk_recall(np.array([[0, -1]]), np.array([[3, -1]])) == 0.0
    with pytest.raises(ValueError, match="row counts"):
        ref.topk_recall(np.zeros((2, 3)), np.zeros((3, 3)))
