"""The measurement protocol: windows, idle power, per-step profiles and the composition check.

A *window* repeats whole iterations until both a minimum duration and a minimum iteration count are met,
with every energy meter open across it (each meter synchronizes the device at both edges). GPU state
(temperature, SM clock, power limit, throttling) is read before and after, outside the window.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.execution import CaseRun
from bench.meters import EnergyMeter, EnergyReading
from bench.timeline import profiling_timeline, synchronize


@dataclass
class Window:
    """One measured window.

    Attributes:
        seconds: Host-clock length of the window (device synchronized at both edges).
        iterations: Iterations run inside it.
        readings: Energy reading per scope.
        state_before: GPU state just before the window (empty off NVIDIA GPUs).
        state_after: GPU state just after it.
    """

    seconds: float
    iterations: int
    readings: dict[str, EnergyReading]
    state_before: dict[str, Any] = field(default_factory=dict)
    state_after: dict[str, Any] = field(default_factory=dict)


def gpu_state(meters: Mapping[str, EnergyMeter]) -> dict[str, Any]:
    """Temperature, clocks, power limit and throttling of the GPU, when its meter can read them."""
    state = getattr(meters.get("gpu"), "state", None)
    return state() if callable(state) and meters["gpu"].available() else {}


def measure_window(run_once: Callable[[], None], meters: Mapping[str, EnergyMeter], device: Any,
                   min_duration_s: float, min_iterations: int) -> Window:
    """Repeat ``run_once`` inside one energy window until the duration and iteration minimums are met."""
    before = gpu_state(meters)
    for m in meters.values():
        m.begin()
    t0 = time.perf_counter()
    iterations = 0
    while iterations < min_iterations or time.perf_counter() - t0 < min_duration_s:
        run_once()
        iterations += 1
    synchronize(device)
    seconds = time.perf_counter() - t0
    readings = {scope: m.end() for scope, m in meters.items()}
    return Window(seconds, iterations, readings, before, gpu_state(meters))


def profile(run: CaseRun, name: str, iterations: int) -> tuple[dict[str, float], str]:
    """Seconds per decode step of each timeline section, and how they were timed.

    A captured placement is timed in its captured form, with CUDA events recorded inside the graphs at
    every section boundary (no extra launches); an eager one with device events around each section
    (the host clock on a CPU).
    """
    steps = iterations * run.steps_per_iteration
    if run.backends[name].plan is not None:
        plan = run.profiled_plan(name)
        acc: dict[str, float] = {}
        for _ in range(iterations):
            plan.replay()
            for section, seconds in plan.section_seconds().items():
                acc[section] = acc.get(section, 0.0) + seconds
        return {k: v / steps for k, v in acc.items()}, "CUDA graphs, events recorded inside the graphs"
    timeline = profiling_timeline(run.device)
    for _ in range(iterations):
        run.iteration(name, timeline)
    how = "eager, CUDA events around each section" if run.device.type == "cuda" else "eager, host clock"
    return {section: seconds / steps for section, seconds in timeline.totals().items()}, how


@dataclass
class SectionCost:
    """One section measured alone (its CUDA graphs replayed in a loop).

    Attributes:
        seconds_per_step: Time per decode step.
        joules_per_step: GPU energy per decode step, or None with ``reason``.
        replays: Loop iterations (each replays the section's graphs of one whole iteration).
        window_s: Length of the measured loop.
        reason: Why the energy is unknown.
    """

    seconds_per_step: float
    joules_per_step: float | None
    replays: int
    window_s: float
    reason: str | None = None


def section_costs(run: CaseRun, name: str, meter: EnergyMeter, min_duration_s: float,
                  min_iterations: int) -> dict[str, SectionCost]:
    """Measure each timeline section of placement ``name`` in isolation (CUDA only).

    The iteration is captured as one CUDA graph per section; each section's graphs are then replayed in a
    loop inside an energy window, which gives its time and energy per decode step.
    """
    graphs = run.section_graphs(name)
    out = {}
    for section, gs in graphs.items():
        def replay(gs: list = gs) -> None:
            for g in gs:
                g.replay()

        w = measure_window(replay, {"gpu": meter}, run.device, min_duration_s, min_iterations)
        steps = w.iterations * run.steps_per_iteration
        r = w.readings["gpu"]
        out[section] = SectionCost(w.seconds / steps, None if r.joules is None else r.joules / steps,
                                   w.iterations, w.seconds, r.reason)
    return out


def idle_window(meters: Mapping[str, EnergyMeter], seconds: float, device: Any) -> dict[str, Any]:
    """Idle power per scope over ``seconds`` with nothing running (the state stays loaded)."""
    from bench.meters import measure_idle

    synchronize(device)
    return measure_idle(meters, seconds)
