"""Shared runs and reports for the report and export tests, made once per session.

- ``fixture_run``: the recorded H200 run under tests/fixtures (energy measured, hetero emulated).
- ``tiny_run``: a fresh CPU run of a tiny suite (two contexts, two batch sizes; no energy on the CPU).
- ``html_report``: the HTML report of both runs together (several runs, several devices).
- ``md_report``: the Markdown report of the CPU run alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report.document import write_report
from bench.runner import Runner
from bench.store import RunDir
from bench.suite import load_suite

FIXTURE_RUN = Path(__file__).parents[1] / "fixtures" / "runs" / "smoke_sparse" / "20261127T234655Z-nogit"

TINY = """\
name: tiny_report
description: report and export tests
model: {preset: tiny, layers: 1}
method: {name: seer-attention-r, token_budget: 128}
matrix:
  context: [256, 320]
  batch: [1, 2]
placements:
  baseline: {}
  baseline-torch: {kernels: torch}
  hetero: {relevancy: fpga, retrieval: fpga}
devices:
  gpu: {device: cpu}
  fpga: {mode: emulated, spec: u55c}
measure: {warmup: 0, trials: 2, decode_tokens: 2, min_duration_s: 0.0, min_iterations: 1, idle_s: 0}
"""


@pytest.fixture(scope="session")
def fixture_run() -> RunDir:
    return RunDir.open(FIXTURE_RUN)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    root = tmp_path_factory.mktemp("tiny")
    suite = root / "tiny.yaml"
    suite.write_text(TINY)
    return Runner(load_suite(suite), root / "results").run()


@pytest.fixture(scope="session")
def html_report(tmp_path_factory: pytest.TempPathFactory, fixture_run: RunDir,
                tiny_run: RunDir) -> list[Path]:
    return write_report([fixture_run, tiny_run], tmp_path_factory.mktemp("html"), "html")


@pytest.fixture(scope="session")
def md_report(tmp_path_factory: pytest.TempPathFactory, tiny_run: RunDir) -> list[Path]:
    return write_report([tiny_run], tmp_path_factory.mktemp("md"), "markdown")
