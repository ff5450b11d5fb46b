"""The model-vs-published table: every row within its tolerance, and docs/fpga_model_validation.md current."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernels_fpga import validation
from kernels_fpga.validation import ValidationRow

DOC = Path(__file__).resolve().parents[2] / "docs" / "fpga_model_validation.md"


@pytest.fixture(scope="module")
def rows() -> list[ValidationRow]:
    return validation.validation_rows("u55c")


def test_every_row_is_within_its_stated_tolerance(rows):
    assert len(rows) >= 12
    for row in rows:
        assert row.kind in validation.KINDS and row.why and row.source
        assert row.ok, (f"{row.name}: modeled {row.modeled} vs {row.published} "
                        f"({row.rel_error:+.1%}, tolerance {row.tolerance:.0%})")


def test_rows_cover_the_published_anchors(rows):
    names = " ".join(r.name for r in rows)
    for anchor in ("128-key block", "HBM read", "649 us kernel", "4 KB", "P2P GPU->FPGA", "FANNS priority queue",
                   "bitonic", "Chameleon"):
        assert anchor in names


def test_error_is_measured_from_the_nearest_end_of_a_range():
    row = ValidationRow("x", (10.0, 20.0), "s", 15.0, "u", 0.0, "fit", "w")
    assert row.rel_error == 0.0 and row.ok
    assert ValidationRow("x", (10.0, 20.0), "s", 8.0, "u", 0.1, "fit", "w").rel_error == pytest.approx(-0.2)
    assert not ValidationRow("x", (10.0, 20.0), "s", 25.0, "u", 0.2, "fit", "w").ok
    assert ValidationRow("x", 4.0, "s", 5.0, "u", 0.25, "fit", "w").ok


def test_the_committed_table_is_the_generated_one(rows):
    assert DOC.read_text(encoding="utf-8") == validation.render_markdown(rows, "u55c"), (
        "docs/fpga_model_validation.md is stale: run python -m kernels_fpga.validation "
        "--output docs/fpga_model_validation.md")


def test_command_line_writes_the_table_and_exits_zero(tmp_path, capsys):
    out = tmp_path / "table.md"
    assert validation.main(["--output", str(out)]) == 0
    assert out.read_text().startswith("# FPGA analytic model vs published figures")
    assert validation.main([]) == 0
    assert "| Check | Published |" in capsys.readouterr().out
