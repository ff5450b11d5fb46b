"""Records and figures: every number ``bench`` stores carries its unit and provenance.

Provenance labels (never mixed silently):

- ``measured``: on real hardware, for everything the figure covers;
- ``emulated``: a real GPU timeline with a modeled FPGA latency injected (energy: the GPU's measured
  energy over that timeline plus the FPGA's modeled energy, both listed as components);
- ``analytic``: composed from models (and from measured per-step figures where stated).

A figure without a value has ``value: null`` and a ``reason``; nothing is ever filled in by a guess.
"""

from __future__ import annotations

from typing import Any, Literal

Provenance = Literal["measured", "emulated", "analytic"]
#: Weakest first: a figure composed from others takes the weakest of their labels.
_STRENGTH = {"analytic": 0, "emulated": 1, "measured": 2}

TRIAL, WARMUP, SKIPPED, FAILED = "trial", "warmup", "skipped", "failed"


def figure(value: float | None, unit: str, provenance: Provenance, reason: str | None = None,
           **extra: Any) -> dict[str, Any]:
    """A number with its unit and provenance; ``value`` None requires a ``reason``."""
    if value is None and not reason:
        raise ValueError("a missing figure needs a reason")
    out: dict[str, Any] = {"value": value, "unit": unit, "provenance": provenance}
    if value is None:
        out["reason"] = reason
    out.update(extra)
    return out


def weakest(*labels: Provenance) -> Provenance:
    """The weakest provenance among ``labels`` (analytic < emulated < measured)."""
    return min(labels, key=_STRENGTH.__getitem__)


def value(rec: dict[str, Any], metric: str) -> float | None:
    """The value of ``metrics[metric]`` in a record, or None."""
    fig = rec.get("metrics", {}).get(metric)
    return None if fig is None else fig.get("value")

