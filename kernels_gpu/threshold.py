"""Threshold selection: SeerAttention-R's threshold mode, every block whose gate logit clears a threshold.

logit[b, h, n] = fp32(q[b, h] . keys[b, h, n]) * fp32(1 / sqrt(D)); a block is selected iff n < n_valid
and logit >= threshold. The output lists the selected block indices of each row in ascending order,
padded with -1, plus the counts. Synthetic weights make any fixed threshold meaningless, so suites set a
target selection ratio and turn it into a threshold with :func:`calibrate_threshold` (workloads.md,
"Synthetic weights").

The Triton path takes two launches: each tile computes its logits (written once, 4 B per 256 B key) and
its count; then each tile places its selected indices after those of earlier tiles and its -1 padding
after the row's total, so every output slot is written exactly once. :func:`native_threshold` is what a
user writes (``torch.matmul``, compare, a stable sort of the mask), the benchmark's baseline.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from bench.errors import UsageError
from kernels_gpu.registry import BenchCase
from kernels_gpu.relevancy_topk import row_dots, tile_shape
from kernels_gpu.topk import bmm_fp32, cdiv, jit, next_pow2, resolve_impl, rows_n_valid, tl


def _shapes(q: torch.Tensor, keys: torch.Tensor) -> tuple[int, int, int, int]:
    if keys.dim() != 4 or q.shape != (keys.shape[0], keys.shape[1], keys.shape[3]):
        raise UsageError(
            f"threshold expects q [B, H, D] and keys [B, H, N, D]; got q {tuple(q.shape)}, "
            f"keys {tuple(keys.shape)}"
        )
    b, h, n, d = keys.shape
    return b, h, n, d


def threshold_logits(q: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Gate logits fp32(q.k) * fp32(1/sqrt(D)) with framework ops, e.g. to calibrate a threshold.

    Args:
        q: [B, H, D] queries.
        keys: [B, H, N, D] keys, same dtype.

    Returns:
        fp32 [B, H, N] logits.
    """
    b, h, n, d = _shapes(q, keys)
    dots = bmm_fp32(keys.reshape(b * h, n, d), q.reshape(b * h, d, 1)).reshape(b, h, n)
    return dots * torch.tensor(1.0 / math.sqrt(d), dtype=torch.float32, device=dots.device)


def calibrate_threshold(scores: torch.Tensor, ratio: float) -> float:
    """The threshold that selects a target fraction of ``scores`` under the ``logit >= threshold`` rule.

    Args:
        scores: fp32 logits, any shape (e.g. :func:`threshold_logits` over the valid blocks).
        ratio: Target selected fraction in (0, 1].

    Returns:
        The m-th largest score, m = clamp(round(ratio * numel), 1, numel): at least m entries clear it
        (more when scores tie at it).

    Raises:
        UsageError: ``ratio`` is outside (0, 1] or ``scores`` is empty.
    """
    if not 0.0 < ratio <= 1.0:
        raise UsageError(f"ratio={ratio!r} must be in (0, 1]: the fraction of blocks to select")
    flat = scores.detach().reshape(-1).float()
    if flat.numel() == 0:
        raise UsageError("calibrate_threshold needs at least one score")
    m = min(max(round(ratio * flat.numel()), 1), flat.numel())
    return float(torch.topk(flat, m).values[-1])


def _lists_from_mask(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    counts = mask.sum(-1, dtype=torch.int32)
    # A stable sort of "not selected" puts the selected columns first, in ascending order. Unlike
    # torch.nonzero (whose output size needs a host sync) it runs inside a CUDA graph.
    order = torch.sort((~mask).to(torch.uint8), dim=-1, stable=True).indices
    col = torch.arange(mask.shape[-1], device=mask.device)
    return torch.where(col < counts[..., None], order, -1).to(torch.int32), counts


def reference_threshold(
    q: torch.Tensor, keys: torch.Tensor, n_valid: int | torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact reference: float64 dot products rounded once to fp32, then scaled in fp32 (tests only).

    Args:
        q: [B, H, D] queries.
        keys: [B, H, N_cap, D] keys.
        n_valid: Valid blocks per row: an int, or an int tensor [B] or [B, H].
        threshold: Logit threshold.

    Returns:
        (blocks int32 [B, H, N_cap] ascending, -1 padded; counts int32 [B, H]).
    """
    b, h, n, d = _shapes(q, keys)
    dots = torch.einsum("bhnd,bhd->bhn", keys.double(), q.double()).float()
    logits = dots * torch.tensor(1.0 / math.sqrt(d), dtype=torch.float32)
    nv = rows_n_valid(n_valid, (b, h), n, keys.device).view(b, h, 1)
    mask = (torch.arange(n, device=keys.device) < nv) & (
        logits >= torch.tensor(threshold, dtype=torch.float32)
    )
    return _lists_from_mask(mask)


def torch_threshold(
    q: torch.Tensor, keys: torch.Tensor, n_valid: int | torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Framework-native path: matmul to fp32 logits, compare, stable sort of the mask into index lists.

    Args:
        q: [B, H, D] bf16/fp16/fp32 queries.
        keys: [B, H, N_cap, D] keys, same dtype.
        n_valid: Valid blocks per row: an int, or an int tensor [B] or [B, H].
        threshold: Logit threshold.

    Returns:
        (blocks int32 [B, H, N_cap] ascending, -1 padded; counts int32 [B, H]).
    """
    b, h, n, _ = _shapes(q, keys)
    nv = rows_n_valid(n_valid, (b, h), n, keys.device).view(b, h, 1)
    mask = (torch.arange(n, device=keys.device) < nv) & (threshold_logits(q, keys) >= threshold)
    return _lists_from_mask(mask)


def native_threshold(
    q: torch.Tensor, keys: torch.Tensor, n_valid: int | torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Framework-native path, what a user writes: ``torch.matmul``, scale, compare, stable sort of the mask.

    Logits come out in the inputs' dtype as ``torch.matmul`` returns them (bf16 in the workloads), and the
    comparison with a Python float runs in that dtype too (the threshold rounds to bf16), so blocks within
    about 2^-7 (relative) of the threshold may fall either side of it, unlike the fp32 paths. Blocks past
    ``n_valid`` leave the mask (an int that covers the rows needs nothing). The lists come from a stable
    sort of the mask, which runs inside a CUDA graph; ``torch.nonzero`` would need a host sync.

    Args:
        q: [B, H, D] queries.
        keys: [B, H, N_cap, D] keys, same dtype.
        n_valid: Valid blocks per row: an int, or an int tensor [B] or [B, H].
        threshold: Logit threshold.

    Returns:
        (blocks int32 [B, H, N_cap] ascending, -1 padded; counts int32 [B, H]).
    """
    b, h, n, d = _shapes(q, keys)
    mask = torch.matmul(keys, q[..., None])[..., 0] * (1.0 / math.sqrt(d)) >= threshold
    if not (isinstance(n_valid, int) and n_valid >= n):
        nv = rows_n_valid(n_valid, (b, h), n, keys.device).view(b, h, 1)
        mask &= torch.arange(n, device=keys.device) < nv
    return _lists_from_mask(mask)


def triton_threshold(
    q: torch.Tensor, keys: torch.Tensor, n_valid: int | torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton path: logits + per-tile counts, then ordered placement (two launches).

    Args:
        q: [B, H, D] bf16/fp16/fp32 queries.
        keys: [B, H, N_cap, D] keys, same dtype; copied if the last dimension is not contiguous.
        n_valid: Valid blocks per row: an int, or an int tensor [B] or [B, H].
        threshold: Logit threshold.

    Returns:
        (blocks int32 [B, H, N_cap] ascending, -1 padded; counts int32 [B, H]).
    """
    resolve_impl("triton", q, keys)
    b, h, n, d = _shapes(q, keys)
    if keys.stride(-1) != 1:
        keys = keys.contiguous()
    if q.stride(-1) != 1:
        q = q.contiguous()
    rows = b * h
    nv = rows_n_valid(n_valid, (b, h), n, keys.device)
    block_n, block_d = tile_shape(n, d, 1, radix=True)
    tiles = cdiv(n, block_n)
    dev = keys.device
    logits = torch.empty((rows, n), dtype=torch.float32, device=dev)
    tile_counts = torch.empty((rows, tiles), dtype=torch.int32, device=dev)
    blocks = torch.empty((rows, n), dtype=torch.int32, device=dev)
    counts = torch.empty((rows,), dtype=torch.int32, device=dev)
    scale = 1.0 / math.sqrt(d)
    _logits_kernel[(rows, tiles)](
        q, keys, nv, logits, tile_counts, h, n, q.stride(0), q.stride(1),
        keys.stride(0), keys.stride(1), keys.stride(2), scale, threshold,
        D=d, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=8,
    )  # fmt: skip
    _place_kernel[(rows, tiles)](
        logits,
        nv,
        tile_counts,
        blocks,
        counts,
        n,
        threshold,
        BLOCK_N=block_n,
        BLOCK_T=next_pow2(tiles),
        num_warps=8,
    )
    return blocks.view(b, h, n), counts.view(b, h)


def threshold(
    q: torch.Tensor, keys: torch.Tensor, n_valid: int | torch.Tensor, threshold: float, impl: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every valid block whose logit q.k / sqrt(D) is >= ``threshold``, as ascending index lists.

    Args:
        q: [B, H, D] gate queries (bf16 in the workloads; D = 128).
        keys: [B, H, N_cap, D] pooled block keys; only the first n_valid of each row count.
        n_valid: Valid blocks per row: an int, or an int tensor [B] or [B, H].
        threshold: Logit threshold (see :func:`calibrate_threshold`).
        impl: ``"auto"``, ``"torch"`` or ``"triton"`` (see :func:`kernels_gpu.topk.resolve_impl`).

    Returns:
        (blocks int32 [B, H, N_cap] ascending, -1 padded; counts int32 [B, H]).
    """
    path = resolve_impl(impl, q, keys)
    fn = triton_threshold if path == "triton" else torch_threshold
    return fn(q, keys, n_valid, threshold)


@jit
def _logits_kernel(
    q_ptr, k_ptr, n_valid_ptr, logits_ptr, tile_counts_ptr, H, n_cap,
    s_qb, s_qh, s_kb, s_kh, s_kn, scale, thr,
    D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    r = tl.program_id(0)
    t = tl.program_id(1)
    n = tl.minimum(tl.load(n_valid_ptr + r), n_cap)
    offs = t * BLOCK_N + tl.arange(0, BLOCK_N)
    valid = offs < n
    q_row = q_ptr + (r // H).to(tl.int64) * s_qb + (r % H).to(tl.int64) * s_qh
    k_base = k_ptr + (r // H).to(tl.int64) * s_kb + (r % H).to(tl.int64) * s_kh
    logit = row_dots(q_row, k_base, offs, valid, s_kn, D, BLOCK_N, BLOCK_D) * scale
    tl.store(logits_ptr + r.to(tl.int64) * n_cap + offs, logit, mask=valid)
    tl.store(tile_counts_ptr + r * tl.num_programs(1) + t, tl.sum((valid & (logit >= thr)).to(tl.int32), 0))


@jit
def _place_kernel(
    logits_ptr, n_valid_ptr, tile_counts_ptr, blocks_ptr, counts_ptr, n_cap, thr,
    BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    # Selected entries go to [base, base + count) in index order; the others (including slots past
    # n_valid) fill the padding from total + (unselected entries of earlier tiles) with -1.
    r = tl.program_id(0)
    t = tl.program_id(1)
    n = tl.minimum(tl.load(n_valid_ptr + r), n_cap)
    tj = tl.arange(0, BLOCK_T)
    c = tl.load(tile_counts_ptr + r * tl.num_programs(1) + tj, mask=tj < tl.num_programs(1), other=0)
    base = tl.sum(tl.where(tj < t, c, 0), 0)
    total = tl.sum(c, 0)
    offs = t * BLOCK_N + tl.arange(0, BLOCK_N)
    inside = offs < n_cap
    logit = tl.load(logits_ptr + r.to(tl.int64) * n_cap + offs, mask=offs < n, other=0.0)
    sel = (offs < n) & (logit >= thr)
    rest = inside & ~sel
    out = blocks_ptr + r.to(tl.int64) * n_cap
    tl.store(out + base + tl.cumsum(sel.to(tl.int32), 0) - 1, offs, mask=sel)
    pad_pos = total + (t * BLOCK_N - base) + tl.cumsum(rest.to(tl.int32), 0) - 1
    tl.store(out + pad_pos, tl.full([BLOCK_N], -1, tl.int32), mask=rest)
    if t == 0:
        tl.store(counts_ptr + r, total)


# ---------------------------------------------------------------------------------------------------------
# Benchmark cases.

SELECT_RATIO = 0.1
"""Selected fraction of the benchmark cases: SeerAttention-R's ~90% block sparsity (workloads.md)."""


def _case(b: int, ctx: int, targets: dict[str, float]) -> BenchCase:
    h, d, n = 8, 128, ctx // 64  # Qwen3-8B: 8 KV heads; one 128-d gate key per 64-token block

    def make_inputs(device: torch.device) -> dict[str, Any]:
        g = torch.Generator(device=device)
        g.manual_seed(b * 7919 + ctx)
        q = torch.randn((b, h, d), generator=g, device=device, dtype=torch.bfloat16)
        keys = torch.randn((b, h, n, d), generator=g, device=device, dtype=torch.bfloat16)
        thr = calibrate_threshold(threshold_logits(q, keys), SELECT_RATIO)
        return {"q": q, "keys": keys, "n_valid": n, "threshold": thr}

    rows = b * h
    return BenchCase(
        kernel="threshold",
        label=f"B={b} L={ctx} blocks={n} ratio={SELECT_RATIO}",
        make_inputs=make_inputs,
        optimized=triton_threshold,
        torch_path=native_threshold,
        bytes_moved=rows * n * d * 2 + rows * d * 2 + rows * n * 4 + rows * 4,
        flops=2 * rows * n * d,
        targets=targets,
        check=check_lists,
    )


NATIVE_FLIP_FRACTION = 0.005
"""Fraction of blocks (plus 2) whose selection :func:`check_lists` lets differ between the paths. The native
path rounds logit and threshold to bf16, moving blocks within ~2^-7 (relative) of the threshold across it:
at the cases' 10% selection of N(0, 1) logits about 0.1% of the blocks (density 0.18 at 1.28, times a
mean rounding shift of ~0.006; a CPU emulation of the native path on the cases' inputs flipped 0.06-0.10%);
5x margin. fp32 paths alone differ in a few blocks per million at most."""


def check_lists(
    a: tuple[torch.Tensor, torch.Tensor],
    b: tuple[torch.Tensor, torch.Tensor],
    max_flip_fraction: float = NATIVE_FLIP_FRACTION,
) -> None:
    """Asserts two threshold selections are well-formed and select the same blocks up to boundary flips.

    Symmetric. Each must list its selected blocks in ascending order, then -1, with counts matching the
    lists; at most 2 + ``max_flip_fraction`` of all block slots may be selected by one result only
    (blocks whose logit rounds to the other side of the threshold).

    Args:
        a: (blocks int [B, H, N_cap], counts int [B, H]) of one path.
        b: The same for the other path.
        max_flip_fraction: Allowed fraction of differing selections.

    Raises:
        AssertionError: On a malformed list or too many differing selections.
    """
    (ba, ca), (bb, cb) = ((t.cpu() for t in pair) for pair in (a, b))
    assert ba.shape == bb.shape and ca.shape == cb.shape, "shapes differ"
    n = ba.shape[-1]

    def selected(blocks: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        rows, c = blocks.reshape(-1, n).long(), counts.reshape(-1, 1).long()
        listed = torch.arange(n) < c
        assert ((rows >= 0) == listed).all(), "lists are not their counts of block ids followed by -1"
        assert ((rows[:, 1:] > rows[:, :-1]) | ~listed[:, 1:]).all(), "a list is not strictly ascending"
        mask = torch.zeros((rows.shape[0], n + 1), dtype=torch.bool)
        mask.scatter_(1, torch.where(listed, rows, n), True)
        return mask[:, :n]

    differ = int((selected(ba, ca) ^ selected(bb, cb)).sum())
    allowed = 2 + int(max_flip_fraction * ba.numel())
    assert differ <= allowed, f"{differ} selections differ (at most {allowed} allowed)"


def bench_cases() -> list[BenchCase]:
    """Roofline sizes: Qwen3-8B gates at contexts 8K-1M (L/64 blocks per KV head), batch 1 and 16.

    Returns:
        Cases selecting :data:`SELECT_RATIO` of the blocks; those reading >= 64 MB target 70% of copy
        bandwidth.
    """
    cases = []
    for ctx in (8192, 32768, 131072, 1 << 20):
        for b in (1, 16, 64):
            nbytes = b * 8 * (ctx // 64) * 256
            cases.append(_case(b, ctx, {"bw_fraction": 0.70} if nbytes >= 64 << 20 else {}))
    return cases
