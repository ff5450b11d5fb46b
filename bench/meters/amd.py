"""AMD GPU energy through amdsmi (ROCm's Python package, imported lazily; bare-metal Linux only).

``amdsmi_get_energy_count`` returns an accumulator in ticks and ``counter_resolution`` in µJ per tick
(≈15.3 observed); energy is their product, differenced over the window: method ``amdsmi_counter``.
Counters have gone backwards on some parts (ROCm/amdsmi #115), so a negative difference is dropped with a
warning, as for NVML (measurement.md §3).
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Mapping
from typing import Any

from bench.meters.base import EnergyMeter, EnergyReading, Sync, null_reading
from bench.meters.counter import counter_reading

_MICRO = 1e-6  # amdsmi's counter resolution is in µJ per tick.


def visible_amd_index(index: int, environ: Mapping[str, str]) -> int:
    """Map a HIP device index to the position among all AMD GPUs.

    ``ROCR_VISIBLE_DEVICES`` filters first, then ``HIP_VISIBLE_DEVICES`` (or ``CUDA_VISIBLE_DEVICES``, which
    HIP also honours) indexes into what is left. Only integer entries can be mapped.

    Args:
        index: torch's device index (``cuda:<i>`` on ROCm builds).
        environ: The process environment.

    Returns:
        The index into ``amdsmi_get_processor_handles()``.

    Raises:
        ValueError: An entry is not an integer, or ``index`` is not visible.
    """
    position = index
    for name in (
        "HIP_VISIBLE_DEVICES" if "HIP_VISIBLE_DEVICES" in environ else "CUDA_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
    ):
        value = environ.get(name)
        if value is None:
            continue
        entries = [e.strip() for e in value.split(",") if e.strip()]
        if not all(e.isdigit() for e in entries):
            raise ValueError(f"{name}={value!r} has non-integer entries; use integer device indices")
        if position >= len(entries):
            raise ValueError(f"device {position} is not visible: {name}={value!r}")
        position = int(entries[position])
    return position


class AmdsmiEnergyMeter(EnergyMeter):
    """Energy of one AMD GPU over a window, from amdsmi's energy accumulator."""

    def __init__(self, index: int, sync: Sync | None = None) -> None:
        """Open the GPU in amdsmi; on any failure the meter is unavailable with a reason, never an error.

        Args:
            index: torch's device index on a ROCm build (``cuda:<i>``); visibility variables are respected.
            sync: Called at both window edges, e.g. ``torch.cuda.synchronize``.
        """
        super().__init__("gpu", "amdsmi_counter", sync=sync)
        self.index = index
        self._smi: Any = None
        self._handle: Any = None
        self._e0: float | None = None
        self._start_error: str | None = None
        self.unavailable_reason = self._connect()

    def _connect(self) -> str | None:
        try:
            smi: Any = importlib.import_module("amdsmi")
        except ImportError:
            return "amdsmi is not installed: install ROCm's amdsmi Python package (ROCm >= 6.3, bare metal)"
        try:
            smi.amdsmi_init()
        except smi.AmdSmiException as exc:
            return f"amdsmi did not start ({exc}): check the amdgpu driver and ROCm install"
        self._smi = smi
        try:
            position = visible_amd_index(self.index, os.environ)
            handles = smi.amdsmi_get_processor_handles()
            if position >= len(handles):
                raise ValueError(f"amdsmi lists {len(handles)} GPU(s), none at position {position}")
            self._handle = handles[position]
            self._read_energy_j()
        except (ValueError, smi.AmdSmiException) as exc:
            self.close()
            return f"no amdsmi energy counter for device {self.index}: {exc}"
        self.device = f"{self._info('amdsmi_get_gpu_asic_info', 'market_name') or 'AMD GPU'} (device {self.index})"
        return None

    def _info(self, call: str, key: str) -> Any:
        try:
            return getattr(self._smi, call)(self._handle)[key]
        except (self._smi.AmdSmiException, AttributeError, KeyError, TypeError):
            return None

    def _read_energy_j(self) -> float:
        counts = self._smi.amdsmi_get_energy_count(self._handle)
        # The accumulator key was "power" before amdsmi 6.2.1.
        ticks = counts["energy_accumulator"] if "energy_accumulator" in counts else counts["power"]
        return ticks * counts["counter_resolution"] * _MICRO

    def _open_window(self) -> float:
        t0 = self._clock()
        self._e0, self._start_error = None, None
        try:
            self._e0 = self._read_energy_j()
        except self._smi.AmdSmiException as exc:
            self._start_error = str(exc)
        return t0

    def _close_window(self, t0: float) -> EnergyReading:
        t1 = self._clock()
        try:
            e1, end_error = self._read_energy_j(), None
        except self._smi.AmdSmiException as exc:
            e1, end_error = None, str(exc)
        if self._e0 is None or e1 is None:
            edge = "start" if self._e0 is None else "end"
            reason = f"amdsmi energy read failed at the window {edge}: {self._start_error or end_error}"
            return null_reading(self.scope, reason, t1 - t0, method=self.method, device=self.device)
        return counter_reading(
            self._e0, e1, t1 - t0, scope=self.scope, method=self.method, device=self.device, min_window_s=1.0
        )

    def describe(self) -> dict[str, Any]:
        """Return method, device, bus id and amdsmi library version."""
        info = super().describe()
        info["index"] = self.index
        if self._smi is not None:
            info["bdf"] = self._call("amdsmi_get_gpu_device_bdf")
            info["library_version"] = self._call("amdsmi_get_lib_version", with_handle=False)
        return info

    def _call(self, name: str, with_handle: bool = True) -> Any:
        try:
            fn = getattr(self._smi, name)
            return str(fn(self._handle) if with_handle else fn())
        except (self._smi.AmdSmiException, AttributeError):
            return None

    def close(self) -> None:
        """Shut amdsmi down."""
        super().close()
        if self._smi is not None:
            # The driver may already be gone; there is nothing left to release then.
            with contextlib.suppress(self._smi.AmdSmiException):
                self._smi.amdsmi_shut_down()
            self._smi = None
            self._handle = None
