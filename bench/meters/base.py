"""The energy-meter interface: one reading type, one window protocol, and the meter for a missing scope.

Every meter measures a *window* with the same sequence (measurement.md §2): sync the device, read, let the
work run, sync again, read again. :class:`EnergyMeter` owns that sequence and the window state, so each
vendor meter only says how to start and finish reading. Everything it returns is in joules, watts and
seconds; vendor units are converted once, inside the meter that reads them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Provenance = Literal["measured", "emulated", "analytic"]
"""Where a number comes from: a sensor, an emulation of the hardware, or a formula."""

Sync = Callable[[], None]
"""Waits until the device is idle (e.g. ``torch.cuda.synchronize``); called at both window edges."""


@dataclass(frozen=True)
class EnergyReading:
    """The energy one scope used over one window, with how it was obtained.

    Attributes:
        scope: What was metered: ``"gpu"``, ``"fpga"``, ``"cpu"`` or ``"dram"``.
        joules: Energy over the window in J; ``None`` when there is no trustworthy figure, with ``reason``
            saying why. Never a guess.
        seconds: Window length in s on the host clock (``time.perf_counter``).
        method: ``"nvml_counter"``, ``"power_integration"``, ``"amdsmi_counter"``, ``"xrt_sensor"``,
            ``"hwmon"``, ``"rapl"``, ``"modeled"`` or ``"none"``.
        provenance: ``"measured"`` for sensors, ``"analytic"`` for modeled figures.
        sample_period_s: Sampling period actually achieved in s (power meters); ``None`` for counters,
            whose update period the meter cannot observe.
        samples: Counter reads or power samples used.
        distinct_samples: Distinct power values among the samples (slow sensors repeat values); ``None``
            for counters.
        reason: Why ``joules`` is ``None``; ``"counter reset"`` when an energy counter went backwards.
        warnings: One line each: short window, few distinct readings, failed reads, sampling gaps.
        device: The metered device, e.g. ``"NVIDIA H100 80GB HBM3 (GPU 0, UUID GPU-...)"``.
        mean_power_w: ``joules / seconds`` in W.
        trace: ``(t_s since window start, W)`` power samples, for plots only.
        failed_reads: Power reads that raised or returned no valid value.
        sample_gaps: Stretches without a power sample longer than twice the sampling period; a
            non-zero count makes a run INVALID (measurement.md §9).
        max_sample_gap_s: Longest stretch in s without a power sample, window edges included.
    """

    scope: str
    joules: float | None
    seconds: float
    method: str
    provenance: Provenance
    sample_period_s: float | None
    samples: int
    distinct_samples: int | None
    reason: str | None = None
    warnings: tuple[str, ...] = ()
    device: str = ""
    mean_power_w: float | None = None
    trace: tuple[tuple[float, float], ...] = ()
    failed_reads: int = 0
    sample_gaps: int = 0
    max_sample_gap_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the reading as plain JSON-ready types (lists for tuples)."""
        data = dataclasses.asdict(self)
        data["warnings"] = list(self.warnings)
        data["trace"] = [[t, w] for t, w in self.trace]
        return data

    def with_warnings(self, *warnings: str) -> EnergyReading:
        """Return a copy with ``warnings`` appended to this reading's own."""
        return dataclasses.replace(self, warnings=(*self.warnings, *warnings))


def null_reading(scope: str, reason: str, seconds: float, *, method: str = "none", device: str = "") -> EnergyReading:
    """Build a reading that carries no energy figure, only why.

    Args:
        scope: The metered scope.
        reason: One line saying why there is no figure and, where possible, what to do.
        seconds: Window length in s.
        method: The method that was attempted, ``"none"`` when there is no meter.
        device: The device, when known.

    Returns:
        A reading with ``joules=None`` and ``reason`` set.
    """
    return EnergyReading(
        scope=scope,
        joules=None,
        seconds=seconds,
        method=method,
        provenance="measured",
        sample_period_s=None,
        samples=0,
        distinct_samples=None,
        reason=reason,
        device=device,
    )


class EnergyMeter:
    """One scope's energy meter, measured in windows: ``begin()``, the work, ``end()``.

    ``begin`` and ``end`` call the ``sync`` given to the constructor before reading, so queued device work
    is inside the window. A window may be begun again after it ended. A meter that is not available (no
    driver, no permission) still runs windows, and each ends in a reading with ``joules=None`` and the
    ``unavailable_reason``, so a run never stops for a missing sensor.

    Subclasses implement :meth:`_open_window` and :meth:`_close_window` and extend :meth:`describe`;
    :class:`NullMeter` needs neither, as it is never available.
    """

    scope: str
    method: str
    provenance: Provenance = "measured"

    def __init__(
        self,
        scope: str,
        method: str,
        *,
        sync: Sync | None = None,
        device: str = "",
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.scope = scope
        self.method = method
        self.device = device
        self.unavailable_reason: str | None = None
        self._sync_fn = sync
        self._clock = clock
        self._t0: float | None = None

    def available(self) -> bool:
        """Return whether this meter can produce energy figures (else see ``unavailable_reason``)."""
        return self.unavailable_reason is None

    def sync(self) -> None:
        """Wait for the device to finish queued work (no-op without a ``sync`` callable)."""
        if self._sync_fn is not None:
            self._sync_fn()

    def begin(self) -> None:
        """Sync the device, then start the window (read the counter or start sampling).

        Raises:
            RuntimeError: A window is already open on this meter.
        """
        if self._t0 is not None:
            raise RuntimeError(f"{self.scope} meter: begin() while a window is open; call end() first")
        self.sync()
        self._t0 = self._open_window() if self.available() else self._clock()

    def end(self) -> EnergyReading:
        """Sync the device, then finish the window and return its reading.

        Returns:
            The window's reading; ``joules`` is ``None`` with a ``reason`` when no figure can be trusted.

        Raises:
            RuntimeError: No window is open on this meter.
        """
        if self._t0 is None:
            raise RuntimeError(f"{self.scope} meter: end() without begin(); call begin() first")
        t0, self._t0 = self._t0, None
        self.sync()
        if not self.available():
            reason = self.unavailable_reason or "meter unavailable"
            return null_reading(self.scope, reason, self._clock() - t0, method=self.method, device=self.device)
        return self._close_window(t0)

    def describe(self) -> dict[str, Any]:
        """Return the meter's provenance: scope, method, device and availability (subclasses add more)."""
        return {
            "scope": self.scope,
            "method": self.method,
            "provenance": self.provenance,
            "device": self.device,
            "available": self.available(),
            "unavailable_reason": self.unavailable_reason,
        }

    def close(self) -> None:
        """Abandon any open window and release the meter's resources; the meter is unusable afterwards."""
        self._t0 = None

    def _open_window(self) -> float:
        """Start reading; return the window start on the host clock in s."""
        raise NotImplementedError(f"{type(self).__name__} must implement _open_window")

    def _close_window(self, t0: float) -> EnergyReading:
        """Finish reading the window that started at host time ``t0`` (s) and build its reading."""
        raise NotImplementedError(f"{type(self).__name__} must implement _close_window")


class NullMeter(EnergyMeter):
    """The meter of a scope that cannot be metered: never available; every window reads ``None`` + reason."""

    def __init__(self, scope: str, reason: str, sync: Sync | None = None) -> None:
        """Create a meter that only reports why there is no figure.

        Args:
            scope: The scope it stands for, e.g. ``"gpu"``.
            reason: One line, e.g. ``"no NVIDIA GPU: the run is on the CPU"``.
            sync: Called at window edges like any meter's, so windows time the same work.
        """
        super().__init__(scope, "none", sync=sync)
        self.unavailable_reason = reason
