"""The four-step memory-processing pipeline, defined once (He et al., arXiv 2603.29002, Def. 3.1).

Every long-context optimization ``bench`` measures is one processor ``f`` made of four typed steps:

====================  ================================  ===================================
Step                  Signature                         In -> out
====================  ================================  ===================================
Prepare Memory        ``prepare(memory, query)``        raw memory -> compact, searchable index
Compute Relevancy     ``relevancy(index, query)``       index + input -> a score per entry
Retrieval             ``retrieve(memory, scores)``      memory + scores -> a selection
Apply to Inference    ``apply(memory, sel, query)``     selection + input -> output
====================  ================================  ===================================

A method implements the four steps (:class:`MemoryMethod`); the rest of the decoder (projections, RoPE,
norms, MLP) is the dense part. A :class:`Placement` maps each step to a named device. When Compute
Relevancy and Retrieval run on the same device as one fused kernel (the FPGA dataflow kernel of the study,
or the fused GPU kernel of the optimized baseline), they are timed as one section, ``relevancy+retrieval``.
"""

from __future__ import annotations

import copy
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Generic, TypeVar

import torch


class Step(str, Enum):
    """The four memory-processing steps, in pipeline order."""

    PREPARE = "prepare"
    RELEVANCY = "relevancy"
    RETRIEVAL = "retrieval"
    APPLY = "apply"


STEPS: tuple[Step, ...] = tuple(Step)
#: Timeline section for the decoder work outside the four steps.
DENSE = "dense"
#: Timeline section for Compute Relevancy and Retrieval fused into one kernel.
FUSED = "relevancy+retrieval"


class StepData:
    """Base of the typed values that flow between steps; knows its size for transfer accounting."""

    def nbytes(self) -> int:
        """Bytes held in the tensor fields of this value (what a transfer of it would move)."""
        total = 0
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
        return total


class Memory(StepData):
    """Raw memory M_<t that a method searches: a layer's KV cache, a document store, past segments."""


class Index(StepData):
    """Compact, searchable index I_<t built by Prepare Memory (block keys, page bounds, an inverted index)."""


class Query(StepData):
    """The current input x_t as the method sees it (attention queries, a gate query, a text query)."""


class Scores(StepData):
    """Relevancy S: one score per index entry (higher is more relevant)."""


class Selection(StepData):
    """Retrieval's result M'_<t: the selected entries (ids padded with -1) or weights."""


MemoryT = TypeVar("MemoryT", bound=Memory)
IndexT = TypeVar("IndexT", bound=Index)
QueryT = TypeVar("QueryT", bound=Query)
ScoresT = TypeVar("ScoresT", bound=Scores)
SelectionT = TypeVar("SelectionT", bound=Selection)
MethodT = TypeVar("MethodT", bound="MemoryMethod[Any, Any, Any, Any, Any]")


class MemoryMethod(ABC, Generic[MemoryT, IndexT, QueryT, ScoresT, SelectionT]):
    """A memory-processing method: four typed steps over one layer's memory.

    Subclasses set ``name`` and ``offloadable`` (the steps the study runs on the FPGA in its hetero
    placement) and implement the four steps. ``relevancy_retrieve`` is the fused variant; by default it
    simply chains the two steps.
    """

    name: ClassVar[str]
    #: Steps the study's hetero placement runs on the FPGA (paper Fig. 6), fused into one kernel.
    offloadable: ClassVar[frozenset[Step]] = frozenset()
    #: GPU kernel flavour: ``optimized`` (fused kernels where they exist) or ``torch`` (framework-native ops).
    kernels: str = "optimized"

    @property
    def impl(self) -> str:
        """The ``impl`` of ``kernels_gpu`` calls: ``torch``, or ``auto`` (Triton on CUDA, torch elsewhere)."""
        return "torch" if self.kernels == "torch" else "auto"

    def with_kernels(self: MethodT, kernels: str) -> MethodT:
        """The same method, sharing its parameters and per-case state, with another GPU kernel flavour.

        Each placement of a case gets its own view of one method this way, so the index the fill built
        serves them all.
        """
        clone = copy.copy(self)
        clone.kernels = kernels
        return clone

    @abstractmethod
    def prepare(self, memory: MemoryT, query: QueryT) -> IndexT:
        """Prepare Memory: bring the index up to date with the memory (incrementally during decode)."""

    @abstractmethod
    def relevancy(self, index: IndexT, query: QueryT) -> ScoresT:
        """Compute Relevancy: score every index entry against the query."""

    @abstractmethod
    def retrieve(self, memory: MemoryT, scores: ScoresT) -> SelectionT:
        """Retrieval: choose the memory entries to use from the scores."""

    @abstractmethod
    def apply(self, memory: MemoryT, selection: SelectionT, query: QueryT) -> torch.Tensor:
        """Apply to Inference: compute the output from the selected memory and the query."""

    def relevancy_retrieve(self, memory: MemoryT, index: IndexT, query: QueryT) -> SelectionT:
        """Compute Relevancy and Retrieval as one fused operation (override with a fused kernel)."""
        return self.retrieve(memory, self.relevancy(index, query))


@dataclass(frozen=True)
class Placement:
    """A named mapping of each step to a device name, plus the GPU kernel flavour.

    Attributes:
        name: Placement name as the suite declares it (``baseline``, ``hetero``, ...).
        steps: Device name per step; every step is present.
        kernels: ``optimized`` (fused Triton kernels where they exist) or ``torch`` (framework-native ops).
        auto: The planner decides per case whether the offloadable steps go to the FPGA (``steps``) or stay
            on the GPU (the ``baseline`` placement), from the measured GPU profile and the FPGA model.
    """

    name: str
    steps: Mapping[Step, str]
    kernels: str = "optimized"
    auto: bool = False

    def device_of(self, step: Step) -> str:
        """The device name this placement runs ``step`` on."""
        return self.steps[step]

    def offloaded(self, gpu: str = "gpu") -> frozenset[Step]:
        """Steps that do not run on the named GPU device."""
        return frozenset(s for s, d in self.steps.items() if d != gpu)

    def offloaded_sections(self, gpu: str = "gpu") -> frozenset[str]:
        """Timeline sections whose work runs off the GPU.

        Relevancy and retrieval offloaded together run as one fused kernel, timed as the ``FUSED`` section;
        sections named ``relevancy`` or ``retrieval`` then hold GPU work around it (a reranker, say).
        """
        steps = self.offloaded(gpu)
        names = {s.value for s in steps}
        if {Step.RELEVANCY, Step.RETRIEVAL} <= steps:
            names = (names - {Step.RELEVANCY.value, Step.RETRIEVAL.value}) | {FUSED}
        return frozenset(names)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for records and run.json."""
        return {"steps": {s.value: d for s, d in self.steps.items()}, "kernels": self.kernels, "auto": self.auto}
