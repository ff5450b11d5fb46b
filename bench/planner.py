"""The placement planner: per case, does offloading pay?

A placement written ``auto`` in a suite is decided per case, after the warm-up: the GPU's own time for the
offloadable steps (measured: the ``baseline`` placement's per-section profile of this very case) against the
FPGA's time for them (modeled: every offload of an iteration, transfers, launch and kernel, from the
functional pass). The steps go where they take less time; the decision and both figures are recorded, so a
reader sees why (an offload that loses, as MemAgent's decode does at larger batch in the study, falls back to
the GPU).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Decision:
    """Where the planner put a case's offloadable steps, and why.

    Attributes:
        offload: True when the steps go to the FPGA.
        gpu_ms: GPU time of the offloadable sections per step (measured on this case).
        fpga_ms: FPGA time of the same work per step, including the link and launch (modeled).
        reason: One line for the record.
    """

    offload: bool
    gpu_ms: float
    fpga_ms: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with provenance labels."""
        return {**asdict(self), "gpu_provenance": "measured", "fpga_provenance": "analytic"}


def decide(gpu_sections_s: Mapping[str, float], offloaded: Iterable[str], fpga_s: float) -> Decision:
    """Compare the GPU's time for the offloadable sections with the FPGA's modeled time for them.

    Args:
        gpu_sections_s: Seconds per step of each timeline section when everything runs on the GPU.
        offloaded: The sections an offload would take off the GPU.
        fpga_s: Modeled FPGA seconds per step for the same work (all offloads, link and launch included).
    """
    names = sorted(set(offloaded))
    gpu_s = sum(gpu_sections_s.get(n, 0.0) for n in names)
    offload = fpga_s < gpu_s
    where = "FPGA" if offload else "GPU"
    why = (f"{', '.join(names)}: GPU {gpu_s * 1e3:.3f} ms/step measured vs FPGA {fpga_s * 1e3:.3f} ms/step "
           f"modeled -> {where}")
    return Decision(offload, gpu_s * 1e3, fpga_s * 1e3, why)
