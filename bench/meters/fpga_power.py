"""Alveo FPGA board energy: sampled board power, integrated over the window.

The board's management controller reports power (the sum of V x I over the 12 V PEX, 12 V AUX and 3.3 V
PEX rails) but keeps no energy counter, so energy is the trapezoid integral of timestamped samples
(measurement.md §4). The sensor refreshes about once a second: faster polling repeats values, so windows
should last >= 2 s and each reading records how many distinct values it saw.

Two readers exist: pyxrt's ``electrical`` info (built in ``kernels_fpga/host.py``, ``board_power_w()``)
and the hwmon ``power1_input`` file of the board's user function (:func:`hwmon_power_reader`).
:class:`XrtPowerMeter` accepts either, or any callable returning watts.

pyxrt holds the GIL inside ``run.wait()`` and BO syncs (measurement.md §10), which starves the sampling
thread; such stretches appear as sampling gaps in the reading and make the run INVALID rather than silently
under-sampled.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.errors import DeviceUnavailableError
from bench.meters.base import EnergyMeter, EnergyReading, Sync
from bench.meters.sampler import PowerSampler, power_reading

_MICRO = 1e-6  # hwmon reports power in µW.


def hwmon_power_reader(bdf: str, root: str | Path = "/sys/bus/pci/devices") -> Callable[[], float]:
    """Return a reader of an Alveo board's instant power from hwmon's ``power1_input`` (µW).

    Args:
        bdf: PCI address of the board's *user* function, e.g. ``"0000:3b:00.1"`` (it ends in ``.1``).
        root: Directory holding the PCI devices.

    Returns:
        A callable returning board power in W; it raises ``OSError`` or ``ValueError`` on a failed read,
        which the sampler counts as a gap.

    Raises:
        DeviceUnavailableError: The device has no ``hwmon/hwmon*/power1_input``.
    """
    device = Path(root) / bdf
    candidates = sorted(device.glob("hwmon/hwmon*/power1_input"))
    if not candidates:
        raise DeviceUnavailableError(
            f"no hwmon power1_input under {device}/hwmon: check the BDF (the user function ends in .1, see "
            "`lspci -d 10ee:`) and that the xocl driver is loaded"
        )
    path = candidates[0]

    def read_watts() -> float:
        return int(path.read_text().strip()) * _MICRO

    return read_watts


class XrtPowerMeter(EnergyMeter):
    """Energy of an FPGA board over a window, from board power sampled in a background thread."""

    def __init__(
        self,
        read_watts: Callable[[], float | None],
        period_s: float = 0.1,
        source: str = "xrt_sensor",
        *,
        sync: Sync | None = None,
        device: str = "",
        scope: str = "fpga",
    ) -> None:
        """Prepare the meter; sampling runs only while a window is open.

        Args:
            read_watts: Returns board power in W (``None`` or an exception counts as a failed read).
            period_s: Sampling period in s; 0.1 s oversamples the ~1 s sensor refresh, so each refresh is
                caught within 0.1 s.
            source: The method label: ``"xrt_sensor"`` (pyxrt) or ``"hwmon"``.
            sync: Called at both window edges, e.g. a wait on the last FPGA run.
            device: The board, e.g. ``"xilinx_u55c_gen3x16_xdma_base_3 (0000:3b:00.1)"``.
            scope: The metered scope.

        Raises:
            ValueError: ``period_s`` is not positive.
        """
        super().__init__(scope, source, sync=sync, device=device)
        self._sampler = PowerSampler(read_watts, period_s)

    @property
    def period_s(self) -> float:
        """The requested sampling period in s."""
        return self._sampler.period_s

    def _open_window(self) -> float:
        self._sampler.start()
        return self._clock()

    def _close_window(self, t0: float) -> EnergyReading:
        t1 = self._clock()
        result = self._sampler.stop()
        notes = ("power reader blocked; sampling stopped early",) if result.stalled else ()
        return power_reading(
            result.samples,
            t0,
            t1,
            scope=self.scope,
            method=self.method,
            period_s=result.period_s,
            failed_reads=result.failed_reads,
            first_error=result.first_error,
            device=self.device,
            warnings=notes,
        )

    def describe(self) -> dict[str, Any]:
        """Return method, device and the requested sampling period."""
        info = super().describe()
        info["period_s"] = self.period_s
        info["integration"] = "trapezoid; nearest sample held to the window edges"
        return info

    def close(self) -> None:
        """Stop sampling if a window is open."""
        super().close()
        if self._sampler.running:
            self._sampler.stop()
