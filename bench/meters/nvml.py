"""NVIDIA GPU energy through NVML (package ``nvidia-ml-py``, module ``pynvml``, imported lazily).

The energy figure is the difference of ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since driver load,
Volta and newer) across the window: method ``nvml_counter``. Where the counter is missing (pre-Volta, some
vGPUs) energy is the trapezoid integral of power sampled at >= 10 Hz: method ``power_integration``. In both
cases a background thread samples instant power into the reading's ``trace``, for plots only when the
counter works. Facts behind the rules (counter update ~100 ms, read cost ~4 ms, instant power field 186,
``nvmlDeviceGetPowerUsage`` being a 1 s average on Ampere+) are in measurement.md §2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import sys
from importlib import metadata
from typing import Any

from bench.errors import DeviceUnavailableError, UsageError
from bench.meters.base import EnergyMeter, EnergyReading, Sync, null_reading
from bench.meters.counter import counter_reading
from bench.meters.sampler import PowerSampler, SamplerResult, power_reading, relative_trace

NVML_FI_DEV_POWER_INSTANT = 186
"""nvml.h field id of instant board power in mW (185 is the averaged value)."""

MIN_TRACE_HZ = 10.0
"""Power sampling must reach 10 Hz for trapezoid integration to be trusted (measurement.md §2)."""

COUNTER_MIN_WINDOW_S = 1.0
"""The counter updates about every 100 ms, so windows under 1 s risk more than 10% quantization error."""

_MILLI = 1e-3  # NVML reports energy in mJ and power in mW.

_POWER_SOURCES = {
    "instant": f"nvmlDeviceGetFieldValues field {NVML_FI_DEV_POWER_INSTANT} (instant)",
    "average": "nvmlDeviceGetPowerUsage (1 s average on Ampere+)",
}

THROTTLE_REASONS: dict[int, str] = {
    0x1: "GpuIdle",
    0x2: "ApplicationsClocksSetting",
    0x4: "SwPowerCap",
    0x8: "HwSlowdown",
    0x10: "SyncBoost",
    0x20: "SwThermalSlowdown",
    0x40: "HwThermalSlowdown",
    0x80: "HwPowerBrakeSlowdown",
    0x100: "DisplayClockSetting",
}
"""Bits of ``nvmlDeviceGetCurrentClocksThrottleReasons`` (``nvmlClocksThrottleReason*`` in nvml.h)."""


def throttle_reason_names(mask: int) -> list[str]:
    """Name the set bits of an NVML clocks-throttle-reasons mask.

    Args:
        mask: The bitmask NVML returned.

    Returns:
        The NVML names of the set bits, lowest bit first; unknown bits as ``"0x..."``.
    """
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    unknown = mask & ~sum(THROTTLE_REASONS)
    return [*names, f"{unknown:#x}"] if unknown else names


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _field_number(field: Any) -> float:
    """Return the numeric payload of an ``nvmlFieldValue_t`` according to its ``valueType``."""
    member = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}
    return float(getattr(field.value, member.get(field.valueType, "uiVal")))


def gpu_state(handle: Any) -> dict[str, Any]:
    """Read the GPU's thermal and clock state; every value NVML cannot give is ``None``, never an error.

    Meant for before/after snapshots around a trial (measurement.md §7); each call costs a few NVML reads.

    Args:
        handle: An NVML device handle.

    Returns:
        ``temperature_c``, ``sm_clock_mhz``, ``memory_clock_mhz``, ``power_limit_w``, ``power_draw_w`` (the
        1 s average on Ampere+), ``throttle_reasons`` (bitmask), ``throttle_reason_names``,
        ``persistence_mode`` and ``ecc_enabled``.
    """
    try:
        nvml: Any = importlib.import_module("pynvml")
    except ImportError:
        nvml = None

    def read(name: str, *args: Any) -> Any:
        try:
            return getattr(nvml, name)(handle, *[getattr(nvml, a) for a in args])
        except Exception:  # a missing function, constant or an NVML error all mean "not available"
            return None

    limit_mw = read("nvmlDeviceGetEnforcedPowerLimit")
    draw_mw = read("nvmlDeviceGetPowerUsage")
    reasons = read("nvmlDeviceGetCurrentClocksEventReasons")
    if reasons is None:
        reasons = read("nvmlDeviceGetCurrentClocksThrottleReasons")
    persistence = read("nvmlDeviceGetPersistenceMode")
    ecc = read("nvmlDeviceGetEccMode")
    return {
        "temperature_c": read("nvmlDeviceGetTemperature", "NVML_TEMPERATURE_GPU"),
        "sm_clock_mhz": read("nvmlDeviceGetClockInfo", "NVML_CLOCK_SM"),
        "memory_clock_mhz": read("nvmlDeviceGetClockInfo", "NVML_CLOCK_MEM"),
        "power_limit_w": None if limit_mw is None else limit_mw * _MILLI,
        "power_draw_w": None if draw_mw is None else draw_mw * _MILLI,
        "throttle_reasons": reasons,
        "throttle_reason_names": None if reasons is None else throttle_reason_names(int(reasons)),
        "persistence_mode": None if persistence is None else bool(persistence),
        "ecc_enabled": None if ecc is None else bool(ecc[0]),
    }


def visible_devices(value: str | None) -> list[str] | None:
    """Parse ``CUDA_VISIBLE_DEVICES`` the way the CUDA runtime does.

    Entries are device indices or ``GPU-``/``MIG-`` UUIDs (possibly abbreviated); parsing stops at the first
    invalid entry, so ``"-1"`` or ``""`` hides every device.

    Args:
        value: The variable's value; ``None`` when unset.

    Returns:
        The visible entries in CUDA order, or ``None`` when the variable is unset (all devices visible).
    """
    if value is None:
        return None
    entries: list[str] = []
    for raw in value.split(","):
        entry = raw.strip()
        if not (entry.isdigit() or entry.startswith(("GPU-", "MIG-"))):
            break
        entries.append(entry)
    return entries


def nvml_handle_for(
    nvml: Any, torch_index: int, visible: str | None, torch_uuid: str | None = None
) -> tuple[Any, str, tuple[str, ...]]:
    """Find the NVML device behind torch's ``cuda:<torch_index>``.

    torch's own UUID for the device is the surest key; without it, ``CUDA_VISIBLE_DEVICES`` maps the torch
    index to an NVML index or UUID. (Without the variable, torch index = NVML index, which holds when all
    GPUs are the same model or ``CUDA_DEVICE_ORDER=PCI_BUS_ID``.) A MIG instance maps to its parent GPU:
    energy and power exist only for the whole GPU.

    Args:
        nvml: The ``pynvml`` module.
        torch_index: The CUDA device index torch uses.
        visible: ``CUDA_VISIBLE_DEVICES``, or ``None`` when unset.
        torch_uuid: torch's UUID for the device, with or without the ``GPU-`` prefix, if known.

    Returns:
        The NVML handle, a line saying how it was found, and warnings for every reading (MIG).

    Raises:
        DeviceUnavailableError: The index is not visible or a UUID matches no single GPU.
        nvml.NVMLError: NVML failed to look the device up.
    """
    handle = None
    if torch_uuid:
        uuid = torch_uuid if torch_uuid.startswith(("GPU-", "MIG-")) else f"GPU-{torch_uuid}"
        try:
            handle, how = nvml.nvmlDeviceGetHandleByUUID(uuid.encode()), f"torch device UUID {uuid}"
        except nvml.NVMLError:
            handle = None  # e.g. a MIG instance whose UUID torch reports without its prefix
    if handle is None:
        entries = visible_devices(visible)
        if entries is None:
            handle, how = nvml.nvmlDeviceGetHandleByIndex(torch_index), f"NVML index {torch_index}"
        elif torch_index >= len(entries):
            raise DeviceUnavailableError(
                f"cuda:{torch_index} is not visible: CUDA_VISIBLE_DEVICES={visible!r} exposes "
                f"{len(entries)} device(s); pick an index below {len(entries)}"
            )
        elif entries[torch_index].isdigit():
            physical = int(entries[torch_index])
            handle = nvml.nvmlDeviceGetHandleByIndex(physical)
            how = f"NVML index {physical} (CUDA_VISIBLE_DEVICES={visible!r})"
        else:
            handle = _handle_by_uuid_prefix(nvml, entries[torch_index])
            how = f"UUID {entries[torch_index]} (CUDA_VISIBLE_DEVICES={visible!r})"
    notes: tuple[str, ...] = ()
    try:
        is_mig = bool(nvml.nvmlDeviceIsMigDeviceHandle(handle))
    except (nvml.NVMLError, AttributeError):
        is_mig = False
    if is_mig:
        handle = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
        notes = ("MIG instance: energy and power are for the whole GPU, shared with other instances",)
    return handle, how, notes


def _handle_by_uuid_prefix(nvml: Any, prefix: str) -> Any:
    try:
        return nvml.nvmlDeviceGetHandleByUUID(prefix.encode())
    except nvml.NVMLError:
        pass  # CUDA accepts unambiguous UUID prefixes; NVML only full UUIDs
    matches = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        if _text(nvml.nvmlDeviceGetUUID(handle)).startswith(prefix):
            matches.append(handle)
    if len(matches) != 1:
        raise DeviceUnavailableError(
            f"CUDA_VISIBLE_DEVICES entry {prefix!r} matches {len(matches)} GPUs; use a full UUID from `nvidia-smi -L`"
        )
    return matches[0]


def _torch_uuid(torch_index: int) -> str | None:
    """Return torch's UUID for ``cuda:<torch_index>`` when torch is loaded with CUDA, else ``None``."""
    torch: Any = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    try:
        return str(torch.cuda.get_device_properties(torch_index).uuid)
    except (AttributeError, RuntimeError, AssertionError):
        return None


class NvmlEnergyMeter(EnergyMeter):
    """Energy of one NVIDIA GPU over a window, from NVML's energy counter or integrated power.

    Example:
        >>> meter = NvmlEnergyMeter(0, sync=torch.cuda.synchronize)  # doctest: +SKIP
        >>> meter.begin(); run(); reading = meter.end()  # doctest: +SKIP
    """

    def __init__(self, torch_index: int, sync: Sync | None = None, trace_hz: float = 10.0) -> None:
        """Open the GPU in NVML; on any failure the meter is unavailable with a reason, never an error.

        Args:
            torch_index: torch's CUDA device index (``cuda:<i>``); ``CUDA_VISIBLE_DEVICES`` is respected.
            sync: Called at both window edges, e.g. ``torch.cuda.synchronize``.
            trace_hz: Power sampling rate for the trace (and for integration without a counter), >= 10 Hz.

        Raises:
            UsageError: ``trace_hz`` is below 10 Hz.
        """
        if not trace_hz >= MIN_TRACE_HZ:
            raise UsageError(
                f"trace_hz={trace_hz} is below {MIN_TRACE_HZ:g} Hz, too slow to integrate power; use >= 10"
            )
        super().__init__("gpu", "nvml_counter", sync=sync)
        self.torch_index = torch_index
        self.trace_hz = trace_hz
        self._nvml: Any = None
        self._handle: Any = None
        self._mapping = ""
        self._notes: tuple[str, ...] = ()
        self._counter_error: str | None = None
        self._power_source: str | None = None
        self._sampler: PowerSampler | None = None
        self._e0: float | None = None
        self._start_error: str | None = None
        self.unavailable_reason = self._connect()

    def _connect(self) -> str | None:
        try:
            nvml: Any = importlib.import_module("pynvml")
        except ImportError:
            return "pynvml is not installed: pip install nvidia-ml-py (NVIDIA's NVML bindings)"
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            return f"NVML did not start ({exc}): install or load the NVIDIA driver (check `nvidia-smi`)"
        self._nvml = nvml
        try:
            self._handle, self._mapping, self._notes = nvml_handle_for(
                nvml, self.torch_index, os.environ.get("CUDA_VISIBLE_DEVICES"), _torch_uuid(self.torch_index)
            )
            name = _text(nvml.nvmlDeviceGetName(self._handle))
            uuid = _text(nvml.nvmlDeviceGetUUID(self._handle))
        except (nvml.NVMLError, DeviceUnavailableError) as exc:
            self.close()
            return f"cannot open cuda:{self.torch_index} in NVML: {exc}"
        self.device = f"{name} (cuda:{self.torch_index}, UUID {uuid})"
        try:
            self._read_energy_j()
        except nvml.NVMLError as exc:
            self._counter_error = str(exc)
        self._power_source = self._probe_power()
        if self._counter_error is not None and self._power_source is None:
            self.close()
            return (
                f"NVML gives neither an energy counter ({self._counter_error}) nor power for {self.device}; "
                "use a wall meter for this GPU"
            )
        if self._counter_error is not None:
            self.method = "power_integration"
        return None

    def _probe_power(self) -> str | None:
        # Instant power first: the averaged value lags by about a second on Ampere and newer.
        try:
            if self._read_instant_w() is not None:
                return "instant"
        except self._nvml.NVMLError:
            pass
        try:
            self._read_average_w()
            return "average"
        except self._nvml.NVMLError:
            return None

    def _read_energy_j(self) -> float:
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) * _MILLI

    def _read_instant_w(self) -> float | None:
        field = self._nvml.nvmlDeviceGetFieldValues(self._handle, [NVML_FI_DEV_POWER_INSTANT])[0]
        return _field_number(field) * _MILLI if field.nvmlReturn == 0 else None

    def _read_average_w(self) -> float:
        return self._nvml.nvmlDeviceGetPowerUsage(self._handle) * _MILLI

    def _read_power_w(self) -> float | None:
        return self._read_instant_w() if self._power_source == "instant" else self._read_average_w()

    def state(self) -> dict[str, Any]:
        """Return :func:`gpu_state` for this GPU (all ``None`` when the meter is unavailable)."""
        return gpu_state(self._handle)

    def _open_window(self) -> float:
        if self._power_source is not None:
            self._sampler = PowerSampler(self._read_power_w, 1.0 / self.trace_hz, clock=self._clock)
            self._sampler.start()
        t0 = self._clock()
        self._e0, self._start_error = None, None
        if self._counter_error is None:
            try:
                self._e0 = self._read_energy_j()
            except self._nvml.NVMLError as exc:
                self._start_error = str(exc)
        return t0

    def _close_window(self, t0: float) -> EnergyReading:
        t1 = self._clock()
        e1, end_error = None, None
        if self._counter_error is None:
            try:
                e1 = self._read_energy_j()
            except self._nvml.NVMLError as exc:
                end_error = str(exc)
        trace = self._sampler.stop() if self._sampler is not None else None
        self._sampler = None
        notes = list(self._notes)
        if trace is not None and trace.stalled:
            notes.append("power reader blocked; sampling stopped early")
        if self._counter_error is not None:
            return self._integrated(trace, t0, t1, notes)
        if self._e0 is None or e1 is None:
            edge = "start" if self._e0 is None else "end"
            reason = f"NVML energy read failed at the window {edge}: {self._start_error or end_error}"
            return null_reading(self.scope, reason, t1 - t0, method=self.method, device=self.device)
        if trace is not None and trace.failed_reads:
            notes.append(f"power trace (plots only): {trace.failed_reads} read(s) failed ({trace.first_error})")
        reading = counter_reading(
            self._e0,
            e1,
            t1 - t0,
            scope=self.scope,
            method=self.method,
            device=self.device,
            min_window_s=COUNTER_MIN_WINDOW_S,
            update_note="NVML's counter updates about every 100 ms: quantization error can exceed 10%",
            warnings=tuple(notes),
        )
        samples = trace.samples if trace is not None else ()
        return dataclasses.replace(reading, trace=relative_trace(samples, t0, t1))

    def _integrated(self, trace: SamplerResult | None, t0: float, t1: float, notes: list[str]) -> EnergyReading:
        assert trace is not None  # _connect leaves the meter unavailable without counter and power
        if self._power_source == "average":
            notes.append(
                "integrating nvmlDeviceGetPowerUsage, a 1 s trailing average on Ampere and newer: energy "
                "is smeared across window edges; use windows of many seconds"
            )
        if t1 - t0 < COUNTER_MIN_WINDOW_S:
            notes.append(f"window {t1 - t0:.3f} s is shorter than 1 s: integrated power is unreliable")
        return power_reading(
            trace.samples,
            t0,
            t1,
            scope=self.scope,
            method=self.method,
            period_s=trace.period_s,
            failed_reads=trace.failed_reads,
            first_error=trace.first_error,
            device=self.device,
            warnings=notes,
        )

    def describe(self) -> dict[str, Any]:
        """Return method, device, UUID mapping, driver/NVML/binding versions and counter support."""
        info = super().describe()
        info.update(
            torch_index=self.torch_index,
            mapping=self._mapping,
            energy_counter_supported=self._nvml is not None and self._counter_error is None,
            energy_counter_error=self._counter_error,
            power_source=_POWER_SOURCES.get(self._power_source or ""),
            trace_hz=self.trace_hz,
            notes=list(self._notes),
        )
        try:
            info["binding"] = f"nvidia-ml-py {metadata.version('nvidia-ml-py')}"
        except metadata.PackageNotFoundError:
            info["binding"] = None
        if self._nvml is not None:
            for key, call in (
                ("driver_version", "nvmlSystemGetDriverVersion"),
                ("nvml_version", "nvmlSystemGetNVMLVersion"),
            ):
                try:
                    info[key] = _text(getattr(self._nvml, call)())
                except (self._nvml.NVMLError, AttributeError):
                    info[key] = None
        return info

    def close(self) -> None:
        """Stop any sampling and shut NVML down (NVML counts its inits, so other users are unaffected)."""
        super().close()
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None
        if self._nvml is not None:
            # A driver that already went away needs no shutdown.
            with contextlib.suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()
            self._nvml = None
            self._handle = None
