"""Meter factory and the meter interface's shared behaviour."""

from __future__ import annotations

import json

import pytest

from bench.errors import UsageError
from bench.meters import NullMeter, NvmlEnergyMeter, describe_meters, detect_meters
from bench.meters.base import EnergyReading


def test_cpu_run_gets_a_null_gpu_meter_with_reason():
    meters = detect_meters("cpu")
    assert set(meters) == {"gpu", "cpu"}
    assert isinstance(meters["gpu"], NullMeter)
    assert meters["gpu"].unavailable_reason == "no GPU: the run is on the CPU"
    meters["gpu"].begin()
    r = meters["gpu"].end()
    assert r.joules is None and r.method == "none" and r.reason == "no GPU: the run is on the CPU"
    described = describe_meters(meters)
    assert described["gpu"]["available"] is False
    json.dumps(described)  # provenance must serialise


def test_cuda_run_gets_nvml_meter(fake_nvml, gpu_factory):
    fake_nvml([gpu_factory("GPU-00000000-0000-0000-0000-000000000000"), gpu_factory("GPU-1")])
    meters = detect_meters("cuda:1", sync=lambda: None)
    assert isinstance(meters["gpu"], NvmlEnergyMeter) and "GPU-1" in meters["gpu"].device


def test_cuda_without_nvml_becomes_null_meter(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", None)
    gpu = detect_meters("cuda")["gpu"]
    assert isinstance(gpu, NullMeter) and "nvidia-ml-py" in gpu.unavailable_reason


def test_bad_device_string_is_usage_error():
    with pytest.raises(UsageError, match="not a torch device"):
        detect_meters("gpu 0")
    assert "no energy meter" in detect_meters("mps")["gpu"].unavailable_reason


def test_reading_to_dict_is_json_ready():
    r = EnergyReading(
        "gpu", 1.5, 2.0, "nvml_counter", "measured", None, 2, None, warnings=("a",), trace=((0.0, 100.0), (0.1, 110.0))
    )
    data = r.to_dict()
    assert data["trace"] == [[0.0, 100.0], [0.1, 110.0]] and data["warnings"] == ["a"]
    assert json.loads(json.dumps(data))["joules"] == 1.5
    assert r.with_warnings("b").warnings == ("a", "b")
