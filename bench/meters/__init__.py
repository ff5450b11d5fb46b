"""Energy meters behind one window interface, and the factory that picks them for a run.

Each scope (``gpu``, ``cpu``, ``fpga``) gets one :class:`EnergyMeter`: NVML or amdsmi for GPUs, RAPL for
CPU packages, sampled board power for a real FPGA board, and a labelled model (static + dynamic power from
the device spec, provenance ``analytic``) for an emulated or analytic one. A scope that cannot be metered gets
a :class:`NullMeter` whose readings are ``None`` with the reason, so runs go on and reports say why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bench.errors import UsageError
from bench.meters.amd import AmdsmiEnergyMeter
from bench.meters.base import EnergyMeter, EnergyReading, NullMeter, Provenance, Sync, null_reading
from bench.meters.fpga_power import XrtPowerMeter, hwmon_power_reader
from bench.meters.idle import IdleReading, measure_idle, merge_idle, net_energy
from bench.meters.modeled import ModeledPowerMeter
from bench.meters.nvml import NvmlEnergyMeter, gpu_state
from bench.meters.rapl import RaplMeter
from bench.meters.sampler import PowerSampler, integrate_trapezoid

__all__ = [
    "AmdsmiEnergyMeter",
    "EnergyMeter",
    "EnergyReading",
    "IdleReading",
    "ModeledPowerMeter",
    "NullMeter",
    "NvmlEnergyMeter",
    "PowerSampler",
    "Provenance",
    "RaplMeter",
    "XrtPowerMeter",
    "describe_meters",
    "detect_meters",
    "gpu_state",
    "hwmon_power_reader",
    "integrate_trapezoid",
    "measure_idle",
    "merge_idle",
    "net_energy",
    "null_reading",
]

_DEVICE = re.compile(r"(?P<kind>[a-z]+)(?::(?P<index>\d+))?")


def detect_meters(torch_device: str, sync: Sync | None = None) -> dict[str, EnergyMeter]:
    """Pick the meters for the ``gpu`` and ``cpu`` scopes of a run on ``torch_device``.

    The GPU meter is NVML's for CUDA devices, amdsmi's on ROCm builds of torch (``torch.version.hip``);
    the CPU meter reads RAPL. A meter that cannot work here becomes a :class:`NullMeter` carrying its
    reason, e.g. ``"no GPU: the run is on the CPU"`` or the RAPL permission message. FPGA meters are built
    by the FPGA device, which knows its board.

    Args:
        torch_device: The run's torch device: ``"cuda"``, ``"cuda:1"``, ``"cpu"``, ...
        sync: The device's synchronize function, called at every window edge.

    Returns:
        ``{"gpu": meter, "cpu": meter}``.

    Raises:
        UsageError: ``torch_device`` is not a device string.
    """
    match = _DEVICE.fullmatch(torch_device.strip())
    if match is None:
        raise UsageError(f"not a torch device: {torch_device!r}; use e.g. 'cuda', 'cuda:1' or 'cpu'")
    kind, index = match["kind"], int(match["index"] or 0)
    gpu: EnergyMeter
    if kind == "cuda":
        import torch

        gpu = AmdsmiEnergyMeter(index, sync) if torch.version.hip else NvmlEnergyMeter(index, sync)
        if not gpu.available():
            reason = gpu.unavailable_reason or "GPU energy unavailable"
            gpu.close()
            gpu = NullMeter("gpu", reason, sync)
    elif kind == "cpu":
        gpu = NullMeter("gpu", "no GPU: the run is on the CPU", sync)
    else:
        gpu = NullMeter("gpu", f"no energy meter for torch device '{torch_device}' (NVML and amdsmi only)", sync)
    cpu: EnergyMeter = RaplMeter(sync=sync)
    if not cpu.available():
        cpu = NullMeter("cpu", cpu.unavailable_reason or "CPU energy unavailable", sync)
    return {"gpu": gpu, "cpu": cpu}


def describe_meters(meters: Mapping[str, EnergyMeter]) -> dict[str, dict[str, Any]]:
    """Return each meter's provenance (method, device, versions, sampling) by scope.

    Args:
        meters: Meters by scope.

    Returns:
        ``{scope: meter.describe()}``.
    """
    return {scope: meter.describe() for scope, meter in meters.items()}
