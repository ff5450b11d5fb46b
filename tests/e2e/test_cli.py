"""The CLI end to end on tiny shapes: run, compare, export, validate, devices, resume."""

import csv
import json
import subprocess
import sys

from typer.testing import CliRunner

from bench.cli import app
from bench.store import RunDir

cli = CliRunner()


def _run(args):
    result = cli.invoke(app, args, catch_exceptions=False)
    return result.exit_code, result.stdout + (result.stderr if result.stderr_bytes is not None else "")


def test_run_compare_export(write_suite, tmp_path):
    out = tmp_path / "results"
    code, text = _run(["run", str(write_suite(contexts="256, 320")), "--out", str(out)])
    assert code == 0, text
    assert "run written to" in text
    run = RunDir(next(out.glob("tiny/*")))
    meta = run.meta()
    assert meta["status"] == "complete"
    assert meta["suite"]["experiments"]["seer-attention-r"]["model_shape"]["layers"] == 1
    assert meta["software"]["torch"] and "commit" in meta["git"]
    trials = [r for r in run.records() if r["kind"] == "trial"]
    assert len(trials) == 2 * 3 * 2  # cases x placements x trials

    code, text = _run(["compare", "baseline", "hetero", "--results", str(out), "--markdown"])
    assert code == 0, text
    assert "speedup" in text and "context=256,batch=1" in text and "context=320,batch=1" in text
    assert "energy null: gpu: no GPU" in text  # no GPU meter here: null with the reason
    assert "hetero: latency emulated" in text and "baseline: latency measured" in text

    csv_path = tmp_path / "out.csv"
    code, text = _run(["export", "--results", str(out), "--format", "csv", "-o", str(csv_path)])
    assert code == 0, text
    cases = list(csv.DictReader(csv_path.open()))
    assert len(cases) == 2 * 3  # cases x placements
    hetero = next(r for r in cases if r["placement"] == "hetero")
    assert hetero["speedup_ratio"] and hetero["speedup_provenance"] == "emulated"
    assert hetero["j_per_token_mean"] == "" and "no GPU" in hetero["j_per_token_reason"]
    code, text = _run(["export", "--results", str(out), "--format", "csv", "--trials", "-o", str(csv_path)])
    assert code == 0, text
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == len(trials)
    by_key = {(r["case_id"], r["placement"], r["trial"]): r for r in rows}
    for t in trials:
        row = by_key[(t["case_id"], t["placement"], str(t["trial"]))]
        assert float(row["latency_ms"]) == t["metrics"]["latency_ms"]["value"]
        assert row["latency_provenance"] == t["metrics"]["latency_ms"]["provenance"]
        assert row["j_per_token"] == "" and row["energy_reason"]
    code, text = _run(["export", "--results", str(out), "--trials"])
    assert code == 0 and text.startswith("run_id,suite,experiment,method,case_id,placement")
    tex, macros = tmp_path / "t.tex", tmp_path / "m.tex"
    code, text = _run(["export", "--results", str(out), "--format", "latex", "-o", str(tex), "--macros", str(macros)])
    assert code == 0, text
    assert "\\toprule" in tex.read_text() and macros.read_text().count("\\newcommand") == 2 * 6 + 6 * 4
    code, text = _run(["export", "--results", str(out), "--format", "latex", "--trials"])
    assert code == 2 and "--trials applies to csv, json and markdown" in text
    code, text = _run(["report", "--results", str(out), "--out", str(tmp_path / "rep"), "--format", "markdown"])
    assert code == 0, text
    assert (tmp_path / "rep" / "report.md").is_file() and (tmp_path / "rep" / "figures" / "headline.pdf").is_file()


def test_python_main_behaves_like_bench(write_suite, tmp_path):
    proc = subprocess.run([sys.executable, "main.py", "validate", str(write_suite())], capture_output=True, text=True)
    assert proc.returncode == 0 and "valid: 1 case(s) x 3 placement(s)" in proc.stdout


def test_invalid_suite_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: tiny\nmethod: seer-attention-r\nmatrix: {context: [64], batchh: [1]}\n")
    proc = subprocess.run([sys.executable, "main.py", "run", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{bad}:4: matrix.batchh: unknown key; did you mean 'batch'?" in proc.stderr
    proc = subprocess.run([sys.executable, "main.py", "compare", "baseline", "hetero", "--results",
                           str(tmp_path / "none")], capture_output=True, text=True)
    assert proc.returncode == 2 and "no runs under" in proc.stderr and "Traceback" not in proc.stderr


def test_compare_unknown_placement(write_suite, tmp_path):
    out = tmp_path / "r"
    assert _run(["run", str(write_suite()), "--out", str(out)])[0] == 0
    code, text = _run(["compare", "baseline", "hetro", "--results", str(out)])
    assert code == 2 and "placement 'hetro' is not in this run" in text


def test_devices_reports_cpu_and_fpga_modes():
    code, text = _run(["devices"])
    assert code == 0
    assert "Energy meters" in text and "emulated" in text and "u55c" in text


def test_resume_completes_an_interrupted_run(write_suite, tmp_path):
    out = tmp_path / "r"
    suite = write_suite(contexts="256, 320")
    assert _run(["run", str(suite), "--out", str(out)])[0] == 0
    run = RunDir(next(out.glob("tiny/*")))
    lines = run.records_path.read_text().splitlines()
    # Simulate a kill during the second case: keep its first trial record, then a torn line.
    cut = next(i for i, line in enumerate(lines) if '"case_id": "context=320' in line and '"kind": "trial"' in line)
    kept = lines[: cut + 1]
    run.records_path.write_text("\n".join(kept) + '\n{"kind": "tri')
    code, text = _run(["run", str(suite), "--out", str(out), "--resume", str(run.path)])
    assert code == 0, text
    records = run.records()
    trials = [(r["case_id"], r["placement"], r["trial"]) for r in records if r["kind"] == "trial"]
    assert len(trials) == len(set(trials)) == 2 * 3 * 2
    assert json.loads(kept[0]) == records[0]  # nothing already written was changed
    assert run.meta()["resumed"]
