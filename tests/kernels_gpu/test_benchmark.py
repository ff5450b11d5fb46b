"""The roofline benchmark harness: CPU end-to-end run, report structure, targets, case selection, CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.errors import DeviceUnavailableError, UsageError
from kernels_gpu import benchmark as bm
from kernels_gpu import sparse_decode as sd
from kernels_gpu.registry import BenchCase


def fake_case(
    kernel: str = "fake",
    label: str = "n=999",
    optimized: Callable[..., Any] | None = None,
    check: Callable[[Any, Any], None] | None = None,
) -> BenchCase:
    """A fast torch-only case, for harness behaviour that does not need a real kernel."""

    def make_inputs(device: torch.device) -> dict[str, Any]:
        return {"x": torch.randn(999, device=device)}

    return BenchCase(
        kernel=kernel,
        label=label,
        make_inputs=make_inputs,
        optimized=optimized or (lambda x: x * 2),
        torch_path=lambda x: x + x,
        bytes_moved=2 * 999 * 4,
        flops=999,
        targets={"speedup_vs_torch": 1e-9},
        check=check,
    )


def test_cpu_quick_run_times_a_sparse_decode_case_end_to_end() -> None:
    tiny = sd.block_sparse_case(1, 4, 2, 32, 300, 128, block_size=32, seed=3)
    bigger = sd.block_sparse_case(2, 4, 2, 32, 400, 128, block_size=32)  # quick keeps the first of a family
    report = bm.run_benchmark("cpu", quick=True, cases=[tiny, bigger])

    assert [row.label for row in report.rows] == [tiny.label]
    row = report.rows[0]
    assert row.status == "ok" and row.kernel == "block_sparse_decode"
    assert row.time_us is not None and row.time_us > 0 and row.torch_time_us is not None
    assert row.gbps == pytest.approx(tiny.bytes_moved / (row.time_us * 1e-6) / 1e9)
    assert row.bw_fraction == pytest.approx(row.gbps / report.copy_bandwidth.gbps)
    assert row.speedup_vs_torch == pytest.approx(row.torch_time_us / row.time_us)
    assert row.targets == []  # batch 1: no bandwidth target
    assert report.provenance == "measured" and report.device == "cpu" and not report.failed
    assert report.copy_bandwidth.gbps > 0 and report.quick
    assert datetime.fromisoformat(report.timestamp).tzinfo is not None

    table = report.to_markdown()
    assert "| kernel | size | optimized µs | native µs | GB/s | % copy BW |" in table
    assert f"- {bm.NATIVE_NOTE}" in table and report.notes[0] == bm.NATIVE_NOTE
    assert f"| block_sparse_decode | {tiny.label} |" in table
    assert "Copy bandwidth:" in table and "functional check" in table
    data = json.loads(report.to_json())
    assert data["rows"][0]["kernel"] == "block_sparse_decode" and data["provenance"] == "measured"
    assert data["copy_bandwidth"]["buffer_bytes"] == 2**24


def test_failed_check_and_errors_become_rows_and_the_run_goes_on() -> None:
    def mismatch(out: torch.Tensor, ref: torch.Tensor) -> None:
        raise AssertionError("outputs differ by 3%")

    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("kernel launch failed")

    cases = [fake_case("a", check=mismatch), fake_case("b", optimized=broken), fake_case("c")]
    report = bm.run_benchmark("cpu", cases=cases)

    a, b, c = report.rows
    assert (a.status, a.detail, a.time_us) == ("check failed", "outputs differ by 3%", None)
    assert b.status == "error" and b.detail == "running: RuntimeError: kernel launch failed"
    assert c.status == "ok" and c.time_us is not None and [t.met for t in c.targets] == [True]
    assert report.failed
    table = report.to_markdown()
    assert "| a | n=999 | check failed |" in table
    assert "- b [n=999]: error: running: RuntimeError: kernel launch failed" in table


def test_targets_report_whether_and_by_how_much_they_miss() -> None:
    row = bm.BenchRow(
        "k", "s", "ok", time_us=10.0, torch_time_us=30.0, bw_fraction=0.45, speedup_vs_torch=3.0
    )
    checks = bm.evaluate_targets({"bw_fraction": 0.6, "speedup_vs_torch": 2.0, "tflops": 1.0}, row)
    bw, speedup, unknown = checks
    assert not bw.met and bw.shortfall == pytest.approx(0.25)
    assert speedup.met and speedup.shortfall is None
    assert not unknown.met and unknown.achieved is None and "unknown" in unknown.describe()
    row.targets = checks
    line = bm._markdown_row(row)
    assert "≥ 60% copy BW; ≥ 2× native" in line and "no (-25%); yes; no" in line


@pytest.mark.parametrize(
    ("bytes_moved", "l2", "sets"),
    [
        (200_000_000, 50_000_000, 1),
        (10_000_000, 50_000_000, 20),
        (30_000_000, 50_000_000, 7),
        (1, 50_000_000, 32),
    ],
)
def test_input_sets_rotate_until_four_l2_sizes_are_touched(bytes_moved: int, l2: int, sets: int) -> None:
    assert bm.input_sets_needed(bytes_moved, l2) == sets
    assert bm.input_sets_needed(bytes_moved, 0) == 1


def test_select_cases_filters_kernels_and_quick_keeps_the_first() -> None:
    cases = [fake_case("a", "1"), fake_case("b", "1"), fake_case("a", "2")]
    assert [(c.kernel, c.label) for c in bm.select_cases(cases, ["a"], quick=False)] == [
        ("a", "1"),
        ("a", "2"),
    ]
    assert [(c.kernel, c.label) for c in bm.select_cases(cases, None, quick=True)] == [("a", "1"), ("b", "1")]
    with pytest.raises(UsageError, match="kernel\\(s\\) zz; known: a, b"):
        bm.select_cases(cases, ["zz", "a"], quick=False)


def test_collect_cases_skips_a_missing_module_with_a_note() -> None:
    cases, skipped = bm.collect_cases(["sparse_decode", "no_such_kernel"])
    assert {c.kernel for c in cases} == {"block_sparse_decode", "token_sparse_decode"}
    assert skipped == ["kernels_gpu.no_such_kernel: not present"]


def test_bad_devices_are_user_errors() -> None:
    with pytest.raises(UsageError, match="'tpu'"):
        bm.run_benchmark("tpu", cases=[fake_case()])


def test_command_line_prints_and_writes_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        bm, "collect_cases", lambda: ([fake_case("a"), fake_case("b")], ["kernels_gpu.x: not present"])
    )
    # The command line always asks for CUDA; here the CPU stands in for it.
    real_run = bm.run_benchmark
    monkeypatch.setattr(bm, "run_benchmark",
                        lambda device, kernels, quick, **kw: real_run("cpu", kernels, quick, **kw))
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    code = bm.main(["--quick", "--kernels", "b", "--json", str(out_json), "--markdown", str(out_md)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| b | n=999 |" in printed and "| a |" not in printed
    assert "Skipped: kernels_gpu.x: not present" in printed
    assert out_md.read_text(encoding="utf-8") in printed
    assert [row["kernel"] for row in json.loads(out_json.read_text(encoding="utf-8"))["rows"]] == ["b"]

    assert bm.main(["--kernels", "zz"]) == UsageError.exit_code
    assert "no benchmark cases for kernel(s) zz" in capsys.readouterr().err


def test_profile_lists_each_paths_kernels_per_call(tmp_path: Path) -> None:
    case = fake_case(optimized=lambda x: torch.sort(x).values[:5])  # native path: x + x (one add)
    report = bm.run_benchmark("cpu", cases=[case], profile=True)
    row = report.rows[0]
    assert row.status == "ok" and row.profile is not None
    opt = {k.name: k for k in row.profile["optimized"]}
    native = {k.name: k for k in row.profile["native"]}
    assert "aten::sort" in opt and "aten::sort" not in native and "aten::add" in native
    assert opt["aten::sort"].launches == 1 and native["aten::add"].launches == 1  # per call, not per 5 calls
    assert row.profile["optimized"] == sorted(row.profile["optimized"], key=lambda k: -k.us)
    md = report.to_markdown()
    assert "### Where the time goes" in md and "- fake [n=999]: optimized: `aten::sort`" in md
    assert json.loads(report.to_json())["rows"][0]["profile"]["native"][0]["name"].startswith("aten::")
    assert bm.run_benchmark("cpu", cases=[case]).rows[0].profile is None  # off by default


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where CUDA is missing")
def test_command_line_without_cuda_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert bm.main(["--quick"]) == DeviceUnavailableError.exit_code
    assert "no CUDA device is visible" in capsys.readouterr().err


@pytest.mark.gpu
def test_gpu_profile_names_the_triton_kernels() -> None:
    report = bm.run_benchmark("cuda", kernels=["block_sparse_decode"], quick=True, profile=True)
    row = report.rows[0]
    assert row.status == "ok" and row.profile is not None
    names = [k.name for k in row.profile["optimized"]]
    assert any("_block_sparse_split_kernel" in n for n in names), names
    assert all(k.us > 0 and k.launches > 0 for k in row.profile["optimized"])


@pytest.mark.gpu
def test_gpu_quick_run_uses_cuda_graphs_and_measures_bandwidth() -> None:
    report = bm.run_benchmark("cuda", kernels=["block_sparse_decode", "token_sparse_decode"], quick=True)
    assert len(report.rows) == 2 and not report.failed
    assert report.copy_bandwidth.gbps > 100 and report.driver is not None
    for row in report.rows:
        assert (
            row.timing.startswith("cuda-graph") and row.bw_fraction is not None and 0 < row.bw_fraction < 1.5
        )
