"""Quest (arXiv 2406.10774, mit-han-lab/Quest): query-aware page selection, decode.

The four steps, per layer and KV head (workloads.md, Quest):

- **Prepare Memory**: every 16-token page of the KV cache keeps the element-wise minimum and maximum of
  its keys (after RoPE, as the cache holds them); the newest page's bounds are updated as each token
  arrives (incremental).
- **Compute Relevancy**: a page's score is Quest's upper bound on q.k inside it,
  ``sum_d max(q_d * kmin_d, q_d * kmax_d)``, maxed over the query heads of the GQA group that share the
  KV head.
- **Retrieval**: the top ``max(3, token_budget / 16)`` complete pages before the current page.
- **Apply to Inference**: block-sparse (paged) decode attention over the selected pages plus the current
  page, 16-token blocks.

The first ``dense_layers`` layers attend densely (Quest keeps layers 0 and 1 dense); their attention is
the dense part of the decoder. The hetero placement runs Relevancy + Retrieval on the FPGA as one fused
``page_topk`` kernel (paper Fig. 6): the page bounds stay resident there as int16 (each completed page is
appended), only the group's queries go in and the page ids come back.

:class:`PageBounds`, :func:`page_bound_scores` and :func:`fpga_page_call` are shared with LServe, whose
index is the same min/max bounds over 16-token sub-pages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from bench.devices.fpga import FpgaCall, FpgaDevice
from bench.methods.attention import (
    AttentionQuery,
    KVMemory,
    PipelineAttention,
    SparseAttentionMethod,
    SparseAttentionWorkload,
)
from bench.methods.seer_attention import exact_topk, selection_recall
from bench.model.decoder import AttentionInput, Decoder, KVCache, dense_decode_attention
from bench.model.presets import ModelShape
from bench.pipeline import DENSE, Index, Placement, Scores, Selection, Step
from bench.schema import param
from bench.timeline import Timeline
from bench.workload import Iteration
from kernels_fpga.model import entries_to_sync
from kernels_fpga.params import kernel_params
from kernels_gpu.page_topk import page_topk
from kernels_gpu.sparse_decode import block_sparse_decode
from kernels_gpu.topk import bmm_fp32, torch_topk

#: Fewest pages Quest selects, whatever the budget (workloads.md, Quest: top max(3, budget / 16) pages).
MIN_PAGES = 3
#: Most bytes of temporaries the FPGA reference evaluation allocates at once (it works in row chunks).
REFERENCE_CHUNK_BYTES = 128 << 20


@dataclass(frozen=True)
class QuestParams:
    """Parameters of Quest; defaults are the paper's."""

    page_size: int = param(16, help="tokens per page (min/max key bounds are kept per page)", min=1,
                           source="arXiv 2406.10774 / mit-han-lab/Quest: page size 16")
    token_budget: int = param(2048, help="tokens attended per KV head besides the current page", min=1,
                              source="arXiv 2406.10774: budgets 256-4096, 2048 the headline setting")
    dense_layers: int = param(2, help="leading layers that attend densely (no page selection)", min=0,
                              source="arXiv 2406.10774 / mit-han-lab/Quest: layers 0 and 1 stay dense")

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) for values that are valid alone but impossible together."""
        if self.token_budget % self.page_size:
            return [("token_budget", f"must be a multiple of page_size ({self.page_size}), "
                                     f"got {self.token_budget}")]
        return []

    @property
    def k_pages(self) -> int:
        """Pages selected per KV head: max(3, token_budget / page_size)."""
        return max(MIN_PAGES, self.token_budget // self.page_size)


# -- the shared page index -------------------------------------------------------------------------------


class PageBounds:
    """Per-page element-wise min and max of post-RoPE keys, per layer: the index of Quest and LServe.

    Bounds of layer ``l`` are ``kmin[l]``, ``kmax[l]`` of shape [B, H_i, pages, D] (``H_i`` the KV heads the
    method indexes); layers without an index hold None. The newest page's bounds are a running min/max, so
    they are exact whenever the page is complete.

    Args:
        page_size: Tokens per page.
    """

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self.kmin: list[torch.Tensor | None] = []
        self.kmax: list[torch.Tensor | None] = []
        self.scale: list[float] = []
        self._saved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._saved_page: int | None = None

    def allocate(self, layers: int, indexed: Sequence[int], batch: int, heads: int, capacity: int, dim: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        """Empty bounds for the ``indexed`` layers of a cache of ``capacity`` tokens."""
        pages = -(-capacity // self.page_size)
        size = (batch, heads, pages, dim)
        self.kmin = [torch.zeros(size, dtype=dtype, device=device) if i in indexed else None for i in range(layers)]
        self.kmax = [torch.zeros(size, dtype=dtype, device=device) if i in indexed else None for i in range(layers)]
        self.scale = [1.0] * layers

    @property
    def indexed_layers(self) -> int:
        """Layers that keep bounds (their bounds are resident on an FPGA together)."""
        return sum(k is not None for k in self.kmin)

    def observe(self, layer: int, start: int, keys: torch.Tensor) -> None:
        """Bounds of the pages of one fill chunk of keys [B, H_i, T, D] starting at ``start``."""
        ps = self.page_size
        if start % ps:
            raise ValueError(f"fill chunks must start on a page boundary ({ps}); got {start}")
        kmin, kmax = self.kmin[layer], self.kmax[layer]
        assert kmin is not None and kmax is not None
        t = keys.shape[2]
        full, first = t // ps, start // ps
        if full:
            pages = keys[:, :, : full * ps].unflatten(2, (full, ps))
            kmin[:, :, first : first + full] = pages.amin(dim=3)
            kmax[:, :, first : first + full] = pages.amax(dim=3)
        if t > full * ps:
            rest = keys[:, :, full * ps :]
            kmin[:, :, first + full] = rest.amin(dim=2)
            kmax[:, :, first + full] = rest.amax(dim=2)

    def append(self, layer: int, key: torch.Tensor, pos: int) -> None:
        """Fold the key [B, H_i, D] of position ``pos`` into its page's bounds (the first key resets them)."""
        kmin, kmax = self.kmin[layer], self.kmax[layer]
        assert kmin is not None and kmax is not None
        page = pos // self.page_size
        lo, hi = kmin[:, :, page], kmax[:, :, page]
        if pos % self.page_size == 0:
            lo.copy_(key)
            hi.copy_(key)
        else:
            lo.copy_(torch.minimum(lo, key))
            hi.copy_(torch.maximum(hi, key))

    def fill_done(self, length: int) -> None:
        """Snapshot the partial page the fill left and fix each layer's int16 scale (the FPGA's copy)."""
        ps = self.page_size
        self._saved_page = length // ps if length % ps else None
        self._saved = {}
        n = max(length // ps, 1)
        for i, (lo, hi) in enumerate(zip(self.kmin, self.kmax, strict=True)):
            if lo is None or hi is None:
                continue
            if self._saved_page is not None:
                self._saved[i] = (lo[:, :, self._saved_page].clone(), hi[:, :, self._saved_page].clone())
            peak = torch.maximum(lo[:, :, :n].abs().amax(), hi[:, :, :n].abs().amax())
            self.scale[i] = float(peak.float().clamp_min(1e-12)) / 32767.0

    def rewind(self) -> None:
        """Restore the partial page's bounds as the fill left them (decode steps fold keys into them)."""
        if self._saved_page is None:
            return
        for i, (lo, hi) in self._saved.items():
            kmin, kmax = self.kmin[i], self.kmax[i]
            assert kmin is not None and kmax is not None
            kmin[:, :, self._saved_page].copy_(lo)
            kmax[:, :, self._saved_page].copy_(hi)


def page_bound_scores(q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, sub: int = 1) -> torch.Tensor:
    """Quest's bound per page, maxed over the GQA group and over runs of ``sub`` pages, with framework ops.

    Uses sum_d max(q kmin, q kmax) = max(q, 0) . kmax + min(q, 0) . kmin (exact since kmin <= kmax).

    Args:
        q: [B, H, G, D] queries of each KV head's group.
        kmin: [B, H, P, D] page minima (P a multiple of ``sub``).
        kmax: [B, H, P, D] page maxima.
        sub: Pages per selection unit (Quest 1, LServe 4).

    Returns:
        fp32 [B, H, P / sub] unit scores.
    """
    b, h, g, d = q.shape
    p = kmin.shape[2]
    qt = q.reshape(b * h, g, d).transpose(1, 2)
    bound = bmm_fp32(kmax.reshape(b * h, p, d), qt.clamp(min=0)) + bmm_fp32(kmin.reshape(b * h, p, d),
                                                                           qt.clamp(max=0))
    return bound.amax(-1).view(b, h, p // sub, sub).amax(-1)


def quantize_int16(x: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric int16 quantization round(x / scale), saturating; ``scale`` broadcasts against ``x``."""
    return torch.round(x.float() / scale).clamp(-32768, 32767).to(torch.int16)


def fpga_page_scores(q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, scale: float, sub: int) -> torch.Tensor:
    """The FPGA's integer unit scores (``page_topk.cpp``), exact, in float64 row chunks.

    Args:
        q: int16 [R, G, D] quantized queries.
        kmin: [R, P, D] page minima in the model dtype (quantized here with ``scale``, as the resident copy).
        kmax: [R, P, D] page maxima.
        scale: The layer's int16 key scale (fixed at fill time).
        sub: Pages per unit; P must be a multiple of it.

    Returns:
        float64 [R, P / sub] integer-valued scores (int16 products summed over D < 2^53: exact).
    """
    r, p, d = kmin.shape
    g = q.shape[1]
    out = torch.empty(r, p // sub, dtype=torch.float64, device=q.device)
    chunk = max(1, REFERENCE_CHUNK_BYTES // max(p * d * 24 + p * g * 16, 1))
    for r0 in range(0, r, chunk):
        qd = q[r0 : r0 + chunk].double().transpose(1, 2)
        lo = quantize_int16(kmin[r0 : r0 + chunk], scale).double()
        hi = quantize_int16(kmax[r0 : r0 + chunk], scale).double()
        bound = torch.bmm(hi, qd.clamp(min=0)) + torch.bmm(lo, qd.clamp(max=0))
        out[r0 : r0 + chunk] = bound.amax(-1).view(-1, p // sub, sub).amax(-1)
    return out


def fpga_page_call(q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, scale: float, n_pages: int, k: int,
                   sub: int, new_pages: int, lead: tuple[int, int], key_sets: int = 1) -> FpgaCall:
    """The fused relevancy + top-k of Quest/LServe on the FPGA (``page_topk``): bounds resident, queries in.

    Args:
        q: [R, G, D] the group's queries per row (rows = batch x indexed KV heads), model dtype.
        kmin: [R, P_cap, D] page minima (a view of the index); the first ``n_pages`` are candidates.
        kmax: [R, P_cap, D] page maxima.
        scale: The layer's int16 key scale.
        n_pages: Candidate pages per row (a multiple of ``sub``).
        k: Units selected per row.
        sub: Pages per unit (Quest 1, LServe 4).
        new_pages: Pages per row appended to the resident bounds since the last call.
        lead: (B, H_i) to shape the selection.
        key_sets: Layers whose bounds are resident on the board together (see
            :func:`kernels_fpga.model.entries_to_sync`).

    Returns:
        The call; its evaluators give a :class:`PageSelection` of unit ids [B, H_i, k], -1 padded.
    """
    rows, g, d = q.shape
    empty = PageSelection(torch.full((*lead, k), -1, dtype=torch.int32, device=q.device))

    def q_int() -> torch.Tensor:
        # One scale per row: every query head of the group shares it, so the group max keeps its order.
        row_scale = q.float().abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-12) / 32767.0
        return quantize_int16(q, row_scale)

    def reference() -> PageSelection:
        if n_pages == 0:
            return empty
        scores = fpga_page_scores(q_int(), kmin[:, :n_pages], kmax[:, :n_pages], scale, sub)
        take = min(k, scores.shape[1])
        idx = torch.full((rows, k), -1, dtype=torch.int32, device=q.device)
        idx[:, :take] = exact_topk(scores, take).int()
        return PageSelection(idx.view(*lead, k))

    def csim() -> PageSelection:
        from kernels_fpga import csim as fpga_csim

        if n_pages == 0:
            return empty
        # The default build has D 128 and 64 top-k registers (bench_params.h); other shapes get their own build.
        default, overrides = kernel_params(), {}
        if d != default.d:
            overrides["BENCH_D"] = d
        if k > default.k_max:
            overrides["BENCH_K_MAX"] = 1 << (k - 1).bit_length()
        lo = quantize_int16(kmin[:, :n_pages], scale).cpu().numpy()
        hi = quantize_int16(kmax[:, :n_pages], scale).cpu().numpy()
        idx, _ = fpga_csim.load(overrides or None).page_topk(q_int().cpu().numpy(), lo, hi, k, sub)
        return PageSelection(torch.from_numpy(idx).to(q.device).int().view(*lead, k))

    page_bytes = 2 * d * 2
    return FpgaCall("page_topk", {"rows": rows, "n_pages": n_pages, "group": g, "dim": d, "k": k, "sub": sub,
                                  "new_pages": entries_to_sync(n_pages, new_pages, key_sets)},
                    bytes_in=rows * g * d * 2, bytes_out=rows * k * 4, bytes_append=rows * new_pages * page_bytes,
                    reference=reference, csim=csim)


# -- Quest -----------------------------------------------------------------------------------------------


@dataclass
class PageIndex(Index):
    """One layer's page bounds and the step's queries.

    Attributes:
        kmin: [B, H_i, P_cap, D] page minima.
        kmax: [B, H_i, P_cap, D] page maxima.
        n_pages: Candidate pages (complete, before the current selection unit).
        query: [B, H_i, G, D] the group's queries, or None on a step that does not select.
    """

    kmin: torch.Tensor
    kmax: torch.Tensor
    n_pages: int
    query: torch.Tensor | None


@dataclass
class PageScores(Scores):
    """Score of each candidate selection unit [B, H_i, n_units] (float32)."""

    scores: torch.Tensor


@dataclass
class PageSelection(Selection):
    """Selected unit ids [B, H_i, k] (int32), -1 padded; order is not significant."""

    pages: torch.Tensor


class _QuestState:
    """Per-case page bounds and FPGA bookkeeping, shared by every placement of a case."""

    def __init__(self, page_size: int) -> None:
        self.bounds = PageBounds(page_size)
        self.synced: list[int] = []
        self.cache: KVCache | None = None


def select_top_units(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k unit ids [B, H, k] (int32, -1 padded) of scores [B, H, n] with torch ops (exact tie rule)."""
    b, h, n = scores.shape
    if n == 0:
        return torch.full((b, h, k), -1, dtype=torch.int32, device=scores.device)
    n_valid = torch.full((b * h,), n, dtype=torch.int32, device=scores.device)
    idx, _ = torch_topk(scores.reshape(b * h, n), n_valid, k)
    return idx.view(b, h, k)


class Quest(SparseAttentionMethod):
    """Quest page selection in decode.

    Args:
        params: Method parameters.
        kernels: ``optimized`` (fused kernels where available) or ``torch`` (framework-native ops).
        state: Per-case state shared by the placements of a case; a new one when None.
    """

    name = "quest"
    offloadable = frozenset({Step.RELEVANCY, Step.RETRIEVAL})
    Params = QuestParams

    def __init__(self, params: QuestParams, kernels: str = "optimized", state: _QuestState | None = None) -> None:
        self.params = params
        self.kernels = kernels
        self.state = state if state is not None else _QuestState(params.page_size)

    def is_dense(self, layer: int) -> bool:
        """Whether ``layer`` attends densely."""
        return layer < self.params.dense_layers

    @classmethod
    def memory_bytes(cls, params: QuestParams, shape: ModelShape, batch: int, capacity: int,
                     dtype_bytes: int) -> int:
        """Page bounds, the torch path's scores and gathered KV, and the FPGA reference's working set."""
        pages = -(-capacity // params.page_size)
        sparse = max(shape.layers - params.dense_layers, 0)
        rows, d, g = batch * shape.kv_heads, shape.head_dim, shape.group
        bounds = 2 * sparse * rows * pages * d * dtype_bytes
        # Two fp32 bmm outputs and their sum [R, P, G], the packed top-k keys, and the fp32 up-casts a torch
        # build without bmm(out_dtype=...) makes of the bounds.
        scores = rows * pages * (12 * g + 32) + 2 * rows * pages * d * 4
        gathered = rows * (params.k_pages + 1) * params.page_size * (2 * d * dtype_bytes + 24)
        return bounds + scores + gathered + 2 * REFERENCE_CHUNK_BYTES

    # -- per-case state -------------------------------------------------------------------------------

    def attach(self, model: Decoder, cache: KVCache, seed: int) -> None:
        """Allocate empty page bounds for the sparse layers of ``cache``."""
        s = model.shape
        self.state.cache = cache
        sparse = range(self.params.dense_layers, s.layers)
        self.state.bounds.allocate(s.layers, sparse, cache.k[0].shape[0], s.kv_heads, cache.capacity,
                                   s.head_dim, model.dtype, model.device)

    def observe_fill(self, layer: int, start: int, k_pre: torch.Tensor) -> None:
        """Bounds of the fill chunk's pages, from the post-RoPE keys the fill just wrote to the cache."""
        if self.is_dense(layer):
            return
        cache = self.state.cache
        assert cache is not None
        self.state.bounds.observe(layer, start, cache.k[layer][:, :, start : start + k_pre.shape[2]])

    def fill_done(self, length: int) -> None:
        """Snapshot the partial page; fix the int16 scales; the FPGA holds every complete page."""
        st = self.state
        st.bounds.fill_done(length)
        st.synced = [length // self.params.page_size] * len(st.bounds.kmin)

    def rewind(self, length: int) -> None:
        """Restore the partial page's bounds and the FPGA's resident page count."""
        self.state.bounds.rewind()
        self.state.synced = [length // self.params.page_size] * len(self.state.synced)

    # -- the four steps ----------------------------------------------------------------------------------

    def prepare(self, memory: KVMemory, query: AttentionQuery) -> PageIndex:
        """Fold the new key into its page's bounds; group the queries by KV head."""
        bounds, pos = self.state.bounds, memory.length - 1
        bounds.append(memory.layer, memory.k[:, :, pos], pos)
        b, hkv = memory.k.shape[:2]
        kmin, kmax = bounds.kmin[memory.layer], bounds.kmax[memory.layer]
        assert kmin is not None and kmax is not None
        return PageIndex(kmin, kmax, pos // self.params.page_size, query.q.reshape(b, hkv, -1, query.q.shape[-1]))

    def relevancy(self, index: PageIndex, query: AttentionQuery) -> PageScores:
        """Quest's bound of every candidate page, maxed over the GQA group (fp32 matmuls)."""
        assert index.query is not None
        n = index.n_pages
        return PageScores(page_bound_scores(index.query, index.kmin[:, :, :n], index.kmax[:, :, :n]))

    def retrieve(self, memory: KVMemory, scores: PageScores) -> PageSelection:
        """Top ``max(3, budget / page_size)`` pages by score, -1 padded."""
        return PageSelection(select_top_units(scores.scores, self.params.k_pages))

    def relevancy_retrieve(self, memory: KVMemory, index: PageIndex, query: AttentionQuery) -> PageSelection:
        """Bound + group max + top-k in one fused kernel (``kernels_gpu.page_topk``)."""
        assert index.query is not None
        idx, _ = page_topk(index.query, index.kmin, index.kmax, index.n_pages, self.params.k_pages, 1,
                           impl=self.impl)
        return PageSelection(idx)

    def apply(self, memory: KVMemory, selection: PageSelection, query: AttentionQuery) -> torch.Tensor:
        """Paged sparse decode attention over the selected pages plus the current page."""
        return block_sparse_decode(query.q, memory.k, memory.v, memory.length, selection.pages,
                                   self.params.page_size, impl=self.impl)

    # -- the FPGA side ------------------------------------------------------------------------------------

    def fpga_call(self, memory: KVMemory, index: PageIndex, query: AttentionQuery) -> FpgaCall:
        """Fused page bound + top-k on the FPGA: bounds resident (int16), the group's queries in, ids out."""
        assert index.query is not None
        st, layer = self.state, memory.layer
        b, h, g, d = index.query.shape
        complete = memory.length // self.params.page_size
        new_pages, st.synced[layer] = complete - st.synced[layer], complete
        return fpga_page_call(index.query.reshape(b * h, g, d), index.kmin.view(b * h, -1, d),
                              index.kmax.view(b * h, -1, d), st.bounds.scale[layer], index.n_pages,
                              self.params.k_pages, 1, new_pages, (b, h), st.bounds.indexed_layers)

    def recall(self, fpga: Selection, gpu: Selection) -> float:
        """Mean over (batch, head) rows of |FPGA ∩ GPU| / |GPU| over valid page ids."""
        assert isinstance(fpga, PageSelection) and isinstance(gpu, PageSelection)
        return selection_recall(fpga.pages, gpu.pages)


class QuestAttention(PipelineAttention):
    """The pipeline backend, except that Quest's leading dense layers attend densely."""

    method: Quest

    def decode(self, inp: AttentionInput, timeline: Timeline) -> torch.Tensor:
        """Dense attention in the dense layers (timed as the dense part), the four steps elsewhere."""
        if self.method.is_dense(inp.layer):
            with timeline.section(DENSE):
                return dense_decode_attention(inp.q, inp.cache.k[inp.layer], inp.cache.v[inp.layer],
                                              inp.cache.length)
        return super().decode(inp, timeline)


class QuestWorkload(SparseAttentionWorkload):
    """Quest decode, as the runner measures it."""

    method_cls = Quest

    def bind(self, placement: Placement, fpga: FpgaDevice | None) -> Iteration:
        """Decode with Quest as the attention of every layer (dense in the leading layers)."""
        attention = QuestAttention(self.method.with_kernels(placement.kernels), placement, fpga)

        def iteration(timeline: Timeline) -> None:
            tok = self.start_tokens
            for _ in range(self.decode_tokens):
                tok = self.model.decode_step(tok, self.cache, attention, timeline)

        return iteration

    def describe(self) -> dict[str, Any]:
        """Method facts for the records: pages selected, sparse layers, the FPGA top-k size it needs."""
        p, layers = self.params, self.model.shape.layers
        return {"pages_selected": p.k_pages, "sparse_layers": max(layers - p.dense_layers, 0),
                "fpga_topk_registers_needed": 1 << (p.k_pages - 1).bit_length(),
                "fpga_topk_registers_default": kernel_params().k_max,
                "bounds": "per-page min/max of post-RoPE keys; the current page is always attended"}
