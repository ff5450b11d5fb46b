"""Dense retrieval: inner-product scores of queries against an embedding corpus, fused with exact top-k.

score[b, n] = sum_d q[b, d] * corpus[n, d] in fp32; the result is each query's top-k corpus rows under the
tie rule of :mod:`kernels_gpu.topk` (the offline stand-in for RAG retrieval: all-MiniLM-L6-v2, 384-d, over
~21M passages = 16 GB of fp16, workloads.md). A memory-bound GEMV/GEMM: the Triton kernel streams each
corpus tile once for up to 16 queries (tensor cores), reduces every query's tile scores to its own top-k
in registers, and never writes the scores when k <= 256. :func:`native_dense_retrieval` is what a user
writes (``q @ corpus.T`` + ``torch.topk``), the benchmark's baseline.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from bench.errors import UsageError
from kernels_gpu.registry import BenchCase
from kernels_gpu.relevancy_topk import row_dots
from kernels_gpu.topk import (
    INTERPRETED,
    MAX_K,
    bmm_fp32,
    cdiv,
    check_k,
    check_native,
    jit,
    key_slots,
    merge_candidates,
    native_topk,
    next_pow2,
    pack_scores,
    reference_topk,
    resolve_impl,
    tl,
    torch_topk,
    triton_topk,
    use_radix,
)


def _shapes(q: torch.Tensor, corpus: torch.Tensor) -> tuple[int, int, int]:
    if q.dim() != 2 or corpus.dim() != 2 or q.shape[1] != corpus.shape[1]:
        raise UsageError(
            f"dense_retrieval expects q [B, D] and corpus [N, D]; got q {tuple(q.shape)}, "
            f"corpus {tuple(corpus.shape)}"
        )
    return q.shape[0], corpus.shape[0], q.shape[1]


def reference_dense_retrieval(
    q: torch.Tensor, corpus: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact reference: float64 scores, stable sort (tests only).

    Args:
        q: [B, D] queries.
        corpus: [N, D] corpus embeddings.
        k: Rows per query, >= 1.

    Returns:
        (row index int32 [B, k], score fp32 [B, k]) sorted by (score desc, index asc), padded -1 / -inf.
    """
    b, n, _ = _shapes(q, corpus)
    scores = q.double() @ corpus.double().T
    return reference_topk(scores, torch.full((b,), n, dtype=torch.int32), k)


def torch_dense_retrieval(q: torch.Tensor, corpus: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Framework-native path: one fp32-output matmul to [B, N] scores, then the packed ``torch.topk``.

    Args:
        q: [B, D] fp16/bf16/fp32 queries.
        corpus: [N, D] corpus, same dtype.
        k: Rows per query, >= 1.

    Returns:
        (row index int32 [B, k], score fp32 [B, k]) sorted by (score desc, index asc), padded -1 / -inf.
    """
    check_k(k)
    b, n, _ = _shapes(q, corpus)
    scores = bmm_fp32(q[None], corpus.T[None])[0]
    return torch_topk(scores, torch.full((b,), n, dtype=torch.int32, device=q.device), k)


def native_dense_retrieval(
    q: torch.Tensor, corpus: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Framework-native path, what a user writes: ``q @ corpus.T``, then ``torch.topk(sorted=False)``.

    The [B, N] scores come out in the inputs' dtype (fp16 in the workloads: fp32 accumulation, one
    rounding to fp16 per score), as ``torch.matmul`` returns them. No tie rule.

    Args:
        q: [B, D] queries.
        corpus: [N, D] corpus, same dtype.
        k: Rows per query, >= 1.

    Returns:
        (row index int64 [B, k], score [B, k] in q's dtype), unordered; k > N pads with -1 / -inf.
    """
    _shapes(q, corpus)
    return native_topk(q @ corpus.T, corpus.shape[0], k)


def triton_dense_retrieval(
    q: torch.Tensor, corpus: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton path: fused tensor-core scoring + per-tile top-k + merge (k <= 256); larger k writes scores.

    Args:
        q: [B, D] fp16 or bf16 queries.
        corpus: [N, D] corpus, same dtype; copied if the last dimension is not contiguous.
        k: Rows per query, 1 <= k <= 8192.

    Returns:
        (row index int32 [B, k], score fp32 [B, k]) sorted by (score desc, index asc), padded -1 / -inf.
    """
    check_k(k, MAX_K)
    resolve_impl("triton", q, corpus)
    b, n, d = _shapes(q, corpus)
    if q.dtype not in (torch.float16, torch.bfloat16) or corpus.dtype != q.dtype:
        raise UsageError(
            f"triton_dense_retrieval needs fp16 or bf16 q and corpus; got {q.dtype}, {corpus.dtype}"
        )
    q, corpus = q.contiguous(), corpus.contiguous()
    kp = key_slots(k)
    radix = use_radix(k)
    block_n = CORPUS_TILE if radix else max(kp, min(CORPUS_TILE, next_pow2(n)), 16)  # tl.dot: N >= 16
    tiles = cdiv(n, block_n)
    # Triton 3.6's interpreter multiplies bf16 bit patterns as integers in tl.dot: widen to fp32 there.
    dot_dtype = tl.float16 if q.dtype == torch.float16 else (tl.float32 if INTERPRETED else tl.bfloat16)
    if radix:
        out = torch.empty((b, n), dtype=torch.float32, device=q.device)
    else:
        out = torch.empty((b, tiles * kp), dtype=torch.int64, device=q.device)
    # A single query takes the CUDA-core GEMV: a 16-row tensor-core tile would sort 15 padding rows.
    gemv = b == 1
    block_b = 1 if gemv else QUERY_BLOCK
    # One flat grid axis: 21M rows / 256 is more tiles than CUDA's 65535 limit on the second axis.
    _dense_kernel[(cdiv(b, block_b) * tiles,)](
        q, corpus, out, b, n, q.stride(0), corpus.stride(0), out.stride(0),
        D=d, BLOCK_B=block_b, BLOCK_N=block_n, BLOCK_D=min(64, max(16, next_pow2(d))), KP=kp,
        RADIX=radix, GEMV=gemv, DOT_DTYPE=dot_dtype, num_warps=8 if gemv else 4,
    )  # fmt: skip
    if radix:
        return triton_topk(out, torch.full((b,), n, dtype=torch.int32, device=q.device), k)
    return merge_candidates(out, k)


def dense_retrieval(
    q: torch.Tensor, corpus: torch.Tensor, k: int, impl: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k corpus rows of each query by inner product, exactly (score desc, index asc).

    Args:
        q: [B, D] fp16 query embeddings (D = 384 for all-MiniLM-L6-v2).
        corpus: [N, D] fp16 corpus embeddings (N up to ~21M).
        k: Rows per query; k > N pads with -1 / -inf.
        impl: ``"auto"``, ``"torch"`` or ``"triton"`` (see :func:`kernels_gpu.topk.resolve_impl`).

    Returns:
        (row index int32 [B, k], score fp32 [B, k]).
    """
    path = resolve_impl(impl, q, corpus)
    fn = triton_dense_retrieval if path == "triton" else torch_dense_retrieval
    return fn(q, corpus, k)


QUERY_BLOCK = 16
"""Queries per program: the smallest tensor-core M; larger batches re-read a tile from L2, not DRAM."""

CORPUS_TILE = 256
"""Corpus rows per program: a 16:1 reduction at k <= 16 (candidates add 1/16 of a byte per corpus byte)."""


@jit
def _dense_kernel(
    q_ptr, c_ptr, out_ptr, B, N, s_qb, s_cn, s_out,
    D: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, KP: tl.constexpr,
    RADIX: tl.constexpr, GEMV: tl.constexpr, DOT_DTYPE: tl.constexpr,
):  # fmt: skip
    # Program (query block, corpus tile), query block varying fastest: programs sharing a corpus tile run
    # together and re-read it from L2.
    n_qb = tl.cdiv(B, BLOCK_B)
    bb = (tl.program_id(0) % n_qb) * BLOCK_B + tl.arange(0, BLOCK_B)
    t = tl.program_id(0) // n_qb
    offs = t * BLOCK_N + tl.arange(0, BLOCK_N)
    valid = offs < N
    if GEMV:
        acc = row_dots(q_ptr, c_ptr, offs, valid, s_cn, D, BLOCK_N, BLOCK_D)[None, :]
    else:
        acc = _tile_dots(q_ptr, c_ptr, bb, offs, valid, B, s_qb, s_cn, D, BLOCK_N, BLOCK_D, DOT_DTYPE)
    rows = out_ptr + bb.to(tl.int64)[:, None] * s_out
    if RADIX:
        tl.store(rows + offs[None, :], acc, mask=(bb < B)[:, None] & valid[None, :])
    else:
        top = tl.topk(pack_scores(acc, offs[None, :], valid[None, :]), KP)
        tl.store(rows + t * KP + tl.arange(0, KP)[None, :], top, mask=(bb < B)[:, None])


@jit
def _tile_dots(
    q_ptr, c_ptr, bb, offs, valid, B, s_qb, s_cn,
    D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, DOT_DTYPE: tl.constexpr,
):  # fmt: skip
    """fp32 [len(bb), BLOCK_N] scores of queries bb against corpus rows offs, on tensor cores."""
    acc = tl.zeros([bb.shape[0], BLOCK_N], tl.float32)
    for d0 in range(0, D, BLOCK_D):
        dd = d0 + tl.arange(0, BLOCK_D)
        qv = tl.load(
            q_ptr + bb[:, None] * s_qb + dd[None, :], mask=(bb < B)[:, None] & (dd < D)[None, :], other=0.0
        )
        cv = tl.load(
            c_ptr + offs.to(tl.int64)[:, None] * s_cn + dd[None, :],
            mask=valid[:, None] & (dd < D)[None, :],
            other=0.0,
        )
        acc = tl.dot(qv.to(DOT_DTYPE), tl.trans(cv.to(DOT_DTYPE)), acc)
    return acc


# ---------------------------------------------------------------------------------------------------------
# Benchmark cases.

NATIVE_REL_TOL = 2**-9
"""Score tolerance of the cases' check, relative to a row's largest score: the native scores are rounded
once to fp16 (unit roundoff 2^-11), so a tie swap at the k-th score stays within 2 roundings; 2x margin.
CPU emulation of the native path on the cases' inputs (100K rows): at most 0.0004 (sorted selections)."""


def _case(b: int, n: int, k: int) -> BenchCase:
    d = 384  # all-MiniLM-L6-v2

    def make_inputs(device: torch.device) -> dict[str, Any]:
        g = torch.Generator(device=device)
        g.manual_seed(b * 7919 + n)
        q = torch.randn((b, d), generator=g, device=device, dtype=torch.float16)
        corpus = torch.randn((n, d), generator=g, device=device, dtype=torch.float16)
        return {"q": q, "corpus": corpus, "k": k}

    return BenchCase(
        kernel="dense_retrieval",
        label=f"B={b} N={n} D={d} k={k}",
        make_inputs=make_inputs,
        optimized=triton_dense_retrieval,
        torch_path=native_dense_retrieval,
        bytes_moved=n * d * 2 + b * d * 2 + b * k * 8,
        flops=2 * b * n * d,
        targets={"bw_fraction": 0.70} if n * d * 2 >= 64 << 20 else {},
        check=partial(check_native, rel_tol=NATIVE_REL_TOL),
    )


def bench_cases() -> list[BenchCase]:
    """Sizes: 1M and 21M passages (DPR count) of 384-d fp16 embeddings, 1 and 8 queries, top-10.

    Returns:
        Four cases; all read >= 64 MB and target 70% of copy bandwidth.
    """
    return [_case(b, n, 10) for n in (1_000_000, 21_000_000) for b in (1, 8)]
