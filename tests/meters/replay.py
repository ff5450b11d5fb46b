"""Test doubles: meters that replay synthetic traces through the live meters' arithmetic.

A replay meter answers windows from a trace instead of hardware: :meth:`window` for any ``[t0, t1]``, or
``begin()``/``end()`` on a clock (by default the trace's own time, advancing in real time from construction).
The counter replay reads a counter as hardware does, the last value at or before the read; the power replay
integrates like :class:`~bench.meters.fpga_power.XrtPowerMeter`. They let tests exercise that arithmetic
without devices; nothing in ``bench`` uses them.
"""

from __future__ import annotations

import bisect
import itertools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.meters.base import EnergyMeter, EnergyReading, Provenance, null_reading
from bench.meters.counter import counter_reading
from bench.meters.sampler import power_reading


def _check_times(times_s: Sequence[float], values: Sequence[Any]) -> list[float]:
    times = [float(t) for t in times_s]
    if not times:
        raise ValueError("a replayed trace needs at least one sample")
    if len(times) != len(values):
        raise ValueError(f"trace has {len(times)} times but {len(values)} values")
    if any(b < a for a, b in itertools.pairwise(times)):
        raise ValueError("trace times must be non-decreasing")
    return times


def _trace_clock(start_s: float) -> Callable[[], float]:
    """Return a clock that reads ``start_s`` now and advances in real time."""
    origin = time.perf_counter()
    return lambda: start_s + time.perf_counter() - origin


class ReplayCounterMeter(EnergyMeter):
    """Replays a cumulative energy counter: ``(time s, counter J)`` samples."""

    def __init__(
        self,
        times_s: Sequence[float],
        energy_j: Sequence[float],
        *,
        scope: str = "gpu",
        method: str = "nvml_counter",
        device: str = "replay",
        provenance: Provenance = "measured",
        min_window_s: float = 1.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """Load the trace.

        Args:
            times_s: Sample times in s, non-decreasing.
            energy_j: Counter value at each time, in J.
            scope: The scope the trace came from.
            method: The method label of the recorded meter.
            device: The device the trace came from.
            provenance: ``"measured"`` for recorded traces.
            min_window_s: Windows shorter than this get a warning, as for the live counter.
            clock: Clock for ``begin()``/``end()`` in trace time; default: trace time from now on.

        Raises:
            ValueError: Empty trace, length mismatch or decreasing times.
        """
        self._times = _check_times(times_s, energy_j)
        self._energy = [float(e) for e in energy_j]
        super().__init__(scope, method, device=device, clock=clock or _trace_clock(self._times[0]))
        self.provenance = provenance
        self.min_window_s = min_window_s

    def counter_at(self, t: float) -> float | None:
        """Return the counter a read at time ``t`` (s) would see, or ``None`` outside the trace."""
        if not self._times[0] <= t <= self._times[-1]:
            return None
        return self._energy[bisect.bisect_right(self._times, t) - 1]

    def window(self, t0: float, t1: float) -> EnergyReading:
        """Return the reading of the window ``[t0, t1]`` (trace time, s).

        Args:
            t0: Window start in s.
            t1: Window end in s.

        Returns:
            The counter-difference reading; ``None`` with a reason if the window leaves the trace.
        """
        e0, e1 = self.counter_at(t0), self.counter_at(t1)
        if e0 is None or e1 is None:
            reason = (
                f"window [{t0:.3f}, {t1:.3f}] s is outside the recorded trace "
                f"[{self._times[0]:.3f}, {self._times[-1]:.3f}] s"
            )
            return null_reading(self.scope, reason, t1 - t0, method=self.method, device=self.device)
        return counter_reading(
            e0,
            e1,
            t1 - t0,
            scope=self.scope,
            method=self.method,
            device=self.device,
            provenance=self.provenance,
            min_window_s=self.min_window_s,
        )

    def _open_window(self) -> float:
        return self._clock()

    def _close_window(self, t0: float) -> EnergyReading:
        return self.window(t0, self._clock())


class ReplayPowerMeter(EnergyMeter):
    """Replays a power trace: ``(time s, W)`` samples, ``None`` marking a failed read."""

    def __init__(
        self,
        times_s: Sequence[float],
        watts: Sequence[float | None],
        *,
        period_s: float,
        scope: str = "fpga",
        method: str = "xrt_sensor",
        device: str = "replay",
        provenance: Provenance = "measured",
        clock: Callable[[], float] | None = None,
    ) -> None:
        """Load the trace.

        Args:
            times_s: Sample times in s, non-decreasing.
            watts: Power at each time in W; ``None`` (or NaN) where the read failed.
            period_s: The sampling period the trace was recorded with, in s.
            scope: The scope the trace came from.
            method: The method label of the recorded meter.
            device: The device the trace came from.
            provenance: ``"measured"`` for recorded traces.
            clock: Clock for ``begin()``/``end()`` in trace time; default: trace time from now on.

        Raises:
            ValueError: Empty trace, length mismatch, decreasing times or a non-positive period.
        """
        times = _check_times(times_s, watts)
        if not period_s > 0:
            raise ValueError(f"sampling period must be > 0 s, got {period_s}")
        super().__init__(scope, method, device=device, clock=clock or _trace_clock(times[0]))
        self.provenance = provenance
        self.period_s = period_s
        self._good = [(t, float(w)) for t, w in zip(times, watts, strict=True) if w is not None and math.isfinite(w)]
        self._failed_times = [t for t, w in zip(times, watts, strict=True) if w is None or not math.isfinite(w)]

    def window(self, t0: float, t1: float) -> EnergyReading:
        """Return the reading of the window ``[t0, t1]`` (trace time, s).

        Args:
            t0: Window start in s.
            t1: Window end in s.

        Returns:
            The integrated-power reading, with the trace's failed reads inside the window counted.
        """
        failed = sum(1 for t in self._failed_times if t0 <= t <= t1)
        return power_reading(
            self._good,
            t0,
            t1,
            scope=self.scope,
            method=self.method,
            period_s=self.period_s,
            failed_reads=failed,
            first_error="no value in the trace" if failed else None,
            device=self.device,
            provenance=self.provenance,
        )

    def _open_window(self) -> float:
        return self._clock()

    def _close_window(self, t0: float) -> EnergyReading:
        return self.window(t0, self._clock())
