"""MemAgent (BytedTsinghua-SIA/MemAgent): read a document chunk by chunk, rewriting a text memory.

Each round the model sees [problem, chunk, memory] (problem <= 1024 tokens, a 5000-token chunk, memory
<= 1024 tokens) and writes a new memory by decoding it (workloads.md, MemAgent). The four steps per round
(paper.md section 2: Prepare is an LLM decoding a text memory, Relevancy is N/A, Retrieval is "nearest",
Apply is a prefill; section 3: up to 97% of the time is memory processing, almost all of it Prepare):

- **Apply to Inference**: prefill [problem, chunk, memory] into a fresh KV cache (prefill-heavy).
- **Prepare Memory**: decode the rewritten memory, ``memory_tokens`` tokens, greedily (decode-heavy).
- **Compute Relevancy**: none; the step is bypassed at no cost (paper.md section 1).
- **Retrieval**: "nearest": the newest memory replaces the old one.

The final answer (<= 1024 tokens decoded from the memory alone) is not part of an iteration: a round is
the unit that repeats, ``ceil(context / chunk)`` of them per document. Every round decodes a full-length
memory (the steady state once the memory has filled); the first round starts from a synthetic one.

**Hetero placement** (paper.md sections 6 and 10): the study moved the memory-bound decoding off the GPU
and kept the prefill there (1.85x at batch 1, falling to 0.13x at batch 32; GPU-only above batch 2).
Here ``prepare`` runs on the FPGA; the prefilled KV cache crosses the link and the memory's token ids come
back. No HLS kernel decodes an LLM, so the FPGA's decode is analytic (:func:`fpga_decode`): every step
streams the weights and the KV cache from HBM at the card's measured bandwidth, or is bound by its DSPs,
whichever is slower. :func:`fpga_fit` checks whether the full model and KV cache fit the card's
HBM (bf16 Qwen2.5-7B barely does, alone). The functional pass decodes with the GPU's weights (bf16), so
its tokens are the GPU's; with ``fpga_weight_bits: 8`` the FPGA's int8 numerics are not emulated.

Latency is reported per round (:attr:`MemAgentWorkload.latency_unit`) and tokens are the memory tokens
written; ``measure.decode_tokens`` is not used (``memory_tokens`` sets the decode length).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from bench.devices.fpga import FpgaCall, FpgaDevice
from bench.errors import UsageError
from bench.model.decoder import Decoder, DenseAttention, KVCache
from bench.model.presets import ModelShape
from bench.pipeline import Index, Memory, MemoryMethod, Placement, Query, Scores, Selection, Step
from bench.schema import param
from bench.timeline import NullTimeline, Timeline
from bench.workload import Iteration, Workload
from kernels_fpga.model import FpgaModel, KernelEstimate
from kernels_fpga.spec import DeviceSpec

_NULL = NullTimeline()
_TOKEN_BYTES = 4  # token ids cross the link as int32
_KV_BYTES = 2  # the FPGA keeps the KV cache in bf16, as the GPU does


@dataclass(frozen=True)
class MemAgentParams:
    """Parameters of MemAgent; defaults are the reference implementation's bounds."""

    chunk: int = param(5000, min=1, help="document tokens read per round",
                       source="MemAgent: 5000-token chunks (workloads.md, MemAgent)")
    problem_tokens: int = param(1024, min=1, help="tokens of the problem statement, seen every round",
                                source="MemAgent: problem <= 1024 tokens")
    memory_tokens: int = param(1024, min=1, help="tokens of the memory each round decodes (Prepare)",
                               source="MemAgent: memory <= 1024 tokens")
    fpga_weight_bits: Literal[16, 8] = param(
        16, help="weight precision of the FPGA's decode engine (bf16, or int8 weights to fit its HBM)",
        source="bench choice; the study's FPGA decode design is unknown (paper.md section 6)")

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) for values that are valid alone but impossible together: none."""
        return []


@dataclass
class TextMemory(Memory):
    """The agent's text memory and the round's context.

    Attributes:
        tokens: The current memory [B, memory_tokens] (token ids).
        cache: KV cache of the round: the prefilled context, then the decoded memory.
        prefilled: Positions the round's prefill wrote.
        next_token: The prefill's greedy prediction [B], the memory's first token.
        draft: Buffer the GPU's decode writes the rewritten memory into [B, memory_tokens].
    """

    tokens: torch.Tensor
    cache: KVCache
    prefilled: int
    next_token: torch.Tensor | None
    draft: torch.Tensor


@dataclass
class ChunkQuery(Query):
    """A round's input: the problem [B, P] and the document chunk [B, n] (token ids)."""

    problem: torch.Tensor
    chunk: torch.Tensor


@dataclass
class MemoryDraft(Index, Selection):
    """Prepare's output: the rewritten memory [B, memory_tokens] (also what an FPGA decode hands back)."""

    tokens: torch.Tensor


@dataclass
class Candidates(Scores):
    """Relevancy is N/A: the candidate memories pass through unscored (the newest is the nearest)."""

    newest: torch.Tensor


@dataclass
class NearestMemory(Selection):
    """The memory the next round reads [B, memory_tokens]."""

    tokens: torch.Tensor


class MemAgentMethod(MemoryMethod[TextMemory, MemoryDraft, ChunkQuery, Candidates, NearestMemory]):
    """MemAgent's four steps on the decoder.

    Args:
        params: Method parameters.
        model: The decoder.
    """

    name = "memagent"
    offloadable = frozenset({Step.PREPARE})

    def __init__(self, params: MemAgentParams, model: Decoder) -> None:
        self.params = params
        self.model = model
        self._dense = DenseAttention()

    def apply(self, memory: TextMemory, selection: NearestMemory, query: ChunkQuery) -> torch.Tensor:
        """Prefill [problem, chunk, memory] into a fresh cache; returns the next token [B]."""
        memory.cache.length = 0
        prompt = torch.cat((query.problem, query.chunk, selection.tokens), dim=1)
        memory.next_token = self.model.prefill(prompt, memory.cache)
        memory.prefilled = memory.cache.length
        return memory.next_token

    def prepare(self, memory: TextMemory, query: ChunkQuery) -> MemoryDraft:
        """Decode the rewritten memory greedily after the prefilled context (memory_tokens - 1 steps)."""
        if memory.next_token is None:
            raise RuntimeError("prepare before apply: the round's context is not prefilled")
        memory.cache.length = memory.prefilled
        tok = memory.next_token
        memory.draft[:, 0] = tok
        for i in range(1, self.params.memory_tokens):
            # Sections are timed by the caller: the decoder's own ones would nest inside Prepare.
            tok = self.model.decode_step(tok, memory.cache, self._dense, _NULL)
            memory.draft[:, i] = tok
        return MemoryDraft(memory.draft)

    def relevancy(self, index: MemoryDraft, query: ChunkQuery) -> Candidates:
        """N/A: no scores; the rewritten memory is the only candidate."""
        return Candidates(index.tokens)

    def retrieve(self, memory: TextMemory, scores: Candidates) -> NearestMemory:
        """Nearest: the newest memory replaces the current one."""
        memory.tokens.copy_(scores.newest)
        return NearestMemory(memory.tokens)

    def fpga_call(self, memory: TextMemory, query: ChunkQuery) -> FpgaCall:
        """The decode on the FPGA: the prefilled KV cache and first token in, the memory's token ids out."""
        s, p = self.model.shape, self.params
        b = memory.tokens.shape[0]
        shape = {"layers": s.layers, "hidden": s.hidden, "heads": s.heads, "kv_heads": s.kv_heads,
                 "head_dim": s.head_dim, "ffn": s.ffn, "vocab": s.vocab, "batch": b,
                 "context": memory.prefilled, "steps": p.memory_tokens - 1, "weight_bits": p.fpga_weight_bits}

        def reference() -> MemoryDraft:
            return MemoryDraft(self.prepare(memory, query).tokens.clone())

        def csim() -> MemoryDraft:
            raise UsageError("memagent's FPGA decode has no HLS kernel to simulate; use functional: "
                             "reference")

        return FpgaCall("llm_decode", shape,
                        bytes_in=b * (memory.prefilled * s.kv_bytes_per_token(_KV_BYTES) + _TOKEN_BYTES),
                        bytes_out=b * p.memory_tokens * _TOKEN_BYTES, bytes_append=0,
                        reference=reference, csim=csim)

    def recall(self, fpga: Selection, gpu: Selection) -> float:
        """Fraction of memory tokens the FPGA's decode and the GPU's agree on."""
        assert isinstance(fpga, MemoryDraft) and isinstance(gpu, MemoryDraft)
        return float((fpga.tokens == gpu.tokens).float().mean())


class DecodeEngineModel(FpgaModel):
    """The card's analytic model plus an LLM decode engine, for a placement that decodes on the FPGA.

    :class:`~bench.devices.fpga.FpgaDevice` runs an offload's kernel by name on its model; kernels_fpga
    has no decode kernel, so MemAgent's hetero device gets this extension of the card's model: the same
    spec, clock, control and link, one more kernel family (:meth:`llm_decode`), and the dynamic power of a
    design that streams from every HBM pseudo channel.
    """

    def llm_decode(self, layers: int, hidden: int, heads: int, kv_heads: int, head_dim: int, ffn: int,
                   vocab: int, batch: int, context: int, steps: int, weight_bits: int) -> KernelEstimate:
        """Analytic decode of ``steps`` tokens on the card; see :func:`fpga_decode`."""
        shape = ModelShape("fpga-decode", layers, hidden, heads, kv_heads, head_dim, ffn, vocab, 0)
        return fpga_decode(self, shape, batch, context, steps, weight_bits)

    @property
    def dynamic_power_w(self) -> float:
        """Extra board power while decoding: logic at this clock plus every HBM channel at full rate."""
        s = self.spec
        clock_ratio = self.clock_hz / float(s.value("power.logic_dynamic_clock"))
        logic = float(s.value("power.logic_dynamic")) * clock_ratio
        return logic + float(s.value("power.hbm_full_rate_board")) - self.static_power_w


def fpga_decode(model: FpgaModel, shape: ModelShape, batch: int, context: int, steps: int,
                weight_bits: int) -> KernelEstimate:
    """Analytic time of ``steps`` greedy decode steps of ``shape`` on the card, all sequences together.

    Each step reads every streamed weight once for the whole batch (the embedding table is gathered, not
    streamed) and each sequence's KV cache, at the spec's measured aggregate HBM bandwidth
    (``hbm.bw_total_measured``), or is bound by MACs at one per DSP per cycle for 16-bit weights and two
    for int8 (two int8 products share a DSP48E2, Xilinx WP486; recalled, not in the references), whichever
    is slower: an optimistic bound for the FPGA (every DSP busy, no stalls, no control overhead).

    Args:
        model: The card's analytic model (spec and clock).
        shape: The model run (the layers the GPU runs too).
        batch: Sequences decoded together.
        context: Tokens in each sequence's KV cache before the first step.
        steps: Decode steps.
        weight_bits: 16 (bf16) or 8 (int8).

    Returns:
        The estimate; ``tier`` counts bytes read from HBM, ``breakdown`` splits the cycles between
        memory-bound and compute-bound steps.
    """
    if weight_bits not in (8, 16):
        raise UsageError(f"fpga_weight_bits must be 16 or 8, got {weight_bits}")
    s = model.spec
    bw = float(s.value("hbm.bw_total_measured"))
    macs_per_s = float(s.value("resources.dsps")) * (2 if weight_bits == 8 else 1) * model.clock_hz
    streamed = shape.weight_params() - shape.vocab * shape.hidden
    weight_bytes = streamed * weight_bits // 8
    kv_token = shape.kv_bytes_per_token(_KV_BYTES)
    attn_macs = 2 * shape.layers * shape.heads * shape.head_dim  # q.k and p.v per cached position
    memory_s = compute_s = 0.0
    hbm = 0
    for t in range(context, context + steps):
        read = weight_bytes + batch * (t * kv_token + kv_token)  # the cache so far, and the new entry
        mem, comp = read / bw, batch * (streamed + attn_macs * (t + 1)) / macs_per_s
        hbm += read
        if mem >= comp:
            memory_s += mem
        else:
            compute_s += comp
    seconds = memory_s + compute_s
    cycles = round(seconds * model.clock_hz)
    memory_cycles = round(memory_s * model.clock_hz)
    notes = (
        f"clock {model.clock_hz / 1e6:g} MHz; spec {s.name}; {shape.layers} layers, batch {batch}, "
        f"{steps} steps from {context} cached tokens; weights {weight_bits}-bit ({weight_bytes / 1e9:.2f} GB "
        f"streamed per step), KV bf16",
        f"HBM {bw / 1e9:.0f} GB/s ({s.source_of('hbm.bw_total_measured')}); "
        f"{s.value('resources.dsps')} DSPs ({s.source_of('resources.dsps')})",
        "no HLS kernel: an analytic roofline of a hypothetical decode engine (paper.md section 6 leaves "
        "the study's design unclear)",
    )
    return KernelEstimate(kernel="llm_decode", seconds=seconds, cycles=cycles, busy_s=seconds, hbm_bytes=hbm,
                          breakdown={"memory_bound": float(memory_cycles),
                                     "compute_bound": float(cycles - memory_cycles)},
                          tier={"bram": 0, "uram": 0, "hbm": hbm}, notes=notes)


def fpga_fit(spec: DeviceSpec, shape: ModelShape, batch: int, context: int,
             weight_bits: int) -> dict[str, Any]:
    """Whether the whole model and the batch's KV cache fit the card's HBM.

    Args:
        spec: The card's spec.
        shape: The full model (every layer: what a deployment would hold).
        batch: Sequences.
        context: Tokens cached per sequence at the end of a round.
        weight_bits: Weight precision.

    Returns:
        Bytes of weights, KV cache and HBM, whether they fit, and the largest batch that would.
    """
    weights = shape.weight_params() * weight_bits // 8
    kv_seq = context * shape.kv_bytes_per_token(_KV_BYTES)
    hbm = int(spec.value("hbm.capacity"))
    return {"weight_bytes": weights, "kv_bytes": batch * kv_seq, "hbm_bytes": hbm,
            "fits": weights + batch * kv_seq <= hbm, "max_batch": max(0, (hbm - weights) // kv_seq),
            "layers": shape.layers, "weight_bits": weight_bits, "provenance": "analytic"}


class MemAgentWorkload(Workload):
    """Read a ``context``-token document in rounds of ``chunk`` tokens, rewriting the memory every round."""

    name = "memagent"
    Params = MemAgentParams
    offloadable = MemAgentMethod.offloadable
    kind = "memory"
    #: The unit the runner's per-step latency is in for this method.
    latency_unit: ClassVar[str] = "round"

    def __init__(self, params: MemAgentParams, model: Decoder, case: Any, decode_tokens: int,
                 seed: int) -> None:
        super().__init__(params, model, case, decode_tokens, seed)
        p, b = params, case.batch
        self.chunks = chunk_spans(case.context, p.chunk)
        gen = torch.Generator(device=model.device).manual_seed(seed)

        def tokens(n: int) -> torch.Tensor:
            return torch.randint(0, model.shape.vocab, (b, n), generator=gen, device=model.device)

        self.problem = tokens(p.problem_tokens)
        self.document = tokens(case.context)
        self.initial = tokens(p.memory_tokens)
        cache = model.new_cache(b, self.cache_tokens(p, case.context))
        self.memory = TextMemory(self.initial.clone(), cache, 0, None, torch.empty_like(self.initial))
        self.method = MemAgentMethod(p, model)
        self._fit: dict[str, Any] | None = None

    @staticmethod
    def cache_tokens(params: MemAgentParams, context: int) -> int:
        """KV positions a round needs: problem, chunk and memory prefilled, then memory - 1 decoded."""
        return params.problem_tokens + min(params.chunk, context) + 2 * params.memory_tokens - 1

    @classmethod
    def check_placement(cls, placement: Placement, devices: dict[str, str]) -> None:
        """Only Prepare (the memory-rewriting decode) may run on an FPGA, as in the study."""
        on_fpga = [s.value for s in Step if devices[placement.device_of(s)] == "fpga"]
        if on_fpga and on_fpga != [Step.PREPARE.value]:
            raise UsageError(f"placement '{placement.name}': memagent moves only prepare (the decode that "
                             f"rewrites the memory) to an FPGA, as the study did; got {', '.join(on_fpga)} "
                             "there")

    @classmethod
    def memory_bytes(cls, params: MemAgentParams, shape: ModelShape, case: Any, decode_tokens: int,
                     dtype_bytes: int) -> dict[str, int]:
        """The KV cache, the prefill's activations and attention mask, and the token buffers."""
        p, b = params, case.batch
        t = p.problem_tokens + min(p.chunk, case.context) + p.memory_tokens
        qkv = (shape.heads + 2 * shape.kv_heads) * shape.head_dim
        # Live in a layer of the prefill: input, residual and norm, q/k/v plus RoPE's float32 copies of q
        # and k, the attention output, and the MLP's gate/up pair and product.
        per_token = 3 * shape.hidden + qkv + shape.heads * shape.head_dim + 3 * shape.ffn
        rope = 2 * (shape.heads + shape.kv_heads) * shape.head_dim * 4
        # Decoder.prefill's boolean mask [group x T, T], and SDPA's additive copy of it.
        mask = shape.group * t * t * (1 + dtype_bytes)
        return {
            "kv_cache": b * cls.cache_tokens(p, case.context) * shape.kv_bytes_per_token(dtype_bytes),
            "activations": b * t * (per_token * dtype_bytes + rope) + mask,
            "tokens": b * (p.problem_tokens + case.context + 3 * p.memory_tokens) * 8,
        }

    def bind(self, placement: Placement, fpga: FpgaDevice | None) -> Iteration:
        """Rounds of prefill (GPU), decode (GPU or FPGA) and nearest retrieval."""
        method, memory = self.method, self.memory
        if fpga is not None:
            if fpga.functional == "csim":
                raise UsageError("memagent's FPGA decode has no HLS kernel to simulate; set the FPGA's "
                                 "functional: reference")
            m = fpga.model
            fpga.model = DecodeEngineModel(fpga.spec, clock_hz=m.clock_hz, control=m.control, link=m.link)
            cached = self.cache_tokens(self.params, self.case.context)
            self._fit = fpga_fit(fpga.spec, _full_shape(self.model.shape), self.case.batch, cached,
                                 self.params.fpga_weight_bits)

        def iteration(timeline: Timeline) -> None:
            selection = NearestMemory(memory.tokens)
            for start, n in self.chunks:
                query = ChunkQuery(self.problem, self.document[:, start : start + n])
                with timeline.section(Step.APPLY.value):
                    method.apply(memory, selection, query)
                with timeline.section(Step.PREPARE.value):
                    draft = self._rewrite(fpga, query)
                scores = method.relevancy(draft, query)  # N/A: no work, so no section
                with timeline.section(Step.RETRIEVAL.value):
                    selection = method.retrieve(memory, scores)

        return iteration

    def _rewrite(self, fpga: FpgaDevice | None, query: ChunkQuery) -> MemoryDraft:
        """Prepare on the GPU, or offloaded to the FPGA (taped in the functional pass, replayed after)."""
        method, memory = self.method, self.memory
        if fpga is None:
            return method.prepare(memory, query)
        out = fpga.offload(lambda: method.fpga_call(memory, query), lambda: method.prepare(memory, query),
                           method.recall)
        assert isinstance(out, MemoryDraft)
        return out

    def rewind(self) -> None:
        """Back to the initial memory (each round's prefill starts a fresh cache)."""
        self.memory.tokens.copy_(self.initial)

    @property
    def steps_per_iteration(self) -> int:
        """Rounds per iteration: latency is per round."""
        return len(self.chunks)

    @property
    def tokens_per_iteration(self) -> int:
        """Memory tokens written per iteration over the batch."""
        return len(self.chunks) * self.params.memory_tokens * self.case.batch

    def describe(self) -> dict[str, Any]:
        """Method facts for the records: the latency unit, the rounds, whether the FPGA holds the model."""
        return {"latency_unit": self.latency_unit, "rounds": len(self.chunks),
                "memory_tokens": self.params.memory_tokens, "fpga_fit": self._fit,
                "decode_tokens": "not used: memory_tokens sets the decode length"}


def chunk_spans(context: int, chunk: int) -> list[tuple[int, int]]:
    """(start, length) of each round's chunk of a ``context``-token document; the last may be shorter."""
    return [(start, min(chunk, context - start)) for start in range(0, context, chunk)]


def _full_shape(shape: ModelShape) -> ModelShape:
    """The preset's full depth when the run uses fewer layers (what the card must hold to serve the model)."""
    from bench.model.presets import PRESETS

    preset = PRESETS.get(shape.name)
    return shape.with_layers(preset.layers) if preset is not None else shape

