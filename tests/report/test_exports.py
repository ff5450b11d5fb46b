"""Every export format, parsed back and checked against the records it came from."""

import csv
import io
import json
import re

import pytest

from bench.compare import compare
from bench.errors import UsageError
from bench.export import (
    COLUMNS,
    PROVENANCE_COLUMN,
    case_rows,
    export_run,
    tidy_rows,
    write_csv,
)
from bench.report import latex

LABELS = {"measured", "emulated", "analytic"}


def _export(run, fmt, **kw):
    buf = io.StringIO()
    n = export_run(run, fmt, out=buf, **kw)
    return n, buf.getvalue()


def _summaries(run):
    return {(r["case_id"], r["placement"]): r for r in run.records() if r["kind"] == "summary"}


def _provenance_ok(label):
    return label is not None and set(label.split("/")) <= LABELS


def test_case_csv_matches_summaries_and_comparisons(fixture_run):
    n, text = _export(fixture_run, "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    summaries = _summaries(fixture_run)
    assert n == len(rows) == len(summaries) == 16  # 4 cases x 4 placements
    hetero = {c.case_id: c for c in compare(fixture_run.records(), "baseline", "hetero")}
    for row in rows:
        s = summaries[(row["case_id"], row["placement"])]
        assert float(row["latency_ms_mean"]) == s["stats"]["latency_ms"]["mean"]
        assert float(row["latency_ms_ci_high"]) == s["stats"]["latency_ms"]["ci_high"]
        assert float(row["gpu_net_j_per_token_value"]) == s["energy_by_scope"]["gpu"]["net_j_per_token"]
        assert row["validity"] == s["validity"]["status"]
        if row["placement"] == "baseline":
            assert row["speedup_ratio"] == "" and row["speedup_reason"] == "the reference placement"
        if row["placement"] == "hetero":
            c = hetero[row["case_id"]]
            assert float(row["speedup_ratio"]) == c.speedup.ratio
            assert float(row["energy_reduction_ci_low"]) == c.energy_reduction.ci_low
            assert row["speedup_provenance"] == "emulated"  # weakest of measured (baseline) and emulated
            assert row["fpga_gross_j_per_token_provenance"] == "analytic"
        if not row["placement"].startswith("hetero"):
            assert row["fpga_gross_j_per_token_value"] == ""
            assert "no fpga" in row["fpga_gross_j_per_token_reason"]


def test_every_numeric_case_column_has_provenance_and_reason_columns(fixture_run):
    _, text = _export(fixture_run, "csv")
    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    stats = ("_mean", "_ci_low", "_ci_high", "_cv", "_ratio", "_value")
    numeric = [c for c in reader.fieldnames if c.endswith(stats)]
    assert len(numeric) > 30
    for col in numeric:
        figure = col[: -len(next(x for x in stats if col.endswith(x)))]
        assert f"{figure}_provenance" in reader.fieldnames, col
        assert f"{figure}_reason" in reader.fieldnames, col
        for row in rows:
            if row[col] != "":
                assert _provenance_ok(row[f"{figure}_provenance"]), (col, row[f"{figure}_provenance"])


def test_nulls_stay_empty_with_their_reason_on_a_cpu_run(tiny_run):
    _, text = _export(tiny_run, "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 4 * 3
    for row in rows:
        assert row["latency_ms_mean"] != ""
        assert row["j_per_token_mean"] == "" and "no GPU" in row["j_per_token_reason"]
        if row["placement"] != "baseline":
            assert row["speedup_ratio"] != "" and row["energy_reduction_ratio"] == ""
            assert row["energy_reduction_reason"]


def test_trial_csv_keeps_a_provenance_column_per_numeric_column(fixture_run):
    records = fixture_run.records()
    n, text = _export(fixture_run, "csv", trials=True)
    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    trials = [r for r in records if r["kind"] == "trial"]
    assert n == len(rows) == len(trials) == 32
    assert reader.fieldnames[: len(COLUMNS)] == COLUMNS
    by_key = {(r["case_id"], r["placement"], r["trial"]): r for r in rows}
    for t in trials:
        row = by_key[(t["case_id"], t["placement"], str(t["trial"]))]
        assert float(row["latency_ms"]) == t["metrics"]["latency_ms"]["value"]
        for col, prov in PROVENANCE_COLUMN.items():
            if row[col] != "":
                assert _provenance_ok(row[prov]), (col, row[prov])
        for name, fig in t["steps_ms"].items():
            assert float(row[f"step_{name}_ms"]) == fig["value"]
            assert row[f"step_{name}_provenance"] == fig["provenance"]
    hetero = next(r for r in rows if r["placement"] == "hetero")
    assert hetero["fpga_energy_provenance"] == hetero["fpga_us_per_call_provenance"] == "analytic"


def test_tidy_rows_and_write_csv_keep_their_contract(tiny_run):
    out = io.StringIO()
    rows = tidy_rows(tiny_run.records(), tiny_run.meta())
    write_csv(rows, out)
    assert out.getvalue().startswith("run_id,suite,experiment,method,case_id,placement")
    assert len(list(csv.DictReader(io.StringIO(out.getvalue())))) == 4 * 3 * 2


def test_json_export_nests_provenance_and_keeps_nulls(fixture_run, tiny_run):
    n, text = _export(fixture_run, "json", trials=True)
    doc = json.loads(text)
    assert doc["run"]["run_id"] == fixture_run.run_id and doc["run"]["gpu"]["name"] == "NVIDIA H200"
    assert len(doc["cases"]) == 16 and n == len(doc["trials"]) == 32
    for case in doc["cases"]:
        for name, fig in case["figures"].items():
            value = next((fig[k] for k in ("mean", "ratio", "value") if k in fig), None)
            assert value is None or _provenance_ok(fig["provenance"]), name
            assert value is not None or fig["reason"], name
    _, text = _export(tiny_run, "json")
    cpu = json.loads(text)
    assert "trials" not in cpu
    fig = cpu["cases"][0]["figures"]["j_per_token"]
    assert fig["mean"] is None and "no GPU" in fig["reason"]


def _markdown_table(text):
    lines = [line for line in text.splitlines() if line.startswith("|")]
    cells = [re.split(r"(?<!\\)\|", line)[1:-1] for line in lines]
    assert all(len(c) == len(cells[0]) for c in cells)
    assert set("".join(cells[1])) <= set("-")
    return [c.strip() for c in cells[0]], [[x.strip() for x in c] for c in cells[2:]]


def test_markdown_export_parses_as_a_table(fixture_run, tiny_run):
    n, text = _export(fixture_run, "markdown")
    head, rows = _markdown_table(text)
    assert n == len(rows) == 16 and head[:3] == ["experiment", "case", "placement"]
    hetero = next(r for r in rows if r[2] == "hetero")
    assert re.fullmatch(r"\d+\.\d{3}x \[\d+\.\d{3}, \d+\.\d{3}\]", hetero[5])
    assert hetero[7] == "emulated/emulated"
    _, text = _export(tiny_run, "markdown", trials=True)
    head, rows = _markdown_table(text)
    assert len(rows) == 24 and "latency_provenance" in head


def _balanced(text):
    depth = 0
    for m in re.finditer(r"\\[{}]|[{}]", text):
        if m.group() in ("\\{", "\\}"):
            continue
        depth += 1 if m.group() == "{" else -1
        if depth < 0:
            return False
    return depth == 0


def test_latex_tables_are_booktabs_and_balanced(fixture_run):
    n, text = _export(fixture_run, "latex")
    assert _balanced(text)
    for env in ("table", "tabular"):
        assert text.count(f"\\begin{{{env}}}") == text.count(f"\\end{{{env}}}") == 1
    top, mid, bottom = text.index("\\toprule"), text.index("\\midrule"), text.index("\\bottomrule")
    assert top < mid < bottom
    body = [line for line in text[mid:bottom].splitlines()[1:] if line.endswith("\\\\")]
    assert n == len(body) == 16
    columns = re.search(r"\\begin\{tabular\}\{([a-z]+)\}", text).group(1)
    assert all(line.count(" & ") == len(columns) - 1 for line in body)
    assert "smoke\\_sparse" in text and "smoke_sparse}" not in text  # escaped in the caption
    assert re.search(r"\$0\.717\d* \\pm 0\.00\d+\$", text)  # baseline 16K b1: mean ± CI half-width


def test_latex_escapes_every_special_character():
    assert latex.escape("a_b & c%d $e #f {g} ~h ^i \\j") == (
        r"a\_b \& c\%d \$e \#f \{g\} \textasciitilde{}h \textasciicircum{}i \textbackslash{}j")


MACRO = re.compile(r"^\\newcommand\{\\(bench[A-Za-z]+)\}\{(--|\d+(\.\d+)?)\}$")


def test_macros_one_newcommand_per_headline_number(fixture_run, tmp_path):
    path = tmp_path / "numbers.tex"
    _export(fixture_run, "latex", macros_path=path)
    text = path.read_text()
    rows = case_rows(fixture_run.records(), fixture_run.meta())
    compared = sum(r["placement"] != "baseline" for r in rows)
    expected = 2 * len(rows) + 6 * compared  # latency, J/token; speedup and energy reduction with CI ends
    assert len(latex.headline_numbers(rows)) == expected
    lines = text.splitlines()
    defs = [(i, line) for i, line in enumerate(lines) if line.startswith("\\newcommand")]
    assert len(defs) == expected
    names = [MACRO.match(line).group(1) for _, line in defs]
    assert len(set(names)) == len(names)
    for i, _ in defs:
        comment = lines[i - 1]
        assert comment.startswith("% ") and "provenance " in comment and "device NVIDIA H200" in comment
    assert all(line.startswith(("%", "\\newcommand")) or not line for line in lines)
    assert _balanced(text)
    c = next(c for c in compare(fixture_run.records(), "baseline", "hetero")
             if c.case_id == "context=65536,batch=8")
    value = dict(MACRO.match(line).group(1, 2) for _, line in defs)
    assert value["benchSpeedupSeerAttentionRHeteroCtxSixFourKBatchEight"] == f"{c.speedup.ratio:.2f}"
    assert value["benchEnergyReductionHighSeerAttentionRHeteroCtxSixFourKBatchEight"] == \
        f"{c.energy_reduction.ci_high:.2f}"


def test_macros_of_null_numbers_expand_to_a_dash_with_the_reason(tiny_run):
    rows = case_rows(tiny_run.records(), tiny_run.meta())
    text = latex.macros(rows, tiny_run.meta())
    lines = text.splitlines()
    i = lines.index(next(x for x in lines if x.startswith("\\newcommand{\\benchJPerToken")))
    assert lines[i].endswith("{--}") and "null: gpu: no GPU" in lines[i - 1]


def test_macro_names_are_letters_only_and_distinct():
    assert latex.name_part("hetero-dev") == "HeteroDev"
    assert latex.name_part("qwen3-8b") == "QwenThreeEightB"
    assert latex.name_part("0.5") == "ZeroPointFive" and latex.name_part("-2") == "MinusTwo"
    assert latex.case_name({"context": 131072, "batch": 1, "token_budget": 2048}) == \
        "CtxOneTwoEightKBatchOneTokenBudgetTwoZeroFourEight"
    assert latex.case_name({"context": 2**20 * 3, "batch": 7}) == "CtxThreeMBatchSeven"
    assert latex.case_name({"context": 1000, "batch": 1}) != latex.case_name({"context": 1024, "batch": 1})
    # Two placements whose names collide get distinct macros.
    fig = {"mean": 1.0, "ci_low": None, "ci_high": None, "provenance": "measured", "reason": None}
    rows = [{"experiment": "m", "placement": p, "case": {"context": 64, "batch": 1}, "case_id": "c",
             "baseline": None, "figures": {"latency_ms": fig, "j_per_token": fig}} for p in ("a-b", "a_b")]
    names = [h["name"] for h in latex.headline_numbers(rows)]
    assert len(set(names)) == 4 and any(n.endswith("VariantTwo") for n in names)


def test_export_rejects_bad_requests(fixture_run):
    with pytest.raises(UsageError, match="unknown export format 'xml'"):
        _export(fixture_run, "xml")
    with pytest.raises(UsageError, match="--trials applies to csv, json and markdown"):
        _export(fixture_run, "latex", trials=True)
    with pytest.raises(UsageError, match="--macros applies to --format latex"):
        _export(fixture_run, "csv", macros_path=__import__("pathlib").Path("x.tex"))
