"""LServe (arXiv 2502.14866, mit-han-lab/omniserve): unified static + dynamic sparse decode.

Half of each layer's KV heads are *streaming heads* (static sparsity 0.5: they attend to the 128 sink and
the 256 most recent tokens); the others are *retrieval heads* that select pages (workloads.md, LServe):

- **Prepare Memory**: for the retrieval heads, every 64-token page keeps the element-wise min and max keys
  of each of its four 16-token sub-pages (post-RoPE keys; the newest sub-page is a running min/max).
- **Compute Relevancy**: a page's score is the max of its sub-pages' Quest bounds, each maxed over the
  GQA group.
- **Retrieval**: the top ``token_budget / 64 - 1`` complete pages; the newest (current) page is forced
  in, which fills the 4096-token budget. Selection is reused: it is recomputed every
  ``reselect_interval`` decode steps (from the first step after the fill), and the steps in between skip
  Relevancy and Retrieval; a page completed in between becomes a candidate at the next reselection. Which
  steps reselect depends only on the position, so every iteration does the same work.
- **Apply to Inference**: one block-sparse decode over 64-token pages for all heads: retrieval heads read
  their selected pages plus the current page; streaming heads read the sink pages and the local pages
  (at page granularity: the current page and the ``ceil(local_tokens / 64)`` before it).

Which heads stream comes from DuoAttention patterns in LServe; those ship with checkpoints, so with
synthetic weights a seeded choice of half the KV heads per layer stands in. Precision stays bf16:
LServe's W8A8KV8 quantization is out of scope. The hetero placement runs Relevancy + Retrieval of the
retrieval heads on the FPGA (``page_topk`` with a max over 4 sub-pages), only on the steps that reselect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from bench.devices.fpga import FpgaCall, FpgaDevice
from bench.errors import UsageError
from bench.methods.attention import (
    AttentionQuery,
    KVMemory,
    PipelineAttention,
    SparseAttentionMethod,
    SparseAttentionWorkload,
)
from bench.methods.quest import (
    REFERENCE_CHUNK_BYTES,
    PageBounds,
    PageIndex,
    PageScores,
    PageSelection,
    fpga_page_call,
    page_bound_scores,
    select_top_units,
)
from bench.methods.seer_attention import selection_recall
from bench.model.decoder import AttentionInput, Decoder, KVCache
from bench.model.presets import ModelShape
from bench.pipeline import Placement, Selection, Step
from bench.schema import param
from bench.timeline import Timeline
from bench.workload import Iteration
from kernels_gpu.page_topk import page_topk
from kernels_gpu.sparse_decode import block_sparse_decode


@dataclass(frozen=True)
class LServeParams:
    """Parameters of LServe; defaults are the reference implementation's."""

    page_size: int = param(64, help="tokens per page (selection and attention granularity)", min=1,
                           source="mit-han-lab/omniserve: block_size = 64")
    sub_pages: int = param(4, help="sub-pages per page, each with its own min/max key bounds", min=1,
                           source="mit-han-lab/omniserve: sub_chunk_per_block = 4")
    token_budget: int = param(4096, help="tokens a retrieval head attends, the current page included", min=1,
                              source="mit-han-lab/omniserve: dynamic_sparse_token_budget = 4096")
    reselect_interval: int = param(4, help="decode steps between page reselections (reuse in between)", min=1,
                                   source="mit-han-lab/omniserve: selector_update_interval = 4")
    streaming_fraction: float = param(0.5, help="fraction of KV heads that are streaming heads", min=0.0,
                                      max=0.99, source="arXiv 2502.14866: static sparsity 0.5 (half the heads)")
    sink_tokens: int = param(128, help="sink tokens a streaming head attends in decode", min=0,
                             source="workloads.md (LServe, arXiv 2502.14866): 128 sink tokens in decode")
    local_tokens: int = param(256, help="recent tokens a streaming head attends in decode", min=0,
                              source="workloads.md (LServe, arXiv 2502.14866): 256 local tokens in decode")

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) for values that are valid alone but impossible together."""
        out = []
        if self.page_size % self.sub_pages:
            out.append(("sub_pages", f"must divide page_size ({self.page_size}), got {self.sub_pages}"))
        if self.token_budget % self.page_size or self.token_budget < 2 * self.page_size:
            out.append(("token_budget", f"must be a multiple of page_size ({self.page_size}) and at least two "
                                        f"pages (the newest page is forced in), got {self.token_budget}"))
        return out

    @property
    def k_pages(self) -> int:
        """Pages a retrieval head selects: budget / page_size - 1 (the newest page is forced in)."""
        return self.token_budget // self.page_size - 1

    @property
    def sub_page_size(self) -> int:
        """Tokens per sub-page."""
        return self.page_size // self.sub_pages

    @property
    def streaming_pages(self) -> tuple[int, int]:
        """(sink pages, local pages before the current one) a streaming head attends."""
        return -(-self.sink_tokens // self.page_size), -(-self.local_tokens // self.page_size)

    @property
    def width(self) -> int:
        """Entries of each head's page list (retrieval or streaming, whichever needs more), -1 padded."""
        return max(self.k_pages, sum(self.streaming_pages))

    def streaming_heads(self, kv_heads: int) -> int:
        """Streaming KV heads per layer (rounded half up)."""
        return math.floor(kv_heads * self.streaming_fraction + 0.5)


class _LServeState:
    """Per-case state shared by every placement of a case: bounds, head roles, page lists, FPGA bookkeeping."""

    def __init__(self, sub_page_size: int) -> None:
        self.bounds = PageBounds(sub_page_size)
        self.retrieval: list[torch.Tensor] = []
        self.streaming: list[torch.Tensor] = []
        self.lists: list[torch.Tensor] = []
        self.stream_base = torch.empty(0, dtype=torch.int32)
        self.stream_local = torch.empty(0, dtype=torch.int32)
        self.synced: list[int] = []
        self.decode_start = 0
        self.cache: KVCache | None = None


class LServe(SparseAttentionMethod):
    """LServe decode: streaming heads plus page-selecting retrieval heads with selection reuse.

    Args:
        params: Method parameters.
        kernels: ``optimized`` (fused kernels where available) or ``torch`` (framework-native ops).
        state: Per-case state shared by the placements of a case; a new one when None.
    """

    name = "lserve"
    offloadable = frozenset({Step.RELEVANCY, Step.RETRIEVAL})
    Params = LServeParams

    def __init__(self, params: LServeParams, kernels: str = "optimized", state: _LServeState | None = None) -> None:
        self.params = params
        self.kernels = kernels
        self.state = state if state is not None else _LServeState(params.sub_page_size)

    def reselects(self, pos: int) -> bool:
        """Whether the decode step at position ``pos`` recomputes the page selection."""
        return (pos - self.state.decode_start) % self.params.reselect_interval == 0

    @classmethod
    def memory_bytes(cls, params: LServeParams, shape: ModelShape, batch: int, capacity: int,
                     dtype_bytes: int) -> int:
        """Sub-page bounds of the retrieval heads, page lists, torch-path scores and gathered KV, FPGA reference."""
        sub_pages = -(-capacity // params.sub_page_size)
        h, d, g = shape.kv_heads, shape.head_dim, shape.group
        rows = batch * (h - params.streaming_heads(h))
        bounds = 2 * shape.layers * rows * sub_pages * d * dtype_bytes
        lists = shape.layers * batch * h * params.width * 4
        scores = rows * sub_pages * (12 * g + 32) + 2 * rows * sub_pages * d * 4
        gathered = batch * h * (params.width + 1) * params.page_size * (2 * d * dtype_bytes + 24)
        return bounds + lists + scores + gathered + 2 * REFERENCE_CHUNK_BYTES

    # -- per-case state -------------------------------------------------------------------------------

    def attach(self, model: Decoder, cache: KVCache, seed: int) -> None:
        """Choose each layer's streaming heads (seeded), allocate bounds and page lists."""
        s, p, st = model.shape, self.params, self.state
        n_stream = p.streaming_heads(s.kv_heads)
        if n_stream >= s.kv_heads:
            raise UsageError(f"streaming_fraction {p.streaming_fraction} leaves no retrieval heads among "
                             f"{s.kv_heads} KV heads; lower it")
        b, dev = cache.k[0].shape[0], model.device
        gen = torch.Generator().manual_seed(seed + 104729)
        st.retrieval, st.streaming = [], []
        for _ in range(s.layers):
            order = torch.randperm(s.kv_heads, generator=gen)
            st.streaming.append(order[:n_stream].sort().values.to(dev))
            st.retrieval.append(order[n_stream:].sort().values.to(dev))
        st.bounds.allocate(s.layers, range(s.layers), b, s.kv_heads - n_stream, cache.capacity, s.head_dim,
                           model.dtype, dev)
        st.lists = [torch.full((b, s.kv_heads, p.width), -1, dtype=torch.int32, device=dev)
                    for _ in range(s.layers)]
        sink, local = p.streaming_pages
        # Sink entries are fixed page ids; local entries are offsets from the current page.
        st.stream_base = torch.cat((torch.arange(sink), torch.arange(-local, 0))).to(torch.int32).to(dev)
        st.stream_local = torch.cat((torch.zeros(sink), torch.ones(local))).to(torch.int32).to(dev)
        st.cache = cache

    def observe_fill(self, layer: int, start: int, k_pre: torch.Tensor) -> None:
        """Sub-page bounds of the fill chunk for the retrieval heads, from the post-RoPE keys in the cache."""
        st = self.state
        assert st.cache is not None
        keys = st.cache.k[layer][:, :, start : start + k_pre.shape[2]].index_select(1, st.retrieval[layer])
        st.bounds.observe(layer, start, keys)

    def fill_done(self, length: int) -> None:
        """Snapshot the partial sub-page; fix the int16 scales; decode steps count from here."""
        st = self.state
        st.bounds.fill_done(length)
        st.decode_start = length
        st.synced = [length // self.params.sub_page_size] * len(st.lists)

    def rewind(self, length: int) -> None:
        """Restore the partial sub-page's bounds and the FPGA's resident sub-page count."""
        st = self.state
        st.bounds.rewind()
        st.decode_start = length
        st.synced = [length // self.params.sub_page_size] * len(st.lists)

    # -- the four steps ----------------------------------------------------------------------------------

    def prepare(self, memory: KVMemory, query: AttentionQuery) -> PageIndex:
        """Fold the retrieval heads' new keys into their sub-page bounds; on reselect steps, their queries."""
        st, layer, pos = self.state, memory.layer, memory.length - 1
        heads = st.retrieval[layer]
        st.bounds.append(layer, memory.k[:, :, pos].index_select(1, heads), pos)
        b, hkv = memory.k.shape[:2]
        q = query.q.reshape(b, hkv, -1, query.q.shape[-1]).index_select(1, heads) if self.reselects(pos) else None
        kmin, kmax = st.bounds.kmin[layer], st.bounds.kmax[layer]
        assert kmin is not None and kmax is not None
        return PageIndex(kmin, kmax, pos // self.params.page_size * self.params.sub_pages, q)

    def relevancy(self, index: PageIndex, query: AttentionQuery) -> PageScores:
        """Each complete page's score: the max of its sub-pages' group-maxed Quest bounds (fp32 matmuls)."""
        assert index.query is not None
        n = index.n_pages
        return PageScores(page_bound_scores(index.query, index.kmin[:, :, :n], index.kmax[:, :, :n],
                                            self.params.sub_pages))

    def retrieve(self, memory: KVMemory, scores: PageScores) -> PageSelection:
        """Top ``budget / page_size - 1`` pages by score, -1 padded."""
        return PageSelection(select_top_units(scores.scores, self.params.k_pages))

    def relevancy_retrieve(self, memory: KVMemory, index: PageIndex, query: AttentionQuery) -> PageSelection:
        """Sub-page bounds, group max, page max and top-k in one fused kernel (``kernels_gpu.page_topk``)."""
        assert index.query is not None
        idx, _ = page_topk(index.query, index.kmin, index.kmax, index.n_pages, self.params.k_pages,
                           self.params.sub_pages, impl=self.impl)
        return PageSelection(idx)

    def apply(self, memory: KVMemory, selection: PageSelection | None, query: AttentionQuery) -> torch.Tensor:
        """Block-sparse decode of all heads over their page lists plus the current page.

        Retrieval heads read the pages in ``selection`` (or the kept ones when it is None: a reuse step);
        streaming heads read their sink and local pages.
        """
        st, p, layer = self.state, self.params, memory.layer
        lists = st.lists[layer]
        if selection is not None:
            lists[:, :, : p.k_pages].index_copy_(1, st.retrieval[layer], selection.pages)
        if st.streaming[layer].numel() and st.stream_base.numel():
            cur = (memory.length - 1) // p.page_size
            lists[:, st.streaming[layer], : st.stream_base.numel()] = st.stream_base + cur * st.stream_local
        return block_sparse_decode(query.q, memory.k, memory.v, memory.length, lists, p.page_size,
                                   impl=self.impl)

    # -- the FPGA side ------------------------------------------------------------------------------------

    def fpga_call(self, memory: KVMemory, index: PageIndex, query: AttentionQuery) -> FpgaCall:
        """Fused sub-page bound + page max + top-k for the retrieval heads: bounds resident, queries in."""
        assert index.query is not None
        st, layer = self.state, memory.layer
        b, h, g, d = index.query.shape
        complete = memory.length // self.params.sub_page_size
        new_pages, st.synced[layer] = complete - st.synced[layer], complete
        return fpga_page_call(index.query.reshape(b * h, g, d), index.kmin.view(b * h, -1, d),
                              index.kmax.view(b * h, -1, d), st.bounds.scale[layer], index.n_pages,
                              self.params.k_pages, self.params.sub_pages, new_pages, (b, h),
                              st.bounds.indexed_layers)

    def recall(self, fpga: Selection, gpu: Selection) -> float:
        """Mean over (batch, retrieval head) rows of |FPGA ∩ GPU| / |GPU| over valid page ids."""
        assert isinstance(fpga, PageSelection) and isinstance(gpu, PageSelection)
        return selection_recall(fpga.pages, gpu.pages)


class LServeAttention(PipelineAttention):
    """The pipeline backend with selection reuse: steps that do not reselect run only Prepare and Apply."""

    method: LServe

    def decode(self, inp: AttentionInput, timeline: Timeline) -> torch.Tensor:
        """All four steps on reselect steps; Prepare and Apply (on the kept selection) otherwise."""
        m = self.method
        if m.reselects(inp.pos):
            return super().decode(inp, timeline)
        memory, query = self.inputs(inp)
        with timeline.section(Step.PREPARE.value):
            m.prepare(memory, query)
        with timeline.section(Step.APPLY.value):
            return m.apply(memory, None, query)


class LServeWorkload(SparseAttentionWorkload):
    """LServe decode, as the runner measures it."""

    method_cls = LServe

    def bind(self, placement: Placement, fpga: FpgaDevice | None) -> Iteration:
        """Decode with LServe as the attention of every layer."""
        attention = LServeAttention(self.method.with_kernels(placement.kernels), placement, fpga)

        def iteration(timeline: Timeline) -> None:
            tok = self.start_tokens
            for _ in range(self.decode_tokens):
                tok = self.model.decode_step(tok, self.cache, attention, timeline)

        return iteration

    def describe(self) -> dict[str, Any]:
        """Method facts for the records: head roles, reselect steps, precision."""
        p, h = self.params, self.model.shape.kv_heads
        steps = range(self.case.context, self.case.context + self.decode_tokens)
        return {
            "streaming_heads": [t.tolist() for t in self.method.state.streaming],
            "retrieval_heads_per_layer": h - p.streaming_heads(h),
            "reselect_steps_per_iteration": sum(self.method.reselects(pos) for pos in steps),
            "head_roles": "seeded stand-in for DuoAttention patterns (synthetic weights)",
            "precision": "bf16 weights and KV (LServe's W8A8KV8 is out of scope)",
        }
