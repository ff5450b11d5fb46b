"""Page scoring by Quest's upper bound, fused with exact top-k over (optionally grouped) pages: Quest, LServe.

For a KV head with GQA group queries q[g] and per-page element-wise key bounds kmin/kmax,

    page_score[p] = max over g of sum_d max(q[g, d] * kmin[p, d], q[g, d] * kmax[p, d])

(Quest's bound on q.k inside the page, maxed over the group that shares the KV head). LServe groups
``sub`` = 4 consecutive 16-token pages into one 64-token selection unit scored by the max over its pages;
Quest uses ``sub`` = 1. The result is the top-k reduced pages of each (batch, KV head) row under the tie
rule of :mod:`kernels_gpu.topk`. The Triton kernel streams kmin and kmax once, evaluates the bound for
the whole group on tensor cores (see ``_page_kernel``) and reduces each tile to its own top-k (k <= 256)
or writes scores for the radix path. :func:`native_page_topk` is the bound written out with elementwise
torch ops, then ``torch.topk``: the benchmark's baseline.
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
    drop_invalid,
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


def _shapes(
    q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, sub: int
) -> tuple[int, int, int, int, int]:
    if (
        q.dim() != 4
        or kmin.dim() != 4
        or kmin.shape != kmax.shape
        or q.shape[:2] != kmin.shape[:2]
        or q.shape[3] != kmin.shape[3]
    ):
        raise UsageError(
            "page_topk expects q [B, H_kv, G, D] and kmin, kmax [B, H_kv, P, D]; got "
            f"q {tuple(q.shape)}, kmin {tuple(kmin.shape)}, kmax {tuple(kmax.shape)}"
        )
    if not isinstance(sub, int) or sub < 1:
        raise UsageError(
            f"sub={sub!r} must be a positive int (pages max-reduced per unit: LServe 4, Quest 1)"
        )
    b, h, g, d = q.shape
    return b, h, g, kmin.shape[2], d


def _units(pages: torch.Tensor, sub: int) -> torch.Tensor:
    return (pages + (sub - 1)) // sub


def reference_page_topk(
    q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, n_pages: int | torch.Tensor, k: int, sub: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact reference: the bound literally, in float64, then a stable sort (tests only).

    Args:
        q: [B, H_kv, G, D] queries of each KV head's GQA group.
        kmin: [B, H_kv, P, D] element-wise minimum of each page's keys.
        kmax: [B, H_kv, P, D] element-wise maximum.
        n_pages: Valid pages per row: an int, or an int tensor [B] or [B, H_kv].
        k: Reduced pages to select per row, >= 1.
        sub: Consecutive pages max-reduced into one selection unit (LServe 4, Quest 1).

    Returns:
        (index int32 [B, H_kv, k] over reduced pages, score fp32 [B, H_kv, k]), tie-rule order, padded
        with -1 / -inf.
    """
    b, h, _, p, _ = _shapes(q, kmin, kmax, sub)
    qd = q.double()[:, :, :, None, :]
    bound = torch.maximum(qd * kmin.double()[:, :, None], qd * kmax.double()[:, :, None]).sum(-1)
    page = bound.amax(2).reshape(b * h, p)
    pages = rows_n_valid(n_pages, (b, h), p, q.device)
    col = torch.arange(p, device=q.device)
    page = page.masked_fill(col[None, :] >= pages[:, None], -torch.inf)
    pad = cdiv(p, sub) * sub - p
    red = torch.nn.functional.pad(page, (0, pad), value=-torch.inf).view(b * h, -1, sub).amax(-1)
    idx, val = reference_topk(red, _units(pages, sub), k)
    return idx.view(b, h, k), val.view(b, h, k)


def torch_page_topk(
    q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, n_pages: int | torch.Tensor, k: int, sub: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Framework-native path: the bound as two fp32-output matmuls, group max, sub-page max, packed topk.

    Uses sum_d max(q kmin, q kmax) = max(q, 0) . kmax + min(q, 0) . kmin, exact whenever kmin <= kmax
    element-wise (true for a page's min and max keys); the Triton kernel orders each pair first, so it
    holds for any input there.

    Args:
        q: [B, H_kv, G, D] bf16/fp16/fp32 queries.
        kmin: [B, H_kv, P, D] page minima, same dtype.
        kmax: [B, H_kv, P, D] page maxima, same dtype.
        n_pages: Valid pages per row: an int, or an int tensor [B] or [B, H_kv].
        k: Reduced pages to select per row, >= 1.
        sub: Consecutive pages max-reduced into one selection unit (LServe 4, Quest 1).

    Returns:
        (index int32 [B, H_kv, k], score fp32 [B, H_kv, k]), tie-rule order, padded with -1 / -inf.
    """
    check_k(k)
    b, h, g, p, d = _shapes(q, kmin, kmax, sub)
    qt = q.reshape(b * h, g, d).transpose(1, 2)
    bound = bmm_fp32(kmax.reshape(b * h, p, d), qt.clamp(min=0)) + bmm_fp32(
        kmin.reshape(b * h, p, d), qt.clamp(max=0)
    )
    page = bound.amax(-1)
    pages = rows_n_valid(n_pages, (b, h), p, q.device)
    col = torch.arange(p, device=q.device)
    page = page.masked_fill(col[None, :] >= pages[:, None], -torch.inf)
    if sub > 1:
        pad = cdiv(p, sub) * sub - p
        page = torch.nn.functional.pad(page, (0, pad), value=-torch.inf).view(b * h, -1, sub).amax(-1)
    idx, val = torch_topk(page, _units(pages, sub), k)
    return idx.view(b, h, k), val.view(b, h, k)


def native_page_topk(
    q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, n_pages: int | torch.Tensor, k: int, sub: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Framework-native path, what a user writes: the bound elementwise, sum, group max, ``torch.topk``.

    ``torch.maximum(q * kmin, q * kmax).sum(-1).amax(group)``, Quest's formula taken literally, in the
    inputs' dtype (bf16 in the workloads: each product and each page's sum rounded to bf16); it materializes
    two [B, H_kv, G, P, D] products and their maximum. Pages past ``n_pages`` are dropped or masked with
    -inf, ``sub`` consecutive pages are max-reduced (the last unit padded with -inf), then
    ``torch.topk(sorted=False)`` (:func:`kernels_gpu.topk.native_topk`). No tie rule.

    Args:
        q: [B, H_kv, G, D] queries.
        kmin: [B, H_kv, P, D] page minima, same dtype.
        kmax: [B, H_kv, P, D] page maxima, same dtype.
        n_pages: Valid pages per row: an int, or an int tensor [B] or [B, H_kv].
        k: Reduced pages to select per row, >= 1.
        sub: Consecutive pages max-reduced into one selection unit (LServe 4, Quest 1).

    Returns:
        (index int64 [B, H_kv, k] over units, score [B, H_kv, k] in q's dtype), unordered; see
        ``native_topk`` for padding.
    """
    b, h, *_ = _shapes(q, kmin, kmax, sub)
    qe = q[:, :, :, None, :]
    page = torch.maximum(qe * kmin[:, :, None], qe * kmax[:, :, None]).sum(-1).amax(2)
    if sub == 1:
        return native_topk(page, n_pages, k)
    page = drop_invalid(page, n_pages)
    pad = cdiv(page.shape[-1], sub) * sub - page.shape[-1]
    units = torch.nn.functional.pad(page, (0, pad), value=float("-inf")).view(b, h, -1, sub).amax(-1)
    return native_topk(units, units.shape[-1], k)


def triton_page_topk(
    q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, n_pages: int | torch.Tensor, k: int, sub: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton path: fused bound + group max + sub-page max + tile top-k (k <= 256), or radix select.

    Args:
        q: [B, H_kv, G, D] bf16/fp16/fp32 queries.
        kmin: [B, H_kv, P, D] page minima, same dtype; copied if the last dimension is not contiguous.
        kmax: [B, H_kv, P, D] page maxima, strides equal to kmin's.
        n_pages: Valid pages per row: an int, or an int tensor [B] or [B, H_kv].
        k: Reduced pages to select per row, 1 <= k <= 8192.
        sub: Consecutive pages max-reduced into one selection unit (LServe 4, Quest 1).

    Returns:
        (index int32 [B, H_kv, k], score fp32 [B, H_kv, k]), tie-rule order, padded with -1 / -inf.
    """
    check_k(k, MAX_K)
    resolve_impl("triton", q, kmin, kmax)
    b, h, g, p, d = _shapes(q, kmin, kmax, sub)
    if kmin.stride(-1) != 1 or kmin.stride() != kmax.stride():
        kmin, kmax = kmin.contiguous(), kmax.contiguous()
    if q.stride(-1) != 1:
        q = q.contiguous()
    rows = b * h
    pages = rows_n_valid(n_pages, (b, h), p, q.device)
    p_red = cdiv(p, sub)
    kp = key_slots(k)
    radix = use_radix(k)
    # ~128 programs per 128K-token context at batch 1 (8 heads), a >= 2:1 reduction per tile; tl.dot
    # needs >= 16 rows.
    block_r = max(min(256 if radix else max(128, 2 * kp), next_pow2(p_red)), 1 if radix else kp, 16)
    block_d = max(16, min(64, 8192 // block_r, next_pow2(d)))
    # Triton 3.6's interpreter multiplies bf16 bit patterns as integers in tl.dot: widen to fp32 there; fp32
    # inputs use exact fp32 products ("ieee"), not TF32.
    wide = INTERPRETED or q.dtype == torch.float32
    dot_dtype = tl.float32 if wide else (tl.bfloat16 if q.dtype == torch.bfloat16 else tl.float16)
    tiles = cdiv(p_red, block_r)
    if radix:
        out = torch.empty((rows, p_red), dtype=torch.float32, device=q.device)
        ws = new_radix_workspace(rows, q.device)
    else:
        out = torch.empty((rows, tiles * kp), dtype=torch.int64, device=q.device)
        ws = pages  # unused by the tile variant
    _page_kernel[(rows, tiles)](
        q, kmin, kmax, pages, out, ws, h, p,
        q.stride(0), q.stride(1), q.stride(2), kmin.stride(0), kmin.stride(1), kmin.stride(2), out.stride(0),
        SUB=sub, G=g, BLOCK_G=max(16, next_pow2(g)), D=d, BLOCK_R=block_r, BLOCK_D=block_d, KP=kp,
        RADIX=radix, DOT_DTYPE=dot_dtype, PRECISION="ieee" if wide else "tf32", num_warps=8,
    )  # fmt: skip
    idx, val = radix_select(out, _units(pages, sub), k, ws) if radix else merge_candidates(out, k)
    return idx.view(b, h, k), val.view(b, h, k)


def page_topk(
    q: torch.Tensor,
    kmin: torch.Tensor,
    kmax: torch.Tensor,
    n_pages: int | torch.Tensor,
    k: int,
    sub: int = 1,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k selection units (groups of ``sub`` pages) of each (batch, KV head) row by Quest's bound.

    Args:
        q: [B, H_kv, G, D] queries of each KV head's GQA group (bf16 in the workloads).
        kmin: [B, H_kv, P_cap, D] element-wise minimum of each page's keys.
        kmax: [B, H_kv, P_cap, D] element-wise maximum (kmin <= kmax).
        n_pages: Valid pages per row: an int, or an int tensor [B] or [B, H_kv].
        k: Units to select per row (Quest: max(3, budget / 16); LServe: budget / 64).
        sub: Consecutive pages max-reduced into one unit (LServe 4, Quest 1).
        impl: ``"auto"``, ``"torch"`` or ``"triton"`` (see :func:`kernels_gpu.topk.resolve_impl`).

    Returns:
        (index int32 [B, H_kv, k] over units, score fp32 [B, H_kv, k]) sorted by (score desc, index asc);
        fewer than k valid units pad with -1 / -inf.
    """
    path = resolve_impl(impl, q, kmin, kmax)
    fn = triton_page_topk if path == "triton" else torch_page_topk
    return fn(q, kmin, kmax, n_pages, k, sub)


@jit
def _page_kernel(
    q_ptr, kmin_ptr, kmax_ptr, n_pages_ptr, out_ptr, ws_ptr, H, p_cap,
    s_qb, s_qh, s_qg, s_kb, s_kh, s_kp, s_out,
    SUB: tl.constexpr, G: tl.constexpr, BLOCK_G: tl.constexpr, D: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr, KP: tl.constexpr, RADIX: tl.constexpr, DOT_DTYPE: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    # One program per (row, tile of BLOCK_R units). Per element, max(q lo, q hi) = max(q, 0) max(lo, hi) +
    # min(q, 0) min(lo, hi) exactly, so the bound of all G queries is two [BLOCK_R, BLOCK_D] x
    # [BLOCK_D, BLOCK_G] tensor-core products per chunk (G padded to 16), each key chunk loaded once.
    r = tl.program_id(0)
    t = tl.program_id(1)
    n_pages = tl.minimum(tl.load(n_pages_ptr + r), p_cap)
    n_units = (n_pages + SUB - 1) // SUB
    units = t * BLOCK_R + tl.arange(0, BLOCK_R)
    valid = units < n_units
    q_row = q_ptr + (r // H).to(tl.int64) * s_qb + (r % H).to(tl.int64) * s_qh
    k_off = (r // H).to(tl.int64) * s_kb + (r % H).to(tl.int64) * s_kh
    gids = tl.arange(0, BLOCK_G)
    best = tl.full([BLOCK_R], float("-inf"), tl.float32)
    for j in range(0, SUB):
        pages = units * SUB + j
        live = valid & (pages < n_pages)
        rows = k_off + pages.to(tl.int64)[:, None] * s_kp
        acc = tl.zeros([BLOCK_R, BLOCK_G], tl.float32)
        for d0 in range(0, D, BLOCK_D):
            dd = d0 + tl.arange(0, BLOCK_D)
            m = live[:, None] & (dd < D)[None, :]
            lo = tl.load(kmin_ptr + rows + dd[None, :], mask=m, other=0.0)
            hi = tl.load(kmax_ptr + rows + dd[None, :], mask=m, other=0.0)
            qt = tl.load(
                q_row + gids[None, :] * s_qg + dd[:, None],
                mask=(gids < G)[None, :] & (dd < D)[:, None],
                other=0.0,
            )  # [BLOCK_D, BLOCK_G]
            zero = tl.zeros_like(qt)
            hi_q = tl.maximum(qt, zero).to(DOT_DTYPE)
            lo_q = tl.minimum(qt, zero).to(DOT_DTYPE)
            acc = tl.dot(tl.maximum(lo, hi).to(DOT_DTYPE), hi_q, acc, input_precision=PRECISION)
            acc = tl.dot(tl.minimum(lo, hi).to(DOT_DTYPE), lo_q, acc, input_precision=PRECISION)
        page = tl.max(tl.where(gids[None, :] < G, acc, float("-inf")), 1)
        best = tl.where(live, tl.maximum(best, page), best)
    if RADIX:
        tl.store(out_ptr + r.to(tl.int64) * s_out + units, best, mask=valid)
        flush_hist0(ws_ptr + r * 2306, tl.histogram(digit0(best), 2048, mask=valid))
    else:
        top = tl.topk(pack_scores(best, units, valid), KP)
        tl.store(out_ptr + r.to(tl.int64) * s_out + t * KP + tl.arange(0, KP), top)


# ---------------------------------------------------------------------------------------------------------
# Benchmark cases.

NATIVE_REL_TOL = 2**-6
"""Score tolerance of the cases' check, relative to a row's largest score. The native bound rounds every
product to bf16 (unit roundoff 2^-8) before the sum and the sum once more: an error up to 2^-8 (sum |terms|
+ |score|). On the cases' inputs (CPU emulation of the native path, 32K-128K contexts) sorted selections
differed by at most 0.0032 and a tie swap lay within 0.0041 of the k-th score, relative: ~4x margin."""


def _case(method: str, b: int, ctx: int, sub: int, k: int, targets: dict[str, float]) -> BenchCase:
    h, g, d = 8, 4, 128  # Llama-3.1-8B: 8 KV heads, GQA group 4, head dim 128 (workloads.md section 4)
    p = ctx // 16  # 16-token pages

    def make_inputs(device: torch.device) -> dict[str, Any]:
        gen = torch.Generator(device=device)
        gen.manual_seed(b * 7919 + ctx + sub)
        q = torch.randn((b, h, g, d), generator=gen, device=device, dtype=torch.bfloat16)
        x = torch.randn((2, b, h, p, d), generator=gen, device=device, dtype=torch.bfloat16)
        return {"q": q, "kmin": x.amin(0), "kmax": x.amax(0), "n_pages": p, "k": k, "sub": sub}

    rows = b * h
    return BenchCase(
        kernel="page_topk",
        label=f"{method} B={b} L={ctx} pages={p} sub={sub} k={k}",
        make_inputs=make_inputs,
        optimized=triton_page_topk,
        torch_path=native_page_topk,
        bytes_moved=2 * rows * p * d * 2 + rows * g * d * 2 + rows * k * 8,
        flops=4 * rows * g * p * d,  # per element and query: two multiplies, a max, an add
        targets=targets,
        check=partial(check_native, rel_tol=NATIVE_REL_TOL),
    )


def bench_cases() -> list[BenchCase]:
    """Roofline sizes for Quest (16-token pages, top budget/16) and LServe (64-token units, budget/64).

    Returns:
        Llama-3.1-8B shapes at contexts 8K, 32K, 128K and 1M, batch 1 and 16, budget 4096 tokens. Cases
        reading >= 64 MB target 70% of copy bandwidth.
    """
    cases = []
    for ctx in (8192, 32768, 131072, 1 << 20):
        for b in (1, 16):
            targets = {"bw_fraction": 0.70} if b * 8 * (ctx // 16) * 512 >= 64 << 20 else {}
            cases.append(_case("quest", b, ctx, 1, 256, targets))
            cases.append(_case("lserve", b, ctx, 4, 64, targets))
    return cases
