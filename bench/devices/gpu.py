"""The GPU of a run (or the CPU standing in for it): resolution, description and free memory."""

from __future__ import annotations

from typing import Any

import torch

from bench.errors import DeviceUnavailableError
from bench.provenance import host_info, mem_available


def resolve(device: str) -> torch.device:
    """The torch device for a suite's ``devices.gpu.device`` (``auto`` picks CUDA when present)."""
    if device == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(f"devices.gpu.device is '{device}' but no CUDA GPU is available here; "
                                         "use 'auto' or 'cpu'")
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise DeviceUnavailableError(f"'{device}' does not exist: {torch.cuda.device_count()} GPU(s) visible")
        return torch.device("cuda", index)
    return dev


def describe(device: torch.device) -> dict[str, Any]:
    """Name, memory, compute capability and runtime of ``device``; the CPU model for a CPU device."""
    if device.type != "cuda":
        return {"type": "cpu", "name": host_info()["cpu"], "memory_bytes": host_info()["memory_bytes"]}
    props = torch.cuda.get_device_properties(device)
    return {
        "type": "cuda",
        "index": device.index,
        "name": props.name,
        "uuid": str(getattr(props, "uuid", "")) or None,
        "memory_bytes": props.total_memory,
        "multiprocessors": props.multi_processor_count,
        "compute_capability": f"{props.major}.{props.minor}",
        "l2_bytes": getattr(props, "L2_cache_size", None),
        "cuda_runtime": torch.version.cuda,
    }


def free_memory(device: torch.device) -> int | None:
    """Bytes free for new allocations on ``device`` (device memory, or host MemAvailable for the CPU)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return mem_available()


def empty_cache(device: torch.device) -> None:
    """Return cached allocator blocks to the device so the next case sees its true free memory."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
