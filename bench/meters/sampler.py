"""Power sampling in a background thread, and the arithmetic that turns power samples into energy.

Sensors without an energy counter (Alveo boards, GPUs without NVML's counter) only report power, so energy
is the trapezoid integral of timestamped samples (measurement.md §2, §4). The same arithmetic serves live
sampling (:class:`PowerSampler`) and recorded traces (:mod:`bench.meters.replay`).
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.meters.base import EnergyReading, Provenance, null_reading

PowerSample = tuple[float, float]
"""``(host time in s, power in W)``."""

MIN_DISTINCT_READINGS = 3
"""Fewer distinct values than this in a window means the sensor refreshes slower than the window can
resolve (XRT sensors refresh about once a second; measurement.md §4)."""


@dataclass(frozen=True)
class SamplerResult:
    """What a :class:`PowerSampler` collected between ``start()`` and ``stop()``.

    Attributes:
        samples: ``(host time s, W)`` pairs, in time order; failed reads leave no sample.
        failed_reads: Reads that raised, returned ``None``, or returned a negative or non-finite value.
        first_error: The first failure, as ``"TypeName: message"``; ``None`` if none.
        period_s: The requested sampling period in s.
        stalled: The reader blocked past the stop timeout, so sampling ended early.
    """

    samples: tuple[PowerSample, ...]
    failed_reads: int
    first_error: str | None
    period_s: float
    stalled: bool = False


class PowerSampler:
    """Calls a power reader every ``period_s`` in a daemon thread and keeps timestamped samples.

    Each sample is stamped with the midpoint of its read (``time.perf_counter``), since slow readers
    (pyxrt's ``get_info`` takes milliseconds) would otherwise skew the timeline. The schedule is kept on
    absolute deadlines so the period does not drift; a late read is not followed by a burst. A reader
    that raises or returns ``None`` counts as a failed read and never stops the run. ``stop()`` takes one
    last sample so the window's end is covered.
    """

    def __init__(
        self,
        read_watts: Callable[[], float | None],
        period_s: float,
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """Prepare a sampler; nothing is read until :meth:`start`.

        Args:
            read_watts: Returns the current power in W, or ``None`` when no value is available.
            period_s: Time between reads in s (> 0).
            clock: Host clock in s.

        Raises:
            ValueError: ``period_s`` is not positive.
        """
        if not period_s > 0:
            raise ValueError(f"sampling period must be > 0 s, got {period_s}")
        self.read_watts = read_watts
        self.period_s = period_s
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._samples: list[PowerSample] = []
        self._failed = 0
        self._first_error: str | None = None

    @property
    def running(self) -> bool:
        """Whether the sampling thread is running."""
        return self._thread is not None

    def start(self) -> None:
        """Clear earlier samples and start sampling (the first read happens at once).

        Raises:
            RuntimeError: The sampler is already running.
        """
        if self._thread is not None:
            raise RuntimeError("power sampler already running; stop() it first")
        with self._lock:
            self._samples, self._failed, self._first_error = [], 0, None
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="bench-power-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> SamplerResult:
        """Stop sampling, take a final sample, and return everything collected since :meth:`start`.

        Returns:
            The samples and failure counts.

        Raises:
            RuntimeError: The sampler is not running.
        """
        if self._thread is None:
            raise RuntimeError("power sampler not running; start() it first")
        self._stop.set()
        # A reader stuck in a driver call would hang the run; give up on it after a bounded wait.
        self._thread.join(timeout=max(2.0, 5 * self.period_s))
        stalled = self._thread.is_alive()
        self._thread = None
        if not stalled:
            self._sample()
        with self._lock:
            return SamplerResult(
                samples=tuple(sorted(self._samples)),
                failed_reads=self._failed,
                first_error=self._first_error,
                period_s=self.period_s,
                stalled=stalled,
            )

    def _run(self) -> None:
        deadline = self._clock()
        while True:
            self._sample()
            deadline += self.period_s
            delay = deadline - self._clock()
            if delay < 0:
                deadline, delay = self._clock(), 0.0
            if self._stop.wait(delay):
                return

    def _sample(self) -> None:
        t_start = self._clock()
        try:
            value = self.read_watts()
            error = None if value is not None and math.isfinite(value) and value >= 0 else f"invalid value {value!r}"
        except Exception as exc:  # any sensor failure is a gap, never the end of a run
            value, error = None, f"{type(exc).__name__}: {exc}"
        t_mid = (t_start + self._clock()) / 2
        with self._lock:
            if value is not None and error is None:
                self._samples.append((t_mid, float(value)))
            else:
                self._failed += 1
                if self._first_error is None:
                    self._first_error = error


def integrate_trapezoid(samples: Sequence[PowerSample], t0: float, t1: float) -> float:
    """Integrate power samples over ``[t0, t1]`` with the trapezoid rule.

    Between samples power is linear. At a window edge that falls between two samples the power is
    interpolated; at an edge before the first (after the last) sample, the first (last) sample's power is
    held constant to the edge. Holding the nearest value is the least-biased choice for steady power and
    never treats an unsampled stretch as zero power. Samples outside the window only shape the edge values.

    Args:
        samples: ``(host time s, W)`` pairs, in any order.
        t0: Window start in s.
        t1: Window end in s (``>= t0``).

    Returns:
        Energy in J.

    Raises:
        ValueError: No samples, or ``t1 < t0``.
    """
    if t1 < t0:
        raise ValueError(f"window ends before it starts: t0={t0}, t1={t1}")
    if not samples:
        raise ValueError("no power samples to integrate")
    points = sorted(samples)
    times = [t for t, _ in points]

    def power_at(t: float) -> float:
        if t <= times[0]:
            return points[0][1]
        if t >= times[-1]:
            return points[-1][1]
        i = bisect.bisect_right(times, t)
        (ta, wa), (tb, wb) = points[i - 1], points[i]
        return wa if tb == ta else wa + (wb - wa) * (t - ta) / (tb - ta)

    path = [(t0, power_at(t0)), *((t, w) for t, w in points if t0 < t < t1), (t1, power_at(t1))]
    return sum((tb - ta) * (wa + wb) / 2 for (ta, wa), (tb, wb) in itertools.pairwise(path))


def power_reading(
    samples: Sequence[PowerSample],
    t0: float,
    t1: float,
    *,
    scope: str,
    method: str,
    period_s: float,
    failed_reads: int = 0,
    first_error: str | None = None,
    device: str = "",
    provenance: Provenance = "measured",
    warnings: Sequence[str] = (),
) -> EnergyReading:
    """Turn the power samples of one window into an :class:`EnergyReading`.

    The samples that count are those inside ``[t0, t1]`` plus the nearest one on each side (they set the
    edge values of :func:`integrate_trapezoid`). A stretch without a sample longer than twice
    ``period_s`` is a gap; the reading records how many and the longest, and warns on failed reads, gaps,
    and fewer than :data:`MIN_DISTINCT_READINGS` distinct values.

    Args:
        samples: ``(host time s, W)`` pairs from the sampler or a recorded trace.
        t0: Window start in s (host clock).
        t1: Window end in s.
        scope: The metered scope.
        method: The method label, e.g. ``"xrt_sensor"`` or ``"power_integration"``.
        period_s: The requested sampling period in s.
        failed_reads: Reads that produced no sample.
        first_error: The first failed read's error, for the warning.
        device: The metered device.
        provenance: ``"measured"`` for sensor data.
        warnings: Warnings the caller already has (they come first).

    Returns:
        The reading; ``joules`` is ``None`` when there is no sample at all.
    """
    seconds = t1 - t0
    notes = list(warnings)
    if failed_reads:
        detail = f" (first: {first_error})" if first_error else ""
        notes.append(f"{failed_reads} power read(s) failed{detail}")
    points = sorted(samples)
    if not points:
        reason = "no power samples in the window" + (
            f": all {failed_reads} reads failed (first: {first_error})" if failed_reads else ""
        )
        return null_reading(scope, reason, seconds, method=method, device=device).with_warnings(*notes)

    times = [t for t, _ in points]
    lo = max(bisect.bisect_right(times, t0) - 1, 0)
    hi = min(bisect.bisect_left(times, t1) + 1, len(points))
    used = points[lo:hi]
    edges = [min(t0, used[0][0]), *(t for t, _ in used), max(t1, used[-1][0])]
    # Coverage of the window only: clip each stretch to [t0, t1] before judging it.
    stretches = [min(b, t1) - max(a, t0) for a, b in itertools.pairwise(edges) if min(b, t1) > max(a, t0)]
    max_gap = max(stretches, default=0.0)
    gaps = sum(1 for s in stretches if s > 2 * period_s)
    if gaps:
        notes.append(f"{gaps} sampling gap(s) longer than 2x the {period_s:g} s period (longest {max_gap:.3f} s)")
    distinct = len({w for _, w in used})
    if distinct < MIN_DISTINCT_READINGS:
        notes.append(
            f"only {distinct} distinct power reading(s) in a {seconds:.3f} s window ({len(used)} samples): the "
            "sensor refreshes slower than the window resolves; lengthen the window (XRT: >= 2 s)"
        )
    in_window = [t for t, _ in used if t0 <= t <= t1]
    achieved = (in_window[-1] - in_window[0]) / (len(in_window) - 1) if len(in_window) >= 2 else None
    joules = integrate_trapezoid(used, t0, t1)
    return EnergyReading(
        scope=scope,
        joules=joules,
        seconds=seconds,
        method=method,
        provenance=provenance,
        sample_period_s=achieved,
        samples=len(used),
        distinct_samples=distinct,
        warnings=tuple(notes),
        device=device,
        mean_power_w=joules / seconds if seconds > 0 else None,
        trace=relative_trace(used, t0, t1),
        failed_reads=failed_reads,
        sample_gaps=gaps,
        max_sample_gap_s=max_gap,
    )


def relative_trace(samples: Sequence[PowerSample], t0: float, t1: float) -> tuple[PowerSample, ...]:
    """Return the samples inside ``[t0, t1]`` as ``(s since t0, W)``, for plots.

    Args:
        samples: ``(host time s, W)`` pairs.
        t0: Window start in s.
        t1: Window end in s.

    Returns:
        The in-window samples with times relative to ``t0``, in time order.
    """
    return tuple((t - t0, w) for t, w in sorted(samples) if t0 <= t <= t1)
