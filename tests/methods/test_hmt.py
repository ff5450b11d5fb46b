"""HMT: the recall against a float64 reference, the bank ring, the query pass, the FPGA numerics against the
HLS kernel, and tiny runs through the Runner."""

import math

import pytest
import torch
import torch.nn.functional as F

from bench.errors import SuiteError
from bench.methods.hmt import (
    HmtMethod,
    HmtParams,
    HmtWorkload,
    MemoryBank,
    RecallIndex,
    RecallWeights,
    SegmentQuery,
    last_hidden,
    slot_recall,
)
from bench.model.decoder import Decoder
from bench.model.presets import PRESETS
from bench.pipeline import Placement, Step
from bench.runner import Runner
from bench.suite import Case, load_suite, parse_suite
from bench.timeline import HostTimeline, NullTimeline


def _model(seed=0):
    return Decoder(PRESETS["tiny"].with_layers(1), torch.float32, torch.device("cpu"), seed=seed)


def _method(params, model, kernels="torch", seed=3):
    return HmtMethod(params, model, RecallWeights.synthetic(params, model, seed), kernels)


def _bank(batch, n_slots, count, hidden, r, gen):
    values = torch.randn(batch, n_slots, hidden, generator=gen)
    keys = torch.randn(batch, n_slots, r, generator=gen)
    return MemoryBank(values, keys, count, None)


def _reference_recall(q, keys, values, r, k=None):
    """softmax(q . K / sqrt(r)) V in float64, over all entries or the k best."""
    s = torch.einsum("bnr,br->bn", keys.double(), q.double()) / math.sqrt(r)
    if k is not None:
        drop = torch.ones_like(s, dtype=torch.bool)
        drop.scatter_(1, s.topk(k, dim=1).indices, False)
        s = s.masked_fill(drop, -math.inf)
    return torch.einsum("bn,bnh->bh", torch.softmax(s, dim=1), values.double())


@pytest.mark.parametrize("retrieval", ["weighted-sum", "top-k"])
@pytest.mark.parametrize("kernels", ["torch", "optimized"])
def test_recall_matches_a_float64_reference(retrieval, kernels):
    gen = torch.Generator().manual_seed(11)
    model = _model()
    params = HmtParams(bank=9, recall_dim=24, retrieval=retrieval, top_k=3)
    m = _method(params, model, kernels)
    bank = _bank(3, 9, 7, 256, 24, gen)  # 7 of 9 slots filled
    q = torch.randn(3, 24, generator=gen)
    index = RecallIndex(bank.keys, bank.n_valid, q, None)
    fused = kernels == "optimized"
    got = m.relevancy_retrieve(bank, index, None) if fused else m.retrieve(bank, m.relevancy(index, None))
    k = 3 if retrieval == "top-k" else None
    expect = _reference_recall(q, bank.keys[:, :7], bank.values[:, :7], 24, k)
    assert got.memory.shape == (3, 1, 256)
    torch.testing.assert_close(got.memory[:, 0].double(), expect, rtol=1e-5, atol=1e-5)
    if retrieval == "top-k":
        assert got.slots.shape == (3, 3) and bool((got.slots >= 0).all()) and bool((got.slots < 7).all())


def test_top_k_pads_when_the_bank_holds_fewer_and_equals_the_weighted_sum_then():
    gen = torch.Generator().manual_seed(12)
    model = _model()
    bank = _bank(2, 6, 2, 256, 16, gen)
    q = torch.randn(2, 16, generator=gen)
    index = RecallIndex(bank.keys, bank.n_valid, q, None)
    topk = _method(HmtParams(bank=6, recall_dim=16, retrieval="top-k", top_k=4), model, "optimized")
    whole = _method(HmtParams(bank=6, recall_dim=16), model)
    got = topk.relevancy_retrieve(bank, index, None)
    assert got.slots[:, 2:].eq(-1).all()  # two filled slots, k = 4
    torch.testing.assert_close(got.memory, whole.retrieve(bank, whole.relevancy(index, None)).memory)


def test_prepare_fills_the_ring_and_drops_the_oldest():
    model = _model()
    params = HmtParams(segment=16, sensory=2, bank=3, recall_dim=8, sum_fraction=0.25)
    m = _method(params, model)
    bank = MemoryBank(torch.zeros(1, 3, 256), torch.zeros(1, 3, 8), 0, None)
    query = SegmentQuery(torch.arange(16).view(1, 16), torch.arange(2).view(1, 2))
    first = m.prepare(bank, query)
    assert first.new_slot is None and first.n_valid == 0
    for i in range(5):
        entry = torch.full((1, 256), float(i + 1))
        bank.pending = entry
        index = m.prepare(bank, query)
        assert index.new_slot == i % 3 and bank.count == i + 1 and index.n_valid == min(i + 1, 3)
        assert bank.pending is None
        torch.testing.assert_close(bank.keys[:, i % 3], F.linear(entry, m.weights.wk))
    assert bank.values[0, :, 0].tolist() == [4.0, 5.0, 3.0]  # entries 1 and 2 were evicted
    assert index.query.shape == (1, 8)


def test_the_query_pass_is_the_backbones_causal_forward():
    model = _model()
    tokens = torch.randint(0, 1024, (2, 13), generator=torch.Generator().manual_seed(4))
    hidden = last_hidden(model, F.embedding(tokens, model.embed), *model.rope.cos_sin(torch.arange(13)))
    cache = model.new_cache(2, 13)
    assert torch.equal(F.linear(hidden, model.lm_head).argmax(-1), model.prefill(tokens, cache))


def test_titans_variant_projects_the_segment_instead():
    model = _model()
    params = HmtParams(segment=16, sensory=2, bank=3, recall_dim=8, variant="titans")
    m = _method(params, model)
    bank = MemoryBank(torch.zeros(1, 3, 256), torch.zeros(1, 3, 8), 0, None)
    tokens = torch.arange(16).view(1, 16)
    index = m.prepare(bank, SegmentQuery(tokens, tokens[:, :2]))
    head = F.embedding(tokens[:, :8], model.embed).mean(dim=1)
    torch.testing.assert_close(index.query, F.linear(F.linear(head, m.weights.w_titans), m.weights.wq))


@pytest.mark.parametrize("retrieval", ["weighted-sum", "top-k"])
def test_fpga_reference_equals_csim_and_tracks_the_gpu(retrieval):
    gen = torch.Generator().manual_seed(13)
    model = _model()
    params = HmtParams(bank=40, recall_dim=128, retrieval=retrieval, top_k=5)  # the kernels' compiled width
    m = _method(params, model)
    hidden = 256
    values = F.rms_norm(torch.randn(2, 40, hidden, generator=gen), (hidden,))
    bank = MemoryBank(values, F.linear(values, m.weights.wk), 33, None)
    q = F.linear(F.rms_norm(torch.randn(2, hidden, generator=gen), (hidden,)), m.weights.wq)
    index = RecallIndex(bank.keys, bank.n_valid, q, 32)
    call = m.fpga_call(bank, index, m.fpga_scales())
    ref, sim = call.reference(), call.csim()
    assert torch.equal(ref.memory, sim.memory)
    gpu = m.retrieve(bank, m.relevancy(index, None))
    assert m.recall(ref, gpu) > (0.99 if retrieval == "weighted-sum" else 0.79)
    assert call.bytes_in == 2 * 128 * 2 and call.bytes_out == 2 * hidden * 2
    assert call.bytes_append == 2 * (hidden + 128) * 2
    if retrieval == "top-k":
        assert call.shape == {"rows": 2, "n_keys": 33, "dim": 128, "k": 5, "new_keys": 1}
    else:  # the weighted sum is modeled as a second pass of the PE array
        assert call.shape == {"rows": 4, "n_keys": 33, "dim": hidden, "k": 1, "new_keys": 1}


def test_slot_recall():
    gpu = torch.tensor([[0, 1, 2, -1], [5, -1, -1, -1]])
    assert slot_recall(torch.tensor([[2, 1, 0, -1], [5, -1, -1, -1]]), gpu) == 1.0
    assert slot_recall(torch.tensor([[2, 7, 8, -1], [6, -1, -1, -1]]), gpu) == pytest.approx(1 / 6)


def test_params_that_cannot_go_together():
    assert HmtParams(segment=16, sensory=16).problems()[0][0] == "sensory"
    assert HmtParams(segment=16, sensory=2, sum_fraction=0.01).problems()[0][0] == "sum_fraction"
    assert HmtParams(bank=3, retrieval="top-k", top_k=4).problems()[0][0] == "top_k"
    assert HmtParams().problems() == []


def _workload(context=96, retrieval="weighted-sum", batch=2):
    model = _model()
    params = HmtParams(segment=16, sensory=4, bank=3, recall_dim=32, retrieval=retrieval, top_k=2, segments=2)
    return HmtWorkload(params, model, Case("c", "e", context, batch, params, {}), 1, 0)


def test_the_bank_starts_as_the_context_left_it_and_iterations_repeat():
    w = _workload(context=96)  # 6 segments read: 5 in the bank (3 kept), the newest pending
    assert w.bank.count == 5 and w.bank.n_valid == 3 and w.bank.pending is not None
    run = w.bind(Placement("b", dict.fromkeys(Step, "gpu"), "torch"), None)
    timeline = HostTimeline()
    run(timeline)
    first = w.bank.pending.clone()
    assert w.bank.count == 7
    w.rewind()
    run(NullTimeline())
    torch.testing.assert_close(w.bank.pending, first)
    assert set(timeline.totals()) == {"prepare", "relevancy", "retrieval", "apply", "dense"}
    assert w.steps_per_iteration == 2 and w.tokens_per_iteration == 2 * 16 * 2


def test_an_empty_bank_recalls_the_memory_token():
    w = _workload(context=0)
    assert w.bank.count == 0 and w.bank.pending is None
    timeline = HostTimeline()
    w.bind(Placement("b", dict.fromkeys(Step, "gpu")), None)(timeline)
    assert w.bank.count == 1  # the first segment's embedding entered the bank before the second's recall
    assert "relevancy+retrieval" in timeline.totals()


SUITE = """\
name: hmt-test
model: {preset: tiny, layers: 1}
method: {name: hmt, segment: 16, sensory: 4, bank: 4, recall_dim: 128, segments: 2, top_k: 2}
matrix: {context: [96], batch: [2], retrieval: [weighted-sum, top-k]}
placements:
  baseline: {}
  baseline-torch: {kernels: torch}
  hetero: {relevancy: fpga, retrieval: fpga}
devices:
  gpu: {device: cpu}
  fpga: {mode: emulated, spec: u55c, wait: host, functional: csim}
measure: {warmup: 0, trials: 1, min_duration_s: 0.0, min_iterations: 1, idle_s: 0, composition: false}
"""


def test_tiny_run_through_the_runner(tmp_path):
    path = tmp_path / "hmt.yaml"
    path.write_text(SUITE)
    run = Runner(load_suite(path), tmp_path / "out").run()
    records = run.records()
    assert not [r for r in records if r["kind"] == "failed"]
    trials = [r for r in records if r["kind"] == "trial"]
    assert len(trials) == 6
    for r in trials:
        steps = r["steps_ms"]
        if r["placement"] == "baseline":
            assert set(steps) == {"prepare", "relevancy+retrieval", "apply", "dense"}
        elif r["placement"] == "baseline-torch":
            assert set(steps) == {"prepare", "relevancy", "retrieval", "apply", "dense"}
        else:
            fused = steps["relevancy+retrieval"]
            assert fused["provenance"] == "emulated" and fused["device"] == "fpga"
            assert steps["prepare"]["device"] == "gpu" and steps["dense"]["device"] == "gpu"
            assert r["fpga"]["calls_per_token"] == 1  # one recall per segment (latency is per segment)
            assert r["metrics"]["latency_ms"]["provenance"] == "emulated"
    for warm in (r for r in records if r["kind"] == "warmup" and r["placement"] == "hetero"):
        assert warm["functional_pass"]["mode"] == "csim" and warm["functional_pass"]["recall"] > 0.9


def test_only_relevancy_and_retrieval_go_to_the_fpga():
    with pytest.raises(SuiteError, match="together"):
        parse_suite(SUITE.replace("{relevancy: fpga, retrieval: fpga}", "{prepare: fpga}"), "t.yaml")


def test_shipped_suites_parse_and_fit_an_80_gb_gpu():
    from bench.methods import get_method

    for name in ("hmt", "hmt-tiny"):
        suite = load_suite(f"suites/methods/{name}.yaml")
        exp = next(iter(suite.experiments.values()))
        hmt = get_method("hmt")
        for case in suite.cases():
            need = hmt.memory_bytes(case.params, exp.model.shape(), case, 1, 2)
            assert sum(need.values()) + hmt.weight_bytes(exp.model) < 60 * 2**30
