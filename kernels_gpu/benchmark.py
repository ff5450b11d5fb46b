"""Roofline benchmark of the GPU kernels: time, achieved bandwidth and speedup over native torch, per case.

One run measures the device's copy bandwidth (a large device-to-device copy, bytes read + written), then, for
each :class:`~kernels_gpu.registry.BenchCase` the kernel modules offer, checks the optimized path against the
framework-native torch path (``native_<op>``: what a user writes with torch ops and ``torch.topk``, no tie
rule; the baseline of every speedup and of the ``speedup_vs_torch`` targets) and times both: CUDA events
around CUDA-graph replays of a loop of calls (eager loop where capture fails), median of many repeats,
rotating between input sets when one set's bytes would sit in L2. Achieved bandwidth is the case's
``bytes_moved`` (fewest bytes the kernel must move) over the measured time.

``run_benchmark("cpu", cases=...)`` runs the same flow with host timers (the Triton paths need
``TRITON_INTERPRET=1`` set before the kernel modules are imported, as the tests do): a functional check of the
harness and the kernels on small cases, not a performance figure. The command line always measures CUDA.

With ``profile=True`` (``--profile``) each case's two paths also run a few eager calls under
``torch.profiler``, and the report lists where a call's time goes, kernel by kernel (on a CPU run, op by op):
the evidence for why a path misses its target. Kernel times exclude launch gaps, so their sum next to the
measured time also shows how much a path loses between kernels.

Command line: ``python -m kernels_gpu.benchmark [--quick] [--profile] [--json PATH] [--markdown PATH]
[--kernels a,b]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from bench.errors import BenchError, DeviceUnavailableError, UsageError
from kernels_gpu.registry import BenchCase

#: Modules under ``kernels_gpu`` whose ``bench_cases()`` feed the benchmark; a missing one is skipped, noted.
KERNEL_MODULES: tuple[str, ...] = (
    "sparse_decode",
    "topk",
    "relevancy_topk",
    "page_topk",
    "threshold",
    "dsa_indexer",
    "bm25",
    "dense_retrieval",
)
#: First note of every report: what the "native µs" column and the speedups compare against.
NATIVE_NOTE = (
    "native µs: the framework-native torch path a user writes (torch.matmul / elementwise ops, then "
    "torch.topk(sorted=False), no tie rule; bf16 scores where matmul returns bf16); speedup and the "
    "speedup targets are native µs / optimized µs"
)
#: L2 size assumed when the device does not report one: H100 SXM5, 50 MB (NVIDIA H100 datasheet).
_FALLBACK_L2_BYTES = 50 * 10**6
#: Rotate input sets until the bytes touched between two uses of one set are this many L2 sizes.
_L2_MULTIPLE = 4
_MAX_INPUT_SETS = 32
#: Fraction of free device memory the rotated input sets may take (the rest: outputs, workspaces, graphs).
_INPUT_MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class _Plan:
    """How much to repeat: warm-up loops, timed repeats, calls per timed repeat, copy-test buffer bytes."""

    warmup: int
    repeats: int
    calls: int
    copy_bytes: int


_PLANS = {
    ("cuda", False): _Plan(warmup=3, repeats=50, calls=16, copy_bytes=2**30),
    ("cuda", True): _Plan(warmup=2, repeats=10, calls=8, copy_bytes=2**28),
    ("cpu", False): _Plan(warmup=1, repeats=5, calls=1, copy_bytes=2**26),
    ("cpu", True): _Plan(warmup=1, repeats=3, calls=1, copy_bytes=2**24),
}


@dataclass(frozen=True)
class Timing:
    """Median seconds per call and how they were measured.

    Attributes:
        seconds: Median time of one call, in seconds.
        method: How it was timed, e.g. ``"cuda-graph, 16 calls/repeat, 4 input sets, median of 50"``.
    """

    seconds: float
    method: str


@dataclass(frozen=True)
class CopyBandwidth:
    """Device copy bandwidth, counting bytes read plus bytes written.

    Attributes:
        gbps: Bandwidth in GB/s (10^9 bytes per second).
        buffer_bytes: Size of the copied buffer (each copy moves twice this).
        method: How it was measured.
    """

    gbps: float
    buffer_bytes: int
    method: str


@dataclass(frozen=True)
class TargetCheck:
    """One speed target of a case and whether the measurement met it.

    Attributes:
        name: Target key, ``"bw_fraction"`` (of copy bandwidth) or ``"speedup_vs_torch"`` (over the native
            torch path).
        target: The lowest acceptable value.
        achieved: The measured value; None when the row has no measurement or the key is unknown.
        met: Whether ``achieved >= target``.
    """

    name: str
    target: float
    achieved: float | None
    met: bool

    @property
    def shortfall(self) -> float | None:
        """How far below the target the measurement fell, as a fraction of the target (None if met)."""
        if self.met or self.achieved is None:
            return None
        return 1.0 - self.achieved / self.target

    def describe(self) -> str:
        """Short text of the target, e.g. ``"≥ 60% copy BW"``."""
        if self.name == "bw_fraction":
            return f"≥ {self.target:.0%} copy BW"
        if self.name == "speedup_vs_torch":
            return f"≥ {self.target:g}× native"
        return f"{self.name} ≥ {self.target:g} (unknown target)"


@dataclass(frozen=True)
class KernelTime:
    """One GPU kernel (on a CPU run: one op) of a profiled path, per call of the path.

    Attributes:
        name: Kernel name as the profiler reports it (Triton kernels by their function name).
        launches: Launches per call of the path.
        us: Device time per call of the path, in µs (the op's self time on a CPU run).
    """

    name: str
    launches: float
    us: float


@dataclass
class BenchRow:
    """Result of one BenchCase.

    Attributes:
        kernel: Kernel family.
        label: Size label.
        status: ``"ok"``, ``"check failed"`` or ``"error"``.
        detail: The check's or the error's message.
        time_us: Median time of the optimized path, in µs.
        torch_time_us: Median time of the framework-native torch path (``BenchCase.torch_path``), in µs.
        bytes_moved: Fewest bytes the kernel must move.
        flops: Floating-point operations of one call.
        gbps: ``bytes_moved`` / ``time_us``, in GB/s.
        bw_fraction: ``gbps`` / the run's copy bandwidth.
        tflops: ``flops`` / ``time_us``, in TFLOP/s.
        speedup_vs_torch: ``torch_time_us`` / ``time_us``.
        targets: The case's targets, checked.
        timing: How the optimized path was timed (the native path the same way unless said otherwise).
        profile: With profiling, per path (``optimized``, ``native``) its kernels, largest first.
    """

    kernel: str
    label: str
    status: str
    detail: str = ""
    time_us: float | None = None
    torch_time_us: float | None = None
    bytes_moved: int = 0
    flops: int = 0
    gbps: float | None = None
    bw_fraction: float | None = None
    tflops: float | None = None
    speedup_vs_torch: float | None = None
    targets: list[TargetCheck] = field(default_factory=list)
    timing: str = ""
    profile: dict[str, list[KernelTime]] | None = None


@dataclass
class BenchmarkReport:
    """A roofline run: the rows plus what was measured on, when and how.

    Attributes:
        rows: One per case, in run order.
        device: Torch device, e.g. ``"cuda:0"``.
        card: GPU model (CPU model on a CPU run).
        driver: NVIDIA driver version, when known.
        cuda: CUDA version torch was built with.
        torch_version: torch version.
        triton_version: triton version, when installed.
        copy_bandwidth: The run's copy bandwidth.
        l2_bytes: L2 size the input rotation assumed (0 on a CPU).
        timestamp: UTC start of the run, ISO 8601.
        quick: Whether this was a quick run (first case per kernel family, fewer repeats).
        skipped: Kernel modules that contributed no cases, with the reason.
        notes: Caveats on the whole run.
        provenance: Always ``"measured"``.
    """

    rows: list[BenchRow]
    device: str
    card: str
    driver: str | None
    cuda: str | None
    torch_version: str
    triton_version: str | None
    copy_bandwidth: CopyBandwidth
    l2_bytes: int
    timestamp: str
    quick: bool
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    provenance: str = "measured"

    @property
    def failed(self) -> bool:
        """Whether any case failed its check or raised."""
        return any(row.status != "ok" for row in self.rows)

    def to_json(self) -> str:
        """The report as indented JSON (all fields; times in µs, bandwidths in GB/s)."""
        return json.dumps(dataclasses.asdict(self), indent=2)

    def to_markdown(self) -> str:
        """The roofline table with its provenance header, skipped modules and failures."""
        copy = self.copy_bandwidth
        lines = [
            f"## GPU kernel roofline: {self.card}",
            "",
            f"- Provenance: {self.provenance} on {self.device} ({self.card}) at {self.timestamp}; driver "
            f"{self.driver or 'unknown'}, CUDA {self.cuda or 'n/a'}, torch {self.torch_version}, "
            f"triton {self.triton_version or 'not installed'}{'; quick run' if self.quick else ''}",
            f"- Copy bandwidth: {copy.gbps:,.0f} GB/s ({copy.method})",
            *(f"- {note}" for note in self.notes),
            "",
            "| kernel | size | optimized µs | native µs | GB/s | % copy BW | TFLOP/s | speedup | target "
            "| met? | timing |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|---|---|",
        ]
        lines += [_markdown_row(row) for row in self.rows]
        profiled = [row for row in self.rows if row.profile]
        if profiled:
            lines += ["", "### Where the time goes (torch.profiler, eager calls; µs per call, launches per call)", ""]
            lines += [_profile_line(row) for row in profiled]
        if self.skipped:
            lines += ["", "Skipped: " + "; ".join(self.skipped)]
        failures = [row for row in self.rows if row.status != "ok"]
        if failures:
            lines += ["", "Failures:"]
            lines += [f"- {row.kernel} [{row.label}]: {row.status}: {row.detail}" for row in failures]
        return "\n".join(lines) + "\n"


def _fmt(value: float | None, spec: str) -> str:
    """``value`` in ``spec``, or a dash; values under 10 keep three significant digits instead."""
    if value is None:
        return "—"
    return format(value, spec) if abs(value) >= 10 else f"{value:.3g}"


def _profile_line(row: BenchRow, top: int = 4) -> str:
    """One bullet per profiled row: each path's largest kernels, the rest summed, and the sum vs measured."""
    parts = []
    for path, measured in (("optimized", row.time_us), ("native", row.torch_time_us)):
        kernels = (row.profile or {}).get(path, [])
        named = [f"`{k.name[:60]}` {k.us:.1f} (×{k.launches:g})" for k in kernels[:top]]
        rest = sum(k.us for k in kernels[top:])
        if rest:
            named.append(f"{len(kernels) - top} more {rest:.1f}")
        total = sum(k.us for k in kernels)
        parts.append(f"{path}: {', '.join(named) or 'no kernels recorded'}; sum {total:.1f} of "
                     f"{_fmt(measured, '.1f')} measured")
    return f"- {row.kernel} [{row.label}]: " + "; ".join(parts)


def _markdown_row(row: BenchRow) -> str:
    """One table row; a failed case shows its status in place of numbers."""
    if row.status != "ok":
        return f"| {row.kernel} | {row.label} | {row.status} | — | — | — | — | — | — | — | — |"
    target = "; ".join(t.describe() for t in row.targets) or "—"
    met = "; ".join(
        "yes" if t.met else f"no ({-t.shortfall:+.0%})" if t.shortfall is not None else "no"
        for t in row.targets
    )
    speedup = _fmt(row.speedup_vs_torch, ".2f") + ("×" if row.speedup_vs_torch is not None else "")
    percent = None if row.bw_fraction is None else 100 * row.bw_fraction
    return (
        f"| {row.kernel} | {row.label} | {_fmt(row.time_us, '.1f')} | {_fmt(row.torch_time_us, '.1f')} | "
        f"{_fmt(row.gbps, ',.0f')} | {_fmt(percent, '.0f')} | "
        f"{_fmt(row.tflops, '.1f')} | {speedup} | {target} | {met or '—'} | {row.timing} |"
    )


# ---------------------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------------------


def measure_copy_bandwidth(
    device: torch.device, buffer_bytes: int = 2**30, repeats: int = 20
) -> CopyBandwidth:
    """Copy bandwidth of ``device``: median over ``repeats`` copies of a random ``buffer_bytes`` buffer.

    Args:
        device: A CUDA device (timed with CUDA events) or the CPU (a memcpy timed with a host clock).
        buffer_bytes: Bytes per buffer; each copy reads and writes this many.
        repeats: Timed copies after 3 warm-up copies.

    Returns:
        The bandwidth in GB/s, counting bytes read plus bytes written.
    """
    src = torch.randint(0, 256, (buffer_bytes,), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(repeats):
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        how = "CUDA events"
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            dst.copy_(src)
            times.append(time.perf_counter() - t0)
        how = "host perf_counter"
    gbps = 2 * buffer_bytes / statistics.median(times) / 1e9
    method = f"copy of {buffer_bytes / 2**20:,.0f} MiB, read + write, median of {repeats}, {how}"
    return CopyBandwidth(gbps=gbps, buffer_bytes=buffer_bytes, method=method)


def input_sets_needed(bytes_moved: int, l2_bytes: int) -> int:
    """Input sets to rotate so a set's bytes have left L2 before it is used again.

    Args:
        bytes_moved: Bytes one call touches.
        l2_bytes: L2 size; 0 means no rotation (CPU runs).

    Returns:
        1 when one call alone moves ``4 * l2_bytes`` or more, else enough sets (2..32) to cover that much.
    """
    if l2_bytes <= 0 or bytes_moved >= _L2_MULTIPLE * l2_bytes:
        return 1
    return min(_MAX_INPUT_SETS, max(2, math.ceil(_L2_MULTIPLE * l2_bytes / max(bytes_moved, 1))))


def _tensor_bytes(inputs: dict[str, Any]) -> int:
    return sum(v.numel() * v.element_size() for v in inputs.values() if isinstance(v, torch.Tensor))


def _capture(loop: Callable[[], None]) -> torch.cuda.CUDAGraph | None:
    """Capture ``loop`` into a CUDA graph, or None when something in it cannot be captured."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # PyTorch asks for warm-up on a side stream before capture
        loop()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            loop()
    except RuntimeError:
        torch.cuda.synchronize()
        return None
    return graph


def _time_cuda(fn: Callable[..., Any], sets: list[dict[str, Any]], plan: _Plan) -> Timing:
    """Median per-call time of ``fn`` over repeats of a rotating loop, graph-replayed when possible."""
    calls = len(sets) * math.ceil(plan.calls / len(sets))

    def loop() -> None:
        for i in range(calls):
            fn(**sets[i % len(sets)])

    for _ in range(plan.warmup):
        loop()
    torch.cuda.synchronize()
    graph = _capture(loop)
    step = graph.replay if graph is not None else loop
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(plan.repeats):
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / calls)
    how = "cuda-graph" if graph is not None else "eager (graph capture failed)"
    return Timing(statistics.median(times), f"{how}, {calls} calls/repeat, {len(sets)} input sets")


def _time_host(fn: Callable[..., Any], sets: list[dict[str, Any]], plan: _Plan) -> Timing:
    """Median per-call time of ``fn`` on the host clock (CPU runs)."""
    for _ in range(plan.warmup):
        fn(**sets[0])
    times = []
    for i in range(plan.repeats):
        t0 = time.perf_counter()
        fn(**sets[i % len(sets)])
        times.append(time.perf_counter() - t0)
    return Timing(statistics.median(times), f"host clock, 1 call/repeat, {len(sets)} input set(s)")


def profile_path(fn: Callable[..., Any], inputs: dict[str, Any], device: torch.device,
                 calls: int = 5) -> list[KernelTime]:
    """Per-kernel time of one call of ``fn``: ``torch.profiler`` over ``calls`` eager calls after a warm-up.

    Args:
        fn: The path to profile.
        inputs: Its keyword arguments.
        device: CUDA (kernels' device time) or CPU (ops' self time).
        calls: Profiled calls; the figures are per call.

    Returns:
        The kernels (ops on a CPU), largest total time first.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    fn(**inputs)
    if cuda:
        torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]) as prof:
        for _ in range(calls):
            fn(**inputs)
        if cuda:
            torch.cuda.synchronize(device)
    rows = []
    for e in prof.key_averages():
        if cuda and e.device_type != DeviceType.CUDA:
            continue  # host-side ops: their kernels are the CUDA events
        us = e.self_device_time_total if cuda else e.self_cpu_time_total
        if us > 0:
            rows.append(KernelTime(e.key, e.count / calls, us / calls))
    return sorted(rows, key=lambda k: -k.us)


def evaluate_targets(targets: dict[str, float], row: BenchRow) -> list[TargetCheck]:
    """Check each target against the row's measurements (``bw_fraction``, ``speedup_vs_torch``).

    Args:
        targets: Target key -> lowest acceptable value.
        row: A measured row.

    Returns:
        One check per target; an unknown key is reported as not met.
    """
    known = {"bw_fraction": row.bw_fraction, "speedup_vs_torch": row.speedup_vs_torch}
    checks = []
    for name, target in targets.items():
        achieved = known.get(name)
        checks.append(TargetCheck(name, target, achieved, achieved is not None and achieved >= target))
    return checks


def _run_case(
    case: BenchCase, device: torch.device, copy_gbps: float, l2_bytes: int, plan: _Plan, profile: bool = False
) -> BenchRow:
    """Check, then time one case; failures become a row with their message, never a crash."""
    row = BenchRow(case.kernel, case.label, "ok", bytes_moved=case.bytes_moved, flops=case.flops)
    stage = "building inputs"
    try:
        sets = [case.make_inputs(device)]
        stage = "running"
        out, ref = case.optimized(**sets[0]), case.torch_path(**sets[0])
        stage = "checking"
        if case.check is not None:
            case.check(out, ref)
        del out, ref
        stage = "building rotated inputs"
        wanted = input_sets_needed(case.bytes_moved, l2_bytes)
        if wanted > 1:
            free, _ = torch.cuda.mem_get_info(device)
            affordable = int(_INPUT_MEMORY_SHARE * free // max(_tensor_bytes(sets[0]), 1))
            sets += [case.make_inputs(device) for _ in range(max(0, min(wanted, affordable + 1) - 1))]
        n_sets = len(sets)
        stage = "timing"
        timer = _time_cuda if device.type == "cuda" else _time_host
        opt = timer(case.optimized, sets, plan)
        base = timer(case.torch_path, sets, plan)
        if profile:
            stage = "profiling"
            row.profile = {"optimized": profile_path(case.optimized, sets[0], device),
                           "native": profile_path(case.torch_path, sets[0], device)}
    except Exception as err:  # A failing case is a row of the report; the run goes on to the next.
        if stage == "checking" and isinstance(err, AssertionError):
            row.status, row.detail = "check failed", str(err)
        else:
            row.status, row.detail = "error", f"{stage}: {type(err).__name__}: {err}"
        return row
    finally:
        sets = []
        if device.type == "cuda":
            torch.cuda.empty_cache()
    row.time_us, row.torch_time_us = opt.seconds * 1e6, base.seconds * 1e6
    row.gbps = case.bytes_moved / opt.seconds / 1e9
    row.bw_fraction = row.gbps / copy_gbps
    row.tflops = case.flops / opt.seconds / 1e12
    row.speedup_vs_torch = base.seconds / opt.seconds
    row.timing = opt.method if opt.method == base.method else f"{opt.method}; native: {base.method}"
    if n_sets < wanted:
        row.timing += f"; memory allowed {n_sets} of {wanted} input sets, so L2 may flatter"
    row.targets = evaluate_targets(case.targets, row)
    return row


# ---------------------------------------------------------------------------------------------------------
# Collecting cases and describing the device
# ---------------------------------------------------------------------------------------------------------


def collect_cases(modules: Sequence[str] = KERNEL_MODULES) -> tuple[list[BenchCase], list[str]]:
    """Import ``kernels_gpu.<name>`` for each name and gather its ``bench_cases()``.

    Args:
        modules: Module names under ``kernels_gpu``.

    Returns:
        The cases, and one note per module that contributed none (missing, or missing a dependency).
    """
    cases: list[BenchCase] = []
    skipped: list[str] = []
    for name in modules:
        qualified = f"kernels_gpu.{name}"
        try:
            module = importlib.import_module(qualified)
        except ModuleNotFoundError as err:
            why = "not present" if err.name == qualified else f"needs {err.name}"
            skipped.append(f"{qualified}: {why}")
            continue
        if not hasattr(module, "bench_cases"):
            skipped.append(f"{qualified}: has no bench_cases()")
            continue
        cases.extend(module.bench_cases())
    return cases, skipped


def select_cases(cases: list[BenchCase], kernels: Sequence[str] | None, quick: bool) -> list[BenchCase]:
    """Keep the named kernel families (all when None); ``quick`` keeps the first case of each family.

    Raises:
        UsageError: A named kernel family has no case.
    """
    if kernels is not None:
        known = sorted({case.kernel for case in cases})
        unknown = sorted(set(kernels) - set(known))
        if unknown:
            raise UsageError(
                f"no benchmark cases for kernel(s) {', '.join(unknown)}; known: {', '.join(known)}"
            )
        cases = [case for case in cases if case.kernel in kernels]
    if quick:
        first: dict[str, BenchCase] = {}
        for case in cases:
            first.setdefault(case.kernel, case)
        cases = list(first.values())
    return cases


def _resolve_device(device: str | torch.device) -> torch.device:
    """A concrete torch device; CUDA must be present when asked for."""
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise UsageError(f"device {device!r} is not a torch device; use 'cuda', 'cuda:N' or 'cpu'") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                "no CUDA device is visible; run the roofline benchmark on a GPU machine "
                "(or pass device 'cpu' for a functional, not performance, run)"
            )
        return torch.device("cuda", torch.cuda.current_device() if dev.index is None else dev.index)
    if dev.type != "cpu":
        raise UsageError(f"device {device!r}: use 'cuda', 'cuda:N' or 'cpu'")
    return dev


def _driver_version() -> str | None:
    """NVIDIA driver version from NVML, else nvidia-smi, else None."""
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # NVML missing or failing: fall back to the command-line tool.
        pass
    try:
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        done = subprocess.run(query, capture_output=True, text=True, timeout=10, check=True)
        return done.stdout.splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def run_benchmark(
    device: str | torch.device,
    kernels: list[str] | None = None,
    quick: bool = False,
    *,
    cases: list[BenchCase] | None = None,
    profile: bool = False,
) -> BenchmarkReport:
    """Measure the copy bandwidth, then check and time every case; see the module docstring for the method.

    Args:
        device: ``"cuda"``, ``"cuda:N"`` or ``"cpu"`` (a functional run; see the module docstring).
        kernels: Kernel families to run (``BenchCase.kernel``); all when None.
        quick: First case of each family only, fewer repeats, a smaller copy buffer.
        cases: Cases to run instead of those of :data:`KERNEL_MODULES`.
        profile: Also profile each case's paths kernel by kernel (see the module docstring).

    Returns:
        The report; a case that fails its check or raises is a row with status and message.

    Raises:
        UsageError: Unknown device or kernel family.
        DeviceUnavailableError: CUDA asked for but not present.
    """
    dev = _resolve_device(device)
    timestamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    skipped: list[str] = []
    if cases is None:
        cases, skipped = collect_cases()
    cases = select_cases(cases, kernels, quick)
    plan = _PLANS[(dev.type, quick)]
    notes = [NATIVE_NOTE]
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        l2_bytes = getattr(props, "L2_cache_size", 0) or _FALLBACK_L2_BYTES
        card, driver, cuda = props.name, _driver_version(), torch.version.cuda
        free, _ = torch.cuda.mem_get_info(dev)
        copy = measure_copy_bandwidth(dev, min(plan.copy_bytes, free // 4))
    else:
        l2_bytes, card, driver, cuda = 0, _cpu_model(), None, None
        notes.append(
            "CPU run: host clock, Triton paths only under Triton's interpreter; a functional check, not speed"
        )
        copy = measure_copy_bandwidth(dev, plan.copy_bytes)
    rows = [_run_case(case, dev, copy.gbps, l2_bytes, plan, profile) for case in cases]
    return BenchmarkReport(
        rows=rows,
        device=str(dev),
        card=card,
        driver=driver,
        cuda=cuda,
        torch_version=torch.__version__,
        triton_version=_triton_version(),
        copy_bandwidth=copy,
        l2_bytes=l2_bytes,
        timestamp=timestamp,
        quick=quick,
        skipped=skipped,
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------


def _parse_kernels(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"--kernels {text!r}: give comma-separated kernel names")
    return names


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark on the current CUDA device; print the table; return the exit code.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
        0 when every case passed, 1 when one failed, or the :class:`BenchError` exit code.
    """
    parser = argparse.ArgumentParser(
        prog="python -m kernels_gpu.benchmark", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="first case per kernel, fewer repeats")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the report as JSON")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="also write the table as Markdown")
    parser.add_argument("--kernels", type=_parse_kernels, metavar="A,B", help="kernel families to run")
    parser.add_argument("--profile", action="store_true", help="also list each path's kernels (torch.profiler)")
    args = parser.parse_args(argv)
    try:
        report = run_benchmark("cuda", args.kernels, args.quick, profile=args.profile)
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    table = report.to_markdown()
    print(table)
    if args.markdown:
        args.markdown.write_text(table, encoding="utf-8")
    if args.json:
        args.json.write_text(report.to_json(), encoding="utf-8")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
