"""Exact top-k selection shared by every scoring kernel: the tie rule, packed keys, and both selection paths.

Tie rule: a row's top-k is exactly the k largest entries by (score descending, index ascending), sorted in
that order, padded with index -1 and score -inf when a row has fewer than k valid entries. NaN scores are
not supported (their order is unspecified). -0.0 counts as +0.0.

The GPU makes this exact and unique by packing each fp32 score into an int64 key: the upper 32 bits hold
an order-preserving integer image of the score, the lower 32 bits hold ``0xFFFFFFFF - index``, so the
largest packed keys are the answer and no two keys are equal. Two Triton selection paths consume them:

- tile path (``k`` rounded up to a power of two is at most ``TILE_MAX_K``): each program reduces a tile to
  its own top-k with ``tl.topk`` (a bitonic network) and merge kernels reduce those candidates; the fused
  scoring kernels call the tile step in registers, so their scores never reach global memory.
- radix path (larger ``k``, e.g. DeepSeek's top-2048): a 2048-bin histogram of the top 11 key bits (sign,
  exponent, 2 mantissa bits: 4 buckets per octave), fused into the scoring kernel or from
  :func:`triton_topk`'s own pass; a many-program partition keeps the entries above the threshold bucket and
  collects those in it; one program per row then narrows the threshold 8 bits at a time over those
  candidates' packed keys (unique, so score ties resolve by index) and sorts the k selected keys.

Also here: :func:`resolve_impl` (the ``impl`` argument every kernel family takes), the torch and exact
reference paths of a plain top-k over materialized scores, :func:`check_topk` for comparing exact paths,
and the framework-native selection every ``native_<op>`` ends in (:func:`native_topk`: what a user writes,
``torch.topk(sorted=False)`` without a tie rule, the baseline of the benchmark's speedups) with
:func:`check_native`, which compares a native result to an exact one up to ties and score rounding.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import torch

from bench.errors import DeviceUnavailableError, UsageError
from kernels_gpu.registry import BenchCase

try:
    import triton
    import triton.language as tl
except ImportError:  # the torch paths still work; resolve_impl() refuses impl="triton"
    triton = None
    tl = None

INTERPRETED = triton is not None and os.environ.get("TRITON_INTERPRET", "0") == "1"
"""True when the kernels were defined under Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""

IMPLS = ("auto", "torch", "triton")
"""Values of every kernel family's ``impl`` argument."""

SENTINEL = -(2**63)
"""Packed key of an empty slot: below every valid packed key."""

TILE_MAX_K = 256
"""Largest power-of-two k the tile path handles; larger k takes the radix path."""

MAX_K = 8192
"""Largest k of the Triton paths (the final sort of k keys runs in one program)."""

RADIX_WS = 2048 + 256 + 2
"""int32 words of radix workspace per row: digit-0 histogram, level-1 histogram, two list lengths."""

MERGE_BLOCK = 4096
"""Most candidates one merge program reduces to k."""

SCORES_TILE = 4096
"""Scores one tile program of :func:`triton_topk` reduces to its top-k."""

PARTITION_BLOCK = 2048
"""Scores one digit-0 histogram or partition program handles."""

REFINE_CHUNK = 4096
"""Candidates the per-row refine program handles per loop step."""


def jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``triton.jit`` when Triton is installed; otherwise the plain function, never launched."""
    return triton.jit(fn) if triton is not None else fn


def next_pow2(n: int) -> int:
    """Smallest power of two >= max(n, 1)."""
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def key_slots(k: int) -> int:
    """Packed-key slots a selection of k keeps: k rounded up to a power of two, at least 2 (``tl.topk``)."""
    return max(2, next_pow2(k))


def cdiv(a: int, b: int) -> int:
    """Ceiling of a / b for non-negative ints."""
    return -(-a // b)


def resolve_impl(impl: str, *tensors: torch.Tensor) -> str:
    """Chooses the path a kernel family runs: ``"torch"`` or ``"triton"``.

    ``"auto"`` picks Triton for CUDA tensors when Triton imports, torch otherwise (including CPU tensors
    under the interpreter). An explicit ``"triton"`` is never downgraded: it runs or raises.

    Args:
        impl: ``"auto"``, ``"torch"`` or ``"triton"``.
        *tensors: The call's tensor inputs.

    Returns:
        ``"torch"`` or ``"triton"``.

    Raises:
        UsageError: ``impl`` is not one of :data:`IMPLS`.
        DeviceUnavailableError: ``impl="triton"`` without Triton, or with CPU tensors outside the interpreter.
    """
    if impl not in IMPLS:
        raise UsageError(f"impl={impl!r} is not one of {', '.join(IMPLS)}; pass one of those")
    on_cuda = all(t.is_cuda for t in tensors)
    if impl == "auto":
        return "triton" if on_cuda and triton is not None else "torch"
    if impl == "triton":
        if triton is None:
            raise DeviceUnavailableError(
                "impl='triton' needs the triton package: install triton==3.6.0, or pass impl='torch'"
            )
        if not on_cuda and not INTERPRETED:
            raise DeviceUnavailableError(
                "impl='triton' needs CUDA tensors (got CPU ones): move the inputs to a GPU, set "
                "TRITON_INTERPRET=1 before importing kernels_gpu to use Triton's CPU interpreter, "
                "or pass impl='torch'"
            )
    return impl


def check_k(k: int, max_k: int | None = None) -> None:
    """Raises :class:`UsageError` unless 1 <= k (<= max_k when given)."""
    if not isinstance(k, int) or k < 1:
        raise UsageError(f"k={k!r} must be a positive int")
    if max_k is not None and k > max_k:
        raise UsageError(f"k={k} exceeds the Triton path's limit of {max_k}; use impl='torch' for larger k")


def rows_n_valid(
    n_valid: int | torch.Tensor, lead: tuple[int, ...], n_cap: int, device: torch.device
) -> torch.Tensor:
    """Expands a valid-entry count to one int32 per row, clamped to [0, n_cap].

    Args:
        n_valid: One int for all rows, or an integer tensor shaped like a prefix of ``lead`` (e.g. [B]
            for a [B, H] batch), broadcast over the remaining dimensions.
        lead: The batch dimensions, e.g. (B, H).
        n_cap: Capacity of each row (entries stored).
        device: Device of the result.

    Returns:
        int32 [prod(lead)] counts.

    Raises:
        UsageError: ``n_valid`` has a shape that is not a prefix of ``lead``.
    """
    rows = math.prod(lead)
    if isinstance(n_valid, int):
        return torch.full((rows,), min(max(n_valid, 0), n_cap), dtype=torch.int32, device=device)
    nv = torch.as_tensor(n_valid, device=device)
    if nv.dtype.is_floating_point or tuple(nv.shape) != tuple(lead[: nv.dim()]):
        raise UsageError(
            f"n_valid must be an int or an integer tensor shaped like a prefix of {tuple(lead)}, "
            f"got {nv.dtype} {tuple(nv.shape)}"
        )
    nv = nv.reshape(tuple(nv.shape) + (1,) * (len(lead) - nv.dim())).expand(lead)
    return nv.clamp(0, n_cap).to(torch.int32).reshape(rows).contiguous()


# ---------------------------------------------------------------------------------------------------------
# Torch paths over materialized scores.

_OUT_DTYPE_BMM: dict[str, bool] = {}


def bmm_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched matmul with fp32 results: the scoring step of the torch paths.

    On CUDA, 16-bit inputs go to ``torch.bmm(..., out_dtype=torch.float32)`` (fp32 accumulation and
    output, no up-cast copy of the inputs) where this torch build has it; otherwise the inputs are
    up-cast first.

    Args:
        a: [Z, M, K] tensor.
        b: [Z, K, N] tensor, same dtype and device.

    Returns:
        fp32 [Z, M, N] products.
    """
    if a.is_cuda and a.dtype in (torch.bfloat16, torch.float16) and b.dtype == a.dtype:
        key = str(a.device)
        if _OUT_DTYPE_BMM.get(key, True):
            try:
                out = torch.bmm(a, b, out_dtype=torch.float32)
                _OUT_DTYPE_BMM[key] = True
                return out
            except (RuntimeError, TypeError, NotImplementedError):
                _OUT_DTYPE_BMM[key] = False
    return torch.bmm(a.float(), b.float())


def order_keys(scores: torch.Tensor) -> torch.Tensor:
    """Maps fp32 scores to int32 keys whose signed order is the float order (-0.0 maps like +0.0).

    Args:
        scores: Float tensor, any shape (converted to fp32).

    Returns:
        int32 tensor of the same shape.
    """
    bits = (scores.float() + 0.0).view(torch.int32)  # -0.0 + 0.0 = +0.0 under round-to-nearest
    # Negative floats order backwards in their bit pattern: flipping the non-sign bits reverses them.
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def pack_keys(scores: torch.Tensor, n_valid: torch.Tensor) -> torch.Tensor:
    """Packs scores and their column index into unique int64 keys; columns >= n_valid become SENTINEL.

    Args:
        scores: fp32 [R, N] scores.
        n_valid: int32 [R] valid columns per row.

    Returns:
        int64 [R, N] packed keys: larger key = higher rank under the tie rule.
    """
    n = scores.shape[-1]
    col = torch.arange(n, device=scores.device, dtype=torch.int64)
    packed = (order_keys(scores).to(torch.int64) << 32) | (0xFFFFFFFF - col)
    return packed.masked_fill(col[None, :] >= n_valid.to(torch.int64)[:, None], SENTINEL)


def unpack_keys(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack_keys`.

    Args:
        packed: int64 packed keys, any shape.

    Returns:
        (index int32, score fp32), same shape; SENTINEL slots give index -1 and score -inf.
    """
    empty = packed == SENTINEL
    key = (packed >> 32).to(torch.int32)
    bits = key ^ ((key >> 31) & 0x7FFFFFFF)
    score = bits.view(torch.float32).masked_fill(empty, float("-inf"))
    index = (0xFFFFFFFF - (packed & 0xFFFFFFFF)).to(torch.int32).masked_fill(empty, -1)
    return index, score


def reference_topk(scores: torch.Tensor, n_valid: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of each row by a stable float64 sort (tests only).

    Args:
        scores: Float [R, N] scores (compared in float64).
        n_valid: int [R] valid columns per row (clamped to [0, N]).
        k: Entries per row, >= 1.

    Returns:
        (index int32 [R, k], score fp32 [R, k]) sorted by (score desc, index asc), padded with -1 / -inf.
    """
    check_k(k)
    r, n = scores.shape
    s = scores.double()
    s = torch.where(s == 0, torch.zeros_like(s), s)
    col = torch.arange(n, device=s.device)
    valid = col[None, :] < n_valid.to(s.device).long()[:, None]
    # Stable ascending sort of -score keeps equal scores in index order; invalid columns sort last.
    order = torch.sort(torch.where(valid, -s, torch.inf), dim=1, stable=True).indices
    index = torch.full((r, k), -1, dtype=torch.int32, device=s.device)
    value = torch.full((r, k), float("-inf"), dtype=torch.float32, device=s.device)
    take = min(k, n)
    picked = order[:, :take]
    ok = torch.gather(valid, 1, picked)
    index[:, :take] = torch.where(ok, picked, -1).to(torch.int32)
    value[:, :take] = torch.where(ok, torch.gather(s, 1, picked), -torch.inf).float()
    return index, value


def topk_packed_torch(packed: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk`` over packed keys, padded to k columns and unpacked.

    Args:
        packed: int64 [R, N] packed keys.
        k: Entries per row, >= 1.

    Returns:
        (index int32 [R, k], score fp32 [R, k]) in tie-rule order, padded with -1 / -inf.
    """
    take = min(k, packed.shape[-1])
    top = torch.topk(packed, take, dim=-1, sorted=True).values
    if take < k:
        top = torch.nn.functional.pad(top, (0, k - take), value=SENTINEL)
    return unpack_keys(top)


def torch_topk(
    scores: torch.Tensor, n_valid: int | torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k with framework ops: pack scores and indices into int64, then ``torch.topk``.

    A plain fp32 ``torch.topk`` breaks ties arbitrarily, so the exact tie rule needs the packed keys; the
    packing adds a few elementwise passes and a 64-bit radix select.

    Args:
        scores: fp32 [R, N] scores.
        n_valid: Valid columns per row (clamped to [0, N]): an int for every row, or int [R].
        k: Entries per row, >= 1.

    Returns:
        (index int32 [R, k], score fp32 [R, k]) sorted by (score desc, index asc), padded with -1 / -inf.
    """
    check_k(k)
    r, n = scores.shape
    if isinstance(n_valid, int):
        nv = rows_n_valid(n_valid, (r,), n, scores.device)
    else:
        nv = n_valid.to(scores.device).clamp(0, n)
    return topk_packed_torch(pack_keys(scores, nv), k)


def drop_invalid(scores: torch.Tensor, n_valid: int | torch.Tensor) -> torch.Tensor:
    """Scores without the entries past each row's valid count, as a user removes them before ``torch.topk``.

    Args:
        scores: Float [..., N] scores.
        n_valid: An int (keeps the first n_valid columns: a view, no work) or an integer tensor shaped like
            a prefix of the leading dimensions (masks the entries past each row's count with -inf).

    Returns:
        [..., min(n_valid, N)] view, or [..., N] masked scores.

    Raises:
        UsageError: ``n_valid`` is a tensor whose shape is not a prefix of the leading dimensions.
    """
    lead, n = tuple(scores.shape[:-1]), scores.shape[-1]
    if isinstance(n_valid, int):
        return scores[..., : min(max(n_valid, 0), n)]
    nv = torch.as_tensor(n_valid, device=scores.device)
    if nv.dtype.is_floating_point or tuple(nv.shape) != lead[: nv.dim()]:
        raise UsageError(
            f"n_valid must be an int or an integer tensor shaped like a prefix of {lead}, "
            f"got {nv.dtype} {tuple(nv.shape)}"
        )
    nv = nv.reshape(tuple(nv.shape) + (1,) * (len(lead) + 1 - nv.dim()))
    return scores.masked_fill(torch.arange(n, device=scores.device) >= nv, float("-inf"))


def native_topk(
    scores: torch.Tensor, n_valid: int | torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Framework-native selection, what a user writes: drop invalid entries, ``torch.topk(sorted=False)``.

    Invalid entries go first (:func:`drop_invalid`: an int ``n_valid`` slices the rows, nothing to do when
    it covers them; a tensor masks the entries past each row's count with -inf). No tie rule: among equal
    scores ``torch.topk`` picks any, and the k entries come in no particular order. Scores keep their
    dtype (bf16 scores select in bf16).

    Args:
        scores: Float [..., N] scores.
        n_valid: Valid entries per row: an int, or an integer tensor shaped like a prefix of the leading
            dimensions (e.g. [B] for [B, H, N] scores), broadcast over the rest.
        k: Entries per row, >= 1.

    Returns:
        (index int64 [..., k], score [..., k] in the scores' dtype), unordered. Slots past a row's valid
        entries hold score -inf, with index -1 past the kept columns (k > N, or k > an int ``n_valid``)
        and any index where a tensor ``n_valid`` masked the entry.

    Raises:
        UsageError: ``k`` < 1, or ``n_valid`` is a tensor whose shape is not a prefix of the leading ones.
    """
    check_k(k)
    lead = tuple(scores.shape[:-1])
    scores = drop_invalid(scores, n_valid)
    take = min(k, scores.shape[-1])
    value, index = torch.topk(scores, take, dim=-1, sorted=False)
    if take < k:
        value = torch.cat([value, value.new_full((*lead, k - take), float("-inf"))], dim=-1)
        index = torch.cat([index, index.new_full((*lead, k - take), -1)], dim=-1)
    return index, value


def triton_topk(
    scores: torch.Tensor, n_valid: int | torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of materialized scores with the Triton tile path (small k) or radix path (large k).

    Args:
        scores: fp32 [R, N] scores; the last dimension must be contiguous.
        n_valid: Valid columns per row (clamped to [0, N]): an int for every row, or int32 [R].
        k: Entries per row, 1 <= k <= :data:`MAX_K`.

    Returns:
        (index int32 [R, k], score fp32 [R, k]) sorted by (score desc, index asc), padded with -1 / -inf.
    """
    check_k(k, MAX_K)
    resolve_impl("triton", scores)
    scores = scores.float()
    if scores.stride(-1) != 1:
        scores = scores.contiguous()
    r, n = scores.shape
    if isinstance(n_valid, int):
        nv = rows_n_valid(n_valid, (r,), n, scores.device)
    else:
        nv = n_valid.to(device=scores.device, dtype=torch.int32).contiguous()
    kp = key_slots(k)
    if use_radix(k):
        ws = new_radix_workspace(r, scores.device)
        _hist0_kernel[(r, cdiv(n, PARTITION_BLOCK))](
            scores, scores.stride(0), nv, n, ws, BLOCK=PARTITION_BLOCK, num_warps=8
        )
        return radix_select(scores, nv, k, ws)
    block = min(SCORES_TILE, max(next_pow2(n), kp))
    tiles = cdiv(n, block)
    cand = torch.empty((r, tiles * kp), dtype=torch.int64, device=scores.device)
    _scores_tile_kernel[(r, tiles)](scores, scores.stride(0), nv, n, cand, BLOCK=block, KP=kp, num_warps=8)
    return merge_candidates(cand, k)


def topk(
    scores: torch.Tensor, n_valid: int | torch.Tensor, k: int, impl: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of each row of materialized scores under the tie rule.

    Args:
        scores: fp32 [R, N] scores.
        n_valid: Valid columns: an int for every row, or int [R].
        k: Entries per row, >= 1.
        impl: ``"auto"``, ``"torch"`` or ``"triton"`` (see :func:`resolve_impl`).

    Returns:
        (index int32 [R, k], score fp32 [R, k]) sorted by (score desc, index asc), padded with -1 / -inf.
    """
    path = resolve_impl(impl, scores)
    nv = rows_n_valid(n_valid, (scores.shape[0],), scores.shape[1], scores.device)
    return (triton_topk if path == "triton" else torch_topk)(scores, nv, k)


def check_topk(
    expected: tuple[torch.Tensor, torch.Tensor],
    actual: tuple[torch.Tensor, torch.Tensor],
    rel_tol: float = 1e-3,
) -> None:
    """Asserts two top-k results agree up to fp32 summation-order noise.

    Scores must match within ``rel_tol`` times the largest finite score, padding must match exactly, and
    an index may differ only where its score lies within that tolerance of the row's k-th score (a
    near-tie that a different summation order may flip).

    Args:
        expected: (index int32 [..., k], score fp32 [..., k]).
        actual: The same for the path under test.
        rel_tol: Relative score tolerance.

    Raises:
        AssertionError: On a mismatch, naming the first offending row.
    """
    ie, ve = (t.detach().cpu() for t in expected)
    ia, va = (t.detach().cpu() for t in actual)
    assert ie.shape == ia.shape, f"shapes differ: {tuple(ie.shape)} vs {tuple(ia.shape)}"
    k = ie.shape[-1]
    ie, ve, ia, va = (t.reshape(-1, k) for t in (ie, ve, ia, va))
    assert torch.equal(ie < 0, ia < 0), "padding (-1 slots) differs"
    finite = torch.isfinite(ve)
    scale = float(ve[finite].abs().max()) if bool(finite.any()) else 0.0
    tol = rel_tol * max(scale, 1e-30)
    torch.testing.assert_close(va, ve, atol=tol, rtol=0.0)
    for row in range(ie.shape[0]):
        e_set, a_set = set(ie[row].tolist()), set(ia[row].tolist())
        if e_set == a_set:
            continue
        kth = float(ve[row][ie[row] >= 0].min())
        for idx_set, src_i, src_v in ((e_set - a_set, ie, ve), (a_set - e_set, ia, va)):
            for idx in idx_set:
                v = float(src_v[row][src_i[row] == idx][0])
                assert abs(v - kth) <= tol, f"row {row}: index {idx} (score {v}) is not a near-tie of {kth}"


def check_native(
    a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor], rel_tol: float = 0.0
) -> None:
    """Asserts two top-k results select the same entries up to ties and score rounding, in any order.

    Symmetric, so either argument may be the exact tie-rule result or a native one (:func:`native_topk`:
    unordered, any tie broken anyhow, scores perhaps bf16). A slot counts when its index is >= 0 and its
    score is not -inf. With ``tol`` = ``rel_tol`` times the row's largest finite |score|, each row must have:

    1. the same number of counted slots, and no index twice;
    2. the same selected scores: sorted, they agree element by element within ``tol`` (so the k-th score
       and the multiset of selected scores agree);
    3. the same indices, except where scores tie: an index that only one result selects must score within
       ``tol`` of that result's k-th (smallest selected) score. Where scores are distinct by more than
       ``tol`` the index sets are therefore equal.

    If both paths are correct top-k selections of scores that differ from one another by at most e per
    entry (rounding), sorted selections differ by at most e and an index selected by one only lies within
    2 e of the k-th score, so ``rel_tol`` should bound 2 e relative to the largest score.

    Args:
        a: (index [..., k], score [..., k]) of one path; any integer and float dtypes.
        b: The same for the other path.
        rel_tol: Score tolerance relative to the row's largest finite |score| (0: scores must be equal).

    Raises:
        AssertionError: On a mismatch, naming the first offending row.
    """
    ia, va = (t.detach().cpu() for t in a)
    ib, vb = (t.detach().cpu() for t in b)
    assert ia.shape == ib.shape == va.shape == vb.shape, (
        f"shapes differ: {tuple(ia.shape)}, {tuple(va.shape)} vs {tuple(ib.shape)}, {tuple(vb.shape)}"
    )
    k = ia.shape[-1]
    ia, ib = ia.reshape(-1, k).long(), ib.reshape(-1, k).long()
    va, vb = va.reshape(-1, k).double(), vb.reshape(-1, k).double()
    used_a, used_b = (ia >= 0) & ~va.isneginf(), (ib >= 0) & ~vb.isneginf()
    assert not (va.isnan() & used_a).any() and not (vb.isnan() & used_b).any(), "a selected score is NaN"
    counts = used_a.sum(1)
    bad = (counts != used_b.sum(1)).nonzero()
    assert len(bad) == 0, f"row {int(bad[0])}: {int(counts[bad[0]])} vs {int(used_b[bad[0]].sum())} selected"
    sa = va.masked_fill(~used_a, -torch.inf).sort(1, descending=True).values
    sb = vb.masked_fill(~used_b, -torch.inf).sort(1, descending=True).values
    finite = torch.cat([sa, sb], 1).abs().masked_fill(~torch.cat([sa, sb], 1).isfinite(), 0.0)
    tol = rel_tol * finite.amax(1, keepdim=True)
    close = (sa == sb) | ((sa - sb).abs() <= tol)
    bad = (~close).any(1).nonzero()
    assert len(bad) == 0, f"row {int(bad[0])}: selected scores differ beyond {float(tol[bad[0]])}"
    for row in range(ia.shape[0]):
        c = int(counts[row])
        if c == 0:
            continue
        sel_a, sel_b = set(ia[row][used_a[row]].tolist()), set(ib[row][used_b[row]].tolist())
        assert len(sel_a) == len(sel_b) == c, f"row {row}: an index is selected twice"
        for only, idx, val, kth in ((sel_a - sel_b, ia, va, sa), (sel_b - sel_a, ib, vb, sb)):
            for i in only:
                v = float(val[row][idx[row] == i][0])
                edge = float(kth[row, c - 1])
                assert abs(v - edge) <= float(tol[row]) or v == edge, (
                    f"row {row}: index {i} (score {v}) is selected by one path only and is no tie of the "
                    f"k-th score {edge}"
                )


# ---------------------------------------------------------------------------------------------------------
# Shared Triton device functions (called from every module's kernels).


@jit
def order_key(score):
    """fp32 -> int32 whose signed order is the float order; -0.0 folds into +0.0."""
    score = tl.where(score == 0.0, 0.0, score)
    bits = score.to(tl.int32, bitcast=True)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


@jit
def pack_key(key, idx):
    """(int32 order key, int32 index) -> int64; larger means higher rank, index ascending among ties."""
    low = (~idx).to(tl.uint32, bitcast=True).to(tl.int64)
    return (key.to(tl.int64) << 32) | low


@jit
def pack_scores(score, idx, valid):
    """Packed keys of fp32 scores at int32 indices; invalid slots get SENTINEL."""
    return tl.where(valid, pack_key(order_key(score), idx), -9223372036854775808)


@jit
def unpack_index(packed):
    """Index of packed keys; -1 for SENTINEL."""
    idx = ~(packed.to(tl.int32))
    return tl.where(packed == -9223372036854775808, -1, idx)


@jit
def unpack_score(packed):
    """fp32 score of packed keys; -inf for SENTINEL."""
    key = (packed >> 32).to(tl.int32)
    score = (key ^ ((key >> 31) & 0x7FFFFFFF)).to(tl.float32, bitcast=True)
    return tl.where(packed == -9223372036854775808, float("-inf"), score)


@jit
def digit0(score):
    """First radix digit of fp32 scores: the top 11 bits of the order key as unsigned, in [0, 2048)."""
    return (order_key(score) >> 21) + 1024


@jit
def flush_hist0(ws_row_ptr, hist):
    """Adds a program's [2048] digit-0 histogram into its row's radix workspace (non-zero bins only)."""
    bins = tl.arange(0, 2048)
    tl.atomic_add(ws_row_ptr + bins, hist, mask=hist > 0, sem="relaxed")


@jit
def _append(dst_ptr, base, vals, mask):
    """Ordered compaction: stores ``vals[mask]`` at dst[base:], keeping their order; returns the new base."""
    m = mask.to(tl.int32)
    pos = base + tl.cumsum(m, 0) - 1
    tl.store(dst_ptr + pos, vals, mask=mask)
    return base + tl.sum(m, 0)


@jit
def _append_shared(dst_ptr, count_ptr, vals, mask):
    """Compaction into a list many programs fill: reserves a slot range with one atomic, then stores."""
    m = mask.to(tl.int32)
    base = tl.atomic_add(count_ptr, tl.sum(m, 0), sem="relaxed")
    tl.store(dst_ptr + base + tl.cumsum(m, 0) - 1, vals, mask=mask)


@jit
def _bucket(hist, need, NB: tl.constexpr):
    """Bucket holding the need-th largest element, and the count of elements in higher buckets."""
    bins = tl.arange(0, NB)
    at_or_above = tl.cumsum(hist, 0, reverse=True)
    b = tl.max(tl.where(at_or_above >= need, bins, -1), 0)
    return b, tl.sum(tl.where(bins > b, hist, 0), 0)


@jit
def _row_b0(ws_row_ptr, need):
    """Digit-0 threshold bucket of a row and the count of entries above it, from its workspace."""
    return _bucket(tl.load(ws_row_ptr + tl.arange(0, 2048)), need, 2048)


# ---------------------------------------------------------------------------------------------------------
# Triton kernels.


@jit
def _scores_tile_kernel(
    scores_ptr, stride_r, n_valid_ptr, n_cols, cand_ptr, BLOCK: tl.constexpr, KP: tl.constexpr
):
    # Tile step over materialized scores: the KP best packed keys of one BLOCK-wide tile of one row.
    r = tl.program_id(0)
    t = tl.program_id(1)
    n = tl.minimum(tl.load(n_valid_ptr + r), n_cols)
    offs = t * BLOCK + tl.arange(0, BLOCK)
    valid = offs < n
    s = tl.load(scores_ptr + r.to(tl.int64) * stride_r + offs, mask=valid, other=0.0)
    top = tl.topk(pack_scores(s, offs, valid), KP)
    tl.store(cand_ptr + (r.to(tl.int64) * tl.num_programs(1) + t) * KP + tl.arange(0, KP), top)


@jit
def _merge_kernel(
    cand_ptr, cand_stride, m, out_ptr, out_stride, idx_ptr, val_ptr, k,
    BLOCK: tl.constexpr, KP: tl.constexpr, FINAL: tl.constexpr,
):  # fmt: skip
    # Reduces BLOCK packed candidates of a row to KP; the FINAL level unpacks the row's sorted top-k.
    r = tl.program_id(0)
    t = tl.program_id(1)
    offs = t * BLOCK + tl.arange(0, BLOCK)
    c = tl.load(cand_ptr + r.to(tl.int64) * cand_stride + offs, mask=offs < m, other=-9223372036854775808)
    top = tl.topk(c, KP)  # sorted descending
    cols = tl.arange(0, KP)
    if FINAL:
        tl.store(idx_ptr + r * k + cols, unpack_index(top), mask=cols < k)
        tl.store(val_ptr + r * k + cols, unpack_score(top), mask=cols < k)
    else:
        tl.store(out_ptr + r.to(tl.int64) * out_stride + t * KP + cols, top)


@jit
def _hist0_kernel(scores_ptr, stride_r, n_valid_ptr, n_cols, ws_ptr, BLOCK: tl.constexpr):
    # Digit-0 histogram of materialized scores, for the radix path when no fused kernel produced one.
    r = tl.program_id(0)
    n = tl.minimum(tl.load(n_valid_ptr + r), n_cols)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < n
    s = tl.load(scores_ptr + r.to(tl.int64) * stride_r + offs, mask=valid, other=0.0)
    flush_hist0(ws_ptr + r * 2306, tl.histogram(digit0(s), 2048, mask=valid))


@jit
def _radix_partition_kernel(
    scores_ptr, stride_r, n_valid_ptr, n_cols, k, ws_ptr, work_ptr, sel_ptr,
    KP: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    # Level 0, many programs per row: entries above the digit-0 threshold bucket are selected, entries in
    # it become candidates, and the candidates' next 8 key bits are histogrammed for the refine kernel.
    r = tl.program_id(0)
    r64 = r.to(tl.int64)
    ws = ws_ptr + r * 2306  # [0, 2048) digit-0 histogram, [2048, 2304) level-1 histogram, 2304/2305 counts
    n = tl.minimum(tl.load(n_valid_ptr + r), n_cols)
    b0, _ = _row_b0(ws, tl.minimum(n, k))
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    live = offs < n
    key = order_key(tl.load(scores_ptr + r64 * stride_r + offs, mask=live, other=0.0))
    d = (key >> 21) + 1024
    p = pack_key(key, offs)
    eq = live & (d == b0)
    _append_shared(sel_ptr + r64 * KP, ws + 2304, p, live & (d > b0))
    _append_shared(work_ptr + r64 * n_cols, ws + 2305, p, eq)
    h = tl.histogram(((p >> 45) & 255).to(tl.int32), 256, mask=eq)
    tl.atomic_add(ws + 2048 + tl.arange(0, 256), h, mask=h > 0, sem="relaxed")


@jit
def _radix_refine_kernel(
    n_valid_ptr, n_cols, k, ws_ptr, work_ptr, sel_ptr, idx_ptr, val_ptr, KP: tl.constexpr, CHUNK: tl.constexpr
):
    # One program per row. Packed keys are unique, so 8-bit digits of the 53 bits below digit 0 (shifts
    # 45, 37, ..., 5, then 0) always isolate the threshold; ties in score fall to the index bits.
    r = tl.program_id(0)
    r64 = r.to(tl.int64)
    ws = ws_ptr + r * 2306
    work = work_ptr + r64 * n_cols
    sel = sel_ptr + r64 * KP
    n = tl.minimum(tl.load(n_valid_ptr + r), n_cols)
    total = tl.minimum(n, k)
    _, n_gt = _row_b0(ws, total)
    need = total - n_gt
    n_sel = tl.load(ws + 2304)
    n_cand = tl.load(ws + 2305)
    hist = tl.load(ws + 2048 + tl.arange(0, 256))
    shift = (n * 0 + 45).to(tl.int64)
    level = n * 0
    # While loops, not range(): the interpreter cannot bound range() by a loaded value.
    while (n_cand > need) & (level < 8):
        b, n_gt = _bucket(hist, need, 256)
        need -= n_gt
        next_shift = tl.maximum(shift - 8, 0)
        kept = n * 0
        next_hist = tl.zeros([256], tl.int32)
        start = n * 0
        while start < n_cand:
            offs = start + tl.arange(0, CHUNK)
            live = offs < n_cand
            p = tl.load(work + offs, mask=live, other=0)
            d = ((p >> shift) & 255).to(tl.int32)
            eq = live & (d == b)
            n_sel = _append(sel, n_sel, p, live & (d > b))
            # In place is safe: an entry never moves to a later slot, and _append's scan needs every
            # load of this chunk before any store.
            kept = _append(work, kept, p, eq)
            next_hist += tl.histogram(((p >> next_shift) & 255).to(tl.int32), 256, mask=eq)
            start += CHUNK
        tl.debug_barrier()
        n_cand = kept
        hist = next_hist
        shift = next_shift
        level += 1
    # What remains is exactly the `need` entries still missing.
    start = n * 0
    while start < n_cand:
        offs = start + tl.arange(0, CHUNK)
        live = offs < n_cand
        n_sel = _append(sel, n_sel, tl.load(work + offs, mask=live, other=0), live)
        start += CHUNK
    tl.debug_barrier()
    cols = tl.arange(0, KP)
    top = tl.sort(tl.load(sel + cols, mask=cols < total, other=-9223372036854775808), descending=True)
    tl.store(idx_ptr + r64 * k + cols, unpack_index(top), mask=cols < k)
    tl.store(val_ptr + r64 * k + cols, unpack_score(top), mask=cols < k)


# ---------------------------------------------------------------------------------------------------------
# Host-side steps the fused kernels share.


def use_radix(k: int) -> bool:
    """True when k takes the radix path (k rounded up to a power of two exceeds :data:`TILE_MAX_K`)."""
    return key_slots(k) > TILE_MAX_K


def new_radix_workspace(rows: int, device: torch.device) -> torch.Tensor:
    """Zeroed int32 [rows, RADIX_WS] radix workspaces; a radix-path scoring kernel fills the digit-0 part.

    Each row holds its digit-0 histogram (2048 bins, filled with :func:`flush_hist0`), the level-1
    histogram (256 bins) and two list lengths, all zero before the scoring kernel runs.
    """
    return torch.zeros((rows, RADIX_WS), dtype=torch.int32, device=device)


def merge_candidates(cand: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reduces per-tile candidates to each row's top-k (tile path).

    Args:
        cand: int64 [R, M] packed candidate keys (SENTINEL for empty slots), last dimension contiguous.
        k: Entries per row, with key_slots(k) <= :data:`TILE_MAX_K`.

    Returns:
        (index int32 [R, k], score fp32 [R, k]) sorted by (score desc, index asc), padded with -1 / -inf.
    """
    r, m = cand.shape
    kp = key_slots(k)
    idx = torch.empty((r, k), dtype=torch.int32, device=cand.device)
    val = torch.empty((r, k), dtype=torch.float32, device=cand.device)
    # A 16:1 reduction per level keeps many programs busy at batch 1, where the merge is on the critical path.
    block = min(max(16 * kp, 1024), MERGE_BLOCK)
    while m > block:
        tiles = cdiv(m, block)
        nxt = torch.empty((r, tiles * kp), dtype=torch.int64, device=cand.device)
        _merge_kernel[(r, tiles)](
            cand, cand.stride(0), m, nxt, nxt.stride(0), idx, val, k,
            BLOCK=block, KP=kp, FINAL=False, num_warps=8,
        )  # fmt: skip
        cand, m = nxt, tiles * kp
    block = max(next_pow2(m), kp)
    _merge_kernel[(r, 1)](
        cand, cand.stride(0), m, cand, 0, idx, val, k, BLOCK=block, KP=kp, FINAL=True, num_warps=8
    )
    return idx, val


def radix_select(
    scores: torch.Tensor, n_valid: torch.Tensor, k: int, ws: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of materialized scores whose digit-0 histograms are in ``ws`` (radix path).

    Two launches: a many-program partition at digit 0, then one program per row that refines the
    threshold over the (usually few) candidates and sorts the k selected keys.

    Args:
        scores: fp32 [R, N] scores, last dimension contiguous.
        n_valid: int32 [R] valid columns per row.
        k: Entries per row, 1 <= k <= :data:`MAX_K`.
        ws: int32 [R, RADIX_WS] workspace from :func:`new_radix_workspace`, digit-0 histograms filled.

    Returns:
        (index int32 [R, k], score fp32 [R, k]) sorted by (score desc, index asc), padded with -1 / -inf.
    """
    r, n = scores.shape
    kp = key_slots(k)
    dev = scores.device
    work = torch.empty((r, n), dtype=torch.int64, device=dev)
    sel = torch.empty((r, kp), dtype=torch.int64, device=dev)
    idx = torch.empty((r, k), dtype=torch.int32, device=dev)
    val = torch.empty((r, k), dtype=torch.float32, device=dev)
    _radix_partition_kernel[(r, cdiv(n, PARTITION_BLOCK))](
        scores, scores.stride(0), n_valid, n, k, ws, work, sel, KP=kp, BLOCK=PARTITION_BLOCK, num_warps=8
    )
    # num_stages=1: no software pipelining, so no load is hoisted across the level barriers.
    _radix_refine_kernel[(r,)](
        n_valid, n, k, ws, work, sel, idx, val, KP=kp, CHUNK=REFINE_CHUNK, num_warps=8, num_stages=1
    )
    return idx, val


# ---------------------------------------------------------------------------------------------------------
# Benchmark cases: selection alone over materialized fp32 scores (the H100 probe's torch.topk table).


def _scores_case(rows: int, n: int, k: int, targets: dict[str, float]) -> BenchCase:
    def make_inputs(device: torch.device) -> dict[str, Any]:
        g = torch.Generator(device=device)
        g.manual_seed(rows * 1_000_003 + n + k)
        scores = torch.randn((rows, n), generator=g, device=device)
        # Full rows as an int: the native path then has nothing to mask, as a user's would not.
        return {"scores": scores, "n_valid": n, "k": k}

    return BenchCase(
        kernel="topk",
        label=f"R={rows} N={n} k={k}",
        make_inputs=make_inputs,
        optimized=triton_topk,
        torch_path=native_topk,
        bytes_moved=rows * n * 4 + rows * k * 8,
        flops=0,
        targets=targets,
        check=check_native,  # both select from the same fp32 scores: equal up to exact ties
    )


def bench_cases() -> list[BenchCase]:
    """Selection over materialized scores at the H100 probe's sizes (workloads.md section 3).

    Returns:
        Cases for 1 row at 8K-1M columns and 64 rows at 8K-128K (k 2048), 256 x 32K (k 64), and one
        21M-column row (k 10).
    """
    cases = []
    for rows, n, k in [
        (1, 8192, 2048), (1, 32768, 2048), (1, 131072, 2048), (1, 1 << 20, 2048),
        (64, 8192, 2048), (64, 32768, 2048), (64, 131072, 2048), (256, 32768, 64), (1, 21_000_000, 10),
    ]:  # fmt: skip
        nbytes = rows * n * 4
        cases.append(_scores_case(rows, n, k, {"bw_fraction": 0.70} if nbytes >= 64 << 20 else {}))
    return cases
