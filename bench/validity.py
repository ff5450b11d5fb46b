"""VALID/INVALID verdicts for a measurement, with one plain line per reason (MLPerf style).

A result is VALID only when nothing that would make its numbers untrustworthy happened (measurement.md §9):
the steady window and iteration count met their minimums, all requests succeeded, every requested energy
scope has a figure, no counter reset, no power-sampling gap over twice the period, trials are stable, both
compared sides count the same energy boundary, and the figures are of the provenance that was asked for.
Conditions that only weaken a result (CV over 10%, power outside [idle, limit], throttling, a meter's own
warnings) are warnings.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bench.meters.base import EnergyReading, Provenance
from bench.meters.counter import COUNTER_RESET
from bench.meters.nvml import throttle_reason_names
from bench.stats import CV_UNSTABLE, Summary

_PROVENANCE_RANK: dict[str, int] = {"analytic": 0, "emulated": 1, "measured": 2}
_BENIGN_THROTTLE = 0x1  # GpuIdle: clocks drop because nothing runs, not throttling of the work


@dataclass(frozen=True)
class ValidityInputs:
    """Everything a verdict may depend on; leave unknown fields at their defaults.

    Attributes:
        window_s: Length of the measured (steady-state) window in s.
        min_window_s: Shortest acceptable window in s.
        iterations: Iterations (or requests) inside the window.
        min_iterations: Fewest acceptable iterations.
        failed_requests: Requests that failed or returned errors.
        energy_requested: Whether the run was asked to measure energy.
        readings: Energy readings of the scopes inside the declared boundary.
        summaries: Per-metric summaries across trials, e.g. ``{"latency_s": summarize(...)}``.
        boundaries: For a comparison, the energy scopes each side counts, e.g.
            ``{"baseline": {"gpu"}, "hetero": {"gpu", "fpga"}}``.
        requested_provenance: The provenance the user asked for (``"measured"`` for hardware runs).
        provenances: Provenance of figures other than the readings, e.g. ``{"fpga latency": "emulated"}``.
        idle_power_w: Idle power by scope in W.
        power_limit_w: Power limit (TDP or enforced cap) by scope in W.
        throttle_reasons: OR of the NVML clocks-throttle-reason masks seen around the window.
    """

    window_s: float | None = None
    min_window_s: float | None = None
    iterations: int | None = None
    min_iterations: int | None = None
    failed_requests: int | None = None
    energy_requested: bool = False
    readings: Sequence[EnergyReading] = ()
    summaries: Mapping[str, Summary] = field(default_factory=dict)
    boundaries: Mapping[str, Collection[str]] = field(default_factory=dict)
    requested_provenance: Provenance | None = None
    provenances: Mapping[str, Provenance] = field(default_factory=dict)
    idle_power_w: Mapping[str, float | None] = field(default_factory=dict)
    power_limit_w: Mapping[str, float | None] = field(default_factory=dict)
    throttle_reasons: int | None = None


@dataclass(frozen=True)
class Validity:
    """A verdict: ``"VALID"`` or ``"INVALID"``, the reasons for INVALID and warnings, one line each."""

    status: Literal["VALID", "INVALID"]
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def valid(self) -> bool:
        """Whether the status is VALID."""
        return self.status == "VALID"

    def to_dict(self) -> dict[str, Any]:
        """Return the verdict as plain JSON-ready types."""
        return {"status": self.status, "reasons": list(self.reasons), "warnings": list(self.warnings)}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _check_run(inputs: ValidityInputs, reasons: list[str]) -> None:
    if inputs.window_s is not None and inputs.min_window_s is not None and inputs.window_s < inputs.min_window_s:
        reasons.append(
            f"measured window {inputs.window_s:.3f} s is shorter than the {inputs.min_window_s:g} s minimum; "
            "run more iterations"
        )
    if (
        inputs.iterations is not None
        and inputs.min_iterations is not None
        and inputs.iterations < inputs.min_iterations
    ):
        reasons.append(f"{inputs.iterations} iterations is below the minimum of {inputs.min_iterations}")
    if inputs.failed_requests:
        reasons.append(f"{inputs.failed_requests} request(s) failed; every request must succeed")


def _check_readings(inputs: ValidityInputs, reasons: list[str], warnings: list[str]) -> None:
    for r in inputs.readings:
        warnings.extend(f"{r.scope}: {w}" for w in r.warnings)
        if r.reason == COUNTER_RESET:
            reasons.append(f"{r.scope}: energy counter reset during the window; rerun the trial")
        elif r.joules is None and inputs.energy_requested:
            reasons.append(f"{r.scope}: no energy figure ({r.reason}) although energy was requested")
        if r.sample_gaps:
            longest = f" (longest {r.max_sample_gap_s:.3f} s)" if r.max_sample_gap_s is not None else ""
            reasons.append(
                f"{r.scope}: {r.sample_gaps} power-sampling gap(s) longer than twice the sampling period{longest}"
            )
        idle, limit = inputs.idle_power_w.get(r.scope), inputs.power_limit_w.get(r.scope)
        if r.mean_power_w is not None and idle is not None and r.mean_power_w < idle:
            warnings.append(
                f"{r.scope}: mean power {r.mean_power_w:.1f} W is below idle power {idle:.1f} W; check the "
                "idle measurement and the meter"
            )
        if r.mean_power_w is not None and limit is not None and r.mean_power_w > limit:
            warnings.append(
                f"{r.scope}: mean power {r.mean_power_w:.1f} W exceeds the {limit:.1f} W power limit; check "
                "the meter's scope and units"
            )


def _check_trials(inputs: ValidityInputs, reasons: list[str], warnings: list[str]) -> None:
    for name, s in inputs.summaries.items():
        if s.stability == "unstable":
            reasons.append(
                f"{name}: CV {s.cv:.1%} across {s.n} trials exceeds {CV_UNSTABLE:.0%} (unstable); reduce "
                "noise (isolation, cooldown) or run more trials"
            )
        elif s.stability == "warn":
            warnings.append(f"{name}: CV {s.cv:.1%} across {s.n} trials exceeds 10%; consider more trials")
        elif s.stability == "unknown":
            warnings.append(f"{name}: stability unknown ({s.reason})")
        if s.outlier_indices:
            indices = ", ".join(str(i) for i in s.outlier_indices)
            warnings.append(
                f"{name}: trial(s) {indices} flagged as outliers (modified z-score > 3.5); kept in all figures"
            )


def _check_comparison(inputs: ValidityInputs, reasons: list[str]) -> None:
    scopes = {side: frozenset(s) for side, s in inputs.boundaries.items()}
    if len(set(scopes.values())) > 1:
        listed = "; ".join(f"{side} counts {{{', '.join(sorted(s))}}}" for side, s in scopes.items())
        reasons.append(f"energy boundaries differ between compared sides ({listed}); compare one boundary")
    wanted = inputs.requested_provenance
    if wanted is None:
        return
    actual = {f"{r.scope} energy": r.provenance for r in inputs.readings if r.joules is not None}
    actual.update(inputs.provenances)
    weaker = {name: p for name, p in actual.items() if _PROVENANCE_RANK[p] < _PROVENANCE_RANK[wanted]}
    if weaker:
        listed = ", ".join(f"{name} ({p})" for name, p in sorted(weaker.items()))
        kind = "modeled" if wanted == "measured" else "analytic"
        reasons.append(f"{kind} figures where {wanted} were requested: {listed}")


def assess(inputs: ValidityInputs) -> Validity:
    """Judge whether a measurement can be trusted.

    Args:
        inputs: What is known about the run; unknown fields are skipped, not held against it.

    Returns:
        ``INVALID`` with one reason per failed rule, else ``VALID``; warnings in both cases.
    """
    reasons: list[str] = []
    warnings: list[str] = []
    _check_run(inputs, reasons)
    _check_readings(inputs, reasons, warnings)
    _check_trials(inputs, reasons, warnings)
    _check_comparison(inputs, reasons)
    if inputs.throttle_reasons:
        names = throttle_reason_names(inputs.throttle_reasons & ~_BENIGN_THROTTLE)
        if names:
            warnings.append(f"GPU clocks were throttled ({', '.join(names)}); check cooling and power limits")
    return Validity(
        status="INVALID" if reasons else "VALID",
        reasons=tuple(_one_line(r) for r in reasons),
        warnings=tuple(_one_line(w) for w in warnings),
    )
