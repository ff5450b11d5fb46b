"""NVML meter: counter differencing, units, resets, fallback to power integration, trace rate, mapping."""

from __future__ import annotations

import sys
import time

import pytest

from bench.errors import DeviceUnavailableError, UsageError
from bench.meters.nvml import NvmlEnergyMeter, gpu_state, nvml_handle_for, throttle_reason_names, visible_devices

UUID0 = "GPU-11111111-2222-3333-4444-555555555555"
UUID1 = "GPU-66666666-7777-8888-9999-aaaaaaaaaaaa"
UUID2 = "GPU-6bbbbbbb-7777-8888-9999-aaaaaaaaaaaa"


def test_counter_difference_in_joules_and_sync_order(fake_nvml, gpu_factory):
    gpu = gpu_factory(UUID0, energy_mj=987_654_321)
    fake_nvml([gpu])
    events = []
    meter = NvmlEnergyMeter(0, sync=lambda: events.append(("sync", gpu.energy_reads)))
    assert meter.available() and meter.method == "nvml_counter"
    reads_before = gpu.energy_reads
    meter.begin()
    gpu.energy_mj += 1_234_567  # 1234.567 J
    reading = meter.end()
    assert reading.joules == pytest.approx(1234.567, abs=1e-9)
    assert reading.method == "nvml_counter" and reading.provenance == "measured" and reading.scope == "gpu"
    assert reading.samples == 2 and reading.distinct_samples is None
    assert reading.mean_power_w == pytest.approx(reading.joules / reading.seconds)
    # sync ran before each counter read: sync, read (begin); sync, read (end).
    assert events == [("sync", reads_before), ("sync", reads_before + 1)]
    assert UUID0 in reading.device and "H100" in reading.device


def test_short_window_and_unchanged_counter_warn(fake_nvml, gpu_factory):
    gpu = gpu_factory(UUID0, energy_mj=5_000)
    fake_nvml([gpu])
    meter = NvmlEnergyMeter(0)
    meter.begin()
    reading = meter.end()
    assert reading.joules == 0.0
    assert any("did not change" in w for w in reading.warnings)
    assert any("shorter than the 1 s" in w and "100 ms" in w for w in reading.warnings)


def test_counter_reset_is_dropped_not_clamped(fake_nvml, gpu_factory):
    gpu = gpu_factory(UUID0, energy_mj=10_000_000)
    fake_nvml([gpu])
    meter = NvmlEnergyMeter(0)
    meter.begin()
    gpu.energy_mj = 2_000  # driver reloaded: counter restarted
    reading = meter.end()
    assert reading.joules is None and reading.reason == "counter reset"
    assert any("went backwards" in w for w in reading.warnings)


def test_window_reuse_gives_independent_readings(fake_nvml, gpu_factory):
    gpu = gpu_factory(UUID0, energy_mj=0)
    fake_nvml([gpu])
    meter = NvmlEnergyMeter(0)
    results = []
    for step_mj in (3_000, 7_500):
        meter.begin()
        gpu.energy_mj += step_mj
        results.append(meter.end().joules)
    assert results == [pytest.approx(3.0), pytest.approx(7.5)]
    with pytest.raises(RuntimeError, match="without begin"):
        meter.end()
    meter.begin()
    with pytest.raises(RuntimeError, match="window is open"):
        meter.begin()
    meter.close()


def test_not_supported_counter_falls_back_to_power_integration(fake_nvml, gpu_factory):
    # Power ramps 100 W -> higher; integration must land near the trapezoid of the real curve.
    start = time.perf_counter()
    gpu = gpu_factory(UUID0, counter=False, power_w=lambda: 100.0 + 200.0 * (time.perf_counter() - start))
    fake_nvml([gpu])
    meter = NvmlEnergyMeter(0, trace_hz=50)
    assert meter.available() and meter.method == "power_integration"
    assert meter.describe()["energy_counter_supported"] is False
    meter.begin()
    t_begin = time.perf_counter() - start
    time.sleep(0.3)
    reading = meter.end()
    t_end = t_begin + reading.seconds
    expected = 100.0 * reading.seconds + 100.0 * (t_end**2 - t_begin**2)
    assert reading.method == "power_integration"
    assert reading.joules == pytest.approx(expected, rel=0.03)
    assert reading.samples >= 10 and reading.distinct_samples >= 10
    assert reading.sample_period_s == pytest.approx(0.02, rel=0.5)
    assert reading.sample_gaps == 0
    assert gpu.field_ids and set(gpu.field_ids) == {186}


def test_trace_sampled_at_least_10_hz_while_counter_gives_energy(fake_nvml, gpu_factory):
    gpu = gpu_factory(UUID0, energy_mj=0, power_w=250.0)
    fake_nvml([gpu])
    meter = NvmlEnergyMeter(0)  # default 10 Hz
    meter.begin()
    time.sleep(0.45)
    gpu.energy_mj = 200_000
    reading = meter.end()
    assert reading.joules == pytest.approx(200.0)  # the counter, not the trace, gives the energy
    times = [t for t, _ in reading.trace]
    assert len(times) >= 4
    assert all(0 <= t <= reading.seconds for t in times)
    achieved_hz = (len(times) - 1) / (times[-1] - times[0])
    assert achieved_hz >= 9.0  # 10 Hz requested; scheduling jitter allowed, drift is not
    assert all(w == pytest.approx(250.0) for _, w in reading.trace)


def test_average_power_fallback_when_instant_field_missing(fake_nvml, gpu_factory):
    gpu = gpu_factory(UUID0, counter=False, instant_power=False, power_w=80.0)
    fake_nvml([gpu])
    meter = NvmlEnergyMeter(0, trace_hz=40)
    assert "nvmlDeviceGetPowerUsage" in meter.describe()["power_source"]
    meter.begin()
    time.sleep(0.1)
    reading = meter.end()
    assert reading.joules == pytest.approx(80.0 * reading.seconds, rel=1e-9)
    assert any("1 s trailing average" in w for w in reading.warnings)


def test_no_counter_and_no_power_is_unavailable(fake_nvml, gpu_factory):
    fake_nvml([gpu_factory(UUID0, counter=False, instant_power=False, average_power=False)])
    meter = NvmlEnergyMeter(0)
    assert not meter.available()
    assert "neither an energy counter" in meter.unavailable_reason
    meter.begin()
    reading = meter.end()
    assert reading.joules is None and reading.reason == meter.unavailable_reason


def test_missing_pynvml_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    meter = NvmlEnergyMeter(0)
    assert not meter.available()
    assert "pip install nvidia-ml-py" in meter.unavailable_reason
    assert all(v is None for v in meter.state().values())


def test_trace_hz_below_10_is_a_usage_error(fake_nvml, gpu_factory):
    fake_nvml([gpu_factory(UUID0)])
    with pytest.raises(UsageError, match="10"):
        NvmlEnergyMeter(0, trace_hz=5)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", []),
        ("-1", []),
        ("2,0", ["2", "0"]),
        (" 1 , GPU-abc ,x,3", ["1", "GPU-abc"]),  # parsing stops at the first invalid entry
        ("MIG-xyz", ["MIG-xyz"]),
    ],
)
def test_visible_devices_parsing(value, expected):
    assert visible_devices(value) == expected


def test_cuda_visible_devices_index_and_uuid_mapping(fake_nvml, gpu_factory):
    gpus = [gpu_factory(u) for u in (UUID0, UUID1, UUID2)]
    nvml = fake_nvml(gpus)
    handle, how, _ = nvml_handle_for(nvml, 1, "2,0")
    assert handle is gpus[0] and "NVML index 0" in how
    handle, _, _ = nvml_handle_for(nvml, 0, f"{UUID1},1")
    assert handle is gpus[1]
    handle, _, _ = nvml_handle_for(nvml, 0, "GPU-1111")  # unambiguous abbreviation, as CUDA allows
    assert handle is gpus[0]
    with pytest.raises(DeviceUnavailableError, match="matches 2 GPUs"):
        nvml_handle_for(nvml, 0, "GPU-6")
    with pytest.raises(DeviceUnavailableError, match="not visible"):
        nvml_handle_for(nvml, 2, "0,1")
    handle, how, _ = nvml_handle_for(nvml, 0, "1", torch_uuid=UUID2[4:])  # torch's UUID wins
    assert handle is gpus[2] and "torch" in how


def test_meter_respects_cuda_visible_devices(fake_nvml, gpu_factory, monkeypatch):
    gpus = [gpu_factory(UUID0, energy_mj=0), gpu_factory(UUID1, energy_mj=0)]
    fake_nvml(gpus)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    meter = NvmlEnergyMeter(0)
    assert UUID1 in meter.device
    meter.begin()
    gpus[1].energy_mj = 4_000
    gpus[0].energy_mj = 99_000
    assert meter.end().joules == pytest.approx(4.0)


def test_mig_instance_meters_parent_gpu_with_warning(fake_nvml, gpu_factory, monkeypatch):
    parent = gpu_factory(UUID0, energy_mj=0)
    mig = gpu_factory("MIG-aaaa", is_mig=True, parent=parent)
    fake_nvml([parent], migs=[mig])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-aaaa")
    meter = NvmlEnergyMeter(0)
    meter.begin()
    parent.energy_mj = 3_000
    reading = meter.end()
    assert reading.joules == pytest.approx(3.0)
    assert any("whole GPU" in w for w in reading.warnings)


def test_invisible_index_makes_meter_unavailable(fake_nvml, gpu_factory, monkeypatch):
    nvml = fake_nvml([gpu_factory(UUID0)])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    meter = NvmlEnergyMeter(3)
    assert not meter.available() and "not visible" in meter.unavailable_reason
    assert nvml.calls["shutdown"] == nvml.calls["init"]  # NVML released on failure


def test_gpu_state_units_and_missing_values(fake_nvml, gpu_factory):
    gpu = gpu_factory(UUID0, power_w=412.5)
    fake_nvml([gpu])
    state = gpu_state(gpu)
    assert state["temperature_c"] == 61
    assert state["sm_clock_mhz"] == 1980 and state["memory_clock_mhz"] == 2619
    assert state["power_limit_w"] == pytest.approx(700.0)
    assert state["power_draw_w"] == pytest.approx(412.5)
    assert state["throttle_reasons"] == 0x5
    assert state["throttle_reason_names"] == ["GpuIdle", "SwPowerCap"]
    assert state["persistence_mode"] is None  # function absent in this binding
    assert state["ecc_enabled"] is None  # NVML says not supported


def test_describe_records_versions_and_mapping(fake_nvml, gpu_factory):
    nvml = fake_nvml([gpu_factory(UUID0)])
    meter = NvmlEnergyMeter(0)
    info = meter.describe()
    assert info["driver_version"] == "580.159.04" and info["nvml_version"] == "13.580.159.04"
    assert info["energy_counter_supported"] is True and info["method"] == "nvml_counter"
    assert "NVML index 0" in info["mapping"] and info["trace_hz"] == 10.0
    assert "field 186" in info["power_source"]
    meter.close()
    assert nvml.calls["shutdown"] == 1


def test_throttle_reason_names_unknown_bits():
    assert throttle_reason_names(0) == []
    assert throttle_reason_names(0x40 | 0x1000) == ["HwThermalSlowdown", "0x1000"]


def test_read_failure_mid_window_gives_reason_not_crash(fake_nvml, gpu_factory):
    gpu = gpu_factory(UUID0, energy_mj=0)
    nvml = fake_nvml([gpu])
    meter = NvmlEnergyMeter(0)
    meter.begin()

    def gpu_lost(handle):
        raise nvml.NVMLError(15)  # NVML_ERROR_GPU_IS_LOST

    nvml.nvmlDeviceGetTotalEnergyConsumption = gpu_lost
    reading = meter.end()
    assert reading.joules is None and "failed at the window end" in reading.reason
