"""bm25_topk in C-simulation: bit-exact against the integer reference on random CSR corpora."""

from __future__ import annotations

import numpy as np
import pytest

from kernels_fpga import csim
from kernels_fpga import reference as ref

VOCAB = 65536


@pytest.fixture(scope="module")
def lib() -> csim.CsimLibrary:
    return csim.load()


def corpus(
    rng: np.random.Generator, n_docs: int, terms: int, max_len: int = 40
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random CSR corpus over term ids [0, terms), empty documents included."""
    lengths = rng.integers(0, max_len, size=n_docs, endpoint=True)
    doc_ptr = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    term_ids = rng.integers(0, terms, size=int(doc_ptr[-1])).astype(np.uint32)
    tfs = rng.integers(1, 20, size=int(doc_ptr[-1]), endpoint=True).astype(np.uint16)
    return doc_ptr, term_ids, tfs


def idf_for(doc_ptr: np.ndarray, term_ids: np.ndarray) -> np.ndarray:
    n_docs = len(doc_ptr) - 1
    doc_of = np.repeat(np.arange(n_docs), np.diff(doc_ptr))
    pairs = np.unique(np.stack([doc_of, term_ids.astype(np.int64)]), axis=1)
    df = np.bincount(pairs[1], minlength=VOCAB)
    return ref.bm25_idf_q16(df, max(n_docs, 1))


def assert_same(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("seed", [61, 62, 63])
@pytest.mark.parametrize(("n_docs", "terms", "k"), [(1, 5, 1), (101, 300, 10), (37, 50, 64), (500, 2000, 64)])
def test_matches_reference(lib: csim.CsimLibrary, seed: int, n_docs: int, terms: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    doc_ptr, term_ids, tfs = corpus(rng, n_docs, terms)
    idf = idf_for(doc_ptr, term_ids)
    query = rng.integers(0, terms, size=6)
    got = lib.bm25_topk(doc_ptr, term_ids, tfs, query, idf, k)
    assert got[0].dtype == np.int32 and got[1].dtype == np.int64 and got[0].shape == (k,)
    assert_same(got, ref.bm25_topk(doc_ptr, term_ids, tfs, query, idf, k))
    mask = np.zeros(VOCAB, dtype=bool)
    mask[query] = True
    assert_same(lib.bm25_topk(doc_ptr, term_ids, tfs, mask, idf, k), got)


def test_ties_lane_edges_and_extremes(lib: csim.CsimLibrary) -> None:
    rng = np.random.default_rng(64)
    # 30 identical documents, each one long (3 beats of 16) and touching every lane and the last term id.
    doc = np.concatenate([np.arange(40), [VOCAB - 1, VOCAB - 16, 15, 16]]).astype(np.uint32)
    term_ids = np.tile(doc, 30)
    tfs = np.tile(rng.integers(0, 65535, size=doc.size, endpoint=True), 30).astype(np.uint16)
    tfs[0] = 65535
    doc_ptr = np.arange(31, dtype=np.int64) * doc.size
    idf = np.full(VOCAB, np.iinfo(np.int32).max, dtype=np.int32)
    query = [0, 15, 16, 17, VOCAB - 1, VOCAB - 16]
    index, score = lib.bm25_topk(doc_ptr, term_ids, tfs, query, idf, 64)
    assert_same((index, score), ref.bm25_topk(doc_ptr, term_ids, tfs, query, idf, 64))
    np.testing.assert_array_equal(index[:30], np.arange(30))  # all tie: lowest document ids first
    assert (index[30:] == -1).all() and score[0] > 2**31


def test_documents_without_query_terms_score_zero(lib: csim.CsimLibrary) -> None:
    doc_ptr = np.array([0, 2, 2, 3], dtype=np.int64)
    term_ids = np.array([7, 9, 11], dtype=np.uint32)
    tfs = np.array([1, 2, 1], dtype=np.uint16)
    idf = np.zeros(VOCAB, dtype=np.int32)
    idf[[7, 9, 11]] = [65536, 2 * 65536, 3 * 65536]
    index, score = lib.bm25_topk(doc_ptr, term_ids, tfs, [11, 7], idf, 4)
    np.testing.assert_array_equal(index, [2, 0, 1, -1])  # doc 2: idf 3 x tf-factor(1) = 3.0
    np.testing.assert_array_equal(score[:3], [3 * 65536, 65536, 0])


def test_empty_corpus(lib: csim.CsimLibrary) -> None:
    empty_u32, empty_u16 = np.zeros(0, np.uint32), np.zeros(0, np.uint16)
    index, score = lib.bm25_topk(np.zeros(1, np.int64), empty_u32, empty_u16, [1], np.zeros(VOCAB, np.int32), 3)
    assert (index == -1).all() and (score == np.iinfo(np.int64).min).all()


@pytest.mark.parametrize(
    ("doc_ptr", "term_ids", "tfs", "query", "idf", "message"),
    [
        ([0, 2], [1, VOCAB], [1, 1], [1], np.zeros(VOCAB, np.int32), "term_ids"),
        ([0, 2], [1, 2], [1, 70000], [1], np.zeros(VOCAB, np.int32), "tfs"),
        ([0, 3], [1, 2], [1, 1], [1], np.zeros(VOCAB, np.int32), "doc_ptr"),
        ([1, 2], [1, 2], [1, 1], [1], np.zeros(VOCAB, np.int32), "doc_ptr"),
        ([0, 2], [1, 2], [1, 1], [VOCAB], np.zeros(VOCAB, np.int32), "query"),
        ([0, 2], [1, 2], [1, 1], [1], np.full(VOCAB, -1, np.int32), "idf_q16"),
        ([0, 2], [1, 2], [1, 1], [1], np.zeros(VOCAB, np.int64), "dtype int32"),
    ],
)
def test_bad_corpus_or_query(
    lib: csim.CsimLibrary, doc_ptr: list, term_ids: list, tfs: list, query: list, idf: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        lib.bm25_topk(np.array(doc_ptr), np.array(term_ids), np.array(tfs), query, idf, 2)
