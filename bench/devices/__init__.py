"""The devices of a run: the GPU (:mod:`bench.devices.gpu`) and the FPGA (:mod:`bench.devices.fpga`)."""

from __future__ import annotations

import importlib.util
import shutil
from typing import Any

from bench.devices import gpu
from bench.devices.fpga import SPEC_DIR
from bench.timeline import synchronize


def detect() -> dict[str, dict[str, Any]]:
    """What this machine offers: GPU, energy meters, and FPGA modes, for ``bench devices``."""
    from bench.meters import describe_meters, detect_meters

    dev = gpu.resolve("auto")
    info = gpu.describe(dev)
    gpu_section = {"torch device (auto)": str(dev), **{k: v for k, v in info.items() if v is not None}}
    meters = detect_meters(str(dev), sync=lambda: synchronize(dev))
    meter_section = {}
    for scope, desc in describe_meters(meters).items():
        ok = meters[scope].available()
        meter_section[scope] = (f"{desc.get('method')} ({desc.get('device', '')})".strip() if ok
                                else f"unavailable: {meters[scope].unavailable_reason}")
    has_pyxrt = importlib.util.find_spec("pyxrt") is not None
    fpga_section = {
        "hardware": "pyxrt found (give devices.fpga.mode: hardware and an xclbin)" if has_pyxrt
        else "unavailable: pyxrt not found (it ships with XRT: source /opt/xilinx/xrt/setup.sh)",
        "emulated": "available (default): the GPU waits the modeled FPGA time",
        "analytic": "available: times composed from the device model",
        "csim (functional: csim)": f"available: {shutil.which('g++')}" if shutil.which("g++")
        else "unavailable: no g++ on PATH",
        "device specs": ", ".join(sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))),
    }
    return {"GPU": gpu_section, "Energy meters": meter_section, "FPGA": fpga_section}
