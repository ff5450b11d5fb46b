"""Sparse-attention methods in the decoder: a method's four steps run where dense attention would.

:class:`SparseAttentionMethod` is the contract a sparse-attention method (SeerAttention-R, Quest, LServe,
DSA) fulfils on top of :class:`~bench.pipeline.MemoryMethod`; :class:`PipelineAttention` is the decoder's
attention backend that runs those steps for one placement, timing each in the timeline and sending the
offloaded steps to the FPGA device; :class:`SparseAttentionWorkload` is the unit the runner measures:
decode ``decode_tokens`` tokens from a synthetically filled context.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from bench.devices.fpga import FpgaCall, FpgaDevice
from bench.errors import UsageError
from bench.model.decoder import AttentionInput, Decoder, KVCache
from bench.model.presets import ModelShape
from bench.pipeline import FUSED, Index, Memory, MemoryMethod, Placement, Query, Selection, Step
from bench.timeline import Timeline
from bench.workload import Iteration, Workload


@dataclass
class KVMemory(Memory):
    """One layer's KV cache as raw memory: keys after RoPE and values, [B, H_kv, capacity, D]."""

    k: torch.Tensor
    v: torch.Tensor
    length: int
    layer: int


@dataclass
class AttentionQuery(Query):
    """The new token's attention inputs: queries after and before RoPE [B, H_q, D], new key before RoPE."""

    q: torch.Tensor
    q_pre: torch.Tensor
    k_pre: torch.Tensor


class SparseAttentionMethod(MemoryMethod[KVMemory, Index, AttentionQuery, Any, Selection]):
    """A memory-processing method that replaces decode attention.

    Subclasses keep per-case state (their index, gate weights) shared by every placement, set up by
    :meth:`attach` during the synthetic fill, and restore it with :meth:`rewind` so that every measured
    iteration does identical work.
    """

    Params: ClassVar[type]

    @abstractmethod
    def attach(self, model: Decoder, cache: KVCache, seed: int) -> None:
        """Allocate per-case state for ``cache`` before it is filled (the fill then calls :meth:`observe_fill`)."""

    @abstractmethod
    def observe_fill(self, layer: int, start: int, k_pre: torch.Tensor) -> None:
        """Prepare Memory over the context: index one chunk of the synthetic fill's pre-RoPE keys."""

    @abstractmethod
    def fill_done(self, length: int) -> None:
        """Called once after the fill: snapshot what :meth:`rewind` restores; load the FPGA's resident copy."""

    @abstractmethod
    def rewind(self, length: int) -> None:
        """Restore the index to the state it had when the cache held ``length`` tokens after the fill."""

    @abstractmethod
    def fpga_call(self, memory: KVMemory, index: Index, query: AttentionQuery) -> FpgaCall:
        """Describe the offloaded steps (kernel, shapes, bytes, FPGA-numerics evaluators) for the FPGA."""

    @abstractmethod
    def recall(self, fpga: Selection, gpu: Selection) -> float:
        """Fraction of the GPU's selected entries that the FPGA's selection also holds (ignores padding)."""

    @classmethod
    @abstractmethod
    def memory_bytes(cls, params: Any, shape: ModelShape, batch: int, capacity: int, dtype_bytes: int) -> int:
        """Device bytes the method needs for a case beyond the KV cache (index, FPGA copy, workspace)."""


class PipelineAttention:
    """Decoder attention backend running a sparse-attention method for one placement.

    Subclasses for other decoders (DSA's MLA) override :meth:`inputs`; the step sequence is shared.

    Args:
        method: The method, configured with the placement's GPU kernel flavour.
        placement: Where each step runs.
        fpga: The FPGA device the placement offloads to, if any.
    """

    def __init__(self, method: SparseAttentionMethod, placement: Placement, fpga: FpgaDevice | None) -> None:
        self.method = method
        self.placement = placement
        self.fpga = fpga
        if fpga is None and any(placement.device_of(s) != placement.device_of(Step.APPLY) for s in Step):
            raise UsageError(f"placement '{placement.name}' offloads steps but no FPGA device was given")

    def decode(self, inp: AttentionInput, timeline: Timeline) -> torch.Tensor:
        """Run the four steps for one layer."""
        memory, query = self.inputs(inp)
        return self.run_steps(memory, query, timeline)

    def inputs(self, inp: AttentionInput) -> tuple[Any, Any]:
        """The method's memory and query for one layer's decode."""
        return (KVMemory(inp.cache.k[inp.layer], inp.cache.v[inp.layer], inp.cache.length, inp.layer),
                AttentionQuery(inp.q, inp.q_pre, inp.k_pre))

    def run_steps(self, memory: Any, query: Any, timeline: Timeline) -> torch.Tensor:
        """Prepare, relevancy + retrieval (fused, on the GPU or the FPGA), then apply, each in its section."""
        m = self.method
        with timeline.section(Step.PREPARE.value):
            index = m.prepare(memory, query)
        if self.fpga is not None:
            with timeline.section(FUSED):
                selection = self.fpga.offload(lambda: m.fpga_call(memory, index, query),
                                              lambda: m.relevancy_retrieve(memory, index, query), m.recall)
        elif self.placement.kernels == "optimized":
            with timeline.section(FUSED):
                selection = m.relevancy_retrieve(memory, index, query)
        else:
            # Framework-native ops run as separate kernels, so the two steps can be timed apart.
            with timeline.section(Step.RELEVANCY.value):
                scores = m.relevancy(index, query)
            with timeline.section(Step.RETRIEVAL.value):
                selection = m.retrieve(memory, scores)
        with timeline.section(Step.APPLY.value):
            return m.apply(memory, selection, query)


class SparseAttentionWorkload(Workload):
    """Decode ``decode_tokens`` tokens from a context filled synthetically, with a sparse-attention method.

    Subclasses name their method in ``method_cls``; name, parameters and offloadable steps come from it.
    The method's per-case state (its index) is shared by every placement and rewound each iteration.
    """

    method_cls: ClassVar[type[SparseAttentionMethod]]
    kind = "sparse-attention"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = cls.method_cls.name
        cls.Params = cls.method_cls.Params  # type: ignore[attr-defined]
        cls.offloadable = cls.method_cls.offloadable

    def __init__(self, params: Any, model: Decoder, case: Any, decode_tokens: int, seed: int) -> None:
        super().__init__(params, model, case, decode_tokens, seed)
        self.cache: KVCache = model.new_cache(case.batch, case.context + decode_tokens)
        self.method = self.method_cls(params)  # type: ignore[call-arg]
        self.method.attach(model, self.cache, seed)
        model.fill_cache(self.cache, case.context, seed=seed + case.context, on_chunk=self.method.observe_fill)
        self.method.fill_done(case.context)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        self.start_tokens = torch.randint(0, model.shape.vocab, (case.batch,), generator=gen).to(model.device)

    @classmethod
    def memory_bytes(cls, params: Any, shape: ModelShape, case: Any, decode_tokens: int,
                     dtype_bytes: int) -> dict[str, int]:
        """The KV cache and the method's own state."""
        cap = case.context + decode_tokens
        return {"kv_cache": case.batch * cap * shape.kv_bytes_per_token(dtype_bytes),
                "method": cls.method_cls.memory_bytes(params, shape, case.batch, cap, dtype_bytes)}

    def bind(self, placement: Placement, fpga: FpgaDevice | None) -> Iteration:
        """Decode with the method as the attention of every layer, on the placement's devices."""
        attention = PipelineAttention(self.method.with_kernels(placement.kernels), placement, fpga)

        def iteration(timeline: Timeline) -> None:
            tok = self.start_tokens
            for _ in range(self.decode_tokens):
                tok = self.model.decode_step(tok, self.cache, attention, timeline)

        return iteration

    def rewind(self) -> None:
        """Back to the filled context: cache length and the method's index."""
        self.cache.length = self.case.context
        self.method.rewind(self.case.context)
