"""A one-experiment tiny suite for the sparse-attention methods' end-to-end tests, run on the CPU.

Placements ``baseline`` (fused kernels), ``baseline-torch`` (framework-native ops) and ``hetero`` (relevancy
and retrieval on an emulated U55C); one trial, no warm-up, no idle window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.pipeline import FUSED
from bench.runner import Runner
from bench.store import RunDir
from bench.suite import load_suite

_SUITE = """\
name: {name}
model: {model}
method: {method}
matrix: {matrix}
placements:
  baseline: {{}}
  baseline-torch: {{kernels: torch}}
  hetero: {{relevancy: fpga, retrieval: fpga}}
devices:
  gpu: {{device: cpu}}
  fpga: {{mode: emulated, spec: u55c}}
measure: {{warmup: 0, trials: 1, decode_tokens: {decode_tokens}, min_duration_s: 0.0, min_iterations: 1,
          idle_s: 0{extra}}}
"""


def run_tiny(tmp_path: Path, name: str, model: str, method: str, matrix: str, decode_tokens: int,
             composition: bool = False) -> tuple[RunDir, dict[str, dict[str, Any]]]:
    """Run the suite; returns the run and its trial records by placement (each placement's sections checked)."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(_SUITE.format(name=name, model=model, method=method, matrix=matrix, decode_tokens=decode_tokens,
                                  extra="" if composition else ", composition: false"))
    run = Runner(load_suite(path), tmp_path / "out").run()
    trials = {r["placement"]: r for r in run.records() if r["kind"] == "trial"}
    assert set(trials) == {"baseline", "baseline-torch", "hetero"}
    assert set(trials["baseline"]["steps_ms"]) == {"dense", "prepare", FUSED, "apply"}
    assert set(trials["baseline-torch"]["steps_ms"]) == {"dense", "prepare", "relevancy", "retrieval", "apply"}
    assert trials["hetero"]["steps_ms"][FUSED]["provenance"] == "emulated"
    return run, trials
