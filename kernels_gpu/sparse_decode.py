"""Sparse decode attention: the Apply step of SeerAttention-R / Quest / LServe (blocks) and DSA (tokens).

Two kernel families, each as a float64 reference (``reference_*``, for tests), a framework-native torch path
(``torch_*``: gather, then SDPA), a Triton split-K flash-decoding kernel (``triton_*``) and a dispatching
function with ``impl="auto" | "triton" | "torch"``.

Block-sparse rules (one decode step, every batch row at the same ``seq_len``):

* the newest token sits at position ``seq_len - 1`` and is already in the cache; its block
  ``cur = (seq_len - 1) // block_size`` is the *current block* and is always attended, over its first
  ``seq_len - cur * block_size`` positions;
* ``block_idx`` lists complete blocks: entries ``< 0`` (padding) or ``>= cur`` are ignored, so naming the
  current block never counts it twice;
* a block id listed more than once counts once (attention over a *set* of blocks, as in SeerAttention-R's
  top-k, which never repeats an id);
* the selection of a KV head is shared by the ``H_q / H_kv`` query heads of its GQA group (query head ``i``
  reads KV head ``i // (H_q / H_kv)``, the ``repeat_interleave`` convention of SDPA's ``enable_gqa``).

Token-sparse rules (DSA's sparse MLA in MQA mode; deepseek-ai/DeepSeek-V3.2-Exp, FlashMLA): one latent head
per token is shared by all query heads; keys are the whole ``d_qk``-wide row, values its first ``d_v`` dims.
Entries ``< 0`` or ``>= seq_len`` are ignored; every other entry is attended once per listing (DSA's top-k
never repeats a position). A row with no valid entry returns zeros.

The Triton kernels are split-K flash decoding: a grid over (batch, head group, split) where each program
runs an fp32 online softmax over its share of the selection, then a combine kernel merges the splits by
log-sum-exp. They need CUDA tensors, or Triton's CPU interpreter (``TRITON_INTERPRET=1`` set before this
module is imported).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from bench.errors import DeviceUnavailableError, UsageError
from kernels_gpu.registry import BenchCase

try:
    import triton
    import triton.language as tl
except ImportError:  # The torch paths work without Triton; the Triton paths say what to install.
    triton = None

IMPLS = ("auto", "triton", "torch")
#: Relative error ||out - ref|| / ||ref|| allowed for bf16/fp16 inputs (bf16 keeps 8 mantissa bits).
BF16_REL_TOL = 1e-2
#: DeepSeek-V3.2 MLA softmax scale: (qk_nope 128 + qk_rope 64) ** -0.5 (config_671B_v3.2.json).
DSA_SCALE = 192**-0.5

if triton is not None:

    @triton.jit
    def _dot(a, b, acc, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
        # Triton 3.6's interpreter multiplies bf16 bit patterns as integers, so there it gets fp32 operands
        # (exact for bf16/fp16 products); compiled kernels keep the narrow operands for the tensor cores.
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        return tl.dot(a, b, acc, input_precision=PRECISION)

    @triton.jit
    def _block_sparse_split_kernel(
        q_ptr,
        k_ptr,
        v_ptr,
        idx_ptr,
        po_ptr,
        plse_ptr,
        seq_len,
        qk_scale,
        sq_b,
        sq_h,
        sq_d,
        sk_b,
        sk_h,
        sk_l,
        sk_d,
        sv_b,
        sv_h,
        sv_l,
        sv_d,
        si_b,
        si_h,
        si_n,
        spo_b,
        spo_h,
        spo_s,
        splse_b,
        splse_h,
        GROUP: tl.constexpr,
        HEAD_DIM: tl.constexpr,
        BLOCK_SIZE: tl.constexpr,
        N_SEL: tl.constexpr,
        ENTRIES_PER_SPLIT: tl.constexpr,
        BLOCK_G: tl.constexpr,
        BLOCK_D: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_SEL: tl.constexpr,
        UPCAST: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        b = tl.program_id(0).to(tl.int64)
        hkv = tl.program_id(1).to(tl.int64)
        split = tl.program_id(2)
        offs_g = tl.arange(0, BLOCK_G)
        offs_d = tl.arange(0, BLOCK_D)
        offs_n = tl.arange(0, BLOCK_N)
        offs_s = tl.arange(0, BLOCK_SEL)
        g_ok = offs_g < GROUP
        d_ok = offs_d < HEAD_DIM
        heads = hkv * GROUP + offs_g

        q = tl.load(
            q_ptr + b * sq_b + heads[:, None] * sq_h + offs_d[None, :] * sq_d,
            mask=g_ok[:, None] & d_ok[None, :],
            other=0.0,
        )
        k_base = k_ptr + b * sk_b + hkv * sk_h
        v_base = v_ptr + b * sv_b + hkv * sv_h
        i_base = idx_ptr + b * si_b + hkv * si_h
        # The whole selection row stays in registers to find repeated ids (first occurrence wins).
        sel = tl.load(i_base + offs_s * si_n, mask=offs_s < N_SEL, other=-1)
        cur_blk = (seq_len - 1) // BLOCK_SIZE

        # A finite floor keeps exp2(m_old - m_new) defined while a split has seen no valid token.
        m_i = tl.full([BLOCK_G], -1.0e30, tl.float32)
        l_i = tl.zeros([BLOCK_G], tl.float32)
        acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
        # Entries 0..N_SEL-1 are the selection, entry N_SEL the current block.
        for i in range(ENTRIES_PER_SPLIT):
            e = split * ENTRIES_PER_SPLIT + i
            picked = tl.load(i_base + e * si_n, mask=e < N_SEL, other=-1)
            is_cur = e == N_SEL
            use = is_cur | ((picked >= 0) & (picked < cur_blk))
            blk = tl.where(is_cur, cur_blk, picked).to(tl.int64)
            pos = blk * BLOCK_SIZE + offs_n
            tok_ok = use & (offs_n < BLOCK_SIZE) & (pos < seq_len)
            # Repeats are masked out of the softmax only, so the K/V loads never wait on this reduction.
            repeats = tl.sum(((sel == picked) & (offs_s < e)).to(tl.int32), axis=0)
            counted = tok_ok & (is_cur | (repeats == 0))

            kv_mask = tok_ok[:, None] & d_ok[None, :]
            k = tl.load(k_base + pos[:, None] * sk_l + offs_d[None, :] * sk_d, mask=kv_mask, other=0.0)
            s = _dot(q, tl.trans(k), tl.zeros([BLOCK_G, BLOCK_N], tl.float32), UPCAST, PRECISION) * qk_scale
            s = tl.where(counted[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            v = tl.load(v_base + pos[:, None] * sv_l + offs_d[None, :] * sv_d, mask=kv_mask, other=0.0)
            acc = _dot(p.to(v.dtype), v, acc * alpha[:, None], UPCAST, PRECISION)
            m_i = m_new

        has = l_i > 0
        lse = tl.where(has, m_i + tl.log2(tl.where(has, l_i, 1.0)), float("-inf"))
        o = acc / tl.where(has, l_i, 1.0)[:, None]
        tl.store(
            po_ptr + b * spo_b + heads[:, None] * spo_h + split * spo_s + offs_d[None, :],
            o,
            mask=g_ok[:, None] & d_ok[None, :],
        )
        tl.store(plse_ptr + b * splse_b + heads * splse_h + split, lse, mask=g_ok)

    @triton.jit
    def _token_sparse_split_kernel(
        q_ptr,
        kv_ptr,
        idx_ptr,
        po_ptr,
        plse_ptr,
        seq_len,
        qk_scale,
        sq_b,
        sq_h,
        sq_d,
        skv_b,
        skv_l,
        skv_d,
        si_b,
        si_n,
        spo_b,
        spo_h,
        spo_s,
        splse_b,
        splse_h,
        N_HEADS: tl.constexpr,
        D_V: tl.constexpr,
        D_REST: tl.constexpr,
        N_SEL: tl.constexpr,
        TOKENS_PER_SPLIT: tl.constexpr,
        BLOCK_H: tl.constexpr,
        BLOCK_DV: tl.constexpr,
        BLOCK_DR: tl.constexpr,
        BLOCK_N: tl.constexpr,
        UPCAST: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        b = tl.program_id(0).to(tl.int64)
        hb = tl.program_id(1)
        split = tl.program_id(2)
        heads = hb * BLOCK_H + tl.arange(0, BLOCK_H)
        h_ok = heads < N_HEADS
        offs_v = tl.arange(0, BLOCK_DV)
        v_ok = offs_v < D_V
        offs_n = tl.arange(0, BLOCK_N)
        q_row = q_ptr + b * sq_b + heads[:, None] * sq_h
        q_main = tl.load(q_row + offs_v[None, :] * sq_d, mask=h_ok[:, None] & v_ok[None, :], other=0.0)
        if D_REST > 0:
            offs_r = tl.arange(0, BLOCK_DR)
            r_ok = offs_r < D_REST
            q_rest = tl.load(
                q_row + (D_V + offs_r)[None, :] * sq_d, mask=h_ok[:, None] & r_ok[None, :], other=0.0
            )
        kv_base = kv_ptr + b * skv_b
        i_base = idx_ptr + b * si_b

        m_i = tl.full([BLOCK_H], -1.0e30, tl.float32)
        l_i = tl.zeros([BLOCK_H], tl.float32)
        acc = tl.zeros([BLOCK_H, BLOCK_DV], tl.float32)
        for i in range(TOKENS_PER_SPLIT // BLOCK_N):
            offs = split * TOKENS_PER_SPLIT + i * BLOCK_N + offs_n
            tok = tl.load(i_base + offs * si_n, mask=offs < N_SEL, other=-1)
            ok = (tok >= 0) & (tok < seq_len)
            rows = kv_base + tok.to(tl.int64)[:, None] * skv_l
            # One load serves as the key's first D_V dims and as the value (MLA's shared latent).
            kv = tl.load(rows + offs_v[None, :] * skv_d, mask=ok[:, None] & v_ok[None, :], other=0.0)
            s = _dot(q_main, tl.trans(kv), tl.zeros([BLOCK_H, BLOCK_N], tl.float32), UPCAST, PRECISION)
            if D_REST > 0:
                k_rest = tl.load(
                    rows + (D_V + offs_r)[None, :] * skv_d, mask=ok[:, None] & r_ok[None, :], other=0.0
                )
                s = _dot(q_rest, tl.trans(k_rest), s, UPCAST, PRECISION)
            s = tl.where(ok[None, :], s * qk_scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = _dot(p.to(kv.dtype), kv, acc * alpha[:, None], UPCAST, PRECISION)
            m_i = m_new

        has = l_i > 0
        lse = tl.where(has, m_i + tl.log2(tl.where(has, l_i, 1.0)), float("-inf"))
        o = acc / tl.where(has, l_i, 1.0)[:, None]
        tl.store(
            po_ptr + b * spo_b + heads[:, None] * spo_h + split * spo_s + offs_v[None, :],
            o,
            mask=h_ok[:, None] & v_ok[None, :],
        )
        tl.store(plse_ptr + b * splse_b + heads * splse_h + split, lse, mask=h_ok)

    @triton.jit
    def _combine_splits_kernel(
        po_ptr,
        plse_ptr,
        out_ptr,
        spo_b,
        spo_h,
        spo_s,
        splse_b,
        splse_h,
        so_b,
        so_h,
        so_d,
        NUM_SPLITS: tl.constexpr,
        DIM: tl.constexpr,
        BLOCK_S: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        b = tl.program_id(0).to(tl.int64)
        h = tl.program_id(1).to(tl.int64)
        offs_s = tl.arange(0, BLOCK_S)
        offs_d = tl.arange(0, BLOCK_D)
        d_ok = offs_d < DIM
        lse_row = plse_ptr + b * splse_b + h * splse_h
        lse = tl.load(lse_row + offs_s, mask=offs_s < NUM_SPLITS, other=float("-inf"))
        m = tl.max(lse, axis=0)
        # All splits empty happens only for a token row with no valid entry: its output is 0.
        m = tl.where(m == float("-inf"), 0.0, m)
        total = tl.sum(tl.exp2(lse - m), axis=0)
        acc = tl.zeros([BLOCK_D], tl.float32)
        o_row = po_ptr + b * spo_b + h * spo_h
        for s in range(NUM_SPLITS):
            w = tl.exp2(tl.load(lse_row + s) - m)
            acc += w * tl.load(o_row + s * spo_s + offs_d, mask=d_ok, other=0.0)
        res = acc / tl.where(total > 0, total, 1.0)
        tl.store(out_ptr + b * so_b + h * so_h + offs_d * so_d, res.to(out_ptr.dtype.element_ty), mask=d_ok)


# ---------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------


def _interpreting() -> bool:
    """Whether the Triton kernels above were built for Triton's CPU interpreter."""
    return triton is not None and type(_combine_splits_kernel).__name__ == "InterpretedFunction"


def _require_triton(device: torch.device) -> None:
    """Raise :class:`DeviceUnavailableError` unless the Triton kernels can run on ``device``."""
    if triton is None:
        raise DeviceUnavailableError(
            "impl='triton' needs the triton package (pip install 'triton==3.6.0'); or pass impl='torch'"
        )
    if device.type == "cuda" or (device.type == "cpu" and _interpreting()):
        return
    raise DeviceUnavailableError(
        f"impl='triton' cannot run on {device.type} tensors: it needs CUDA tensors, or Triton's CPU "
        "interpreter (set TRITON_INTERPRET=1 before importing kernels_gpu); or pass impl='torch'"
    )


def _resolve_impl(impl: str, device: torch.device) -> str:
    """Turn ``impl`` into ``"triton"`` or ``"torch"``; ``"auto"`` picks Triton on CUDA tensors."""
    if impl not in IMPLS:
        raise UsageError(f"impl={impl!r} is not one of {', '.join(IMPLS)}")
    if impl == "auto":
        impl = "triton" if device.type == "cuda" else "torch"
    if impl == "triton":
        _require_triton(device)
    return impl


@functools.cache
def _target_programs(device: torch.device) -> int:
    """Programs a split-K launch should aim for: four per SM keeps the loads of every SM in flight."""
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return 8  # Triton's interpreter runs programs one after another; a few splits exercise the combine.


def _auto_splits(programs_per_split: int, work: int, min_work_per_split: int, device: torch.device) -> int:
    """Splits of ``work`` units per (row, head group) that fill the device without tiny splits."""
    wanted = math.ceil(_target_programs(device) / max(programs_per_split, 1))
    return max(1, min(wanted, math.ceil(work / min_work_per_split)))


def _pow2(n: int, floor: int = 1) -> int:
    """Smallest power of two >= max(n, floor) (Triton block shapes must be powers of two)."""
    return max(floor, 1 << max(n - 1, 0).bit_length())


def _dot_flags(dtype: torch.dtype) -> tuple[bool, str]:
    """(upcast operands?, Triton dot precision) for inputs of ``dtype``; fp32 stays full precision."""
    return _interpreting(), "ieee" if dtype == torch.float32 else "tf32"


def _check_out(out: torch.Tensor | None, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Return ``out`` after checking it matches ``shape``/dtype/device, or a new tensor."""
    if out is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    if tuple(out.shape) != shape or out.dtype != like.dtype or out.device != like.device:
        raise UsageError(
            f"out is {tuple(out.shape)} {out.dtype} on {out.device}; "
            f"expected {shape} {like.dtype} on {like.device}"
        )
    return out


def _combine(partial_o: torch.Tensor, partial_lse: torch.Tensor, out: torch.Tensor) -> None:
    """Merge per-split partial outputs [B, H, S, D] and log2-sum-exps [B, H, S] into ``out`` [B, H, D]."""
    batch, heads, splits, dim = partial_o.shape
    _combine_splits_kernel[(batch, heads)](
        partial_o,
        partial_lse,
        out,
        partial_o.stride(0),
        partial_o.stride(1),
        partial_o.stride(2),
        partial_lse.stride(0),
        partial_lse.stride(1),
        out.stride(0),
        out.stride(1),
        out.stride(2),
        NUM_SPLITS=splits,
        DIM=dim,
        BLOCK_S=_pow2(splits),
        BLOCK_D=_pow2(dim),
    )


# ---------------------------------------------------------------------------------------------------------
# Block-sparse decode
# ---------------------------------------------------------------------------------------------------------


def _check_block_sparse_args(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    seq_len: int,
    block_idx: torch.Tensor,
    block_size: int,
) -> None:
    """Raise :class:`UsageError` naming the first argument that breaks the block-sparse contract."""
    if q.dim() != 3 or k_cache.dim() != 4:
        raise UsageError(
            f"q must be [B, H_q, D] and k_cache [B, H_kv, L_cap, D]; got {q.shape}, {k_cache.shape}"
        )
    if v_cache.shape != k_cache.shape:
        raise UsageError(f"v_cache {tuple(v_cache.shape)} must match k_cache {tuple(k_cache.shape)}")
    batch, heads_q, dim = q.shape
    b_k, heads_kv, cap, d_k = k_cache.shape
    if b_k != batch or d_k != dim or heads_q % heads_kv:
        raise UsageError(
            f"q {tuple(q.shape)} and k_cache {tuple(k_cache.shape)} disagree: batch and head dim must match "
            "and H_q must be a multiple of H_kv"
        )
    if not q.dtype == k_cache.dtype == v_cache.dtype:
        raise UsageError(
            f"q, k_cache and v_cache must share one dtype; got {q.dtype}, {k_cache.dtype}, {v_cache.dtype}"
        )
    if block_idx.dim() != 3 or tuple(block_idx.shape[:2]) != (batch, heads_kv):
        raise UsageError(
            f"block_idx must be [B={batch}, H_kv={heads_kv}, n_sel]; got {tuple(block_idx.shape)}"
        )
    if block_idx.dtype not in (torch.int32, torch.int64):
        raise UsageError(f"block_idx must be int32 (or int64); got {block_idx.dtype}")
    if not 1 <= seq_len <= cap:
        raise UsageError(f"seq_len={seq_len} must be in 1..L_cap={cap}")
    if block_size < 1:
        raise UsageError(f"block_size={block_size} must be positive")
    if not q.device == k_cache.device == v_cache.device == block_idx.device:
        raise UsageError("q, k_cache, v_cache and block_idx must be on one device")


class GatheredBlocks(NamedTuple):
    """KV rows gathered block by block, with the cache position each row came from.

    Attributes:
        k: Keys [B, H_kv, n * block_size, D].
        v: Values [B, H_kv, n * block_size, D].
        positions: int64 [B, H_kv, n * block_size]; -1 where the block id was negative or the position is
            past the cache (those rows hold the data of position 0 or the last position, to be masked).
    """

    k: torch.Tensor
    v: torch.Tensor
    positions: torch.Tensor


def gather_blocks(
    k_cache: torch.Tensor, v_cache: torch.Tensor, block_idx: torch.Tensor, block_size: int, seq_len: int
) -> GatheredBlocks:
    """Gather whole blocks of K and V by block id (torch indexing; no deduplication).

    Rows at or after ``seq_len`` are padding (position -1) and read cache row 0 instead: the cache past its
    length is uninitialized, and a NaN there would survive a zero softmax weight (0 * NaN = NaN).

    Args:
        k_cache: Keys [B, H_kv, L_cap, D].
        v_cache: Values [B, H_kv, L_cap, D].
        block_idx: Block ids [B, H_kv, n], integer; negative ids are padding.
        block_size: Tokens per block.
        seq_len: Tokens in the cache.

    Returns:
        The gathered rows and their positions; see :class:`GatheredBlocks`.
    """
    cap, dim = k_cache.shape[2], k_cache.shape[3]
    ids = block_idx.long()
    pos = ids[..., None] * block_size + torch.arange(block_size, device=ids.device)
    pos = pos.flatten(start_dim=2)
    bad = (ids < 0).repeat_interleave(block_size, dim=-1) | (pos >= min(seq_len, cap))
    pos = pos.masked_fill(bad, -1)
    rows = pos.clamp(min=0)[..., None].expand(-1, -1, -1, dim)
    return GatheredBlocks(k_cache.gather(2, rows), v_cache.gather(2, rows), pos)


def reference_block_sparse_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    seq_len: int,
    block_idx: torch.Tensor,
    block_size: int = 64,
    scale: float | None = None,
) -> torch.Tensor:
    """Exact block-sparse decode in float64 by masking dense attention (for tests; O(L) memory).

    Args:
        q: Queries [B, H_q, D].
        k_cache: Keys [B, H_kv, L_cap, D].
        v_cache: Values [B, H_kv, L_cap, D].
        seq_len: Tokens in the cache; the current block is ``(seq_len - 1) // block_size``.
        block_idx: Selected block ids [B, H_kv, n_sel]; see the module docstring for the rules.
        block_size: Tokens per block.
        scale: Softmax scale; default 1/sqrt(D).

    Returns:
        Attention output [B, H_q, D] in float64.
    """
    _check_block_sparse_args(q, k_cache, v_cache, seq_len, block_idx, block_size)
    batch, heads_q, dim = q.shape
    heads_kv = k_cache.shape[1]
    cur = (seq_len - 1) // block_size
    # Scatter marks a set, which is the duplicates rule; column cur+1 absorbs ignored ids.
    ids = block_idx.long()
    ids = torch.where((ids >= 0) & (ids < cur), ids, cur + 1)
    keep = torch.zeros(batch, heads_kv, cur + 2, dtype=torch.bool, device=q.device)
    keep.scatter_(2, ids, True)
    keep[..., cur] = True
    tok_keep = keep[..., : cur + 1].repeat_interleave(block_size, dim=-1)[..., :seq_len]

    qg = q.double().view(batch, heads_kv, heads_q // heads_kv, dim)
    k = k_cache[:, :, :seq_len].double()
    v = v_cache[:, :, :seq_len].double()
    scores = torch.einsum("bhgd,bhld->bhgl", qg, k) * (dim**-0.5 if scale is None else scale)
    scores = scores.masked_fill(~tok_keep[:, :, None, :], float("-inf"))
    out = torch.einsum("bhgl,bhld->bhgd", torch.softmax(scores, dim=-1), v)
    return out.reshape(batch, heads_q, dim)


def torch_block_sparse_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    seq_len: int,
    block_idx: torch.Tensor,
    block_size: int = 64,
    scale: float | None = None,
) -> torch.Tensor:
    """Block-sparse decode in plain torch: dedupe the ids, gather the blocks, masked SDPA.

    Args:
        q: Queries [B, H_q, D].
        k_cache: Keys [B, H_kv, L_cap, D].
        v_cache: Values [B, H_kv, L_cap, D].
        seq_len: Tokens in the cache; the current block is ``(seq_len - 1) // block_size``.
        block_idx: Selected block ids [B, H_kv, n_sel]; see the module docstring for the rules.
        block_size: Tokens per block.
        scale: Softmax scale; default 1/sqrt(D).

    Returns:
        Attention output [B, H_q, D] in q's dtype.
    """
    _check_block_sparse_args(q, k_cache, v_cache, seq_len, block_idx, block_size)
    batch, heads_q, dim = q.shape
    heads_kv = k_cache.shape[1]
    cur = (seq_len - 1) // block_size
    ids = block_idx.long()
    ids = torch.where((ids >= 0) & (ids < cur), ids, -1).sort(dim=-1).values
    repeat = torch.zeros_like(ids, dtype=torch.bool)
    repeat[..., 1:] = ids[..., 1:] == ids[..., :-1]
    ids = ids.masked_fill(repeat, -1)
    ids = torch.cat([ids, ids.new_full((batch, heads_kv, 1), cur)], dim=-1)
    k, v, pos = gather_blocks(k_cache, v_cache, ids, block_size, seq_len)
    valid = pos >= 0
    # The GQA group becomes SDPA's query-length axis, so one mask per KV head serves all its query heads.
    qg = q.view(batch, heads_kv, heads_q // heads_kv, dim)
    out = F.scaled_dot_product_attention(qg, k, v, attn_mask=valid[:, :, None, :], scale=scale)
    return out.reshape(batch, heads_q, dim)


def triton_block_sparse_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    seq_len: int,
    block_idx: torch.Tensor,
    block_size: int = 64,
    scale: float | None = None,
    *,
    out: torch.Tensor | None = None,
    num_splits: int | None = None,
    num_warps: int = 4,
    num_stages: int = 2,
) -> torch.Tensor:
    """Block-sparse split-K flash decoding in Triton: grid (B, H_kv, splits), then a log-sum-exp combine.

    Each program loads its GQA group's queries once (padded to 16 rows for ``tl.dot``) and streams its share
    of the selected blocks, one ``block_size`` x D tile of K and of V per step, through an fp32 online
    softmax.

    Args:
        q: Queries [B, H_q, D], bf16/fp16/fp32.
        k_cache: Keys [B, H_kv, L_cap, D], q's dtype; any strides.
        v_cache: Values [B, H_kv, L_cap, D], q's dtype; any strides.
        seq_len: Tokens in the cache; the current block is ``(seq_len - 1) // block_size``.
        block_idx: Selected block ids [B, H_kv, n_sel], int32; see the module docstring for the rules.
        block_size: Tokens per block.
        scale: Softmax scale; default 1/sqrt(D).
        out: Optional output [B, H_q, D] in q's dtype, written in full.
        num_splits: Splits of the n_sel + 1 blocks per (row, KV head); default fills the GPU with splits
            of >= 2 blocks.
        num_warps: Warps per split program.
        num_stages: Software-pipelining depth of the K/V loads.

    Returns:
        Attention output [B, H_q, D] in q's dtype.
    """
    _check_block_sparse_args(q, k_cache, v_cache, seq_len, block_idx, block_size)
    _require_triton(q.device)
    batch, heads_q, dim = q.shape
    heads_kv = k_cache.shape[1]
    group = heads_q // heads_kv
    n_sel = block_idx.shape[-1]
    entries = n_sel + 1
    splits = num_splits or _auto_splits(batch * heads_kv, entries, 2, q.device)
    per_split = math.ceil(entries / splits)
    out = _check_out(out, (batch, heads_q, dim), q)
    partial_o = torch.empty(batch, heads_q, splits, dim, dtype=torch.float32, device=q.device)
    partial_lse = torch.empty(batch, heads_q, splits, dtype=torch.float32, device=q.device)
    upcast, precision = _dot_flags(q.dtype)
    sm_scale = dim**-0.5 if scale is None else scale
    _block_sparse_split_kernel[(batch, heads_kv, splits)](
        q,
        k_cache,
        v_cache,
        block_idx,
        partial_o,
        partial_lse,
        seq_len,
        sm_scale * math.log2(math.e),
        *q.stride(),
        *k_cache.stride(),
        *v_cache.stride(),
        *block_idx.stride(),
        partial_o.stride(0),
        partial_o.stride(1),
        partial_o.stride(2),
        partial_lse.stride(0),
        partial_lse.stride(1),
        GROUP=group,
        HEAD_DIM=dim,
        BLOCK_SIZE=block_size,
        N_SEL=n_sel,
        ENTRIES_PER_SPLIT=per_split,
        BLOCK_G=_pow2(group, 16),
        BLOCK_D=_pow2(dim, 16),
        BLOCK_N=_pow2(block_size, 16),
        BLOCK_SEL=_pow2(n_sel),
        UPCAST=upcast,
        PRECISION=precision,
        num_warps=num_warps,
        num_stages=num_stages,
    )
    _combine(partial_o, partial_lse, out)
    return out


def block_sparse_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    seq_len: int,
    block_idx: torch.Tensor,
    block_size: int = 64,
    scale: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Decode attention over the selected KV blocks plus the current block (module docstring: the rules).

    Args:
        q: Queries [B, H_q, D].
        k_cache: Keys [B, H_kv, L_cap, D].
        v_cache: Values [B, H_kv, L_cap, D].
        seq_len: Tokens in the cache (same for every row); the newest is at ``seq_len - 1``.
        block_idx: Selected block ids [B, H_kv, n_sel], int32, -1 = padding; shared by each GQA group.
        block_size: Tokens per block.
        scale: Softmax scale; default 1/sqrt(D).
        impl: ``"triton"``, ``"torch"`` or ``"auto"`` (Triton on CUDA tensors, torch otherwise).

    Returns:
        Attention output [B, H_q, D] in q's dtype.

    Raises:
        UsageError: An argument breaks the contract, or ``impl`` is unknown.
        DeviceUnavailableError: ``impl="triton"`` where Triton cannot run.
    """
    if _resolve_impl(impl, q.device) == "triton":
        return triton_block_sparse_decode(q, k_cache, v_cache, seq_len, block_idx, block_size, scale)
    return torch_block_sparse_decode(q, k_cache, v_cache, seq_len, block_idx, block_size, scale)


# ---------------------------------------------------------------------------------------------------------
# Token-sparse decode (DSA's sparse MLA, MQA mode)
# ---------------------------------------------------------------------------------------------------------


def _check_token_sparse_args(
    q: torch.Tensor, kv_cache: torch.Tensor, seq_len: int, token_idx: torch.Tensor, d_v: int
) -> None:
    """Raise :class:`UsageError` naming the first argument that breaks the token-sparse contract."""
    if q.dim() != 3 or kv_cache.dim() != 3:
        raise UsageError(
            f"q must be [B, H, D_qk] and kv_cache [B, L_cap, D_qk]; got {q.shape}, {kv_cache.shape}"
        )
    batch, _, d_qk = q.shape
    if kv_cache.shape[0] != batch or kv_cache.shape[2] != d_qk:
        raise UsageError(f"q {tuple(q.shape)} and kv_cache {tuple(kv_cache.shape)} disagree on B or D_qk")
    if q.dtype != kv_cache.dtype:
        raise UsageError(f"q and kv_cache must share one dtype; got {q.dtype}, {kv_cache.dtype}")
    if not 1 <= d_v <= d_qk:
        raise UsageError(f"d_v={d_v} must be in 1..D_qk={d_qk}")
    if token_idx.dim() != 2 or token_idx.shape[0] != batch:
        raise UsageError(f"token_idx must be [B={batch}, n_sel]; got {tuple(token_idx.shape)}")
    if token_idx.dtype not in (torch.int32, torch.int64):
        raise UsageError(f"token_idx must be int32 (or int64); got {token_idx.dtype}")
    if not 1 <= seq_len <= kv_cache.shape[1]:
        raise UsageError(f"seq_len={seq_len} must be in 1..L_cap={kv_cache.shape[1]}")
    if not q.device == kv_cache.device == token_idx.device:
        raise UsageError("q, kv_cache and token_idx must be on one device")


def reference_token_sparse_decode(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    seq_len: int,
    token_idx: torch.Tensor,
    d_v: int,
    scale: float | None = None,
) -> torch.Tensor:
    """Exact token-sparse MLA decode (MQA mode) in float64 (for tests).

    Args:
        q: Queries [B, H, D_qk].
        kv_cache: Latent cache [B, L_cap, D_qk]; values are its first ``d_v`` dims.
        seq_len: Tokens in the cache; entries >= seq_len are ignored.
        token_idx: Selected positions [B, n_sel], -1 = padding.
        d_v: Value width.
        scale: Softmax scale; default 1/sqrt(D_qk).

    Returns:
        Attention output [B, H, d_v] in float64; zeros for a row with no valid entry.
    """
    _check_token_sparse_args(q, kv_cache, seq_len, token_idx, d_v)
    idx = token_idx.long()
    valid = (idx >= 0) & (idx < seq_len)
    rows = torch.where(valid, idx, 0)[..., None].expand(-1, -1, kv_cache.shape[2])
    kv = kv_cache.gather(1, rows).double()
    scores = torch.einsum("bhd,bnd->bhn", q.double(), kv) * (q.shape[2] ** -0.5 if scale is None else scale)
    scores = scores.masked_fill(~valid[:, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return torch.einsum("bhn,bnd->bhd", probs, kv[..., :d_v])


def torch_token_sparse_decode(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    seq_len: int,
    token_idx: torch.Tensor,
    d_v: int,
    scale: float | None = None,
) -> torch.Tensor:
    """Token-sparse MLA decode in plain torch: gather the selected rows, masked SDPA.

    Args:
        q: Queries [B, H, D_qk].
        kv_cache: Latent cache [B, L_cap, D_qk]; values are its first ``d_v`` dims.
        seq_len: Tokens in the cache; entries >= seq_len are ignored.
        token_idx: Selected positions [B, n_sel], -1 = padding.
        d_v: Value width.
        scale: Softmax scale; default 1/sqrt(D_qk).

    Returns:
        Attention output [B, H, d_v] in q's dtype; zeros for a row with no valid entry.
    """
    _check_token_sparse_args(q, kv_cache, seq_len, token_idx, d_v)
    idx = token_idx.long()
    valid = (idx >= 0) & (idx < seq_len)
    rows = torch.where(valid, idx, 0)[..., None].expand(-1, -1, kv_cache.shape[2])
    kv = kv_cache.gather(1, rows)[:, None]
    # The heads become SDPA's query-length axis of one shared KV head (MQA).
    out = F.scaled_dot_product_attention(
        q[:, None], kv, kv[..., :d_v], attn_mask=valid[:, None, None, :], scale=scale
    )[:, 0]
    return torch.where(
        valid.any(dim=-1)[:, None, None], out, torch.zeros((), dtype=out.dtype, device=out.device)
    )


def triton_token_sparse_decode(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    seq_len: int,
    token_idx: torch.Tensor,
    d_v: int,
    scale: float | None = None,
    *,
    out: torch.Tensor | None = None,
    num_splits: int | None = None,
    block_h: int = 16,
    block_n: int = 32,
    num_warps: int = 4,
    num_stages: int = 2,
) -> torch.Tensor:
    """Token-sparse MLA split-K flash decoding in Triton: grid (B, H / block_h, splits), then a combine.

    Each program holds ``block_h`` heads and streams ``block_n`` selected rows per step; the first ``d_v``
    dims of a row are loaded once and used as both key part and value.

    Args:
        q: Queries [B, H, D_qk], bf16/fp16/fp32 (DSA: H = 128, D_qk = 576).
        kv_cache: Latent cache [B, L_cap, D_qk] in q's dtype; any strides.
        seq_len: Tokens in the cache; entries >= seq_len are ignored.
        token_idx: Selected positions [B, n_sel], int32, -1 = padding.
        d_v: Value width, the first ``d_v`` dims of each row (DSA: 512).
        scale: Softmax scale; default 1/sqrt(D_qk) (DeepSeek-V3.2 uses :data:`DSA_SCALE`).
        out: Optional output [B, H, d_v] in q's dtype, written in full.
        num_splits: Splits of the selection per (row, head block); default fills the GPU (>= 2 steps each).
        block_h: Heads per program (>= 16, power of two).
        block_n: Selected rows per step (>= 16, power of two).
        num_warps: Warps per split program.
        num_stages: Software-pipelining depth of the row loads.

    Returns:
        Attention output [B, H, d_v] in q's dtype; zeros for a row with no valid entry.
    """
    _check_token_sparse_args(q, kv_cache, seq_len, token_idx, d_v)
    _require_triton(q.device)
    if block_h < 16 or block_n < 16 or block_h & (block_h - 1) or block_n & (block_n - 1):
        raise UsageError(f"block_h={block_h} and block_n={block_n} must be powers of two >= 16")
    batch, heads, d_qk = q.shape
    n_sel = token_idx.shape[1]
    head_blocks = math.ceil(heads / block_h)
    steps = max(math.ceil(n_sel / block_n), 1)
    splits = num_splits or _auto_splits(batch * head_blocks, steps, 2, q.device)
    per_split = math.ceil(steps / splits) * block_n
    out = _check_out(out, (batch, heads, d_v), q)
    partial_o = torch.empty(batch, heads, splits, d_v, dtype=torch.float32, device=q.device)
    partial_lse = torch.empty(batch, heads, splits, dtype=torch.float32, device=q.device)
    upcast, precision = _dot_flags(q.dtype)
    sm_scale = d_qk**-0.5 if scale is None else scale
    _token_sparse_split_kernel[(batch, head_blocks, splits)](
        q,
        kv_cache,
        token_idx,
        partial_o,
        partial_lse,
        seq_len,
        sm_scale * math.log2(math.e),
        *q.stride(),
        *kv_cache.stride(),
        *token_idx.stride(),
        partial_o.stride(0),
        partial_o.stride(1),
        partial_o.stride(2),
        partial_lse.stride(0),
        partial_lse.stride(1),
        N_HEADS=heads,
        D_V=d_v,
        D_REST=d_qk - d_v,
        N_SEL=n_sel,
        TOKENS_PER_SPLIT=per_split,
        BLOCK_H=block_h,
        BLOCK_DV=_pow2(d_v, 16),
        BLOCK_DR=_pow2(d_qk - d_v, 16),
        BLOCK_N=block_n,
        UPCAST=upcast,
        PRECISION=precision,
        num_warps=num_warps,
        num_stages=num_stages,
    )
    _combine(partial_o, partial_lse, out)
    return out


def token_sparse_decode(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    seq_len: int,
    token_idx: torch.Tensor,
    d_v: int,
    scale: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Decode attention of every head over selected rows of one shared latent KV head (DSA sparse MLA).

    Args:
        q: Queries [B, H, D_qk] (DSA: H = 128, D_qk = 576).
        kv_cache: Latent cache [B, L_cap, D_qk]; values are the first ``d_v`` dims of each row.
        seq_len: Tokens in the cache; entries >= seq_len are ignored.
        token_idx: Selected positions [B, n_sel], int32, -1 = padding.
        d_v: Value width (DSA: 512).
        scale: Softmax scale; default 1/sqrt(D_qk).
        impl: ``"triton"``, ``"torch"`` or ``"auto"`` (Triton on CUDA tensors, torch otherwise).

    Returns:
        Attention output [B, H, d_v] in q's dtype.

    Raises:
        UsageError: An argument breaks the contract, or ``impl`` is unknown.
        DeviceUnavailableError: ``impl="triton"`` where Triton cannot run.
    """
    if _resolve_impl(impl, q.device) == "triton":
        return triton_token_sparse_decode(q, kv_cache, seq_len, token_idx, d_v, scale)
    return torch_token_sparse_decode(q, kv_cache, seq_len, token_idx, d_v, scale)


# ---------------------------------------------------------------------------------------------------------
# Roofline benchmark cases
# ---------------------------------------------------------------------------------------------------------


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64 (NaN anywhere gives NaN)."""
    out, ref = out.double(), ref.double()
    return float(torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref))


def _check_close(out: torch.Tensor, ref: torch.Tensor) -> None:
    """BenchCase check: the Triton and torch outputs agree within the bf16 tolerance."""
    err = relative_error(out, ref)
    if not err < BF16_REL_TOL:  # NaN fails too
        raise AssertionError(
            f"relative error {err:.3g} between the Triton and torch paths exceeds {BF16_REL_TOL}"
        )


def _seeds(seed: int) -> Callable[[], int]:
    """A fresh seed per call, so rotated input sets hold different data and selections."""
    counter = itertools.count(seed)
    return lambda: next(counter)


def block_sparse_case(
    batch: int,
    heads_q: int,
    heads_kv: int,
    head_dim: int,
    context: int,
    budget: int,
    block_size: int = 64,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
) -> BenchCase:
    """A block-sparse decode benchmark case: a ``budget``-token selection out of a ``context``-token cache.

    The selection is ``budget // block_size - 1`` distinct random complete blocks per KV head plus the
    current block (LServe's split of the budget); ``seq_len = context - block_size // 3`` leaves the
    current block partial.

    Args:
        batch: Batch rows B.
        heads_q: Query heads H_q.
        heads_kv: KV heads H_kv.
        head_dim: Head dim D.
        context: Cache capacity L_cap in tokens.
        budget: Token budget, including the current block.
        block_size: Tokens per block.
        dtype: Dtype of q and the cache.
        seed: First seed; each ``make_inputs`` call takes the next.

    Returns:
        The case; ``bytes_moved`` counts the selected K and V rows, q, out and the ids, each once.
    """
    seq_len = context - block_size // 3
    cur = (seq_len - 1) // block_size
    n_sel = budget // block_size - 1
    if not 0 <= n_sel <= cur:
        raise UsageError(
            f"budget={budget} needs 1..{cur + 1} blocks of {block_size} in a {context}-token cache"
        )
    next_seed = _seeds(seed)

    def make_inputs(device: torch.device) -> dict[str, Any]:
        gen = torch.Generator(device=device).manual_seed(next_seed())
        cache_shape = (batch, heads_kv, context, head_dim)
        scores = torch.rand(batch, heads_kv, cur, generator=gen, device=device)
        return {
            "q": torch.randn(batch, heads_q, head_dim, generator=gen, device=device, dtype=dtype),
            "k_cache": torch.randn(cache_shape, generator=gen, device=device, dtype=dtype),
            "v_cache": torch.randn(cache_shape, generator=gen, device=device, dtype=dtype),
            "seq_len": seq_len,
            "block_idx": scores.topk(n_sel, dim=-1).indices.int(),
            "block_size": block_size,
        }

    tokens = n_sel * block_size + seq_len - cur * block_size
    elem = torch.empty((), dtype=dtype).element_size()
    return BenchCase(
        kernel="block_sparse_decode",
        label=f"B={batch} Hq/Hkv={heads_q}/{heads_kv} d={head_dim} L={context} budget={budget}",
        make_inputs=make_inputs,
        optimized=triton_block_sparse_decode,
        torch_path=torch_block_sparse_decode,
        bytes_moved=2 * batch * heads_kv * tokens * head_dim * elem
        + 2 * batch * heads_q * head_dim * elem
        + batch * heads_kv * n_sel * 4,
        flops=4 * batch * heads_q * tokens * head_dim,
        targets={"bw_fraction": 0.6} if batch >= 8 else {},
        check=_check_close,
    )


def token_sparse_case(
    batch: int,
    heads: int,
    d_qk: int,
    d_v: int,
    context: int,
    n_sel: int,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
) -> BenchCase:
    """A token-sparse (DSA sparse MLA) decode benchmark case: ``n_sel`` distinct random positions.

    Args:
        batch: Batch rows B.
        heads: Query heads H.
        d_qk: Key width (latent + rope).
        d_v: Value width (the latent part).
        context: Cache capacity L_cap in tokens; ``seq_len = context - 7``.
        n_sel: Selected positions per row.
        dtype: Dtype of q and the cache (DSA stores FP8 with scales, 656 B/token; bf16 here).
        seed: First seed; each ``make_inputs`` call takes the next.

    Returns:
        The case; ``bytes_moved`` counts the selected rows, q, out and the ids, each once.
    """
    seq_len = context - 7
    if not 1 <= n_sel <= seq_len:
        raise UsageError(f"n_sel={n_sel} must be in 1..{seq_len} for a {context}-token cache")
    next_seed = _seeds(seed)

    def make_inputs(device: torch.device) -> dict[str, Any]:
        gen = torch.Generator(device=device).manual_seed(next_seed())
        scores = torch.rand(batch, seq_len, generator=gen, device=device)
        return {
            "q": torch.randn(batch, heads, d_qk, generator=gen, device=device, dtype=dtype),
            "kv_cache": torch.randn(batch, context, d_qk, generator=gen, device=device, dtype=dtype),
            "seq_len": seq_len,
            "token_idx": scores.topk(n_sel, dim=-1).indices.int(),
            "d_v": d_v,
            "scale": DSA_SCALE,
        }

    elem = torch.empty((), dtype=dtype).element_size()
    return BenchCase(
        kernel="token_sparse_decode",
        label=f"B={batch} H={heads} d={d_qk}/{d_v} L={context} k={n_sel}",
        make_inputs=make_inputs,
        optimized=triton_token_sparse_decode,
        torch_path=torch_token_sparse_decode,
        bytes_moved=batch * (n_sel * d_qk + heads * (d_qk + d_v)) * elem + batch * n_sel * 4,
        flops=2 * batch * heads * n_sel * (d_qk + d_v),
        targets={"bw_fraction": 0.6} if batch >= 8 else {},
        check=_check_close,
    )


def bench_cases() -> list[BenchCase]:
    """Roofline cases: SeerAttention-R shapes (Qwen3-8B / Llama-3.1-8B attention) and DSA's sparse MLA.

    Block-sparse: H_q/H_kv = 32/8, d = 128, 64-token blocks, budgets 2048-4096, contexts 8K-128K
    (SeerAttention-R defaults, arXiv 2506.08889). Token-sparse: H = 128, d_qk = 576, d_v = 512, top-2048
    (DeepSeek-V3.2 config).
    The first case of each family is the representative one that ``quick`` runs keep.
    """
    return [
        block_sparse_case(8, 32, 8, 128, 32768, 4096),
        block_sparse_case(8, 32, 8, 128, 8192, 2048),
        block_sparse_case(8, 32, 8, 128, 131072, 4096),
        block_sparse_case(16, 32, 8, 128, 131072, 2048),
        block_sparse_case(1, 32, 8, 128, 32768, 4096),
        token_sparse_case(8, 128, 576, 512, 32768, 2048),
        token_sparse_case(8, 128, 576, 512, 131072, 2048),
        token_sparse_case(32, 128, 576, 512, 32768, 2048),
        token_sparse_case(1, 128, 576, 512, 131072, 2048),
    ]
