"""Validity rules: each one triggered on its own, and a clean run is VALID."""

from __future__ import annotations

import pytest

from bench.meters.base import EnergyReading, null_reading
from bench.stats import summarize
from bench.validity import ValidityInputs, assess


def reading(scope="gpu", joules=300.0, seconds=2.0, provenance="measured", **kw) -> EnergyReading:
    return EnergyReading(
        scope,
        joules,
        seconds,
        kw.pop("method", "nvml_counter"),
        provenance,
        None,
        2,
        None,
        mean_power_w=None if joules is None else joules / seconds,
        **kw,
    )


def clean(**overrides) -> ValidityInputs:
    base = dict(
        window_s=12.0,
        min_window_s=10.0,
        iterations=50,
        min_iterations=10,
        failed_requests=0,
        energy_requested=True,
        readings=(reading(), reading("fpga", 40.0, provenance="measured", method="xrt_sensor")),
        summaries={"latency_s": summarize([1.00, 1.02, 0.99, 1.01, 1.00])},
        boundaries={"baseline": {"gpu", "fpga"}, "hetero": ["fpga", "gpu"]},
        requested_provenance="measured",
        idle_power_w={"gpu": 120.0, "fpga": 18.0},
        power_limit_w={"gpu": 700.0, "fpga": 75.0},
        throttle_reasons=0x1,  # GpuIdle only: not throttling
    )
    base.update(overrides)
    return ValidityInputs(**base)


def test_clean_run_is_valid():
    v = assess(clean())
    assert v.status == "VALID" and v.valid and v.reasons == () and v.warnings == ()
    assert v.to_dict() == {"status": "VALID", "reasons": [], "warnings": []}
    assert assess(ValidityInputs()).valid  # nothing known: nothing held against it


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"window_s": 4.2}, "shorter than the 10 s minimum"),
        ({"iterations": 3}, "below the minimum of 10"),
        ({"failed_requests": 2}, "2 request(s) failed"),
        ({"readings": (null_reading("gpu", "counter reset", 2.0),)}, "gpu: energy counter reset"),
        (
            {"readings": (null_reading("cpu", "RAPL energy_uj is readable only by root", 2.0),)},
            "cpu: no energy figure (RAPL energy_uj is readable only by root)",
        ),
        (
            {"readings": (reading("fpga", 40.0, sample_gaps=2, max_sample_gap_s=0.8),)},
            "fpga: 2 power-sampling gap(s) longer than twice the sampling period (longest 0.800 s)",
        ),
        ({"summaries": {"energy_j": summarize([1.0, 1.6, 0.7, 1.3, 0.8])}}, "energy_j: CV"),
        (
            {"boundaries": {"baseline": {"gpu"}, "hetero": {"gpu", "fpga"}}},
            "energy boundaries differ between compared sides (baseline counts {gpu}; hetero counts {fpga, gpu})",
        ),
        (
            {"readings": (reading("fpga", 40.0, provenance="analytic", method="modeled"),)},
            "modeled figures where measured were requested: fpga energy (analytic)",
        ),
        (
            {"provenances": {"fpga latency": "emulated"}},
            "modeled figures where measured were requested: fpga latency (emulated)",
        ),
    ],
)
def test_each_rule_makes_the_run_invalid(overrides, needle):
    v = assess(clean(**overrides))
    assert v.status == "INVALID" and not v.valid
    assert any(needle in r for r in v.reasons), v.reasons
    assert all("\n" not in r for r in v.reasons)


def test_missing_energy_only_invalid_when_energy_was_requested():
    none = (null_reading("cpu", "no RAPL", 1.0),)
    assert assess(clean(readings=none, energy_requested=False)).valid
    assert not assess(clean(readings=none, energy_requested=True)).valid


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"summaries": {"latency_s": summarize([1.0, 1.15, 0.9, 1.1, 0.87])}}, "consider more trials"),
        ({"summaries": {"latency_s": summarize([1.0])}}, "stability unknown (one trial"),
        (
            {"summaries": {"latency_s": summarize([1.0, 1.01, 0.99, 1.0, 1.02, 1.0, 1.15])}},
            "trial(s) 6 flagged as outliers",
        ),
        ({"readings": (reading("gpu", 100.0, seconds=2.0),)}, "gpu: mean power 50.0 W is below idle power 120.0 W"),
        ({"readings": (reading("fpga", 400.0, seconds=2.0),)}, "fpga: mean power 200.0 W exceeds the 75.0 W"),
        ({"throttle_reasons": 0x1 | 0x4 | 0x40}, "GPU clocks were throttled (SwPowerCap, HwThermalSlowdown)"),
        ({"readings": (reading(warnings=("window 0.3 s is short",)),)}, "gpu: window 0.3 s is short"),
    ],
)
def test_weakening_conditions_are_warnings_only(overrides, needle):
    v = assess(clean(**overrides))
    assert v.status == "VALID", v.reasons
    assert any(needle in w for w in v.warnings), v.warnings


def test_requested_emulated_accepts_measured_rejects_analytic():
    measured = (reading(),)
    assert assess(clean(requested_provenance="emulated", readings=measured)).valid
    analytic = (reading("fpga", 30.0, provenance="analytic", method="modeled"),)
    v = assess(clean(requested_provenance="emulated", readings=analytic))
    assert v.reasons == ("analytic figures where emulated were requested: fpga energy (analytic)",)


def test_several_failures_each_get_a_reason():
    v = assess(clean(window_s=1.0, iterations=1, failed_requests=1))
    assert len(v.reasons) == 3
