"""Energy accounting: scopes, gross / idle / net, and the per-token figures.

Scopes (measurement.md section 6): ``gpu``, ``fpga``, ``cpu`` and ``accel_total`` = gpu + fpga. The
headline is gross J per output token over ``accel_total``; net (gross minus idle power x window) is given
beside it, never alone. A GPU-only placement has no FPGA, so its ``accel_total`` is its GPU; a hetero
placement's ``accel_total`` charges the FPGA's static power for the whole window, busy or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.meters import EnergyReading
from bench.records import Provenance, figure, weakest

ACCEL = "accel_total"


@dataclass(frozen=True)
class ScopeEnergy:
    """Gross energy of one scope over one trial window.

    Attributes:
        scope: ``gpu``, ``fpga`` or ``cpu``.
        joules: Gross energy in J, or None with ``reason``.
        provenance: How it was obtained.
        method: The meter's method (``nvml_counter``, ``modeled``, ...).
        reason: Why ``joules`` is None.
    """

    scope: str
    joules: float | None
    provenance: Provenance
    method: str
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"joules": self.joules, "provenance": self.provenance, "method": self.method, "reason": self.reason}


def gpu_energy(reading: EnergyReading, mode: str | None, modeled_fpga_s: float,
               gpu_idle_w: float | None) -> ScopeEnergy:
    """The GPU's energy for a trial, given how the FPGA (if any) was present.

    Args:
        reading: The GPU meter's reading over the measured window.
        mode: FPGA mode of the placement (None without an FPGA).
        modeled_fpga_s: Modeled FPGA time in the window (analytic mode adds it to the timeline).
        gpu_idle_w: GPU idle power, needed in analytic mode for the time the GPU waits on the FPGA.
    """
    if reading.joules is None:
        return ScopeEnergy("gpu", None, "measured", reading.method, reading.reason)
    if mode == "analytic":
        if gpu_idle_w is None:
            return ScopeEnergy("gpu", None, "analytic", reading.method,
                               "analytic GPU energy needs the GPU idle power while it waits for the FPGA; "
                               "set measure.idle_s > 0")
        return ScopeEnergy("gpu", reading.joules + gpu_idle_w * modeled_fpga_s, "analytic", reading.method)
    return ScopeEnergy("gpu", reading.joules, "emulated" if mode == "emulated" else "measured", reading.method)


def total(scopes: dict[str, ScopeEnergy]) -> ScopeEnergy:
    """``accel_total``: GPU plus FPGA (where present); None if any part is unknown."""
    parts = [scopes[s] for s in ("gpu", "fpga") if s in scopes]
    missing = [p for p in parts if p.joules is None]
    provs = [p.provenance for p in parts]
    # The GPU measured over an emulated timeline plus the FPGA's modeled energy is, by definition, emulated.
    prov: Provenance = "emulated" if "emulated" in provs else weakest(*provs)
    if missing:
        return ScopeEnergy(ACCEL, None, prov, "+".join(p.method for p in parts),
                           "; ".join(f"{p.scope}: {p.reason}" for p in missing))
    return ScopeEnergy(ACCEL, sum(p.joules for p in parts if p.joules is not None), prov,
                       "+".join(p.method for p in parts))


def per_token_figures(energy: ScopeEnergy, tokens: int) -> dict[str, Any]:
    """Gross energy, J/token and tokens/J of one scope, as labeled figures."""
    if energy.joules is None:
        why = energy.reason or "energy unavailable"
        return {"energy_j": figure(None, "J", energy.provenance, why, scope=energy.scope),
                "j_per_token": figure(None, "J/token", energy.provenance, why, scope=energy.scope),
                "tokens_per_j": figure(None, "tokens/J", energy.provenance, why, scope=energy.scope)}
    tokens_per_j = tokens / energy.joules if energy.joules > 0 else None
    return {
        "energy_j": figure(energy.joules, "J", energy.provenance, scope=energy.scope),
        "j_per_token": figure(energy.joules / tokens, "J/token", energy.provenance, scope=energy.scope),
        "tokens_per_j": figure(tokens_per_j, "tokens/J", energy.provenance,
                               None if tokens_per_j is not None else "zero energy", scope=energy.scope),
    }

