"""Test doubles for the meter tests: a fake ``pynvml`` and ``amdsmi``, and a fake powercap tree.

The fakes are installed into ``sys.modules`` with monkeypatch, so the meters' lazy imports find them. They
mimic the parts of the real bindings the meters use: NVML's units (mJ, mW), its error class carrying a
``value`` code, the field-value struct; amdsmi's energy dict (ticks x µJ resolution).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

NOT_SUPPORTED = 3
NOT_FOUND = 6
INVALID_ARGUMENT = 2


class FakeNvmlError(Exception):
    """Like ``pynvml.NVMLError``: carries the NVML return code in ``value``."""

    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


@dataclass
class FakeGpu:
    """One GPU as the fake NVML sees it; tests change ``energy_mj`` / ``power_w`` between reads."""

    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    energy_mj: int = 0
    power_w: float | Callable[[], float] = 300.0
    counter: bool = True
    instant_power: bool = True
    average_power: bool = True
    is_mig: bool = False
    parent: FakeGpu | None = None
    energy_reads: int = 0
    field_ids: list[int] = field(default_factory=list)

    def watts(self) -> float:
        return self.power_w() if callable(self.power_w) else self.power_w


def make_fake_nvml(gpus: list[FakeGpu], migs: list[FakeGpu] = ()) -> types.ModuleType:  # type: ignore[assignment]
    """Build a module object that behaves like the parts of ``pynvml`` the meters call."""
    m = types.ModuleType("pynvml")
    m.NVMLError = FakeNvmlError
    m.NVML_ERROR_NOT_SUPPORTED = NOT_SUPPORTED
    m.NVML_TEMPERATURE_GPU = 0
    m.NVML_CLOCK_SM = 1
    m.NVML_CLOCK_MEM = 2
    m.calls = {"init": 0, "shutdown": 0}

    def init() -> None:
        m.calls["init"] += 1

    def shutdown() -> None:
        m.calls["shutdown"] += 1

    def by_index(i: int) -> FakeGpu:
        if not 0 <= i < len(gpus):
            raise FakeNvmlError(INVALID_ARGUMENT)
        return gpus[i]

    def by_uuid(uuid: bytes) -> FakeGpu:
        for gpu in [*gpus, *migs]:
            if gpu.uuid == uuid.decode():
                return gpu
        raise FakeNvmlError(NOT_FOUND)

    def energy(h: FakeGpu) -> int:
        if not h.counter:
            raise FakeNvmlError(NOT_SUPPORTED)
        h.energy_reads += 1
        return h.energy_mj

    def field_values(h: FakeGpu, ids: list[int]) -> list[SimpleNamespace]:
        h.field_ids.extend(ids)
        ok = h.instant_power
        value = SimpleNamespace(uiVal=round(h.watts() * 1000) if ok else 0)
        return [SimpleNamespace(nvmlReturn=0 if ok else NOT_SUPPORTED, valueType=1, value=value)]

    def power_usage(h: FakeGpu) -> int:
        if not h.average_power:
            raise FakeNvmlError(NOT_SUPPORTED)
        return round(h.watts() * 1000)

    def ecc_mode(h: FakeGpu) -> list[int]:
        raise FakeNvmlError(NOT_SUPPORTED)

    m.nvmlInit = init
    m.nvmlShutdown = shutdown
    m.nvmlDeviceGetCount = lambda: len(gpus)
    m.nvmlDeviceGetHandleByIndex = by_index
    m.nvmlDeviceGetHandleByUUID = by_uuid
    m.nvmlDeviceGetUUID = lambda h: h.uuid.encode()
    m.nvmlDeviceGetName = lambda h: h.name
    m.nvmlDeviceIsMigDeviceHandle = lambda h: int(h.is_mig)
    m.nvmlDeviceGetDeviceHandleFromMigDeviceHandle = lambda h: h.parent
    m.nvmlDeviceGetTotalEnergyConsumption = energy
    m.nvmlDeviceGetFieldValues = field_values
    m.nvmlDeviceGetPowerUsage = power_usage
    m.nvmlDeviceGetTemperature = lambda h, sensor: 61 if sensor == 0 else None
    m.nvmlDeviceGetClockInfo = lambda h, clock: {1: 1980, 2: 2619}[clock]
    m.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700_000
    m.nvmlDeviceGetCurrentClocksThrottleReasons = lambda h: 0x4 | 0x1
    m.nvmlDeviceGetEccMode = ecc_mode
    # nvmlDeviceGetPersistenceMode is deliberately absent: gpu_state must report None, not fail.
    m.nvmlSystemGetDriverVersion = lambda: "580.159.04"
    m.nvmlSystemGetNVMLVersion = lambda: "13.580.159.04"
    return m


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> Callable[..., types.ModuleType]:
    """Return an installer: ``fake_nvml(gpus, migs=())`` puts a fake ``pynvml`` into ``sys.modules``."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    def install(gpus: list[FakeGpu], migs: list[FakeGpu] = ()) -> types.ModuleType:  # type: ignore[assignment]
        module = make_fake_nvml(gpus, migs)
        monkeypatch.setitem(sys.modules, "pynvml", module)
        return module

    return install


@pytest.fixture
def gpu_factory() -> type[FakeGpu]:
    """Return the :class:`FakeGpu` class (test modules cannot import from conftest)."""
    return FakeGpu


class FakeAmdSmiError(Exception):
    """Like ``amdsmi.AmdSmiException``."""


@pytest.fixture
def fake_amdsmi(monkeypatch: pytest.MonkeyPatch) -> Callable[..., types.ModuleType]:
    """Return an installer: ``fake_amdsmi(counts)`` installs an amdsmi whose GPUs return ``counts[i]``.

    ``counts[i]`` is the dict ``amdsmi_get_energy_count`` returns; tests mutate it between reads.
    """
    for name in ("HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)

    def install(counts: list[dict[str, Any]]) -> types.ModuleType:
        m = types.ModuleType("amdsmi")
        m.AmdSmiException = FakeAmdSmiError
        m.calls = {"init": 0, "shut_down": 0}
        m.amdsmi_init = lambda: m.calls.__setitem__("init", m.calls["init"] + 1)
        m.amdsmi_shut_down = lambda: m.calls.__setitem__("shut_down", m.calls["shut_down"] + 1)
        m.amdsmi_get_processor_handles = lambda: list(range(len(counts)))
        m.amdsmi_get_energy_count = lambda h: dict(counts[h])
        m.amdsmi_get_gpu_asic_info = lambda h: {"market_name": "AMD Instinct MI300X"}
        m.amdsmi_get_gpu_device_bdf = lambda h: f"0000:{h + 1:02x}:00.0"
        m.amdsmi_get_lib_version = lambda: {"major": 6, "minor": 3}
        monkeypatch.setitem(sys.modules, "amdsmi", m)
        return m

    return install


@pytest.fixture
def powercap(tmp_path: Path) -> Callable[..., Path]:
    """Return a builder of a fake ``/sys/class/powercap`` tree; ``zone(name, path, energy, max_range)``."""
    root = tmp_path / "powercap"
    root.mkdir()

    def zone(zone_dir: str, name: str, energy_uj: int, max_range_uj: int = 262_143_328_850) -> Path:
        path = root / zone_dir
        path.mkdir(parents=True)
        (path / "name").write_text(f"{name}\n")
        (path / "energy_uj").write_text(f"{energy_uj}\n")
        (path / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
        return path

    zone.root = root  # type: ignore[attr-defined]
    return zone
