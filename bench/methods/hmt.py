"""Memory as context: HMT (arXiv 2405.06067, OswaldHe/HMT-pytorch) and a Titans-like variant.

The input is read segment by segment. The backbone runs each segment with a recalled memory embedding
and ``sensory`` tokens (the previous segment's last tokens) prepended and the same embedding appended;
the last-layer state of that trailing slot is the segment's memory embedding, kept in a bank of the last
``bank`` (N) embeddings. Segments are independent forward passes: no KV cache crosses a segment. The four
steps per segment, split as the study's tables split them (paper.md section 2 and section 3, Table 2:
Prepare is a forward pass with arithmetic intensity > 100, Relevancy a projection and inner product at
1-10, Retrieval a weighted sum at ~1, Apply an append at ~0):

- **Prepare Memory**: add the previous segment's embedding m to the bank with its key W_k . m; summarize
  the first ``sum_fraction`` of this segment with a backbone pass over [mem, tokens, mem] whose trailing
  state is s (HMT), or with a linear projection of the mean of their embeddings (``variant: titans``);
  project the recall query q = W_q . s.
- **Compute Relevancy**: q . K / sqrt(recall_dim) over the bank's keys.
- **Retrieval**: the softmax-weighted sum of the bank's embeddings (HMT), or of the top-k entries only.
- **Apply to Inference**: build the augmented input [recalled, sensory, segment, recalled] from the
  embeddings. The backbone pass over it is the dense part; its trailing state is the next embedding.

HMT-pytorch recomputes W_k over the whole bank at every recall; W_k is frozen at inference, so here each
entry is projected once when it enters the bank (Prepare builds the index): the same scores for 1/N of
the projection work. The Titans variant follows the study's "part replaced by a linear projection to
mimic Titans" (paper.md section 4, wording ambiguous) as Titans' MAC does: the query is a linear
projection of the segment (q_t = S_t W_Q, arXiv 2501.00663) instead of HMT's backbone summary pass.

**Hetero placement.** The study held the memory embeddings only on the FPGA and generated the query and
ran the recall there; the recalled embedding came back to feed the next forward pass (paper.md section
6). Here the FPGA holds the bank (int16 keys and embeddings, each new entry appended per segment: its
embedding and key cross the link) and runs Relevancy + Retrieval; the projections W_q . s and W_k . m stay
on the GPU, as no HLS kernel here runs a recall_dim x hidden GEMV. The kernel modelled is
``relevancy_topk``: in top-k mode as is (the k-entry weighted sum, k x hidden MACs, is left out), in
weighted-sum mode as two passes of its PE array over the bank: the scores, then the accumulation of N
embeddings, which costs the PE array what N inner products of that width cost. No weighted-sum kernel
exists, so that second pass is an analytic stand-in (at the larger of the two widths: an upper bound).

Latency is reported per segment (:attr:`HmtWorkload.latency_unit`); ``measure.decode_tokens`` is not
used: segments are read like a prefill, and the logits of the segment are not computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from bench.devices.fpga import FpgaCall, FpgaDevice
from bench.errors import UsageError
from bench.model.decoder import Decoder, Rope
from bench.model.presets import ModelShape
from bench.pipeline import (
    DENSE,
    FUSED,
    Index,
    Memory,
    MemoryMethod,
    Placement,
    Query,
    Scores,
    Selection,
    Step,
)
from bench.schema import param
from bench.timeline import Timeline
from bench.workload import Iteration, Workload
from kernels_fpga import reference as fpga_ref
from kernels_fpga.quantize import INT16_MAX, to_int16
from kernels_gpu.relevancy_topk import relevancy_topk

#: Standard deviations of headroom in the FPGA's fixed int16 scales, so appended entries rarely saturate.
_HEADROOM_SIGMAS = 8.0


@dataclass(frozen=True)
class HmtParams:
    """Parameters of HMT; defaults are HMT-pytorch's (Llama-2-7B configuration) where it has one."""

    segment: int = param(512, min=8, help="tokens per segment",
                         source="HMT (arXiv 2405.06067): 256/512/1024-token segments (workloads.md, HMT)")
    sensory: int = param(32, min=0, help="sensory tokens: the previous segment's last tokens, prepended",
                         source="HMT: 32 sensory tokens (workloads.md, HMT)")
    bank: int = param(100, min=1, help="memory embeddings the bank keeps (N); the oldest is dropped",
                      source="HMT-pytorch RecurrentWrapper: ltm_context = 100")
    recall_dim: int = param(4096, min=1, help="output size of the recall projections W_q and W_k",
                            source="HMT-pytorch RecurrentWrapper: hidden_dim (mem_recall_hidden_dim) = 4096")
    sum_fraction: float = param(0.5, min=0.0, max=1.0, help="fraction of the segment the query pass reads",
                                source="HMT-pytorch: the query pass reads segment_size // 2 tokens")
    retrieval: Literal["weighted-sum", "top-k"] = param(
        "weighted-sum", help="weighted-sum: softmax over the whole bank (HMT); top-k: over the top_k only",
        source="paper.md section 2: top-k or weighted sum")
    top_k: int = param(4, min=1, help="entries the top-k mode keeps",
                       source="bench choice; the study's k is unknown (paper.md section 12)")
    variant: Literal["hmt", "titans"] = param(
        "hmt", help="hmt: the query comes from a backbone pass; titans: from a linear projection",
        source="paper.md section 4: HMT, part replaced by a linear projection to mimic Titans")
    segments: int = param(4, min=1, help="segments read per iteration (latency is per segment)",
                          source="bench choice")

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) for values that are valid alone but impossible together."""
        out = []
        if self.sensory >= self.segment:
            out.append(("sensory", f"must be smaller than segment ({self.segment}), got {self.sensory}"))
        if int(self.segment * self.sum_fraction) < 1:
            out.append(("sum_fraction", f"must give the query pass at least one of {self.segment} tokens"))
        if self.retrieval == "top-k" and self.top_k > self.bank:
            out.append(("top_k", f"must be at most bank ({self.bank}), got {self.top_k}"))
        return out

    @property
    def query_tokens(self) -> int:
        """Tokens of the segment the query pass reads."""
        return int(self.segment * self.sum_fraction)

    @property
    def augmented_tokens(self) -> int:
        """Length of the augmented segment: recalled slot, sensory tokens, segment, trailing slot."""
        return self.segment + self.sensory + 2


@dataclass
class MemoryBank(Memory):
    """The bank of memory embeddings, a ring of the last ``capacity`` segments.

    Attributes:
        values: Embeddings [B, N, hidden] (entry i of the input sits in slot i % N).
        keys: Their recall keys W_k . m [B, N, recall_dim].
        count: Entries added since the input began (the newest is in slot (count - 1) % N).
        pending: The newest segment's embedding [B, hidden], added by the next Prepare; None when no
            segment has been read yet.
    """

    values: torch.Tensor
    keys: torch.Tensor
    count: int
    pending: torch.Tensor | None

    @property
    def capacity(self) -> int:
        """Slots in the ring (N)."""
        return self.values.shape[1]

    @property
    def n_valid(self) -> int:
        """Filled slots."""
        return min(self.count, self.capacity)


@dataclass
class SegmentQuery(Query):
    """A segment as the method sees it: its token ids [B, S] and the sensory tokens before it [B, s]."""

    tokens: torch.Tensor
    sensory: torch.Tensor


@dataclass
class RecallIndex(Index):
    """The bank's keys and the recall query, as Prepare leaves them.

    Attributes:
        keys: Keys [B, N, recall_dim]; the first ``n_valid`` slots are filled.
        n_valid: Filled slots.
        query: The recall query q = W_q . s [B, recall_dim].
        new_slot: Slot this Prepare filled (its entry is appended on the FPGA), or None.
    """

    keys: torch.Tensor
    n_valid: int
    query: torch.Tensor
    new_slot: int | None


@dataclass
class RecallScores(Scores):
    """q . k / sqrt(recall_dim) of each filled slot [B, n_valid] (float32)."""

    scores: torch.Tensor


@dataclass
class Recall(Selection):
    """The recalled embedding [B, 1, hidden]; in top-k mode also the slots it mixes [B, top_k] (-1 padded)."""

    memory: torch.Tensor
    slots: torch.Tensor | None


@dataclass
class RecallWeights:
    """The memory method's own weights (synthetic, seeded), besides the backbone's.

    Attributes:
        mem_token: The learned memory embedding of the query pass, recalled from an empty bank [1, hidden].
        wq: Query projection [recall_dim, hidden].
        wk: Key projection [recall_dim, hidden].
        w_titans: The Titans variant's segment projection [hidden, hidden] (None for HMT).
    """

    mem_token: torch.Tensor
    wq: torch.Tensor
    wk: torch.Tensor
    w_titans: torch.Tensor | None

    @classmethod
    def synthetic(cls, params: HmtParams, model: Decoder, seed: int) -> RecallWeights:
        """Seeded weights: N(0, 1/fan_in) projections, and a memory token like the embedding rows."""
        h = model.shape.hidden
        gen = torch.Generator(device=model.device).manual_seed(seed)

        def w(rows: int, cols: int, std: float) -> torch.Tensor:
            x = torch.randn(rows, cols, generator=gen, device=model.device, dtype=torch.float32) * std
            return x.to(model.dtype)

        titans = w(h, h, h**-0.5) if params.variant == "titans" else None
        embed_sd = float(model.embed[:4096].float().std())  # a sample of rows: the table can be large
        return cls(w(1, h, embed_sd), w(params.recall_dim, h, h**-0.5),
                   w(params.recall_dim, h, h**-0.5), titans)


class HmtMethod(MemoryMethod[MemoryBank, RecallIndex, SegmentQuery, RecallScores, Recall]):
    """HMT's four steps for one placement.

    Args:
        params: Method parameters.
        model: The backbone.
        weights: The recall weights.
        kernels: ``optimized`` (the fused relevancy + top-k kernel in top-k mode) or ``torch``.
    """

    name = "hmt"
    offloadable = frozenset({Step.RELEVANCY, Step.RETRIEVAL})

    def __init__(self, params: HmtParams, model: Decoder, weights: RecallWeights, kernels: str = "optimized"):
        self.params = params
        self.model = model
        self.weights = weights
        self.kernels = kernels
        positions = torch.arange(params.query_tokens + 2, device=model.device)
        self._query_rope = model.rope.cos_sin(positions)  # precomputed: no host->device copy per segment


    def prepare(self, memory: MemoryBank, query: SegmentQuery) -> RecallIndex:
        """Add the pending embedding and its key to the bank; summarize the segment into the recall query."""
        w = self.weights
        new_slot = None
        if memory.pending is not None:
            new_slot = memory.count % memory.capacity
            memory.values[:, new_slot] = memory.pending
            memory.keys[:, new_slot] = F.linear(memory.pending, w.wk)
            memory.count += 1
            memory.pending = None
        head = query.tokens[:, : self.params.query_tokens]
        if w.w_titans is not None:
            summary = F.linear(F.embedding(head, self.model.embed).mean(dim=1), w.w_titans)
        else:
            mem = w.mem_token.expand(head.shape[0], 1, -1)
            embeds = torch.cat((mem, F.embedding(head, self.model.embed), mem), dim=1)
            summary = last_hidden(self.model, embeds, *self._query_rope)
        return RecallIndex(memory.keys, memory.n_valid, F.linear(summary, w.wq), new_slot)

    def relevancy(self, index: RecallIndex, query: SegmentQuery) -> RecallScores:
        """Scaled inner products of the query with the filled keys, [B, n_valid] (float32)."""
        keys = index.keys[:, : index.n_valid]
        scores = torch.matmul(keys, index.query.unsqueeze(-1)).squeeze(-1).float()
        return RecallScores(scores / math.sqrt(self.params.recall_dim))

    def retrieve(self, memory: MemoryBank, scores: RecallScores) -> Recall:
        """Softmax-weighted sum of the filled embeddings, over all of them or over the top-k."""
        s = scores.scores
        if self.params.retrieval == "weighted-sum":
            return Recall(_mix(torch.softmax(s, dim=-1), memory.values[:, : s.shape[-1]]), None)
        k = self.params.top_k
        top = torch.topk(s, min(k, s.shape[-1]), dim=-1)
        return self._mix_slots(memory, _pad(top.indices, k), _pad_scores(top.values, k))

    def relevancy_retrieve(self, memory: MemoryBank, index: RecallIndex, query: SegmentQuery) -> Recall:
        """Top-k mode: the fused relevancy + top-k kernel, then the mix; weighted-sum mode: the two steps."""
        if self.params.retrieval == "weighted-sum":
            return self.retrieve(memory, self.relevancy(index, query))
        idx, val = relevancy_topk(index.query.unsqueeze(1), index.keys.unsqueeze(1), index.n_valid,
                                  self.params.top_k, impl=self.impl)
        return self._mix_slots(memory, idx[:, 0].long(), val[:, 0] / math.sqrt(self.params.recall_dim))

    def _mix_slots(self, memory: MemoryBank, slots: torch.Tensor, scores: torch.Tensor) -> Recall:
        """Softmax over the selected slots' scores (padding -1 / -inf weighs 0), then their weighted sum."""
        weights = torch.softmax(scores, dim=-1)
        gather = slots.clamp_min(0).unsqueeze(-1).expand(-1, -1, memory.values.shape[-1])
        picked = torch.gather(memory.values, 1, gather)
        return Recall(_mix(weights, picked), slots)

    def apply(self, memory: MemoryBank, selection: Recall, query: SegmentQuery) -> torch.Tensor:
        """The augmented input [recalled, sensory, segment, recalled] as embeddings [B, S + s + 2, hidden]."""
        p = selection.memory
        body = F.embedding(torch.cat((query.sensory, query.tokens), dim=1), self.model.embed)
        return torch.cat((p, body, p), dim=1)

    def recalled_from_empty(self, batch: int) -> Recall:
        """What an empty bank recalls: the learned memory token (HMT-pytorch's initial memory state)."""
        return Recall(self.weights.mem_token.expand(batch, 1, -1), None)

    # -- the FPGA side ------------------------------------------------------------------------------------

    def fpga_call(self, memory: MemoryBank, index: RecallIndex, scales: tuple[float, float]) -> FpgaCall:
        """Relevancy + retrieval on the FPGA: bank resident (int16), query in, the recalled embedding out.

        Args:
            memory: The bank (the FPGA's copy equals it quantized with ``scales``).
            index: Prepare's index; ``new_slot`` is appended to the FPGA's copy before the call.
            scales: The FPGA copy's fixed int16 scales (keys, embeddings).
        """
        p = self.params
        b, r = index.query.shape
        h = memory.values.shape[-1]
        n = index.n_valid
        key_scale, value_scale = scales

        def evaluate(backend: str) -> Recall:
            q_int, q_scale = to_int16(index.query)
            k_int, _ = to_int16(memory.keys[:, :n], key_scale)
            v_int, _ = to_int16(memory.values[:, :n], value_scale)
            k = p.top_k if p.retrieval == "top-k" else n
            if backend == "csim":
                slots, scores = _csim_topk(q_int, np.ascontiguousarray(k_int), k)
            else:
                slots, scores = fpga_ref.relevancy_topk(q_int, k_int, k)
            score_scale = q_scale * key_scale / math.sqrt(p.recall_dim)
            mixed = _fpga_mix(slots, scores, v_int, score_scale, value_scale)
            out = torch.from_numpy(mixed).to(device=memory.values.device, dtype=memory.values.dtype)
            kept = torch.from_numpy(slots).to(memory.values.device).long() if p.retrieval == "top-k" else None
            return Recall(out.unsqueeze(1), kept)

        new = int(index.new_slot is not None)
        if p.retrieval == "top-k":
            shape = {"rows": b, "n_keys": n, "dim": r, "k": p.top_k, "new_keys": new}
        else:
            # Scores, then the accumulation of n embeddings: a second pass of the same PE array.
            shape = {"rows": 2 * b, "n_keys": n, "dim": max(r, h), "k": 1, "new_keys": new}
        return FpgaCall("relevancy_topk", shape, bytes_in=b * r * 2, bytes_out=b * h * 2,
                        bytes_append=new * b * (h + r) * 2,
                        reference=lambda: evaluate("reference"), csim=lambda: evaluate("csim"))

    def fpga_scales(self) -> tuple[float, float]:
        """Fixed int16 scales of the FPGA's bank: keys and embeddings, with 8 sigma of headroom.

        Embeddings leave the final RMSNorm, so entry j has RMS |g_j| (g its weight); key row i then has
        standard deviation ||W_k[i] * g|| for inputs of unit variance.
        """
        g = self.model.final_norm.float()
        key_sd = float((self.weights.wk.float() * g).norm(dim=-1).max())
        return (_HEADROOM_SIGMAS * key_sd / INT16_MAX, _HEADROOM_SIGMAS * float(g.abs().max()) / INT16_MAX)

    def recall(self, fpga: Selection, gpu: Selection) -> float:
        """Top-k: mean share of the GPU's slots the FPGA also picks; weighted sum: mean cosine similarity."""
        assert isinstance(fpga, Recall) and isinstance(gpu, Recall)
        if fpga.slots is not None and gpu.slots is not None:
            return slot_recall(fpga.slots, gpu.slots)
        return float(F.cosine_similarity(fpga.memory.float(), gpu.memory.float(), dim=-1).mean())


class HmtWorkload(Workload):
    """Read ``segments`` segments after a context of earlier ones, as the runner measures it.

    The bank starts as a context of ``context`` tokens would leave it: ``context // segment`` segments
    read, their (synthetic, RMS-normalized) embeddings in the ring, the newest pending. Every iteration
    reads the same segments from that state.
    """

    name = "hmt"
    Params = HmtParams
    offloadable = HmtMethod.offloadable
    kind = "memory"
    #: The unit the runner's per-step latency is in for this method.
    latency_unit: ClassVar[str] = "segment"

    def __init__(self, params: HmtParams, model: Decoder, case: Any, decode_tokens: int, seed: int) -> None:
        super().__init__(params, model, case, decode_tokens, seed)
        s, p, b = model.shape, params, case.batch
        self.weights = RecallWeights.synthetic(p, model, seed + 7919)
        gen = torch.Generator(device=model.device).manual_seed(seed)
        self.tokens = torch.randint(0, s.vocab, (b, p.sensory + p.segments * p.segment), generator=gen,
                                    device=model.device)
        values = torch.zeros(b, p.bank, s.hidden, dtype=model.dtype, device=model.device)
        keys = torch.zeros(b, p.bank, p.recall_dim, dtype=model.dtype, device=model.device)
        read = case.context // p.segment
        self.bank = MemoryBank(values, keys, max(read - 1, 0), None)
        for i in range(max(0, read - 1 - p.bank), read):
            m = self._synthetic_embedding(b, gen)
            if i == read - 1:
                self.bank.pending = m
            else:
                values[:, i % p.bank] = m
                keys[:, i % p.bank] = F.linear(m, self.weights.wk)
        self._start = (values.clone(), keys.clone(), self.bank.count, self.bank.pending)
        self._rope = model.rope.cos_sin(torch.arange(p.augmented_tokens, device=model.device))
        self._fpga_fits: dict[str, Any] = {}

    def _synthetic_embedding(self, batch: int, gen: torch.Generator) -> torch.Tensor:
        """A final-norm output: unit-RMS random vectors times the final norm's weight, [B, hidden]."""
        h = self.model.shape.hidden
        x = torch.randn(batch, h, generator=gen, device=self.model.device, dtype=torch.float32)
        return (F.rms_norm(x, (h,), eps=1e-6) * self.model.final_norm.float()).to(self.model.dtype)

    @classmethod
    def memory_bytes(cls, params: HmtParams, shape: ModelShape, case: Any, decode_tokens: int,
                     dtype_bytes: int) -> dict[str, int]:
        """The bank and its rewind copy, the recall weights, a segment's activations, the tokens."""
        p, b, h = params, case.batch, shape.hidden
        qkv = (shape.heads + 2 * shape.kv_heads) * shape.head_dim
        # Live at once in a layer: the input and residual, q/k/v and their RoPE copies, attention output,
        # the MLP's gate/up pair and product.
        per_token = 3 * h + 2 * qkv + shape.heads * shape.head_dim + 3 * shape.ffn
        weights = (2 * p.recall_dim + 1) * h + (h * h if p.variant == "titans" else 0)
        return {
            "memory_bank": 2 * b * p.bank * (h + p.recall_dim) * dtype_bytes,
            "method_weights": weights * dtype_bytes,
            "activations": b * p.augmented_tokens * per_token * dtype_bytes,
            "tokens": b * (p.sensory + p.segments * p.segment) * 8,
        }

    def bind(self, placement: Placement, fpga: FpgaDevice | None) -> Iteration:
        """Read the segments with the recall on the placement's devices."""
        method = HmtMethod(self.params, self.model, self.weights, placement.kernels)
        p = self.params
        scales = (1.0, 1.0)
        if fpga is not None:
            scales = method.fpga_scales()
            self._fpga_fits = _bank_residency(fpga, p, self.case.batch, self.model.shape.hidden)

        def iteration(timeline: Timeline) -> None:
            bank = self.bank
            for i in range(p.segments):
                start = p.sensory + i * p.segment
                query = SegmentQuery(self.tokens[:, start : start + p.segment],
                                     self.tokens[:, start - p.sensory : start])
                with timeline.section(Step.PREPARE.value):
                    index = method.prepare(bank, query)
                recall = self._recall(method, placement, fpga, bank, index, query, scales, timeline)
                with timeline.section(Step.APPLY.value):
                    embeds = method.apply(bank, recall, query)
                with timeline.section(DENSE):
                    bank.pending = last_hidden(self.model, embeds, *self._rope)

        return iteration

    def _recall(self, method: HmtMethod, placement: Placement, fpga: FpgaDevice | None, bank: MemoryBank,
                index: RecallIndex, query: SegmentQuery, scales: tuple[float, float],
                timeline: Timeline) -> Recall:
        """Relevancy + retrieval on the placement's device (an empty bank recalls the memory token)."""
        if index.n_valid == 0:
            return method.recalled_from_empty(bank.values.shape[0])
        if fpga is not None:
            with timeline.section(FUSED):
                out = fpga.offload(lambda: method.fpga_call(bank, index, scales),
                                   lambda: method.relevancy_retrieve(bank, index, query), method.recall)
            assert isinstance(out, Recall)
            return out
        if placement.kernels == "optimized":
            with timeline.section(FUSED):
                return method.relevancy_retrieve(bank, index, query)
        with timeline.section(Step.RELEVANCY.value):
            scores = method.relevancy(index, query)
        with timeline.section(Step.RETRIEVAL.value):
            return method.retrieve(bank, scores)

    def rewind(self) -> None:
        """Back to the bank the context left."""
        values, keys, count, pending = self._start
        self.bank.values.copy_(values)
        self.bank.keys.copy_(keys)
        self.bank.count, self.bank.pending = count, pending

    @property
    def steps_per_iteration(self) -> int:
        """Segments per iteration: latency is per segment."""
        return self.params.segments

    @property
    def tokens_per_iteration(self) -> int:
        """Segment tokens read per iteration over the batch."""
        return self.params.segments * self.params.segment * self.case.batch

    def describe(self) -> dict[str, Any]:
        """Method facts for the records: the latency unit and where the FPGA holds the bank."""
        return {"latency_unit": self.latency_unit, "segments_per_iteration": self.params.segments,
                "bank_entries_at_start": min(self._start[2], self.params.bank),
                "fpga_bank": self._fpga_fits or None,
                "decode_tokens": "not used: segments are read like a prefill"}


def last_hidden(model: Decoder, embeds: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The backbone's last-layer state at the final position, after the final norm, [B, hidden].

    A causal forward pass over input embeddings [B, T, hidden] from position 0 with no KV cache (HMT's
    segments are independent passes); ``cos``/``sin`` are RoPE tables [T, head_dim].
    """
    b, t, _ = embeds.shape
    h = embeds
    for layer in model.layers:
        q, k, v = layer.project_qkv(h)
        q = Rope.rotate(q.transpose(1, 2), cos, sin)
        k = Rope.rotate(k.transpose(1, 2), cos, sin)
        out = F.scaled_dot_product_attention(q, k, v.transpose(1, 2), is_causal=True, enable_gqa=True)
        h = layer.finish(h, out.transpose(1, 2).reshape(b, t, -1))
    return F.rms_norm(h[:, -1], (model.shape.hidden,), model.final_norm, eps=1e-6)


def slot_recall(fpga: torch.Tensor, gpu: torch.Tensor) -> float:
    """Mean over rows of the fraction of the GPU's valid slots (>= 0) the FPGA also selected."""
    valid = gpu >= 0
    hit = (gpu.unsqueeze(-1) == fpga.unsqueeze(-2)).any(-1) & valid
    rows = valid.any(-1)
    if not bool(rows.any()):
        return 1.0
    per_row = hit.sum(-1).float() / valid.sum(-1).clamp_min(1).float()
    return float(per_row[rows].mean())


def _mix(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """sum_i weights[b, i] * values[b, i] as [B, 1, hidden] in the values' dtype (weights are float32)."""
    return torch.matmul(weights.unsqueeze(1).to(values.dtype), values)


def _pad(idx: torch.Tensor, k: int) -> torch.Tensor:
    """Pad the last dimension to ``k`` with -1."""
    return torch.cat((idx, idx.new_full((*idx.shape[:-1], k - idx.shape[-1]), -1)), dim=-1)


def _pad_scores(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Pad the last dimension to ``k`` with -inf (zero softmax weight)."""
    return torch.cat((scores, scores.new_full((*scores.shape[:-1], k - scores.shape[-1]), -math.inf)), dim=-1)


def _fpga_mix(slots: np.ndarray, scores: np.ndarray, v_int: np.ndarray, score_scale: float,
              value_scale: float) -> np.ndarray:
    """The FPGA's recall from its integer top-k: softmax of the real scores, then the weighted int16 sum.

    Args:
        slots: int32 [B, k] selected slots, -1 padded.
        scores: int64 [B, k] their exact integer scores.
        v_int: int16 [B, n, hidden] resident embeddings.
        score_scale: Real value of one integer score step (query scale x key scale / sqrt(recall_dim)).
        value_scale: Real value of one int16 embedding step.

    Returns:
        float32 [B, hidden].
    """
    valid = slots >= 0
    real = np.where(valid, scores.astype(np.float64) * score_scale, -np.inf)
    w = np.exp(real - real.max(axis=-1, keepdims=True))
    w /= w.sum(axis=-1, keepdims=True)
    picked = np.take_along_axis(v_int, np.maximum(slots, 0)[..., None].astype(np.int64), axis=1)
    return (np.einsum("bk,bkd->bd", w, picked.astype(np.float64)) * value_scale).astype(np.float32)


def _csim_topk(q: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The relevancy_topk HLS kernel under C simulation, built for this width and k if the default is not."""
    from kernels_fpga import csim

    lib = csim.load()
    overrides = {}
    if keys.shape[-1] != lib.params["BENCH_D"]:
        overrides["BENCH_D"] = keys.shape[-1]
    if k > lib.params["BENCH_K_MAX"]:
        overrides["BENCH_K_MAX"] = 1 << (k - 1).bit_length()
    if overrides:
        lib = csim.load(overrides)
    return lib.relevancy_topk(q, keys, k)


def _bank_residency(fpga: FpgaDevice, params: HmtParams, batch: int, hidden: int) -> dict[str, Any]:
    """Where the FPGA keeps the bank (int16 keys and embeddings) and whether it fits its memories."""
    bytes_ = batch * params.bank * (hidden + params.recall_dim) * 2
    on_chip = int(fpga.spec.value("onchip.bram_bytes")) + int(fpga.spec.value("onchip.uram_bytes"))
    hbm = int(fpga.spec.value("hbm.capacity"))
    if bytes_ > hbm:
        raise UsageError(f"the FPGA bank needs {bytes_ / 2**30:.1f} GiB (batch {batch} x {params.bank} "
                         f"entries x {hidden + params.recall_dim} int16) but {fpga.spec.name} has "
                         f"{hbm / 2**30:.0f} GiB of HBM; lower batch or bank")
    return {"bytes": bytes_, "fits_on_chip": bytes_ <= on_chip, "on_chip_bytes": on_chip,
            "provenance": "analytic"}
