"""How a case executes: the model, the filled KV cache, the method, and one attention backend per placement.

An *iteration* decodes ``decode_tokens`` tokens from the filled context; every iteration does identical
work (the cache length and the method's index are rewound first), so iterations can be repeated to fill a
measurement window and, on a GPU, captured once and replayed.

A captured iteration is a :class:`ReplayPlan`: CUDA graphs, separated by host-side FPGA waits where the
placement has them. A placement whose FPGA is waited for on the host (synchronize, wait, continue: an
XRT-driven card) replays its GPU work as graph segments between the waits, so the GPU side is as free of
launch overhead as the all-GPU baseline's single graph, and the comparison is fair.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from bench.devices.fpga import FpgaDevice, OffloadStats
from bench.methods import get_method
from bench.model.decoder import Decoder
from bench.pipeline import Placement
from bench.suite import Case
from bench.timeline import FpgaWait, NullTimeline, Timeline, synchronize
from bench.workload import Iteration, Workload

_NULL = NullTimeline()


@dataclass
class ReplayPlan:
    """A captured iteration: CUDA graphs, and host-side FPGA waits between them.

    Attributes:
        steps: ``("graph", CUDAGraph)`` or ``("wait", seconds)``, in order.
        events: (section, start, end) CUDA events recorded inside the graphs (profiled plans only).
        waiter: Performs the host-side waits.
    """

    steps: list[tuple[str, Any]] = field(default_factory=list)
    events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = field(default_factory=list)
    waiter: FpgaWait | None = None

    @property
    def segments(self) -> int:
        """Number of graph segments."""
        return sum(1 for kind, _ in self.steps if kind == "graph")

    def replay(self) -> None:
        """Replay the iteration."""
        for kind, step in self.steps:
            if kind == "graph":
                step.replay()
            else:
                assert self.waiter is not None
                self.waiter.wait(step)

    def section_seconds(self) -> dict[str, float]:
        """Seconds per section of the last replay (profiled plans; synchronizes)."""
        torch.cuda.synchronize()
        out: dict[str, float] = {}
        for name, start, end in self.events:
            out[name] = out.get(name, 0.0) + start.elapsed_time(end) / 1e3
        return out


@dataclass
class Backend:
    """One placement's way of running the case.

    Attributes:
        placement: The placement.
        run: One eager iteration of the case on this placement.
        fpga: The FPGA device the placement offloads to, if any.
        plan: The captured iteration, when the placement runs under CUDA graphs.
        eager_reason: Why the placement runs eagerly (None when it is captured).
    """

    placement: Placement
    run: Iteration
    fpga: FpgaDevice | None
    plan: ReplayPlan | None = None
    eager_reason: str | None = None

    @property
    def host_waits(self) -> bool:
        """Whether the placement waits for its FPGA on the host (which splits its graphs)."""
        f = self.fpga
        return f is not None and f.mode == "emulated" and f.wait_where == "host"


class CaseRun:
    """A case ready to run on each of its placements.

    Args:
        model: The decoder (shared by the cases of a run).
        case: The case.
        method_name: Registered method name.
        placements: Placements to prepare, by name.
        decode_tokens: Tokens decoded per iteration.
        make_fpga: Builds a fresh FPGA device (by device name) for a placement that offloads.
        seed: Seed of the synthetic inputs and method weights.
    """

    def __init__(self, model: Decoder, case: Case, method_name: str, placements: dict[str, Placement],
                 decode_tokens: int, make_fpga: Callable[[str], FpgaDevice], seed: int) -> None:
        self.model = model
        self.case = case
        self.workload: Workload = get_method(method_name)(case.params, model, case, decode_tokens, seed)
        self.backends: dict[str, Backend] = {}
        for name, p in placements.items():
            fpga_names = sorted({d for d in p.steps.values() if d != "gpu"})
            fpga = make_fpga(fpga_names[0]) if fpga_names else None
            self.backends[name] = Backend(p, self.workload.bind(p, fpga), fpga)
        self._pool = torch.cuda.graph_pool_handle() if model.device.type == "cuda" else None
        self._profiled: dict[str, ReplayPlan] = {}

    @property
    def device(self) -> torch.device:
        """The device the case runs on."""
        return self.model.device

    @property
    def steps_per_iteration(self) -> int:
        """Decode steps per iteration (each produces one token per sequence)."""
        return self.workload.steps_per_iteration

    @property
    def tokens_per_iteration(self) -> int:
        """Output tokens per iteration over the batch."""
        return self.workload.tokens_per_iteration

    def iteration(self, name: str, timeline: Timeline = _NULL, replay: bool = True) -> None:
        """Run one iteration of placement ``name`` eagerly.

        With ``replay`` False the FPGA evaluates and tapes its offloads instead (the functional pass).
        """
        backend = self.backends[name]
        self.workload.rewind()
        if backend.fpga is not None and backend.fpga.mode != "hardware":
            if replay:
                backend.fpga.replay()
            else:
                backend.fpga.record()
        backend.run(timeline)

    def run_once(self, name: str) -> None:
        """One iteration: the captured plan's replay when there is one, else eagerly."""
        plan = self.backends[name].plan
        if plan is not None:
            plan.replay()
        else:
            self.iteration(name)

    def use_baseline(self, name: str) -> None:
        """Run placement ``name`` as the all-GPU baseline does (the planner kept its steps on the GPU)."""
        base = self.backends["baseline"]
        steps = dict.fromkeys(base.placement.steps, "gpu")
        placement = Placement(name, steps, base.placement.kernels, auto=True)
        self.backends[name] = Backend(placement, base.run, None, base.plan, base.eager_reason)

    def fpga_per_iteration(self, name: str) -> OffloadStats | None:
        """Modeled FPGA work of one iteration of placement ``name`` (None without an FPGA)."""
        fpga = self.backends[name].fpga
        return fpga.tape_stats() if fpga is not None else None

    def capture(self, name: str, enabled: bool) -> None:
        """Capture placement ``name``'s iteration as a replay plan if ``enabled`` and on CUDA.

        Call after the functional pass and a warm-up iteration (kernels compiled, handles created).
        """
        backend = self.backends[name]
        if not enabled:
            backend.eager_reason = "CUDA graphs disabled (measure.cuda_graphs: false)"
        elif self.device.type != "cuda":
            backend.eager_reason = "CUDA graphs need a CUDA GPU"
        elif backend.fpga is not None and backend.fpga.mode == "hardware":
            backend.eager_reason = "a real FPGA board is driven from the host on every call"
        else:
            try:
                backend.plan = self._capture(name, profile=False)
            except RuntimeError as exc:  # e.g. an op that syncs with the host cannot be captured: run eagerly
                torch.cuda.synchronize(self.device)
                backend.eager_reason = f"CUDA graph capture failed ({str(exc).splitlines()[0][:200]})"

    def profiled_plan(self, name: str) -> ReplayPlan:
        """The iteration captured with a CUDA event at every section boundary (built once)."""
        if name not in self._profiled:
            self._profiled[name] = self._capture(name, profile=True)
        return self._profiled[name]

    def _capture(self, name: str, profile: bool) -> ReplayPlan:
        backend = self.backends[name]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm up on the capture stream, as graph capture requires
            self.iteration(name)
        side.synchronize()
        fpga = backend.fpga if backend.host_waits else None
        capture = _Capture(self._pool, fpga, backend.placement.offloaded_sections(), profile)
        with torch.cuda.stream(side):
            capture.begin()
            try:
                self.iteration(name, capture)
            except BaseException:
                capture.abort()
                raise
            capture.finish()
        torch.cuda.current_stream(self.device).wait_stream(side)
        plan = capture.plan
        plan.waiter = fpga.waiter if fpga is not None else None
        plan.replay()  # run it once so its memory holds a real iteration's data
        synchronize(self.device)
        return plan

    def section_graphs(self, name: str) -> dict[str, list[torch.cuda.CUDAGraph]]:
        """Capture one iteration of ``name`` as one CUDA graph per timeline section, in order.

        Replaying one section's graphs alone then costs what that section costs, plus the launch gaps that
        isolation adds (the composition check measures each section's energy this way).
        """
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        timeline = _SectionCapture(self._pool)
        with torch.cuda.stream(side):
            self.iteration(name, timeline)
        torch.cuda.current_stream(self.device).wait_stream(side)
        synchronize(self.device)
        return timeline.graphs


class _Capture(Timeline):
    """Captures an iteration into a :class:`ReplayPlan`.

    The GPU work is one graph, split at the placement's FPGA sections when ``fpga`` is given (its modeled
    waits are deferred into the plan). With ``profile`` an external CUDA event marks each section's start and end
    inside the graphs, so replays can be timed per section with no extra launches.
    """

    def __init__(self, pool: Any, fpga: FpgaDevice | None, offloaded: frozenset[str], profile: bool) -> None:
        self.pool = pool
        self.fpga = fpga
        self.offloaded = offloaded
        self.profile = profile
        self.plan = ReplayPlan()
        self._graph: torch.cuda.CUDAGraph | None = None

    def begin(self) -> None:
        """Start capturing a graph segment on the current stream."""
        self._graph = torch.cuda.CUDAGraph()
        self._graph.capture_begin(pool=self.pool)

    def abort(self) -> None:
        """End a capture that failed, so the stream leaves capture mode (the graph is discarded)."""
        if self._graph is not None:
            with contextlib.suppress(RuntimeError):
                self._graph.capture_end()
            self._graph = None
        if self.fpga is not None:
            self.fpga.deferred = None

    def finish(self) -> None:
        """End the current graph segment."""
        assert self._graph is not None
        self._graph.capture_end()
        self.plan.steps.append(("graph", self._graph))
        self._graph = None

    def _event(self) -> torch.cuda.Event | None:
        if not self.profile:
            return None
        event = torch.cuda.Event(enable_timing=True, external=True)
        event.record()
        return event

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Mark the section; at an FPGA section, end the segment and defer the wait into the plan."""
        start = self._event()
        split = self.fpga is not None and name in self.offloaded
        if split:
            assert self.fpga is not None
            self.finish()
            self.fpga.deferred = []
        try:
            yield
        finally:
            if split:
                assert self.fpga is not None and self.fpga.deferred is not None
                self.plan.steps.append(("wait", sum(self.fpga.deferred)))
                self.fpga.deferred = None
                self.begin()
            end = self._event()
            if start is not None and end is not None:
                self.plan.events.append((name, start, end))

    def totals(self) -> dict[str, float]:
        """Captures are not timed; see :meth:`ReplayPlan.section_seconds`."""
        return {}


class _SectionCapture(Timeline):
    """A timeline that captures every section in a CUDA graph of its own and replays it once."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.graphs: dict[str, list[torch.cuda.CUDAGraph]] = {}

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Capture the enclosed work as a graph, then replay it so the iteration's data flows on."""
        graph = torch.cuda.CUDAGraph()
        graph.capture_begin(pool=self.pool)
        try:
            yield
        finally:
            graph.capture_end()
        graph.replay()
        self.graphs.setdefault(name, []).append(graph)

    def totals(self) -> dict[str, float]:
        """Captures are not timed."""
        return {}
