"""Workloads: what a method does inside inference, as a unit the runner can repeat, time and replay.

A method's four steps (:mod:`bench.pipeline`) sit somewhere in inference: sparse attention runs them in
every decode step of every layer; retrieval-augmented generation runs them when generation asks for
documents, then prefills what it retrieved; compressed memory runs them once per segment. A
:class:`Workload` is one case of one method, set up (model, caches, corpora, memory banks) and ready to
run an *iteration* on any placement. Every iteration does identical work from the same starting state
(:meth:`Workload.rewind`), so iterations can fill a measurement window and be captured in CUDA graphs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from bench.errors import UsageError
from bench.pipeline import Placement, Step
from bench.timeline import Timeline

if TYPE_CHECKING:
    import torch

    from bench.devices.fpga import FpgaDevice
    from bench.model.decoder import Decoder
    from bench.model.presets import ModelShape
    from bench.suite import Case, ModelConfig

#: One iteration of a bound workload, timed section by section in the timeline it is given.
Iteration = Callable[[Timeline], None]


class Workload(ABC):
    """One case of one method, ready to run on any of its placements.

    Class attributes:
        name: Method name as suites write it.
        Params: The method's parameter dataclass (fields declared with :func:`bench.schema.param`).
        offloadable: Steps the study's hetero placement runs on the FPGA, as one fused kernel.
        kind: Method class: ``sparse-attention``, ``rag``, ``memory`` or ``ttt``.
        latency_unit: What latency is reported per (``decode step`` unless a method says otherwise).

    Args:
        params: The case's method parameters.
        model: The decoder.
        case: The case (context length, batch, matrix values).
        decode_tokens: Tokens generated per iteration.
        seed: Seed of every synthetic input.
    """

    name: ClassVar[str]
    Params: ClassVar[type]
    offloadable: ClassVar[frozenset[Step]] = frozenset()
    kind: ClassVar[str]
    #: What one step of ``steps_per_iteration`` is: latency is reported per such step.
    latency_unit: ClassVar[str] = "decode step"

    def __init__(self, params: Any, model: Decoder, case: Case, decode_tokens: int, seed: int) -> None:
        self.params = params
        self.model = model
        self.case = case
        self.decode_tokens = decode_tokens
        self.seed = seed

    @classmethod
    @abstractmethod
    def memory_bytes(cls, params: Any, shape: ModelShape, case: Case, decode_tokens: int,
                     dtype_bytes: int) -> dict[str, int]:
        """Device bytes the case needs besides the model's weights, by part (KV cache, index, corpus...)."""

    @classmethod
    def check_placement(cls, placement: Placement, devices: dict[str, str]) -> None:
        """Raise UsageError if the placement maps steps to devices this method cannot use.

        The default allows exactly the ``offloadable`` steps on one FPGA, together (one fused kernel).

        Args:
            placement: The placement to check.
            devices: Device kind (``gpu`` or ``fpga``) by device name.
        """
        on_fpga = {s for s in Step if devices[placement.device_of(s)] == "fpga"}
        if on_fpga and not cls.offloadable:
            raise UsageError(f"placement '{placement.name}': {cls.name} keeps every step on the GPU (it is "
                             "compute-bound; the study offloads nothing)")
        if on_fpga and on_fpga != set(cls.offloadable):
            want = " and ".join(s.value for s in Step if s in cls.offloadable)
            got = ", ".join(s.value for s in Step if s in on_fpga)
            raise UsageError(f"placement '{placement.name}': {cls.name} runs {want} on an FPGA only together, "
                             f"as one fused kernel (the study's design); got {got} on the FPGA")
        if len({placement.device_of(s) for s in on_fpga}) > 1:
            raise UsageError(f"placement '{placement.name}': the fused steps must run on one FPGA device")

    @classmethod
    def presets(cls) -> dict[str, Any]:
        """Model presets a suite may name for this method (the GQA presets by default)."""
        from bench.model.presets import PRESETS

        return PRESETS

    @classmethod
    def model_shape(cls, config: ModelConfig) -> Any:
        """The shape of the configured model: an object with ``name``, ``layers``, ``vocab`` and ``to_dict()``."""
        return config.shape()

    @classmethod
    def build_model(cls, config: ModelConfig, device: torch.device) -> Any:
        """The model this method runs in: by default the GQA decoder at the configured shape."""
        from bench.model.decoder import DTYPES, Decoder

        return Decoder(config.shape(), DTYPES[config.dtype], device, seed=config.seed)

    @classmethod
    def weight_bytes(cls, config: ModelConfig) -> int:
        """Device bytes of the model's weights."""
        from bench.model.decoder import DTYPES

        return config.shape().weight_params() * DTYPES[config.dtype].itemsize

    @abstractmethod
    def bind(self, placement: Placement, fpga: FpgaDevice | None) -> Iteration:
        """The iteration of this case on ``placement`` (offloading to ``fpga`` where the placement says)."""

    @abstractmethod
    def rewind(self) -> None:
        """Restore the starting state, so the next iteration repeats the last one's work exactly."""

    def describe(self) -> dict[str, Any]:
        """Facts about this case worth recording beside its numbers (sizes, model fits, intensities).

        Called after a trial's measured window, so it may read the device.
        """
        return {}

    @classmethod
    def release_shared(cls) -> None:
        """Free what the method keeps between cases (a corpus, say) once its experiment is done."""
        return None  # most methods keep nothing between cases

    @property
    def steps_per_iteration(self) -> int:
        """Decode steps per iteration (latency is reported per step: one token per sequence)."""
        return self.decode_tokens

    @property
    def tokens_per_iteration(self) -> int:
        """Output tokens per iteration over the batch."""
        return self.decode_tokens * self.case.batch
