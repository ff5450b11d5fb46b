"""DeepSeek Sparse Attention's lightning indexer at decode, fused with its exact top-k (DeepSeek-V3.2).

I[b, s] = sum_j w[b, j] * ReLU(q[b, j] . k[b, s] * scale[b, s]) in fp32, over H_i = 64 indexer heads of
dimension 128 sharing one key per token (bf16, or fp8 e4m3 with one fp32 scale per token), then the top
k = 2048 tokens under the tie rule of :mod:`kernels_gpu.topk` (workloads.md, DSA). The Triton kernel runs
the 64 x 128 x BLOCK_N products on tensor cores per key tile, reduces the heads in registers and writes
only the fp32 index score (4 B per 132-256 B key) plus its digit-0 histogram; the radix select follows.
:func:`native_dsa_indexer` is the naive path a user writes (matmul, ReLU, weighted head sum, ``torch.topk``),
the benchmark's baseline.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from bench.errors import UsageError
from kernels_gpu.registry import BenchCase
from kernels_gpu.topk import (
    INTERPRETED,
    MAX_K,
    bmm_fp32,
    cdiv,
    check_k,
    check_native,
    digit0,
    flush_hist0,
    jit,
    native_topk,
    new_radix_workspace,
    next_pow2,
    radix_select,
    reference_topk,
    resolve_impl,
    rows_n_valid,
    tl,
    torch_topk,
)

TOPK = 2048
"""DeepSeek-V3.2's ``index_topk``."""

_FP8 = getattr(torch, "float8_e4m3fn", None)


def _shapes(
    q: torch.Tensor, w: torch.Tensor, keys: torch.Tensor, key_scale: torch.Tensor | None
) -> tuple[int, int, int, int]:
    if q.dim() != 3 or keys.dim() != 3 or keys.shape[0] != q.shape[0] or keys.shape[2] != q.shape[2]:
        raise UsageError(
            "dsa_indexer expects q [B, H_i, D] and keys [B, N, D]; got "
            f"q {tuple(q.shape)}, keys {tuple(keys.shape)}"
        )
    b, h, d = q.shape
    n = keys.shape[1]
    if w.shape != (b, h):
        raise UsageError(f"dsa_indexer expects head weights w [B, H_i] = {(b, h)}; got {tuple(w.shape)}")
    if keys.dtype == _FP8 and key_scale is None:
        raise UsageError("fp8 index keys need key_scale [B, N] (one fp32 scale per token)")
    if key_scale is not None and key_scale.shape != (b, n):
        raise UsageError(f"key_scale must be [B, N] = {(b, n)}; got {tuple(key_scale.shape)}")
    return b, h, n, d


def reference_dsa_indexer(
    q: torch.Tensor,
    w: torch.Tensor,
    keys: torch.Tensor,
    key_scale: torch.Tensor | None,
    n_valid: int | torch.Tensor,
    k: int = TOPK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact reference: float64 index scores, stable sort (tests only).

    Args:
        q: [B, H_i, D] indexer queries.
        w: [B, H_i] head weights.
        keys: [B, N_cap, D] index keys (bf16, or fp8 e4m3 with ``key_scale``).
        key_scale: fp32 [B, N_cap] per-token key scales, or None (scale 1).
        n_valid: Valid tokens per row: an int, or an int tensor [B].
        k: Tokens to select per row, >= 1.

    Returns:
        (index int32 [B, k], score fp32 [B, k]) sorted by (score desc, index asc), padded with -1 / -inf.
    """
    b, _, n, _ = _shapes(q, w, keys, key_scale)
    logits = torch.einsum("bhd,bnd->bhn", q.double(), keys.double())
    if key_scale is not None:
        logits = logits * key_scale.double()[:, None, :]
    scores = (logits.clamp(min=0) * w.double()[:, :, None]).sum(1)
    return reference_topk(scores, rows_n_valid(n_valid, (b,), n, keys.device), k)


def torch_dsa_indexer(
    q: torch.Tensor,
    w: torch.Tensor,
    keys: torch.Tensor,
    key_scale: torch.Tensor | None,
    n_valid: int | torch.Tensor,
    k: int = TOPK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Naive framework path: materialize the [B, H_i, N] fp32 logits, ReLU, weight, sum heads, packed topk.

    Args:
        q: [B, H_i, D] bf16 indexer queries.
        w: fp32 [B, H_i] head weights.
        keys: [B, N_cap, D] bf16 or fp8 e4m3 index keys (fp8 is widened to bf16, exactly).
        key_scale: fp32 [B, N_cap] per-token key scales, or None (scale 1).
        n_valid: Valid tokens per row: an int, or an int tensor [B].
        k: Tokens to select per row, >= 1.

    Returns:
        (index int32 [B, k], score fp32 [B, k]) sorted by (score desc, index asc), padded with -1 / -inf.
    """
    check_k(k)
    b, _, n, _ = _shapes(q, w, keys, key_scale)
    kk = keys.to(q.dtype) if keys.dtype != q.dtype else keys
    logits = bmm_fp32(q, kk.transpose(1, 2))
    if key_scale is not None:
        logits = logits * key_scale[:, None, :]
    scores = (logits.relu() * w.float()[:, :, None]).sum(1)
    return torch_topk(scores, rows_n_valid(n_valid, (b,), n, keys.device), k)


def native_dsa_indexer(
    q: torch.Tensor,
    w: torch.Tensor,
    keys: torch.Tensor,
    key_scale: torch.Tensor | None,
    n_valid: int | torch.Tensor,
    k: int = TOPK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Naive framework-native path, what a user writes: matmul, ReLU, weighted head sum, ``torch.topk``.

    fp8 keys are widened to q's dtype first (a materialized copy: ``torch.matmul`` takes no fp8). The
    [B, H_i, N] logits come out of ``torch.matmul`` in q's dtype (bf16 in the workloads); fp32 head
    weights promote the weighted logits, so the head sum and the index scores are fp32. The per-token key
    scale multiplies the summed score, as DeepSeek-V3.2's reference ``fp8_index`` does (equal to scaling
    each logit before the ReLU because the scales are positive). Then ``torch.topk(sorted=False)``
    (:func:`kernels_gpu.topk.native_topk`); no tie rule.

    Args:
        q: [B, H_i, D] indexer queries.
        w: [B, H_i] head weights.
        keys: [B, N_cap, D] index keys in q's dtype, or fp8 e4m3 with ``key_scale``.
        key_scale: [B, N_cap] positive per-token key scales, or None (scale 1).
        n_valid: Valid tokens per row: an int, or an int tensor [B].
        k: Tokens to select per row, >= 1.

    Returns:
        (index int64 [B, k], score [B, k] fp32 for fp32 ``w``), unordered; see ``native_topk`` for padding.
    """
    _shapes(q, w, keys, key_scale)
    logits = torch.matmul(q, (keys if keys.dtype == q.dtype else keys.to(q.dtype)).transpose(1, 2))
    scores = (logits.relu() * w[:, :, None]).sum(1)
    if key_scale is not None:
        scores = scores * key_scale
    return native_topk(scores, n_valid, k)


def triton_dsa_indexer(
    q: torch.Tensor,
    w: torch.Tensor,
    keys: torch.Tensor,
    key_scale: torch.Tensor | None,
    n_valid: int | torch.Tensor,
    k: int = TOPK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton path: fused tensor-core scoring + digit-0 histogram, then the radix select (3 launches).

    Args:
        q: [B, H_i, D] bf16 or fp16 indexer queries.
        w: [B, H_i] head weights (read as fp32).
        keys: [B, N_cap, D] index keys in q's dtype or fp8 e4m3 (widened to q's dtype in registers).
        key_scale: fp32 [B, N_cap] per-token key scales, or None (scale 1).
        n_valid: Valid tokens per row: an int, or an int tensor [B].
        k: Tokens to select per row, 1 <= k <= 8192.

    Returns:
        (index int32 [B, k], score fp32 [B, k]) sorted by (score desc, index asc), padded with -1 / -inf.
    """
    check_k(k, MAX_K)
    resolve_impl("triton", q, w, keys)
    b, h, n, d = _shapes(q, w, keys, key_scale)
    if q.dtype not in (torch.bfloat16, torch.float16):
        raise UsageError(f"triton_dsa_indexer needs bf16 or fp16 queries (tensor cores); got {q.dtype}")
    if keys.dtype not in (q.dtype, _FP8):
        raise UsageError(f"index keys must be {q.dtype} or float8_e4m3fn; got {keys.dtype}")
    q, keys = q.contiguous(), keys.contiguous()
    w = w.float().contiguous()
    scale = key_scale.float().contiguous() if key_scale is not None else w  # w: unused placeholder
    nv = rows_n_valid(n_valid, (b,), n, keys.device)
    block_n = 128 if n >= 128 else max(16, next_pow2(n))
    tiles = cdiv(n, block_n)
    # ~4 programs per SM of an H100 (132 SMs); each loops over `per_prog` key tiles.
    per_prog = cdiv(tiles, max(1, min(tiles, cdiv(528, b))))
    scores = torch.empty((b, n), dtype=torch.float32, device=keys.device)
    ws = new_radix_workspace(b, keys.device)
    # Triton 3.6's interpreter multiplies bf16 bit patterns as integers in tl.dot: widen to fp32 there.
    dot_dtype = tl.float32 if INTERPRETED else (tl.bfloat16 if q.dtype == torch.bfloat16 else tl.float16)
    _dsa_kernel[(b, cdiv(tiles, per_prog))](
        q, w, keys, scale, nv, scores, ws, n,
        q.stride(0), q.stride(1), keys.stride(0), keys.stride(1),
        H=h, D=d, BLOCK_H=max(16, next_pow2(h)), BLOCK_D=max(16, next_pow2(d)), BLOCK_N=block_n,
        TILES=per_prog, HAS_SCALE=key_scale is not None, DOT_DTYPE=dot_dtype, num_warps=8,
    )  # fmt: skip
    return radix_select(scores, nv, k, ws)


def dsa_indexer(
    q: torch.Tensor,
    w: torch.Tensor,
    keys: torch.Tensor,
    key_scale: torch.Tensor | None,
    n_valid: int | torch.Tensor,
    k: int = TOPK,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index scores of every cached token and their exact top-k (DeepSeek Sparse Attention, decode).

    Args:
        q: [B, H_i = 64, D = 128] bf16 indexer queries (one decode token per sequence).
        w: fp32 [B, H_i] head weights.
        keys: [B, N_cap, D] index keys: bf16, or fp8 e4m3 with ``key_scale``.
        key_scale: fp32 [B, N_cap] per-token key scales (required for fp8), or None.
        n_valid: Valid tokens per row: an int, or an int tensor [B].
        k: Tokens to select (DeepSeek-V3.2: 2048); k > n_valid pads with -1 / -inf.
        impl: ``"auto"``, ``"torch"`` or ``"triton"`` (see :func:`kernels_gpu.topk.resolve_impl`).

    Returns:
        (index int32 [B, k], score fp32 [B, k]) sorted by (score desc, index asc).
    """
    tensors = (q, w, keys) if key_scale is None else (q, w, keys, key_scale)
    path = resolve_impl(impl, *tensors)
    fn = triton_dsa_indexer if path == "triton" else torch_dsa_indexer
    return fn(q, w, keys, key_scale, n_valid, k)


@jit
def _dsa_kernel(
    q_ptr, w_ptr, k_ptr, scale_ptr, n_valid_ptr, scores_ptr, ws_ptr, n_cap, s_qb, s_qh, s_kb, s_kn,
    H: tl.constexpr, D: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    TILES: tl.constexpr, HAS_SCALE: tl.constexpr, DOT_DTYPE: tl.constexpr,
):  # fmt: skip
    # One program per (row, TILES consecutive key tiles): the row's q and w stay in registers; per tile one
    # [BLOCK_H, BLOCK_D] x [BLOCK_D, BLOCK_N] tensor-core product, ReLU, head-weighted sum.
    b = tl.program_id(0)
    b64 = b.to(tl.int64)
    n = tl.minimum(tl.load(n_valid_ptr + b), n_cap)
    hh = tl.arange(0, BLOCK_H)
    dd = tl.arange(0, BLOCK_D)
    q = tl.load(
        q_ptr + b64 * s_qb + hh[:, None] * s_qh + dd[None, :],
        mask=(hh < H)[:, None] & (dd < D)[None, :],
        other=0.0,
    ).to(DOT_DTYPE)
    w = tl.load(w_ptr + b * H + hh, mask=hh < H, other=0.0)
    hist = tl.zeros([2048], tl.int32)
    for i in range(0, TILES):
        offs = (tl.program_id(1) * TILES + i) * BLOCK_N + tl.arange(0, BLOCK_N)
        valid = offs < n
        kt = tl.load(
            k_ptr + b64 * s_kb + offs.to(tl.int64)[:, None] * s_kn + dd[None, :],
            mask=valid[:, None] & (dd < D)[None, :],
            other=0.0,
        ).to(DOT_DTYPE)
        logits = tl.dot(q, tl.trans(kt))
        if HAS_SCALE:
            logits = logits * tl.load(scale_ptr + b64 * n_cap + offs, mask=valid, other=0.0)[None, :]
        score = tl.sum(tl.maximum(logits, 0.0) * w[:, None], 0)
        tl.store(scores_ptr + b64 * n_cap + offs, score, mask=valid)
        hist += tl.histogram(digit0(score), 2048, mask=valid)
    flush_hist0(ws_ptr + b * 2306, hist)


# ---------------------------------------------------------------------------------------------------------
# Benchmark cases.

NATIVE_REL_TOL = 2**-6
"""Score tolerance of the cases' check, relative to a row's largest score. The native path rounds each
head's logit to bf16 (unit roundoff 2^-8), an error up to 2^-8 sum_j |w_j| ReLU(logit_j) per score. On the
cases' inputs (CPU emulation of the native path, 64K tokens) sorted selections differed by at most 0.0020
and a tie swap lay within 0.0007 of the k-th score, relative: ~8x margin."""


def _case(b: int, n: int, fp8: bool, targets: dict[str, float]) -> BenchCase:
    h, d = 64, 128  # index_n_heads, index_head_dim (DeepSeek-V3.2 config)

    def make_inputs(device: torch.device) -> dict[str, Any]:
        g = torch.Generator(device=device)
        g.manual_seed(b * 7919 + n + fp8)
        q = torch.randn((b, h, d), generator=g, device=device, dtype=torch.bfloat16)
        w = torch.randn((b, h), generator=g, device=device) * h**-0.5
        keys = torch.randn((b, n, d), generator=g, device=device, dtype=torch.bfloat16)
        scale = None
        if fp8:
            # Per-token amax scaling into e4m3's range (max 448), as the indexer's FP8 cache stores it.
            scale = keys.abs().amax(-1).float() / 448.0
            keys = (keys / scale[..., None]).to(_FP8)
        return {"q": q, "w": w, "keys": keys, "key_scale": scale, "n_valid": n, "k": TOPK}

    key_bytes = d + 4 if fp8 else 2 * d
    return BenchCase(
        kernel="dsa_indexer",
        label=f"B={b} N={n} {'fp8' if fp8 else 'bf16'} k={TOPK}",
        make_inputs=make_inputs,
        optimized=triton_dsa_indexer,
        torch_path=native_dsa_indexer,
        bytes_moved=b * n * key_bytes + b * h * (2 * d + 4) + b * TOPK * 8,
        flops=2 * b * h * n * d + 3 * b * h * n,
        targets=targets,
        check=partial(check_native, rel_tol=NATIVE_REL_TOL),
    )


def bench_cases() -> list[BenchCase]:
    """Roofline sizes: one decode step of one layer at contexts 8K-1M, batch 1 and 8, fp8 keys (+ bf16).

    Returns:
        Cases with k = 2048. Batch 1 at 128K targets 5x over the naive native path
        (:func:`native_dsa_indexer`; a naive indexer + top-2048 measured 234 us on the H100, workloads.md
        section 5); cases reading >= 64 MB target 70% of copy bandwidth.
    """
    cases = []
    for n in (8192, 32768, 131072, 1 << 20):
        for b in (1, 8):
            targets: dict[str, float] = {"bw_fraction": 0.70} if b * n * 132 >= 64 << 20 else {}
            if b == 1 and n == 131072:
                targets["speedup_vs_torch"] = 5.0
            cases.append(_case(b, n, True, targets))
    cases.append(_case(1, 131072, False, {"speedup_vs_torch": 5.0}))
    cases.append(_case(8, 131072, False, {"bw_fraction": 0.70}))
    return cases
