"""Relevancy scoring fused with exact top-k: the SeerAttention-R gate and Memory-as-Context recall.

score[b, h, n] = sum_d q[b, h, d] * keys[b, h, n, d] in fp32 (a softmax scale does not change the order);
the result is the top-k of each (b, h) row under the tie rule of :mod:`kernels_gpu.topk`. The Triton
kernel streams each key once and, for k <= 256, reduces every tile to its own top-k in registers, so the
scores never reach global memory; larger k writes the fp32 scores (4 B per 256 B key) and a digit-0
histogram for the radix path. :func:`native_relevancy_topk` is what a user writes (``torch.matmul`` +
``torch.topk``), the benchmark's baseline.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from bench.errors import UsageError
from kernels_gpu.registry import BenchCase
from kernels_gpu.topk import (
    MAX_K,
    bmm_fp32,
    cdiv,
    check_k,
    check_native,
    digit0,
    flush_hist0,
    jit,
    key_slots,
    merge_candidates,
    native_topk,
    new_radix_workspace,
    next_pow2,
    pack_scores,
    radix_select,
    reference_topk,
    resolve_impl,
    rows_n_valid,
    tl,
    torch_topk,
    use_radix,
)


def _shapes(q: torch.Tensor, keys: torch.Tensor) -> tuple[int, int, int, int]:
    if keys.dim() != 4 or q.shape != (keys.shape[0], keys.shape[1], keys.shape[3]):
        raise UsageError(
            f"relevancy_topk expects q [B, H, D] and keys [B, H, N, D]; got q {tuple(q.shape)}, "
            f"keys {tuple(keys.shape)}"
        )
    b, h, n, d = keys.shape
    return b, h, n, d


def reference_relevancy_topk(
    q: torch.Tensor, keys: torch.Tensor, n_valid: int | torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact reference: float64 scores, stable sort (tests only).

    Args:
        q: [B, H, D] queries (any float dtype).
        keys: [B, H, N, D] keys.
        n_valid: Valid keys per row: an int, or an int tensor [B] or [B, H].
        k: Keys to select per row, >= 1.

    Returns:
        (index int32 [B, H, k], score fp32 [B, H, k]) sorted by (score desc, index asc), padded -1 / -inf.
    """
    b, h, n, _ = _shapes(q, keys)
    scores = torch.einsum("bhnd,bhd->bhn", keys.double(), q.double()).reshape(b * h, n)
    idx, val = reference_topk(scores, rows_n_valid(n_valid, (b, h), n, keys.device), k)
    return idx.view(b, h, k), val.view(b, h, k)


def torch_relevancy_topk(
    q: torch.Tensor, keys: torch.Tensor, n_valid: int | torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Framework-native path: one batched matmul to fp32 scores, then the exact packed ``torch.topk``.

    Args:
        q: [B, H, D] bf16/fp16/fp32 queries.
        keys: [B, H, N, D] keys, same dtype.
        n_valid: Valid keys per row: an int, or an int tensor [B] or [B, H].
        k: Keys to select per row, >= 1.

    Returns:
        (index int32 [B, H, k], score fp32 [B, H, k]) sorted by (score desc, index asc), padded -1 / -inf.
    """
    check_k(k)
    b, h, n, d = _shapes(q, keys)
    scores = bmm_fp32(keys.reshape(b * h, n, d), q.reshape(b * h, d, 1)).reshape(b * h, n)
    idx, val = torch_topk(scores, rows_n_valid(n_valid, (b, h), n, keys.device), k)
    return idx.view(b, h, k), val.view(b, h, k)


def native_relevancy_topk(
    q: torch.Tensor, keys: torch.Tensor, n_valid: int | torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Framework-native path, what a user writes: ``torch.matmul(keys, q)``, ``torch.topk(sorted=False)``.

    The scores come out in the inputs' dtype, as ``torch.matmul`` returns them (bf16 in the workloads:
    fp32 accumulation, one rounding to bf16 per score; half the bytes of fp32 scores). Entries
    past ``n_valid`` are dropped or masked with -inf (:func:`kernels_gpu.topk.native_topk`). No tie rule:
    equal scores (more of them in bf16) may select and order differently from the exact paths.

    Args:
        q: [B, H, D] queries.
        keys: [B, H, N, D] keys, same dtype.
        n_valid: Valid keys per row: an int, or an int tensor [B] or [B, H].
        k: Keys to select per row, >= 1.

    Returns:
        (index int64 [B, H, k], score [B, H, k] in q's dtype), unordered; see ``native_topk`` for padding.
    """
    _shapes(q, keys)
    return native_topk(torch.matmul(keys, q[..., None])[..., 0], n_valid, k)


def triton_relevancy_topk(
    q: torch.Tensor, keys: torch.Tensor, n_valid: int | torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton path: fused scoring + per-tile top-k + merge (k <= 256), or scoring + radix select.

    Args:
        q: [B, H, D] bf16/fp16/fp32 queries.
        keys: [B, H, N, D] keys, same dtype; copied if the last dimension is not contiguous.
        n_valid: Valid keys per row: an int, or an int tensor [B] or [B, H].
        k: Keys to select per row, 1 <= k <= 8192.

    Returns:
        (index int32 [B, H, k], score fp32 [B, H, k]) sorted by (score desc, index asc), padded -1 / -inf.
    """
    check_k(k, MAX_K)
    resolve_impl("triton", q, keys)
    b, h, n, d = _shapes(q, keys)
    if keys.stride(-1) != 1:
        keys = keys.contiguous()
    if q.stride(-1) != 1:
        q = q.contiguous()
    rows = b * h
    nv = rows_n_valid(n_valid, (b, h), n, keys.device)
    kp = key_slots(k)
    radix = use_radix(k)
    block_n, block_d = tile_shape(n, d, kp, radix)
    tiles = cdiv(n, block_n)
    if radix:
        out = torch.empty((rows, n), dtype=torch.float32, device=keys.device)
        ws = new_radix_workspace(rows, keys.device)
    else:
        out = torch.empty((rows, tiles * kp), dtype=torch.int64, device=keys.device)
        ws = nv  # unused by the tile variant
    _relevancy_kernel[(rows, tiles)](
        q, keys, nv, out, ws, h, n, q.stride(0), q.stride(1),
        keys.stride(0), keys.stride(1), keys.stride(2), out.stride(0),
        D=d, BLOCK_N=block_n, BLOCK_D=block_d, KP=kp, RADIX=radix, num_warps=8,
    )  # fmt: skip
    idx, val = radix_select(out, nv, k, ws) if radix else merge_candidates(out, k)
    return idx.view(b, h, k), val.view(b, h, k)


def relevancy_topk(
    q: torch.Tensor, keys: torch.Tensor, n_valid: int | torch.Tensor, k: int, impl: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k keys of each (batch, head) row by q.k, exactly (score desc, index asc).

    Args:
        q: [B, H, D] queries (bf16 in the workloads; D = 128).
        keys: [B, H, N_cap, D] keys; only the first n_valid of each row count.
        n_valid: Valid keys per row: an int, or an int tensor [B] or [B, H].
        k: Keys to select per row (e.g. 64 = a 4096-token budget over 64-token blocks).
        impl: ``"auto"``, ``"torch"`` or ``"triton"`` (see :func:`kernels_gpu.topk.resolve_impl`).

    Returns:
        (index int32 [B, H, k], score fp32 [B, H, k]); fewer than k valid keys pad with -1 / -inf.
    """
    path = resolve_impl(impl, q, keys)
    fn = triton_relevancy_topk if path == "triton" else torch_relevancy_topk
    return fn(q, keys, n_valid, k)


@jit
def row_dots(q_row, k_base, offs, valid, s_kn, D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """fp32 [BLOCK_N] dot products of one query row with keys k_base[offs[i] * s_kn : + D] (valid rows only).

    A CUDA-core GEMV over D in BLOCK_D chunks: memory-bound at 2 FLOP per 2-byte key element.
    """
    k_rows = k_base + offs.to(tl.int64)[:, None] * s_kn
    acc = tl.zeros([BLOCK_N], tl.float32)
    for d0 in range(0, D, BLOCK_D):
        dd = d0 + tl.arange(0, BLOCK_D)
        qv = tl.load(q_row + dd, mask=dd < D, other=0.0).to(tl.float32)
        kv = tl.load(k_rows + dd[None, :], mask=valid[:, None] & (dd < D)[None, :], other=0.0).to(tl.float32)
        acc += tl.sum(kv * qv[None, :], 1)
    return acc


def tile_shape(n: int, d: int, kp: int, radix: bool) -> tuple[int, int]:
    """(BLOCK_N, BLOCK_D) of a :func:`row_dots` tile: ~16K key elements per loop step, BLOCK_N >= kp.

    The tile path uses 512-key tiles (a 4-8:1 reduction at k <= 128, ~256 programs per 128K-key row).
    """
    block_n = 512 if radix else max(512, 4 * kp)
    block_n = max(min(block_n, next_pow2(n)), 1 if radix else kp)
    return block_n, max(8, min(64, 16384 // block_n, next_pow2(d)))


@jit
def _relevancy_kernel(
    q_ptr, k_ptr, n_valid_ptr, out_ptr, ws_ptr, H, n_cap,
    s_qb, s_qh, s_kb, s_kh, s_kn, s_out,
    D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, KP: tl.constexpr, RADIX: tl.constexpr,
):  # fmt: skip
    # One program per (row, tile of BLOCK_N keys): the tile's dot products, then its top-KP (tile path) or
    # its scores and digit-0 histogram (radix path).
    r = tl.program_id(0)
    t = tl.program_id(1)
    n = tl.minimum(tl.load(n_valid_ptr + r), n_cap)
    offs = t * BLOCK_N + tl.arange(0, BLOCK_N)
    valid = offs < n
    q_row = q_ptr + (r // H).to(tl.int64) * s_qb + (r % H).to(tl.int64) * s_qh
    k_rows = k_ptr + (r // H).to(tl.int64) * s_kb + (r % H).to(tl.int64) * s_kh
    acc = row_dots(q_row, k_rows, offs, valid, s_kn, D, BLOCK_N, BLOCK_D)
    if RADIX:
        tl.store(out_ptr + r.to(tl.int64) * s_out + offs, acc, mask=valid)
        flush_hist0(ws_ptr + r * 2306, tl.histogram(digit0(acc), 2048, mask=valid))
    else:
        top = tl.topk(pack_scores(acc, offs, valid), KP)
        tl.store(out_ptr + r.to(tl.int64) * s_out + t * KP + tl.arange(0, KP), top)


# ---------------------------------------------------------------------------------------------------------
# Benchmark cases.

NATIVE_REL_TOL = 2**-6
"""Score tolerance of the cases' check, relative to a row's largest score: the native scores are rounded
once to bf16 (unit roundoff 2^-8), so a tie swap at the k-th score stays within 2 roundings (2^-7); 2x
margin. CPU emulation of the native path on the cases' inputs: at most 0.0035 (sorted selections)."""


def _case(b: int, h: int, n: int, k: int, d: int, targets: dict[str, float], note: str) -> BenchCase:
    def make_inputs(device: torch.device) -> dict[str, Any]:
        g = torch.Generator(device=device)
        g.manual_seed(b * 7919 + h * 131 + n + k)
        q = torch.randn((b, h, d), generator=g, device=device, dtype=torch.bfloat16)
        keys = torch.randn((b, h, n, d), generator=g, device=device, dtype=torch.bfloat16)
        return {"q": q, "keys": keys, "n_valid": n, "k": k}

    rows = b * h
    return BenchCase(
        kernel="relevancy_topk",
        label=f"{note} B={b} H={h} N={n} k={k}",
        make_inputs=make_inputs,
        optimized=triton_relevancy_topk,
        torch_path=native_relevancy_topk,
        bytes_moved=rows * n * d * 2 + rows * d * 2 + rows * k * 8,
        flops=2 * rows * n * d,
        targets=targets,
        check=partial(check_native, rel_tol=NATIVE_REL_TOL),
    )


def bench_cases() -> list[BenchCase]:
    """Roofline sizes: SeerAttention-R gates (8 KV heads, L/64 blocks) and single 8K-1M-entry rows.

    Returns:
        Cases at contexts 8K, 32K, 128K and 1M for batch 1 and a large batch; k = 64 (a 4096-token budget
        over 64-token blocks). Cases reading >= 64 MB target 70% of copy bandwidth; batch 1 over one
        128K-entry row targets 2x over the native torch path.
    """
    cases = []
    for ctx in (8192, 32768, 131072, 1 << 20):
        for b in (1, 16):
            nbytes = b * 8 * (ctx // 64) * 128 * 2
            cases.append(
                _case(b, 8, ctx // 64, 64, 128, {"bw_fraction": 0.70} if nbytes >= 64 << 20 else {}, "seer")
            )
        for b in (1, 8):
            targets: dict[str, float] = {"bw_fraction": 0.70} if b * ctx * 256 >= 64 << 20 else {}
            if b == 1 and ctx == 131072:
                targets["speedup_vs_torch"] = 2.0
            cases.append(_case(b, 1, ctx, 64, 128, targets, "row"))
    return cases
