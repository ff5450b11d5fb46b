"""How a case executes: the model, the filled KV cache, the method, and one attention backend per placement.

An *iteration* decodes ``decode_tokens`` tokens from the filled context; every iteration does identical
work (the cache length and the method's index are rewound first), so iterations can be repeated to fill a
measurement window and, on a GPU, captured once in a CUDA graph and replayed. A placement is captured
when everything in its iteration can be: on CUDA, with no host-side FPGA wait (a host wait synchronizes
the device, which a graph cannot hold).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from bench.devices.fpga import FpgaDevice, OffloadStats
from bench.methods import get_method
from bench.methods.attention import PipelineAttention, SparseAttentionMethod
from bench.model.decoder import Decoder, KVCache
from bench.pipeline import Placement
from bench.suite import Case
from bench.timeline import NullTimeline, Timeline, synchronize

_NULL = NullTimeline()


@dataclass
class Backend:
    """One placement's way of running the case.

    Attributes:
        placement: The placement.
        attention: The decoder attention backend running the method's steps there.
        graph: The captured iteration, when the placement runs under CUDA graphs.
        graph_reason: Why the placement runs eagerly (None when it is graphed).
    """

    placement: Placement
    attention: PipelineAttention
    graph: torch.cuda.CUDAGraph | None = None
    graph_reason: str | None = None

    @property
    def fpga(self) -> FpgaDevice | None:
        """The FPGA device this placement offloads to, if any."""
        return self.attention.fpga


class CaseRun:
    """A case ready to run on each of its placements.

    Args:
        model: The decoder (shared by the cases of a run).
        case: The case.
        method_name: Registered method name.
        placements: Placements to prepare, by name.
        decode_tokens: Tokens decoded per iteration.
        make_fpga: Builds a fresh FPGA device (by device name) for a placement that offloads.
        seed: Seed of the synthetic fill and method weights.
    """

    def __init__(self, model: Decoder, case: Case, method_name: str, placements: dict[str, Placement],
                 decode_tokens: int, make_fpga: Callable[[str], FpgaDevice], seed: int) -> None:
        self.model = model
        self.case = case
        self.decode_tokens = decode_tokens
        self.cache: KVCache = model.new_cache(case.batch, case.context + decode_tokens)
        self.method: SparseAttentionMethod = get_method(method_name)(case.params)
        self.method.attach(model, self.cache, seed)
        model.fill_cache(self.cache, case.context, seed=seed + case.context, on_chunk=self.method.observe_fill)
        self.method.fill_done(case.context)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        self.start_tokens = torch.randint(0, model.shape.vocab, (case.batch,), generator=gen).to(model.device)
        self.backends: dict[str, Backend] = {}
        for name, p in placements.items():
            fpga_names = sorted({d for d in p.steps.values() if d != "gpu"})
            fpga = make_fpga(fpga_names[0]) if fpga_names else None
            self.backends[name] = Backend(p, PipelineAttention(self.method.with_kernels(p.kernels), p, fpga))
        self._pool = torch.cuda.graph_pool_handle() if model.device.type == "cuda" else None

    @property
    def device(self) -> torch.device:
        """The device the case runs on."""
        return self.model.device

    @property
    def steps_per_iteration(self) -> int:
        """Decode steps per iteration (each produces one token per sequence)."""
        return self.decode_tokens

    @property
    def tokens_per_iteration(self) -> int:
        """Output tokens per iteration over the batch."""
        return self.decode_tokens * self.case.batch

    def iteration(self, name: str, timeline: Timeline = _NULL, replay: bool = True) -> None:
        """Run one iteration of placement ``name`` eagerly.

        With ``replay`` False the FPGA evaluates and tapes its offloads instead (the functional pass).
        """
        backend = self.backends[name]
        self.cache.length = self.case.context
        self.method.rewind(self.case.context)
        if backend.fpga is not None:
            if replay:
                backend.fpga.replay()
            else:
                backend.fpga.record()
        tok = self.start_tokens
        for _ in range(self.decode_tokens):
            tok = self.model.decode_step(tok, self.cache, backend.attention, timeline)

    def run_once(self, name: str) -> None:
        """One iteration: the graph's replay when captured, else eagerly."""
        graph = self.backends[name].graph
        if graph is not None:
            graph.replay()
        else:
            self.iteration(name)

    def fpga_per_iteration(self, name: str) -> OffloadStats | None:
        """Modeled FPGA work of one iteration of placement ``name`` (None without an FPGA)."""
        fpga = self.backends[name].fpga
        return fpga.tape_stats() if fpga is not None else None

    def capture(self, name: str, enabled: bool) -> None:
        """Capture placement ``name``'s iteration in a CUDA graph if ``enabled`` and possible.

        Call after the functional pass and a warm-up iteration (kernels compiled, handles created).
        """
        backend = self.backends[name]
        backend.graph_reason = self._not_capturable(backend, enabled)
        if backend.graph_reason is not None:
            return
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm up on the capture stream, as torch.cuda.graph requires
            self.iteration(name)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            self.iteration(name)
        synchronize(self.device)
        backend.graph = graph

    def _not_capturable(self, backend: Backend, enabled: bool) -> str | None:
        if not enabled:
            return "CUDA graphs disabled (measure.cuda_graphs: false)"
        if self.device.type != "cuda":
            return "CUDA graphs need a CUDA GPU"
        fpga = backend.fpga
        if fpga is not None and fpga.mode == "emulated" and fpga.wait_where == "host":
            return "a host-side FPGA wait synchronizes the GPU every offload, which a graph cannot hold"
        return None

    def section_graphs(self, name: str) -> dict[str, list[torch.cuda.CUDAGraph]]:
        """Capture one iteration of ``name`` as one CUDA graph per timeline section, in order.

        Each section's graph is replayed right after its capture, so the iteration's data flows as in a
        normal run; replaying one section's graphs alone then costs what that section costs (the
        composition check measures each section this way).
        """
        timeline = _SectionCapture(self._pool, self.device)
        self.iteration(name, timeline)
        synchronize(self.device)
        return timeline.graphs


class _SectionCapture(Timeline):
    """A timeline that captures every section in a CUDA graph of its own and replays it once."""

    def __init__(self, pool: object, device: torch.device) -> None:
        self.pool = pool
        self.device = device
        self.graphs: dict[str, list[torch.cuda.CUDAGraph]] = {}

    def section(self, name: str):  # type: ignore[override]
        """Capture the enclosed work as a graph, then replay it."""
        import contextlib

        @contextlib.contextmanager
        def capture():
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                yield
            graph.replay()
            self.graphs.setdefault(name, []).append(graph)

        return capture()

    def totals(self) -> dict[str, float]:
        """Captures are not timed."""
        return {}

    def reset(self) -> None:
        """Drop the captured graphs."""
        self.graphs.clear()
