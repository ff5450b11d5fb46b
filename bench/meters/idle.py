"""Idle power: a window with no work, and the net energy derived from it.

Every scope reports three labelled numbers (measurement.md §6): gross energy, idle power from a matched
idle period (same state as the run: model loaded, bitstream loaded, no requests), and
``net = gross - idle_power x window``. Net is derived and fragile (Kepler #1811, #2465), so it is never
reported alone; the headline stays gross.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bench.meters.base import EnergyMeter, Provenance

IDLE_DISABLED = "idle measurement disabled (quick mode)"


@dataclass(frozen=True)
class IdleReading:
    """One scope's idle power.

    Attributes:
        watts: Mean idle power in W; ``None`` with ``reason`` when unknown.
        seconds: Length of the idle window in s.
        method: The meter's method label.
        reason: Why ``watts`` is ``None``.
        provenance: The meter's provenance.
        warnings: The idle window's warnings, one line each.
    """

    watts: float | None
    seconds: float
    method: str
    reason: str | None = None
    provenance: Provenance = "measured"
    warnings: tuple[str, ...] = ()


def measure_idle(
    meters: Mapping[str, EnergyMeter], seconds: float, sleep: Callable[[float], None] = time.sleep
) -> dict[str, IdleReading]:
    """Measure each scope's mean power over one window in which nothing runs.

    All meters share the window (begun in turn, then ended in turn), so their idle figures cover the same
    stretch of time. Measure in the run's state, after it settles; the protocol asks for >= 30 s before and
    after each configuration (see :func:`merge_idle`).

    Args:
        meters: Meters by scope.
        seconds: Idle window length in s; ``0`` skips the measurement (quick mode).
        sleep: Waits the given seconds (injectable for tests).

    Returns:
        Idle readings by scope; with ``seconds == 0``, each has ``watts=None`` and reason
        ``"idle measurement disabled (quick mode)"``.

    Raises:
        ValueError: ``seconds`` is negative.
    """
    if seconds < 0:
        raise ValueError(f"idle window must be >= 0 s, got {seconds}")
    if seconds == 0:
        return {scope: IdleReading(None, 0.0, m.method, IDLE_DISABLED, m.provenance) for scope, m in meters.items()}
    for meter in meters.values():
        meter.begin()
    sleep(seconds)
    idle = {}
    for scope, meter in meters.items():
        r = meter.end()
        watts = r.joules / r.seconds if r.joules is not None and r.seconds > 0 else None
        reason = r.reason if r.joules is None else (None if watts is not None else "zero-length idle window")
        idle[scope] = IdleReading(watts, r.seconds, r.method, reason, r.provenance, r.warnings)
    return idle


def merge_idle(before: IdleReading, after: IdleReading, tolerance: float = 0.10) -> IdleReading:
    """Combine the idle periods before and after a configuration into their mean.

    Args:
        before: Idle reading taken before the configuration's trials.
        after: Idle reading taken after them.
        tolerance: Relative difference above which the two are flagged as diverging (default 10%).

    Returns:
        The mean of the two powers, with a warning when the two differ by more than ``tolerance``; when
        one side is missing, the other alone with a warning; when both are, ``watts=None``.
    """
    seconds = before.seconds + after.seconds
    warnings = (*before.warnings, *after.warnings)
    if before.watts is None or after.watts is None:
        known = after if before.watts is None else before
        if known.watts is None:
            return IdleReading(None, seconds, before.method, before.reason or after.reason, before.provenance, warnings)
        side = "before" if known is before else "after"
        note = f"idle power only measured {side} the configuration"
        return IdleReading(known.watts, known.seconds, known.method, None, known.provenance, (*warnings, note))
    watts = (before.watts + after.watts) / 2
    if abs(before.watts - after.watts) > tolerance * watts:
        warnings = (
            *warnings,
            f"idle power drifted from {before.watts:.2f} W before to {after.watts:.2f} W after "
            f"(> {tolerance:.0%}): thermal drift or background load; check the device is otherwise idle",
        )
    return IdleReading(watts, seconds, before.method, None, before.provenance, warnings)


def net_energy(gross_j: float | None, idle_w: float | None, window_s: float) -> float | None:
    """Return ``gross_j - idle_w x window_s``: the energy above the idle floor.

    Noise can make it slightly negative for near-idle work; it is returned as is, never clamped.

    Args:
        gross_j: Gross energy of the window in J.
        idle_w: Idle power of the same scope in W.
        window_s: Window length in s.

    Returns:
        Net energy in J, or ``None`` when gross or idle is unknown.
    """
    if gross_j is None or idle_w is None:
        return None
    return gross_j - idle_w * window_s
