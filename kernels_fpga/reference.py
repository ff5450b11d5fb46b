"""Integer references of the FPGA kernels in ``kernels_fpga/hls/``, in numpy, plus their host-side helpers.

Each kernel function here computes exactly what its HLS C++ counterpart computes (same integer formulas,
same tie-breaking), directly and without the hardware's structure, so the C-simulation can be checked bit
for bit. Selections are returned sorted by (score descending, index ascending) and padded with index -1
and score ``EMPTY_SCORE`` when there are fewer candidates than k: the order
:mod:`kernels_fpga.csim` returns. Also here: the BM25 IDF table the host computes for the kernel
(:func:`bm25_idf_q16`) and :func:`topk_recall` for comparing a selection against a GPU's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EMPTY_INDEX = -1
"""Index of an unfilled top-k slot (fewer candidates than k)."""
EMPTY_SCORE = np.iinfo(np.int64).min
"""Score of an unfilled top-k slot."""

Q16_ONE = 1 << 16
"""1.0 in the Q16 fixed point of the BM25 kernel."""
BM25_K1 = 1.2
"""BM25 k1 of the reference design (paper.md section 7)."""
BM25_B = 0.75
"""BM25 b of the reference design: defined there but not applied (no document-length normalization)."""
BM25_K1_Q16 = round(BM25_K1 * Q16_ONE)
"""k1 in Q16: round(1.2 * 65536) = 78643, as ``BENCH_BM25_K1_Q16`` in ``hls/bench_params.h``."""


def topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Selects the k highest-ranked entries of each row: higher score first, lower index among equal scores.

    Args:
        scores: int64 [R, M] candidate scores; candidate j of a row has index j.
        k: entries to select per row, >= 1; rows with fewer than k candidates are padded.

    Returns:
        (index int32 [R, k], score int64 [R, k]), each row sorted by (score desc, index asc), padded
        with ``EMPTY_INDEX`` / ``EMPTY_SCORE``.
    """
    scores = np.asarray(scores, dtype=np.int64)
    rows, m = scores.shape
    index = np.full((rows, k), EMPTY_INDEX, dtype=np.int32)
    value = np.full((rows, k), EMPTY_SCORE, dtype=np.int64)
    take = min(k, m)
    if rows == 0 or take == 0:
        return index, value
    # A stable sort on the negated score keeps equal scores in ascending index order; kernel scores are
    # far inside the int64 range, so negation cannot overflow.
    order = np.argsort(-scores, axis=1, kind="stable")[:, :take]
    index[:, :take] = order
    value[:, :take] = np.take_along_axis(scores, order, axis=1)
    return index, value


def inner_product_scores(q: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """score[r, i] = sum_d q[r, d] * keys[r, i, d], exactly.

    Args:
        q: int16 [R, D] queries.
        keys: int16 [R, N, D] keys.

    Returns:
        int64 [R, N] scores.
    """
    return np.einsum("rnd,rd->rn", keys.astype(np.int64), q.astype(np.int64))


def relevancy_topk(q: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference of the ``relevancy_topk`` kernel: inner-product scores, then :func:`topk`.

    Args:
        q: int16 [R, D] queries.
        keys: int16 [R, N, D] keys.
        k: keys to select per row.

    Returns:
        (index int32 [R, k], score int64 [R, k]) sorted by (score desc, index asc).
    """
    return topk(inner_product_scores(q, keys), k)


def page_scores(q: np.ndarray, kmin: np.ndarray, kmax: np.ndarray) -> np.ndarray:
    """Quest page bound, maximized over a GQA group: max_g sum_d max(q[g,d] * kmin[p,d], q[g,d] * kmax[p,d]).

    Args:
        q: int16 [R, G, D] query heads of each row's group, G >= 1.
        kmin: int16 [R, P, D] element-wise key minimum per page.
        kmax: int16 [R, P, D] element-wise key maximum per page.

    Returns:
        int64 [R, P] page scores.
    """
    q64 = q.astype(np.int64)[:, :, None, :]
    low = q64 * kmin.astype(np.int64)[:, None, :, :]
    high = q64 * kmax.astype(np.int64)[:, None, :, :]
    return np.maximum(low, high).sum(axis=-1).max(axis=1)


def max_reduce(scores: np.ndarray, sub: int) -> np.ndarray:
    """Max over runs of ``sub`` consecutive entries per row; the last run may be shorter.

    Args:
        scores: int64 [R, P].
        sub: run length, >= 1.

    Returns:
        int64 [R, ceil(P / sub)].
    """
    rows, pages = scores.shape
    groups = -(-pages // sub)
    padded = np.full((rows, groups * sub), EMPTY_SCORE, dtype=np.int64)
    padded[:, :pages] = scores
    return padded.reshape(rows, groups, sub).max(axis=2) if groups else padded.reshape(rows, 0)


def page_topk(q: np.ndarray, kmin: np.ndarray, kmax: np.ndarray, k: int, sub: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Reference of the ``page_topk`` kernel: :func:`page_scores`, :func:`max_reduce`, then :func:`topk`.

    Args:
        q: int16 [R, G, D] query heads.
        kmin: int16 [R, P, D] page key minima.
        kmax: int16 [R, P, D] page key maxima.
        k: page groups to select per row.
        sub: consecutive pages per group (LServe 4, Quest 1).

    Returns:
        (group index int32 [R, k], score int64 [R, k]) sorted by (score desc, index asc).
    """
    return topk(max_reduce(page_scores(q, kmin, kmax), sub), k)


def pack_bits(selected: np.ndarray) -> np.ndarray:
    """Packs a boolean [R, N] selection into uint64 words: bit b of word w is entry 64 * w + b.

    Args:
        selected: bool [R, N].

    Returns:
        uint64 [R, ceil(N / 64)]; bits past N are 0.
    """
    rows, n = selected.shape
    words = -(-n // 64)
    padded = np.zeros((rows, words * 64), dtype=np.uint64)
    padded[:, :n] = selected
    weights = np.left_shift(np.uint64(1), np.arange(64, dtype=np.uint64))
    return (padded.reshape(rows, words, 64) * weights).sum(axis=2, dtype=np.uint64)


def threshold_select(q: np.ndarray, keys: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference of the ``threshold_select`` kernel: keys whose inner-product score is >= threshold.

    Args:
        q: int16 [R, D] queries.
        keys: int16 [R, N, D] keys.
        threshold: int64 threshold in the scores' fixed point.

    Returns:
        (bitmap uint64 [R, ceil(N / 64)] as :func:`pack_bits`, count int32 [R] of selected keys).
    """
    selected = inner_product_scores(q, keys) >= threshold
    return pack_bits(selected), selected.sum(axis=1, dtype=np.int32)


def dsa_index_scores(q: np.ndarray, w: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """DSA lightning-indexer scores: I[r, s] = sum_j w[r, j] * max(0, q[r, j] . keys[r, s]), exactly.

    Args:
        q: int16 [R, H, D] indexer query heads.
        w: int16 [R, H] fixed-point head weights.
        keys: int16 [R, N, D] indexer keys (one per token, shared by the heads).

    Returns:
        int64 [R, N] index scores.
    """
    dots = np.einsum("rhd,rnd->rhn", q.astype(np.int64), keys.astype(np.int64))
    return (w.astype(np.int64)[:, :, None] * np.maximum(dots, 0)).sum(axis=1)


def dsa_indexer_topk(q: np.ndarray, w: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference of the ``dsa_indexer_topk`` kernel: :func:`dsa_index_scores`, then :func:`topk`.

    Args:
        q: int16 [R, H, D] indexer query heads.
        w: int16 [R, H] head weights.
        keys: int16 [R, N, D] indexer keys.
        k: tokens to select per row.

    Returns:
        (token index int32 [R, k], score int64 [R, k]) sorted by (score desc, index asc).
    """
    return topk(dsa_index_scores(q, w, keys), k)


def bm25_idf_q16(df: np.ndarray | Sequence[int], n_docs: int) -> np.ndarray:
    """Per-term BM25 IDF in Q16, as the host computes it for the ``bm25_topk`` kernel.

    idf = max(0, ln((n_docs - df + 0.5) / (df + 0.5))), then round(idf * 65536) with round half to even
    (numpy ``rint``, in float64). The clamp at 0 drops the negative IDF of terms in more than about half
    of the documents, so every weight the kernel adds is non-negative. The largest value, for df = 0, is
    ln(2 * n_docs + 1) * 65536, about 1.1e6 for 20M documents: far inside int32.

    Args:
        df: document frequency per term id, each in [0, n_docs].
        n_docs: documents in the corpus, >= 1.

    Returns:
        int32 [len(df)] IDF values in Q16.

    Raises:
        ValueError: if n_docs < 1 or a df is outside [0, n_docs].
    """
    df = np.asarray(df, dtype=np.float64)
    if n_docs < 1:
        raise ValueError(f"n_docs must be >= 1, got {n_docs}")
    if df.size and (df.min() < 0 or df.max() > n_docs):
        raise ValueError(f"every document frequency must lie in [0, n_docs={n_docs}]")
    idf = np.maximum(0.0, np.log((n_docs - df + 0.5) / (df + 0.5)))
    return np.rint(idf * Q16_ONE).astype(np.int32)


def bm25_tf_factor_q16(tf: np.ndarray) -> np.ndarray:
    """floor(tf * (K1 + 2^16) * 2^16 / (tf * 2^16 + K1)): the Q16 of tf * (k1 + 1) / (tf + k1), rounded down.

    Args:
        tf: term frequencies in [0, 65535].

    Returns:
        int64 array, same shape; 0 for tf = 0 and exactly 65536 (1.0) for tf = 1.
    """
    t = np.asarray(tf, dtype=np.int64)
    return t * (BM25_K1_Q16 + Q16_ONE) * Q16_ONE // (t * Q16_ONE + BM25_K1_Q16)


def bm25_query_mask(query_terms: np.ndarray | Sequence[int], vocab: int) -> np.ndarray:
    """The query as a boolean mask over the vocabulary.

    Args:
        query_terms: term ids (any integer sequence, repeats allowed), or a bool mask of length ``vocab``.
        vocab: vocabulary size.

    Returns:
        bool [vocab], True for query terms.

    Raises:
        ValueError: if a term id is outside [0, vocab) or a mask has the wrong length.
    """
    terms = np.asarray(query_terms)
    if terms.dtype == np.bool_:
        if terms.shape != (vocab,):
            raise ValueError(f"a boolean query mask must have shape ({vocab},), got {terms.shape}")
        return terms.copy()
    terms = terms.reshape(-1)
    if terms.size and not np.issubdtype(terms.dtype, np.integer):
        raise ValueError(f"query terms must be integer term ids or a boolean mask, got dtype {terms.dtype}")
    if terms.size and (terms.min() < 0 or terms.max() >= vocab):
        raise ValueError(f"query term ids must lie in [0, {vocab})")
    mask = np.zeros(vocab, dtype=np.bool_)
    mask[terms.astype(np.int64)] = True
    return mask


def bm25_scores(
    doc_ptr: np.ndarray, term_ids: np.ndarray, tfs: np.ndarray, query_mask: np.ndarray, idf_q16: np.ndarray
) -> np.ndarray:
    """Integer BM25 score per document, the ``bm25_topk`` kernel's formula (no length normalization).

    score[d] = sum over postings (t, tf) of d with query_mask[t] of floor(idf_q16[t] * factor(tf) / 2^16),
    factor as :func:`bm25_tf_factor_q16`.

    Args:
        doc_ptr: int [N + 1] CSR offsets; document d owns postings doc_ptr[d]:doc_ptr[d + 1].
        term_ids: int [P] term id per posting.
        tfs: int [P] term frequency per posting.
        query_mask: bool [V] query terms.
        idf_q16: int32 [V] non-negative IDF in Q16.

    Returns:
        int64 [N] document scores.
    """
    term_ids = np.asarray(term_ids, dtype=np.int64)
    weight = (idf_q16.astype(np.int64)[term_ids] * bm25_tf_factor_q16(tfs)) >> 16
    weight = np.where(query_mask[term_ids], weight, 0)
    # Postings of a document are contiguous, so a prefix sum gives every document's total exactly.
    prefix = np.concatenate(([0], np.cumsum(weight, dtype=np.int64)))
    doc_ptr = np.asarray(doc_ptr, dtype=np.int64)
    return prefix[doc_ptr[1:]] - prefix[doc_ptr[:-1]]


def bm25_topk(
    doc_ptr: np.ndarray,
    term_ids: np.ndarray,
    tfs: np.ndarray,
    query_terms: np.ndarray | Sequence[int],
    idf_q16: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference of the ``bm25_topk`` kernel: :func:`bm25_scores`, then :func:`topk` over documents.

    Args:
        doc_ptr: int [N + 1] CSR offsets.
        term_ids: int [P] term id per posting.
        tfs: int [P] term frequency per posting.
        query_terms: term ids or a bool mask over the vocabulary (``len(idf_q16)`` terms).
        idf_q16: int32 [V] IDF in Q16, as :func:`bm25_idf_q16`.
        k: documents to select.

    Returns:
        (document index int32 [k], score int64 [k]) sorted by (score desc, index asc).
    """
    mask = bm25_query_mask(query_terms, len(idf_q16))
    index, score = topk(bm25_scores(doc_ptr, term_ids, tfs, mask, idf_q16)[None, :], k)
    return index[0], score[0]


def topk_recall(fpga_idx: np.ndarray, gpu_idx: np.ndarray) -> float:
    """Fraction of the GPU's selected indices that the FPGA also selected, averaged over rows.

    Index -1 (an unfilled slot) is ignored on both sides. Rows where the GPU selected nothing are left out
    of the average; if no row has a GPU selection, nothing was missed and the recall is 1.0.

    Args:
        fpga_idx: int [R, k_fpga] or [k_fpga] indices selected by the FPGA path.
        gpu_idx: int [R, k_gpu] or [k_gpu] indices selected by the GPU path (the ground truth).

    Returns:
        Mean per-row recall in [0, 1].

    Raises:
        ValueError: if the two selections have different row counts.
    """
    fpga = np.atleast_2d(np.asarray(fpga_idx))
    gpu = np.atleast_2d(np.asarray(gpu_idx))
    if fpga.shape[0] != gpu.shape[0]:
        raise ValueError(f"row counts differ: FPGA {fpga.shape[0]}, GPU {gpu.shape[0]}")
    recalls = []
    for fpga_row, gpu_row in zip(fpga, gpu, strict=True):
        wanted = np.unique(gpu_row[gpu_row != EMPTY_INDEX])
        if wanted.size:
            recalls.append(np.isin(wanted, fpga_row[fpga_row != EMPTY_INDEX]).mean())
    return float(np.mean(recalls)) if recalls else 1.0


__all__ = [
    "BM25_B",
    "BM25_K1",
    "BM25_K1_Q16",
    "EMPTY_INDEX",
    "EMPTY_SCORE",
    "Q16_ONE",
    "bm25_idf_q16",
    "bm25_query_mask",
    "bm25_scores",
    "bm25_tf_factor_q16",
    "bm25_topk",
    "dsa_index_scores",
    "dsa_indexer_topk",
    "inner_product_scores",
    "max_reduce",
    "pack_bits",
    "page_scores",
    "page_topk",
    "relevancy_topk",
    "threshold_select",
    "topk",
    "topk_recall",
]
