"""The emulated timeline: the injected FPGA time shows up in the measured end-to-end time."""

import time

import pytest
import torch

from bench.records import value
from bench.runner import Runner
from bench.suite import load_suite
from bench.timeline import FpgaWait


def test_host_wait_stalls_for_the_modeled_time():
    waiter = FpgaWait(torch.device("cpu"), "host")
    t0 = time.perf_counter()
    waiter.wait(0.02)
    assert time.perf_counter() - t0 >= 0.02


def test_device_wait_needs_a_gpu():
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        FpgaWait(torch.device("cpu"), "device")


def _trials(run, placement):
    return [r for r in run.records() if r["kind"] == "trial" and r["placement"] == placement]


def test_injected_fpga_time_appears_in_end_to_end_latency(write_suite, slow_spec, tmp_path):
    run = Runner(load_suite(write_suite(spec=str(slow_spec))), tmp_path / "out").run()
    hetero = _trials(run, "hetero")
    assert hetero and all(r["metrics"]["latency_ms"]["provenance"] == "emulated" for r in hetero)
    for r in hetero:
        per_call_ms = r["fpga"]["modeled_us_per_call"]["total"] / 1e3
        assert per_call_ms >= 20.0  # the 20 ms launch of the slow spec
        injected = r["fpga"]["calls_per_token"] * per_call_ms  # one offload per layer per token
        assert r["fpga"]["calls_per_token"] == 1  # one layer
        assert value(r, "latency_ms") >= injected
        # The FPGA section of the profile is the stall itself.
        assert r["steps_ms"]["relevancy+retrieval"]["value"] >= injected
        assert r["steps_ms"]["relevancy+retrieval"]["provenance"] == "emulated"
    base = min(value(r, "latency_ms") for r in _trials(run, "baseline"))
    assert min(value(r, "latency_ms") for r in hetero) > base
    _check_modeled_fpga_energy(hetero)


def _check_modeled_fpga_energy(trials):
    """The FPGA's energy comes from the modeled meter: static power over the run plus dynamic while busy."""
    for r in trials:
        e, f = r["energy"]["fpga"], r["fpga"]
        assert e["provenance"] == "analytic" and e["method"] == "modeled"
        expected = f["static_power_w"] * r["e2e_s"] + f["dynamic_power_w"] * f["busy_s"]
        assert e["joules"] == pytest.approx(expected, rel=0.05)  # the meter's own window edges differ by µs
        assert r["energy"]["readings"]["fpga"]["seconds"] == pytest.approx(r["e2e_s"], rel=0.05)


def test_analytic_mode_adds_the_modeled_time_without_waiting(write_suite, very_slow_spec, tmp_path):
    run = Runner(load_suite(write_suite(spec=str(very_slow_spec), mode="analytic")), tmp_path / "out").run()
    for r in _trials(run, "hetero"):
        assert r["metrics"]["latency_ms"]["provenance"] == "analytic"
        # Nothing waited: the measured window is shorter than the modeled FPGA time it is credited with.
        assert r["window_s"] < r["fpga"]["modeled_s"]
        assert r["e2e_s"] == pytest.approx(r["window_s"] + r["fpga"]["modeled_s"])
        assert r["steps_ms"]["relevancy+retrieval"]["provenance"] == "analytic"
    _check_modeled_fpga_energy(_trials(run, "hetero"))


def test_functional_pass_reports_recall_and_csim_agrees(write_suite, tmp_path):
    text = write_suite().read_text().replace("{mode: emulated, spec: u55c}",
                                             "{mode: emulated, spec: u55c, functional: csim}")
    path = tmp_path / "csim.yaml"
    path.write_text(text)
    run = Runner(load_suite(path), tmp_path / "out").run()
    warm = [r for r in run.records() if r["kind"] == "warmup" and r["placement"] == "hetero"]
    assert warm[0]["functional_pass"]["mode"] == "csim"
    assert warm[0]["functional_pass"]["recall"] >= 0.5
