"""Window arithmetic for cumulative energy counters (NVML, amdsmi, replayed counter traces).

A counter meter reads the counter at both window edges; the energy is the difference. A difference below
zero means the counter reset (driver reload, firmware bug: ROCm/amdsmi #115): the value is dropped with a
warning, never clamped (measurement.md §2; vLLM drops it too).
"""

from __future__ import annotations

from bench.meters.base import EnergyReading, Provenance, null_reading

COUNTER_RESET = "counter reset"
"""The ``reason`` of a reading whose counter went backwards; :mod:`bench.validity` keys on it."""


def counter_reading(
    start_j: float,
    end_j: float,
    seconds: float,
    *,
    scope: str,
    method: str,
    device: str = "",
    provenance: Provenance = "measured",
    min_window_s: float = 1.0,
    update_note: str = "",
    warnings: tuple[str, ...] = (),
) -> EnergyReading:
    """Build the reading of one window from the counter values at its edges.

    Args:
        start_j: Counter at the window start, in J (already converted from the vendor unit).
        end_j: Counter at the window end, in J.
        seconds: Window length in s (host clock).
        scope: The metered scope.
        method: The method label, e.g. ``"nvml_counter"``.
        device: The metered device.
        provenance: ``"measured"`` for hardware counters.
        min_window_s: Windows shorter than this get a warning (1 s keeps NVML's ~100 ms update under 10%
            quantization error; measurement.md §2).
        update_note: Clause on the counter's update period for the warnings, e.g.
            ``"NVML's counter updates about every 100 ms"``.
        warnings: Warnings the caller already has (they come first).

    Returns:
        The reading: ``joules = end_j - start_j``; ``None`` with reason ``"counter reset"`` when negative.
    """
    notes = list(warnings)
    delta = end_j - start_j
    suffix = f" ({update_note})" if update_note else ""
    if delta < 0:
        notes.append(
            f"energy counter went backwards ({start_j:.3f} J -> {end_j:.3f} J): window energy dropped, "
            "not clamped; rerun the trial"
        )
        reading = null_reading(scope, COUNTER_RESET, seconds, method=method, device=device)
        return reading.with_warnings(*notes)
    if delta == 0:
        notes.append(
            f"energy counter did not change during the {seconds:.3f} s window: it is shorter than one counter "
            "update; loop the work to lengthen it"
        )
    if seconds < min_window_s:
        notes.append(
            f"window {seconds:.3f} s is shorter than the {min_window_s:g} s this counter needs{suffix}; "
            "loop the work to lengthen the window"
        )
    return EnergyReading(
        scope=scope,
        joules=delta,
        seconds=seconds,
        method=method,
        provenance=provenance,
        sample_period_s=None,
        samples=2,
        distinct_samples=None,
        warnings=tuple(notes),
        device=device,
        mean_power_w=delta / seconds if seconds > 0 else None,
    )
