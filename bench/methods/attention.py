"""Sparse-attention methods in the decoder: a method's four steps run where dense attention would.

:class:`SparseAttentionMethod` is the contract a sparse-attention method (SeerAttention-R, Quest, LServe,
DSA) fulfils on top of :class:`~bench.pipeline.MemoryMethod`; :class:`PipelineAttention` is the decoder's
attention backend that runs those steps for one placement, timing each in the timeline and sending the
offloaded steps to the FPGA device.
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

    kind: ClassVar[str] = "sparse-attention"

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

    @classmethod
    @abstractmethod
    def memory_bytes(cls, params: Any, shape: ModelShape, batch: int, capacity: int, dtype_bytes: int) -> int:
        """Device bytes the method needs for a case beyond the KV cache (index, FPGA copy, workspace)."""

    @abstractmethod
    def fpga_call(self, memory: KVMemory, index: Index, query: AttentionQuery) -> FpgaCall:
        """Describe the offloaded steps (kernel, shapes, bytes, FPGA-numerics evaluators) for the FPGA."""

    @abstractmethod
    def recall(self, fpga: Selection, gpu: Selection) -> float:
        """Fraction of the GPU's selected entries that the FPGA's selection also holds (ignores padding)."""

    @classmethod
    def check_placement(cls, placement: Placement, devices: dict[str, str]) -> None:
        """Raise UsageError if the placement maps steps to devices this method cannot use there.

        Args:
            placement: The placement to check.
            devices: Device kind per device name (``"gpu"`` or ``"fpga"``).
        """
        on_fpga = {s for s in Step if devices[placement.device_of(s)] == "fpga"}
        if on_fpga and on_fpga != set(cls.offloadable):
            want = " and ".join(s.value for s in Step if s in cls.offloadable)
            raise UsageError(
                f"placement '{placement.name}': {cls.name} runs {want} on an FPGA only together, as one "
                f"fused kernel (the study's design); got {', '.join(sorted(s.value for s in on_fpga))} on the FPGA")
        fpga_names = {placement.device_of(s) for s in on_fpga}
        if len(fpga_names) > 1:
            raise UsageError(f"placement '{placement.name}': the fused steps must run on one FPGA device")


class PipelineAttention:
    """Decoder attention backend running a sparse-attention method for one placement.

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
        """Run prepare, relevancy + retrieval (fused, on the GPU or the FPGA) and apply for one layer."""
        m = self.method
        memory = KVMemory(inp.cache.k[inp.layer], inp.cache.v[inp.layer], inp.cache.length, inp.layer)
        query = AttentionQuery(inp.q, inp.q_pre, inp.k_pre)
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
