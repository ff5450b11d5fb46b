"""Fixtures for end-to-end tests: tiny suites written to a temporary directory."""

from pathlib import Path

import pytest

TINY = """\
name: tiny
description: end-to-end test suite
model: {{preset: tiny, layers: 1}}
method: {{name: seer-attention-r, token_budget: 128}}
matrix:
  context: [{contexts}]
  batch: [1]
placements:
  baseline: {{}}
  baseline-torch: {{kernels: torch}}
  hetero: {{relevancy: fpga, retrieval: fpga}}
devices:
  gpu: {{device: cpu}}
  fpga: {{mode: {mode}, spec: {spec}}}
measure: {{warmup: 0, trials: 2, decode_tokens: 2, min_duration_s: 0.0, min_iterations: 1, idle_s: 0}}
"""


@pytest.fixture
def write_suite(tmp_path: Path):
    """Write a tiny suite; returns its path."""

    def write(contexts: str = "256", mode: str = "emulated", spec: str = "u55c", name: str = "tiny.yaml") -> Path:
        path = tmp_path / name
        path.write_text(TINY.format(contexts=contexts, mode=mode, spec=spec))
        return path

    return write


def _slow_spec(tmp_path: Path, launch: str) -> Path:
    text = (Path("kernels_fpga/specs/u55c.yaml")).read_text()
    start = text.index("  host_started:")
    value = text.index("value: 1.0e-4", start)
    path = tmp_path / f"slow-{launch}.yaml"
    path.write_text(text[:value] + f"value: {launch}" + text[value + len("value: 1.0e-4"):])
    return path


@pytest.fixture
def slow_spec(tmp_path: Path) -> Path:
    """A copy of the U55C spec whose host-started launch takes 20 ms, so the injected wait dominates."""
    return _slow_spec(tmp_path, "2.0e-2")


@pytest.fixture
def very_slow_spec(tmp_path: Path) -> Path:
    """A U55C spec with a 2 s launch: a window that waited for it could not be shorter than it."""
    return _slow_spec(tmp_path, "2.0e+0")
