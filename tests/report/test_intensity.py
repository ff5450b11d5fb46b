"""Step counts (bench.report.intensity) and roofline data (bench.report.roofline)."""

import random
import re

import pytest

from bench.export import case_rows
from bench.report import intensity as it
from bench.report import roofline as rl
from kernels_gpu.relevancy_topk import bench_cases as relevancy_cases
from kernels_gpu.sparse_decode import block_sparse_case


def _shape(**kw):
    base = {"layers": 1, "heads": 8, "kv_heads": 2, "head_dim": 32, "batch": 3, "context": 1000,
            "decode_tokens": 1, "params": {"block_size": 64, "token_budget": 256, "gate_dim": 128}}
    base.update(kw)
    return it.CaseShape(**base)


@pytest.mark.parametrize(("batch", "hq", "hkv", "d", "context", "budget"),
                         [(3, 12, 4, 64, 5000, 1024), (1, 32, 8, 128, 32768, 4096), (5, 6, 2, 96, 700, 192)])
def test_apply_counts_match_the_block_sparse_kernel_benchmark(batch, hq, hkv, d, context, budget):
    # kernels_gpu.sparse_decode counts its own bytes and FLOPs; same case, same numbers.
    case = block_sparse_case(batch, hq, hkv, d, context, budget)
    seq_len = context - 64 // 3
    shape = _shape(heads=hq, kv_heads=hkv, head_dim=d, batch=batch,
                   params={"block_size": 64, "token_budget": budget - 64, "gate_dim": 128})
    cost = it.seer_apply(shape, seq_len)
    assert cost.flop == case.flops and cost.bytes == case.bytes_moved


def test_fused_relevancy_counts_match_the_relevancy_topk_benchmark():
    # kernels_gpu.relevancy_topk's SeerAttention-R gate cases (gate dim 128), counted there independently.
    cases = [c for c in relevancy_cases() if c.label.startswith("seer ")]
    assert cases
    for case in cases:
        label = re.fullmatch(r"seer B=(\d+) H=(\d+) N=(\d+) k=(\d+)", case.label)
        b, h, n, k = (int(x) for x in label.groups())
        shape = _shape(kv_heads=h, heads=4 * h, batch=b,
                       params={"block_size": 64, "token_budget": 64 * k, "gate_dim": 128})
        cost = it.seer_fused(shape, 64 * n + 1)  # n complete blocks before the current one
        assert cost.bytes == case.bytes_moved
        assert cost.flop == case.flops + b * h * n  # plus one comparison per score for the selection


def test_apply_attends_every_selected_token_by_enumeration():
    rng = random.Random(5)
    shape = _shape(batch=2, layers=3)
    for length in (1, 63, 64, 65, 300, 1000, 4097):
        cur = (length - 1) // 64
        chosen = rng.sample(range(cur), min(4, cur))  # any k distinct complete blocks
        positions = {p for b in chosen for p in range(b * 64, b * 64 + 64)} | set(range(cur * 64, length))
        assert it.seer_apply(shape, length).flop == 4 * 8 * 32 * len(positions) * 2 * 3


def test_fusing_keeps_the_work_and_drops_the_score_round_trip():
    shape = _shape(context=12345)
    for length in (65, 4000, 12346):
        rel, ret, fused = (f(shape, length) for f in (it.seer_relevancy, it.seer_retrieval, it.seer_fused))
        assert fused.flop == rel.flop + ret.flop
        n = (length - 1) // 64
        assert rel.bytes + ret.bytes - fused.bytes == 2 * 3 * 2 * n * 4  # rows x scores written then read


def test_prepare_shares_gate_weights_across_the_batch_and_adds_block_keys():
    one, four = (it.seer_prepare(_shape(batch=b), 1000) for b in (1, 4))
    assert four.flop == 4 * one.flop and one.bytes < four.bytes < 4 * one.bytes
    closing = it.seer_prepare(_shape(), 64)  # position 63 completes block 0
    assert closing.flop > it.seer_prepare(_shape(), 65).flop


def test_step_costs_average_over_the_decoded_positions():
    shape = _shape(context=60, decode_tokens=8)  # positions 60..67 (lengths 61..68) close block 0 once
    avg = it.step_costs("seer-attention-r", shape)["prepare"]
    each = [it.seer_prepare(shape, n) for n in shape.lengths()]
    assert avg.flop == pytest.approx(sum(c.flop for c in each) / 8)
    assert min(c.flop for c in each) < avg.flop < max(c.flop for c in each)
    assert set(it.step_costs("seer-attention-r", shape)) == {"prepare", "relevancy", "retrieval",
                                                            "relevancy+retrieval", "apply"}
    assert it.step_costs("no-such-method", shape) == {} and it.fpga_calls("no-such-method", shape) == []


def test_gpu_roofs_by_name_with_sources():
    h200, _ = rl.gpu_roof("NVIDIA H200")
    assert (h200.bandwidth, h200.peak, h200.provenance) == (4.8e12, 989e12, "analytic")
    assert rl.gpu_roof("NVIDIA H100 80GB HBM3")[0].bandwidth == 3.35e12
    assert rl.gpu_roof("NVIDIA H100 PCIe")[0].bandwidth == 2.0e12
    assert rl.gpu_roof("NVIDIA A100-SXM4-80GB")[0].bandwidth == 2.039e12
    for unknown in ("NVIDIA H200 NVL", "Intel(R) Xeon(R) Processor"):
        roof, why = rl.gpu_roof(unknown)
        assert roof is None and "no peak figures" in why
    assert h200.attainable(1.0) == 4.8e12 and h200.attainable(1e4) == 989e12
    assert h200.ridge == pytest.approx(989 / 4.8)


def test_measured_copy_bandwidth_replaces_the_spec_for_the_same_card():
    report = {"card": "NVIDIA H100 80GB HBM3", "timestamp": "t",
              "copy_bandwidth": {"gbps": 3030.0, "method": "m"}}
    roof, _ = rl.gpu_roof("NVIDIA H100 80GB HBM3", report)
    assert roof.bandwidth == 3.03e12 and roof.provenance == "measured" and roof.peak == 989e12
    assert rl.gpu_roof("NVIDIA H200", report)[0].provenance == "analytic"  # another card's report is ignored
    odd, _ = rl.gpu_roof("Odd GPU", {**report, "card": "Odd GPU"})
    assert odd.peak is None and odd.attainable(1e6) == 3.03e18


def test_fpga_roof_from_the_recorded_spec(fixture_run):
    roof = rl.fpga_roof(fixture_run.meta()["fpga"]["fpga"])
    assert roof.bandwidth == 4.0e11 and roof.peak == 9024 * 2 * 250e6
    (label, pe_peak), = roof.ceilings
    assert "PE array" in label and 0 < pe_peak < roof.peak


def test_gpu_points_are_counts_over_measured_step_times(fixture_run):
    meta = fixture_run.meta()
    rows = case_rows(fixture_run.records(), meta)
    points, notes = rl.gpu_points(meta, rows)
    assert not notes and {p.placement for p in points} == {"baseline", "baseline-torch"}
    assert {p.step for p in points} == {"prepare", "relevancy", "retrieval", "relevancy+retrieval", "apply"}
    p = next(p for p in points if p.step == "apply" and p.case_id == "context=16384,batch=1"
             and p.placement == "baseline")
    row = next(r for r in rows if r["case_id"] == p.case_id and r["placement"] == "baseline")
    cost = it.step_costs("seer-attention-r", rl.case_shape(meta, row))["apply"]
    assert p.seconds == pytest.approx(row["figures"]["step_apply_ms"]["mean"] / 1e3)
    assert p.performance == pytest.approx(cost.flop / p.seconds) and p.intensity == cost.intensity
    assert p.provenance == "analytic" and p.time_provenance == "measured"
    assert 3 < p.intensity < 5  # GQA group of 4 over bf16 K and V: about 4 FLOP/B


def test_fpga_points_use_the_calls_the_method_makes(tiny_run):
    # The run recorded the FPGA model's kernel time per call for the method's own calls.
    meta = tiny_run.meta()
    points, roofs, notes = rl.fpga_points(meta, case_rows(tiny_run.records(), meta))
    assert not notes and len(points) == 4 and len(roofs) == 1
    trials = [r for r in tiny_run.records() if r["kind"] == "trial" and r["placement"] == "hetero"]
    for p in points:
        t = next(t for t in trials if t["case_id"] == p.case_id)
        per_call_us = p.seconds / t["model"]["layers"] * 1e6
        assert per_call_us == pytest.approx(t["fpga"]["modeled_us_per_call"]["kernel"], rel=1e-9)
        assert p.kind == "fpga" and p.provenance == "analytic" and p.intensity > 0
