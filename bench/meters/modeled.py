"""Modeled device energy for when no sensor exists (an emulated FPGA, a device not in the box).

``energy = static_w x (window + unwaited) + dynamic_w x busy``: the device draws its static power for the
whole window (a configured FPGA is never off, so the hetero configuration always pays it; measurement.md
§6) and its dynamic power only while a kernel runs. ``unwaited`` is FPGA time the composed run spends beyond
the window because nobody waited for it (analytic mode adds the modeled offload time to the measured GPU
time). Every reading is labelled ``analytic`` with method ``modeled`` and names the spec its powers came
from, so it can never pass for a measurement. The emulated and analytic FPGA devices meter through this
(:meth:`bench.devices.fpga.FpgaDevice.meter`), reporting each iteration's modeled busy time.
"""

from __future__ import annotations

import math
from typing import Any

from bench.errors import UsageError
from bench.meters.base import EnergyMeter, EnergyReading, Provenance, Sync


class ModeledPowerMeter(EnergyMeter):
    """Analytic energy from a static + dynamic power model and the busy time reported during the window."""

    provenance: Provenance = "analytic"

    def __init__(
        self,
        *,
        static_w: float,
        dynamic_w: float,
        source: str,
        scope: str = "fpga",
        sync: Sync | None = None,
    ) -> None:
        """Set the power model.

        Args:
            static_w: Power drawn whenever the device is configured, in W (>= 0).
            dynamic_w: Extra power while a kernel runs, in W (>= 0).
            source: Where the figures come from, e.g. ``"kernels_fpga/specs/u55c.yaml (AMD DS1000 Table 3)"``.
            scope: The modeled scope.
            sync: Called at both window edges.

        Raises:
            UsageError: A power is negative or not finite, or ``source`` is empty.
        """
        for name, value in (("static_w", static_w), ("dynamic_w", dynamic_w)):
            if not (math.isfinite(value) and value >= 0):
                raise UsageError(f"modeled {scope} power {name}={value!r} must be a finite number >= 0 W")
        if not source.strip():
            raise UsageError(f"modeled {scope} power needs a source: name the spec the watts come from")
        super().__init__(scope, "modeled", sync=sync, device=f"model: {source}")
        self.static_w = static_w
        self.dynamic_w = dynamic_w
        self.source = source
        self._busy_s = 0.0
        self._unwaited_s = 0.0

    def add_busy(self, seconds: float) -> None:
        """Add device busy time to the open window.

        Args:
            seconds: Busy time in s (>= 0), e.g. one kernel's run time.

        Raises:
            RuntimeError: No window is open.
            ValueError: ``seconds`` is negative or not finite.
        """
        self._busy_s += self._checked("add_busy", seconds)

    def add_unwaited(self, seconds: float) -> None:
        """Add device time that extends the run beyond the window (nobody waited for it: analytic mode).

        Args:
            seconds: Time in s (>= 0); the static power is charged for it too.

        Raises:
            RuntimeError: No window is open.
            ValueError: ``seconds`` is negative or not finite.
        """
        self._unwaited_s += self._checked("add_unwaited", seconds)

    def _checked(self, what: str, seconds: float) -> float:
        if self._t0 is None:
            raise RuntimeError(f"{self.scope} model: {what}() outside a window; call begin() first")
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"{what}: time must be a finite number >= 0 s, got {seconds!r}")
        return seconds

    def _open_window(self) -> float:
        self._busy_s = self._unwaited_s = 0.0
        return self._clock()

    def _close_window(self, t0: float) -> EnergyReading:
        seconds = self._clock() - t0 + self._unwaited_s
        joules = self.static_w * seconds + self.dynamic_w * self._busy_s
        warnings: tuple[str, ...] = ()
        if self._busy_s > seconds:
            warnings = (
                f"busy time {self._busy_s:.3f} s exceeds the {seconds:.3f} s window: overlapping kernels "
                "counted twice?",
            )
        return EnergyReading(
            scope=self.scope,
            joules=joules,
            seconds=seconds,
            method=self.method,
            provenance=self.provenance,
            sample_period_s=None,
            samples=0,
            distinct_samples=None,
            warnings=warnings,
            device=self.device,
            mean_power_w=joules / seconds if seconds > 0 else None,
        )

    def describe(self) -> dict[str, Any]:
        """Return the model: static and dynamic watts and their source."""
        info = super().describe()
        info.update(static_w=self.static_w, dynamic_w=self.dynamic_w, source=self.source)
        return info
