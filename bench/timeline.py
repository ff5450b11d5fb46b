"""The timeline: where the time of a decode step goes, section by section.

A decode step is a sequence of sections: the dense part of the decoder and the memory-processing steps
(``prepare``, ``relevancy``, ``retrieval``, ``apply``, or ``relevancy+retrieval`` when fused). A
:class:`Timeline` times each section with device events on a GPU and the host clock on a CPU.
Measured end-to-end windows use :class:`NullTimeline`, so per-step timing never perturbs them; a separate
profile pass uses an event timeline.

Emulated FPGA work is injected here too: :class:`FpgaWait` makes the GPU timeline stall for a modeled
duration, either on the host (synchronize, wait, continue: what an XRT-driven PCIe card costs) or on the
device (a GPU spin, as if the GPU polled a flag written over peer-to-peer).
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterator

import torch


class Timeline(ABC):
    """Accumulates time per named section."""

    @abstractmethod
    def section(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Context manager that times the enclosed work under ``name``."""

    @abstractmethod
    def totals(self) -> dict[str, float]:
        """Seconds per section so far (synchronizes the device if needed)."""


class NullTimeline(Timeline):
    """Times nothing: used inside measured windows and CUDA-graph capture."""

    _null = contextlib.nullcontext()

    def section(self, name: str) -> contextlib.AbstractContextManager[None]:
        """A no-op context."""
        return self._null

    def totals(self) -> dict[str, float]:
        """Always empty."""
        return {}


class HostTimeline(Timeline):
    """Host-clock timeline for CPU execution, where every operation completes before it returns."""

    def __init__(self) -> None:
        self._acc: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Time the enclosed work with ``time.perf_counter``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._acc[name] += time.perf_counter() - t0

    def totals(self) -> dict[str, float]:
        """Seconds per section."""
        return dict(self._acc)


class CudaEventTimeline(Timeline):
    """CUDA-event timeline: one event pair per section, read back once in :meth:`totals`."""

    def __init__(self) -> None:
        self._pairs: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Record an event before and after the enclosed work on the current stream."""
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        try:
            yield
        finally:
            end.record()
            self._pairs.append((name, start, end))

    def totals(self) -> dict[str, float]:
        """Seconds per section; synchronizes once."""
        torch.cuda.synchronize()
        acc: dict[str, float] = defaultdict(float)
        for name, start, end in self._pairs:
            acc[name] += start.elapsed_time(end) / 1e3
        return dict(acc)


def profiling_timeline(device: torch.device) -> Timeline:
    """The per-section timeline suited to ``device``: CUDA events on a GPU, the host clock elsewhere."""
    return CudaEventTimeline() if device.type == "cuda" else HostTimeline()


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on ``device`` (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class FpgaWait:
    """Stalls the GPU timeline for a modeled FPGA duration.

    Args:
        device: The GPU (or CPU) device whose timeline is stalled.
        where: ``"host"``: synchronize the device, busy-wait on the host clock, continue (a PCIe card
            driven by XRT). ``"device"``: enqueue a GPU spin of the same length, with no host sync (a GPU
            polling a flag written peer-to-peer); CUDA only.
    """

    def __init__(self, device: torch.device, where: str = "host") -> None:
        if where not in ("host", "device"):
            raise ValueError(f"wait must be 'host' or 'device', not {where!r}")
        if where == "device" and device.type != "cuda":
            raise ValueError("a device-side wait needs a CUDA GPU; use wait: host on this machine")
        self.device = device
        self.where = where
        self._cycles_per_s = self._calibrate() if where == "device" else 0.0

    def _calibrate(self) -> float:
        """GPU spin cycles per second, measured with events (clocks vary with boost, so measure)."""
        cycles = 10_000_000
        torch.cuda._sleep(cycles)  # warm up
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(cycles)
        end.record()
        end.synchronize()
        return cycles / (start.elapsed_time(end) / 1e3)

    def wait(self, seconds: float) -> None:
        """Stall the timeline for ``seconds``."""
        if seconds <= 0:
            return
        if self.where == "device":
            torch.cuda._sleep(max(1, int(seconds * self._cycles_per_s)))
            return
        synchronize(self.device)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            pass
