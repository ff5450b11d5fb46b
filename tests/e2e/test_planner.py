"""The placement planner: `auto` offloads only where the FPGA's modeled time beats the GPU's measured time."""

from bench.planner import decide
from bench.runner import Runner
from bench.suite import load_suite


def test_decide_compares_offloaded_sections_only():
    sections = {"dense": 5e-3, "relevancy+retrieval": 2e-4, "apply": 1e-4}
    d = decide(sections, {"relevancy+retrieval"}, 1e-4)
    assert d.offload and d.gpu_ms == 0.2 and d.fpga_ms == 0.1 and "-> FPGA" in d.reason
    d = decide(sections, {"relevancy+retrieval"}, 3e-4)
    assert not d.offload and "-> GPU" in d.reason
    assert d.to_dict()["fpga_provenance"] == "analytic"


def _auto_suite(write_suite, tmp_path, spec):
    text = write_suite(spec=spec).read_text().replace("  hetero: {relevancy: fpga, retrieval: fpga}\n",
                                                      "  hetero: {relevancy: fpga, retrieval: fpga}\n  auto: auto\n")
    path = tmp_path / "auto.yaml"
    path.write_text(text)
    return load_suite(path)


def test_auto_falls_back_to_the_gpu_when_the_fpga_loses(write_suite, slow_spec, tmp_path):
    run = Runner(_auto_suite(write_suite, tmp_path, str(slow_spec)), tmp_path / "out").run()
    warm = next(r for r in run.records() if r["kind"] == "warmup" and r["placement"] == "auto")
    assert warm["planner"]["offload"] is False and warm["planner"]["fpga_ms"] >= 20
    trials = [r for r in run.records() if r["kind"] == "trial" and r["placement"] == "auto"]
    assert trials and all(set(t["placement_map"]["steps"].values()) == {"gpu"} for t in trials)
    assert all("fpga" not in t for t in trials)


def test_auto_offloads_when_the_fpga_wins(write_suite, tmp_path):
    text = write_suite().read_text().replace("{mode: emulated, spec: u55c}",
                                             "{mode: emulated, spec: u55c, control: free-running}")
    path = tmp_path / "fast.yaml"
    path.write_text(text.replace("  hetero: {relevancy: fpga, retrieval: fpga}\n",
                                 "  hetero: {relevancy: fpga, retrieval: fpga}\n  auto: auto\n"))
    run = Runner(load_suite(path), tmp_path / "out").run()
    warm = next(r for r in run.records() if r["kind"] == "warmup" and r["placement"] == "auto")
    d = warm["planner"]
    assert d["offload"] == (d["fpga_ms"] < d["gpu_ms"])
    trials = [r for r in run.records() if r["kind"] == "trial" and r["placement"] == "auto"]
    on_fpga = trials[0]["placement_map"]["steps"]["relevancy"] == "fpga"
    assert on_fpga == d["offload"] and (("fpga" in trials[0]) == d["offload"])


def test_auto_needs_a_baseline(write_suite, tmp_path):
    import pytest

    from bench.errors import SuiteError

    text = write_suite().read_text().replace("  baseline: {}\n", "").replace(
        "  hetero: {relevancy: fpga, retrieval: fpga}\n", "  auto: auto\n")
    path = tmp_path / "nobase.yaml"
    path.write_text(text)
    with pytest.raises(SuiteError, match="declare one"):
        load_suite(path)
