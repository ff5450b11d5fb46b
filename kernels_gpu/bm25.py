"""BM25 over a CSR inverted index, then exact top-k documents: the retriever of FLARE and DRAGIN.

score[q, d] = sum over query positions t of idf[t] * tf(t, d) * (k1 + 1)
                                          / (tf(t, d) + k1 * (1 - b + b * doc_len[d] / avg_doc_len))

with k1 = 1.2, b = 0.75 (standard BM25 with length normalization); b = 0 gives the FPGA reference design,
which applies none. A term repeated in a query counts once per occurrence; -1 pads a query. Each term's
postings are scattered into a per-query fp32 score array, then the top-k of all N documents follows the
tie rule of :mod:`kernels_gpu.topk` (documents with no matching term score 0 and can fill the k slots).

fp32 scores are sums in an unspecified order (GPU atomics), so two runs may differ in the last bit; the
top-k is exact for the scores computed. Tests use inputs whose every partial sum is exact.
:func:`native_bm25` (the torch path's scatter, then a plain ``torch.topk``) is the benchmark's baseline.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from bench.errors import UsageError
from kernels_gpu.registry import BenchCase
from kernels_gpu.topk import (
    cdiv,
    check_k,
    check_native,
    jit,
    native_topk,
    reference_topk,
    resolve_impl,
    tl,
    torch_topk,
    triton_topk,
)

BM25_K1 = 1.2
"""BM25 term-frequency saturation (workloads.md: FLARE/DRAGIN use Elasticsearch's defaults)."""
BM25_B = 0.75
"""BM25 document-length normalization; 0 reproduces the FPGA reference design."""


def _check(queries: torch.Tensor, indptr: torch.Tensor, doc_ids: torch.Tensor, tf: torch.Tensor,
           doc_len: torch.Tensor, idf: torch.Tensor) -> None:  # fmt: skip
    v = idf.shape[0]
    if queries.dim() != 2 or indptr.shape != (v + 1,) or doc_ids.shape != tf.shape or doc_len.dim() != 1:
        raise UsageError(
            "bm25 expects queries [B, T], indptr [V + 1], doc_ids and tf [nnz], doc_len [N], idf [V]; got "
            f"queries {tuple(queries.shape)}, indptr {tuple(indptr.shape)}, doc_ids {tuple(doc_ids.shape)}, "
            f"tf {tuple(tf.shape)}, doc_len {tuple(doc_len.shape)}, idf {tuple(idf.shape)}"
        )


def _avg(doc_len: torch.Tensor, avg_doc_len: float | None) -> float:
    return float(doc_len.float().mean()) if avg_doc_len is None else float(avg_doc_len)


def reference_bm25(
    queries: torch.Tensor,
    indptr: torch.Tensor,
    doc_ids: torch.Tensor,
    tf: torch.Tensor,
    doc_len: torch.Tensor,
    idf: torch.Tensor,
    k: int,
    k1: float = BM25_K1,
    b: float = BM25_B,
    avg_doc_len: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact reference: float64 scores term by term, then a stable sort (tests only).

    Args:
        queries: int [B, T] term ids, -1 padded.
        indptr: int64 [V + 1] CSR offsets of each term's postings.
        doc_ids: int32 [nnz] document of each posting.
        tf: fp16 or int16 [nnz] term frequency of each posting.
        doc_len: int32 [N] document lengths in tokens.
        idf: fp32 [V] inverse document frequencies.
        k: Documents per query, >= 1.
        k1: BM25 k1.
        b: BM25 b.
        avg_doc_len: Mean document length; None computes it from ``doc_len``.

    Returns:
        (doc index int32 [B, k], score fp32 [B, k]) sorted by (score desc, index asc), padded -1 / -inf.
    """
    _check(queries, indptr, doc_ids, tf, doc_len, idf)
    avg = _avg(doc_len, avg_doc_len)
    n = doc_len.shape[0]
    scores = torch.zeros((queries.shape[0], n), dtype=torch.float64)
    lengths = doc_len.cpu().double()
    for row, query in enumerate(queries.cpu().tolist()):
        for term in query:
            if term < 0:
                continue
            lo, hi = int(indptr[term]), int(indptr[term + 1])
            docs = doc_ids[lo:hi].long().cpu()
            f = tf[lo:hi].double().cpu()
            norm = k1 * (1 - b + b * lengths[docs] / avg)
            scores[row].index_add_(0, docs, float(idf[term]) * f * (k1 + 1) / (f + norm))
    nv = torch.full((queries.shape[0],), n, dtype=torch.int32)
    return reference_topk(scores, nv, k)


def torch_bm25(
    queries: torch.Tensor,
    indptr: torch.Tensor,
    doc_ids: torch.Tensor,
    tf: torch.Tensor,
    doc_len: torch.Tensor,
    idf: torch.Tensor,
    k: int,
    k1: float = BM25_K1,
    b: float = BM25_B,
    avg_doc_len: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact torch path: :func:`scatter_scores`, then the packed ``torch.topk`` of the tie rule.

    Arguments and result as :func:`bm25`.
    """
    check_k(k)
    scores = scatter_scores(queries, indptr, doc_ids, tf, doc_len, idf, k1, b, avg_doc_len)
    return torch_topk(scores, scores.shape[1], k)


def native_bm25(
    queries: torch.Tensor,
    indptr: torch.Tensor,
    doc_ids: torch.Tensor,
    tf: torch.Tensor,
    doc_len: torch.Tensor,
    idf: torch.Tensor,
    k: int,
    k1: float = BM25_K1,
    b: float = BM25_B,
    avg_doc_len: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Framework-native path, what a user writes: :func:`scatter_scores`, then ``torch.topk(sorted=False)``.

    The scatter's host sync keeps it out of CUDA graphs (the benchmark times it eagerly). No tie rule.
    Arguments as :func:`bm25`.

    Returns:
        (doc index int64 [B, k], score fp32 [B, k]), unordered; k > N pads with -1 / -inf.
    """
    scores = scatter_scores(queries, indptr, doc_ids, tf, doc_len, idf, k1, b, avg_doc_len)
    return native_topk(scores, scores.shape[1], k)


def scatter_scores(
    queries: torch.Tensor,
    indptr: torch.Tensor,
    doc_ids: torch.Tensor,
    tf: torch.Tensor,
    doc_len: torch.Tensor,
    idf: torch.Tensor,
    k1: float = BM25_K1,
    b: float = BM25_B,
    avg_doc_len: float | None = None,
) -> torch.Tensor:
    """BM25 scores of every document with framework ops: gather all queries' postings at once, ``index_add_``.

    One host sync sizes the gathered postings. Arguments as :func:`bm25`.

    Returns:
        fp32 [B, N] scores (0 for documents with no query term).
    """
    _check(queries, indptr, doc_ids, tf, doc_len, idf)
    avg = _avg(doc_len, avg_doc_len)
    nq, t = queries.shape
    n = doc_len.shape[0]
    dev = doc_ids.device
    valid = queries >= 0
    terms = queries.clamp(min=0).long().reshape(-1)
    starts = indptr[terms]
    lens = torch.where(valid.reshape(-1), indptr[terms + 1] - starts, 0)
    total = int(lens.sum())
    owner = torch.repeat_interleave(torch.arange(nq * t, device=dev), lens, output_size=total)
    first = torch.repeat_interleave(torch.cumsum(lens, 0) - lens, lens, output_size=total)
    post = starts[owner] + torch.arange(total, device=dev) - first
    docs = doc_ids[post].long()
    f = tf[post].float()
    norm = k1 * (1 - b + b * doc_len[docs].float() / avg)
    contrib = idf[terms[owner]] * ((f * (k1 + 1)) / (f + norm))
    scores = torch.zeros((nq, n), dtype=torch.float32, device=dev)
    scores.view(-1).index_add_(0, (owner // t) * n + docs, contrib)
    return scores


def triton_bm25(
    queries: torch.Tensor,
    indptr: torch.Tensor,
    doc_ids: torch.Tensor,
    tf: torch.Tensor,
    doc_len: torch.Tensor,
    idf: torch.Tensor,
    k: int,
    k1: float = BM25_K1,
    b: float = BM25_B,
    avg_doc_len: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton path: one scatter launch over every (query, term) posting list, then :func:`triton_topk`.

    Arguments and result as :func:`bm25`; k <= 8192.
    """
    resolve_impl("triton", queries, indptr, doc_ids, tf, doc_len, idf)
    _check(queries, indptr, doc_ids, tf, doc_len, idf)
    avg = _avg(doc_len, avg_doc_len)
    nq, t = queries.shape
    n = doc_len.shape[0]
    dev = doc_ids.device
    queries = queries.to(torch.int32).contiguous()
    scores = torch.zeros((nq, n), dtype=torch.float32, device=dev)
    # Posting lists are at most N long; SPLIT programs share one list so long lists spread over the GPU.
    split = max(1, min(64, cdiv(n, 8 * SCATTER_BLOCK)))
    _scatter_kernel[(nq * t, split)](
        queries, indptr, doc_ids, tf, doc_len, idf, scores, t, n, k1, b, avg, BLOCK=SCATTER_BLOCK, num_warps=4
    )
    return triton_topk(scores, torch.full((nq,), n, dtype=torch.int32, device=dev), k)


def bm25(
    queries: torch.Tensor,
    indptr: torch.Tensor,
    doc_ids: torch.Tensor,
    tf: torch.Tensor,
    doc_len: torch.Tensor,
    idf: torch.Tensor,
    k: int,
    k1: float = BM25_K1,
    b: float = BM25_B,
    avg_doc_len: float | None = None,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k documents of each query by BM25 over a CSR inverted index.

    Args:
        queries: int [B, T] term ids, -1 padded.
        indptr: int64 [V + 1] CSR offsets of each term's postings.
        doc_ids: int32 [nnz] document of each posting (each document at most once per term).
        tf: fp16 or int16 [nnz] term frequency of each posting.
        doc_len: int32 [N] document lengths in tokens (N up to ~21M DPR passages).
        idf: fp32 [V] inverse document frequencies.
        k: Documents per query (FLARE 2, DRAGIN 3, WikiAsp 5).
        k1: BM25 k1.
        b: BM25 b (0: no length normalization, as the FPGA reference design).
        avg_doc_len: Mean document length; None computes it from ``doc_len`` (a host sync).
        impl: ``"auto"``, ``"torch"`` or ``"triton"`` (see :func:`kernels_gpu.topk.resolve_impl`).

    Returns:
        (doc index int32 [B, k], score fp32 [B, k]) sorted by (score desc, index asc); k > N pads -1 / -inf.
    """
    path = resolve_impl(impl, queries, indptr, doc_ids, tf, doc_len, idf)
    fn = triton_bm25 if path == "triton" else torch_bm25
    return fn(queries, indptr, doc_ids, tf, doc_len, idf, k, k1, b, avg_doc_len)


SCATTER_BLOCK = 1024
"""Postings one scatter program handles per loop step."""


@jit
def _scatter_kernel(
    queries_ptr, indptr_ptr, doc_ids_ptr, tf_ptr, doc_len_ptr, idf_ptr, scores_ptr, T, n_docs, k1, b, avg,
    BLOCK: tl.constexpr,
):  # fmt: skip
    # Program (query position, split): a grid-stride walk over one term's postings with fp32 atomics.
    # Divisions are correctly rounded (div_rn) so the formula matches the torch path's arithmetic.
    qt = tl.program_id(0)
    term = tl.load(queries_ptr + qt)
    has = term >= 0
    lo = tl.load(indptr_ptr + term, mask=has, other=0)
    hi = tl.load(indptr_ptr + term + 1, mask=has, other=0)
    weight = tl.load(idf_ptr + term, mask=has, other=0.0)
    row = scores_ptr + (qt // T).to(tl.int64) * n_docs
    start = lo + tl.program_id(1) * BLOCK
    while start < hi:  # while, not range(): the interpreter cannot bound range() by a loaded value
        p = start + tl.arange(0, BLOCK)
        live = p < hi
        doc = tl.load(doc_ids_ptr + p, mask=live, other=0)
        f = tl.load(tf_ptr + p, mask=live, other=0).to(tl.float32)
        dl = tl.load(doc_len_ptr + doc, mask=live, other=0).to(tl.float32)
        norm = k1 * (1.0 - b + tl.math.div_rn(b * dl, avg))
        tl.atomic_add(row + doc, weight * tl.math.div_rn(f * (k1 + 1.0), f + norm), mask=live, sem="relaxed")
        start += tl.num_programs(1) * BLOCK


# ---------------------------------------------------------------------------------------------------------
# Benchmark cases: a synthetic index with Zipf document frequencies (no DPR index offline).

NATIVE_REL_TOL = 1e-5
"""Score tolerance of the cases' check, relative to a row's largest score: both paths sum the same fp32
terms (32 per document at most) in different atomic orders, a few ulps (2^-24 each) apart."""

VOCAB = 100_000
"""Synthetic vocabulary size."""
QUERY_TERMS = 32
"""Terms per query (FLARE caps masked queries at 64 tokens; DRAGIN picks 25-40 words)."""


def _doc_freqs(n_docs: int) -> torch.Tensor:
    # Term of rank v appears in ~5% / (v + 1) of the documents (Zipf), at least once.
    ranks = torch.arange(VOCAB, dtype=torch.float64)
    return (n_docs * 0.05 / (ranks + 1)).clamp(1, n_docs).long()


def _query_terms(nq: int, seed: int) -> torch.Tensor:
    # Query words follow running text: rank v drawn with probability ~ 1 / (v + 1).
    g = torch.Generator().manual_seed(seed)
    p = 1.0 / torch.arange(1, VOCAB + 1, dtype=torch.float64)
    return torch.multinomial(p, nq * QUERY_TERMS, replacement=True, generator=g).view(nq, QUERY_TERMS).int()


def synthetic_index(n_docs: int, device: torch.device, seed: int = 0) -> dict[str, Any]:
    """A seeded synthetic BM25 index (Zipf document frequencies) for timing, on ``device``.

    Posting documents are drawn at random, so a long list may name a document twice; timing does not
    depend on it.

    Args:
        n_docs: Number of documents N.
        device: Where to build it.
        seed: Random seed.

    Returns:
        ``indptr``, ``doc_ids``, ``tf`` (fp16), ``doc_len``, ``idf`` and ``avg_doc_len`` keyword arguments.
    """
    df = _doc_freqs(n_docs)
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    indptr = torch.zeros(VOCAB + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(df, 0)
    nnz = int(indptr[-1])
    doc_ids = torch.randint(0, n_docs, (nnz,), generator=g, device=device, dtype=torch.int32)
    tf = torch.randint(1, 8, (nnz,), generator=g, device=device).to(torch.float16)
    doc_len = torch.randint(20, 200, (n_docs,), generator=g, device=device, dtype=torch.int32)
    idf = torch.log((n_docs - df + 0.5) / (df + 0.5) + 1).float().to(device)
    avg = float(doc_len.float().mean())
    return {"indptr": indptr.to(device), "doc_ids": doc_ids, "tf": tf, "doc_len": doc_len, "idf": idf,
            "avg_doc_len": avg}  # fmt: skip


def _case(nq: int, n_docs: int, k: int) -> BenchCase:
    seed = nq * 7919 + n_docs
    postings = int(_doc_freqs(n_docs)[_query_terms(nq, seed).long()].sum())

    def make_inputs(device: torch.device) -> dict[str, Any]:
        return {"queries": _query_terms(nq, seed).to(device), **synthetic_index(n_docs, device, seed), "k": k}

    return BenchCase(
        kernel="bm25",
        label=f"B={nq} N={n_docs} T={QUERY_TERMS} k={k}",
        make_inputs=make_inputs,
        optimized=triton_bm25,
        torch_path=native_bm25,
        # Postings (doc id 4 B, tf 2 B, gathered doc length 4 B), zeroing and reading the score arrays.
        bytes_moved=postings * 10 + nq * n_docs * 8 + nq * k * 8,
        flops=postings * 8,
        targets={},
        check=partial(check_native, rel_tol=NATIVE_REL_TOL),
    )


def bench_cases() -> list[BenchCase]:
    """Sizes: 1M and 21M documents (the DPR passage count), 1 and 8 queries of 32 terms, top-10.

    No bandwidth target: the scatter is random-access atomics, not a stream.

    Returns:
        Four cases.
    """
    return [_case(nq, n, 10) for n in (1_000_000, 21_000_000) for nq in (1, 8)]
