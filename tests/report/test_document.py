"""The report document: a self-contained HTML page, or Markdown beside its PNGs."""

import base64
import re

import pytest

from bench.errors import UsageError
from bench.report.document import provenance_items, write_report


@pytest.fixture(scope="module")
def html_text(html_report):
    assert html_report[0].name == "report.html"
    return html_report[0].read_text()


def test_html_is_self_contained(html_text):
    assert "<link" not in html_text and "<script" not in html_text and "href=" not in html_text
    assert "url(" not in html_text and "@import" not in html_text
    sources = re.findall(r'src="([^"]*)"', html_text)
    assert len(sources) == 5
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG")


def test_html_holds_tables_provenance_and_notes(html_text, fixture_run, tiny_run):
    body = re.sub(r"base64,[A-Za-z0-9+/=]+", "", html_text)
    assert body.count("<table>") >= 4  # a case table per run, a composition check, roofline points
    cases = re.search(r"<h3>Cases</h3>\s*<table>(.*?)</table>", body, re.S).group(1)
    assert cases.count("<tr>") == 1 + 16  # header + 4 cases x 4 placements of the fixture run
    for text in ("NVIDIA H200", "580.159.04", "torch 2.11.0+cu130", "nvml_counter (measured)",
                 "not recorded (no git checkout", "emulated xcu55c-fsvh2892-2L-e", fixture_run.run_id,
                 tiny_run.run_id, "Roofline points", "What each figure shows", "Provenance:"):
        assert text in body, text
    assert re.search(r"<li>Speedup and energy reduction per method: emulated, measured</li>", body)
    assert "energy null" not in body or "no GPU" in body


def test_markdown_refers_to_its_png_files(md_report, tiny_run):
    report = md_report[0]
    assert report.name == "report.md"
    text = report.read_text()
    images = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", text)
    assert len(images) == 4
    for rel in images:
        assert (report.parent / rel).is_file()
    assert "### Energy by scope: gross, idle and net\n\nNot drawn: no energy in any run: gpu: no GPU" in text
    section = text.split("### Cases\n\n", 1)[1]
    table = section[: section.index("\n\n")].splitlines()
    assert len(table) == 2 + 12 and all(line.startswith("|") for line in table)  # header, rule, 4 x 3 rows
    assert "- **commit:**" in text and tiny_run.run_id in text


def test_provenance_items_name_the_sources(fixture_run):
    items = dict(provenance_items(fixture_run.meta()))
    assert items["driver"] == "580.159.04"
    assert items["device"].startswith("NVIDIA H200 (cuda, 140 GiB")
    assert "250 MHz" in items["FPGA fpgadev"] and "wait device" in items["FPGA fpgadev"]
    assert items["energy meter cpu"].startswith("unavailable: no RAPL")


def test_bad_requests_are_usage_errors(tmp_path, fixture_run):
    with pytest.raises(UsageError, match="unknown report format 'pdf'"):
        write_report([fixture_run], tmp_path, "pdf")
    with pytest.raises(UsageError, match="no runs"):
        write_report([], tmp_path)
