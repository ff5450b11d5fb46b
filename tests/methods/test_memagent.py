"""MemAgent: a round against a cache-free greedy reference, the analytic FPGA decode and HBM fit, the
prepare-only hetero placement, and tiny runs through the Runner."""

import pytest
import torch

from bench.devices.fpga import FpgaDevice, resolve_spec
from bench.errors import SuiteError, UsageError
from bench.methods.memagent import (
    ChunkQuery,
    DecodeEngineModel,
    MemAgentParams,
    MemAgentWorkload,
    NearestMemory,
    chunk_spans,
    fpga_decode,
    fpga_fit,
)
from bench.model.decoder import Decoder
from bench.model.presets import PRESETS, ModelShape
from bench.pipeline import Placement, Step
from bench.runner import Runner
from bench.suite import Case, load_suite, parse_suite
from bench.timeline import HostTimeline
from kernels_fpga.model import FpgaModel

SMALL = ModelShape("s", 2, 64, 4, 2, 16, 128, 1000, 1 << 20)
HETERO = Placement("hetero", {**dict.fromkeys(Step, "gpu"), Step.PREPARE: "fpga"})


def _workload(context=50, batch=2, memory_tokens=5):
    model = Decoder(SMALL.with_layers(1), torch.float32, torch.device("cpu"), seed=0)
    params = MemAgentParams(chunk=24, problem_tokens=6, memory_tokens=memory_tokens)
    return model, MemAgentWorkload(params, model, Case("c", "e", context, batch, params, {}), 1, 0)


def _greedy_without_cache(model, prompt, n):
    """Greedy decoding that re-prefills the whole sequence every step (no KV cache carried over)."""
    seq = prompt
    for _ in range(n):
        nxt = model.prefill(seq, model.new_cache(seq.shape[0], seq.shape[1]))
        seq = torch.cat((seq, nxt[:, None]), dim=1)
    return seq[:, prompt.shape[1] :]


def test_a_round_prefills_then_decodes_the_new_memory_greedily():
    model, w = _workload()
    m, memory = w.method, w.memory
    query = ChunkQuery(w.problem, w.document[:, :24])
    m.apply(memory, NearestMemory(memory.tokens), query)
    draft = m.prepare(memory, query)
    prompt = torch.cat((w.problem, w.document[:, :24], w.initial), dim=1)
    assert torch.equal(draft.tokens, _greedy_without_cache(model, prompt, 5))
    assert memory.prefilled == 6 + 24 + 5 and memory.cache.length == memory.prefilled + 4
    selection = m.retrieve(memory, m.relevancy(draft, query))
    assert torch.equal(selection.tokens, draft.tokens) and torch.equal(memory.tokens, draft.tokens)


def test_rounds_cover_the_document():
    assert chunk_spans(50, 24) == [(0, 24), (24, 24), (48, 2)]
    assert chunk_spans(24, 24) == [(0, 24)]
    _, w = _workload(context=50)
    assert w.steps_per_iteration == 3 and w.tokens_per_iteration == 3 * 5 * 2
    assert w.cache_tokens(w.params, 50) == 6 + 24 + 2 * 5 - 1


def test_iterations_repeat_from_the_initial_memory():
    _, w = _workload()
    run = w.bind(Placement("b", dict.fromkeys(Step, "gpu")), None)
    timeline = HostTimeline()
    run(timeline)
    first = w.memory.tokens.clone()
    assert not torch.equal(first, w.initial)
    w.rewind()
    run(timeline)
    assert torch.equal(w.memory.tokens, first)
    assert set(timeline.totals()) == {"apply", "prepare", "retrieval"}  # relevancy is N/A


def test_fpga_decode_is_bandwidth_bound_at_batch_1_and_dsp_bound_at_large_batch():
    fm = FpgaModel("u55c")
    spec = fm.spec
    bw, dsps, clock = spec.value("hbm.bw_total_measured"), spec.value("resources.dsps"), fm.clock_hz
    streamed = SMALL.weight_params() - SMALL.vocab * SMALL.hidden
    kv = SMALL.kv_bytes_per_token(2)
    one = fpga_decode(fm, SMALL, 1, 100, 3, 16)
    expect = sum((2 * streamed + (t + 1) * kv) / bw for t in range(100, 103))
    assert one.seconds == pytest.approx(expect) and one.breakdown["compute_bound"] == 0
    assert one.cycles == pytest.approx(one.breakdown["memory_bound"] + one.breakdown["compute_bound"])
    assert one.hbm_bytes == sum(2 * streamed + (t + 1) * kv for t in range(100, 103))
    big = fpga_decode(fm, SMALL, 4096, 10, 1, 16)
    macs = 4096 * (streamed + 2 * SMALL.layers * SMALL.heads * SMALL.head_dim * 11)
    assert big.seconds == pytest.approx(macs / (dsps * clock)) and big.breakdown["memory_bound"] == 0
    # int8 weights: half the weight bytes, twice the MACs per DSP.
    assert fpga_decode(fm, SMALL, 4096, 10, 1, 8).seconds == pytest.approx(big.seconds / 2)
    assert fpga_decode(fm, SMALL, 1, 100, 0, 16).seconds == 0.0


def test_qwen_7b_bf16_barely_fits_the_u55c():
    spec = FpgaModel("u55c").spec
    qwen = PRESETS["qwen2.5-7b"]
    fit = fpga_fit(spec, qwen, 1, 8192, 16)
    assert fit["weight_bytes"] == 2 * qwen.weight_params() and 15e9 < fit["weight_bytes"] < 16e9
    assert fit["fits"] and fit["hbm_bytes"] == 16 * 2**30
    kv_seq = 8192 * qwen.kv_bytes_per_token(2)
    assert fit["max_batch"] == (16 * 2**30 - fit["weight_bytes"]) // kv_seq == 4
    assert not fpga_fit(spec, qwen, 8, 8192, 16)["fits"]
    assert fpga_fit(spec, qwen, 8, 8192, 8)["fits"]


def test_hetero_placement_decodes_on_the_fpga_and_replays_the_tape():
    _, w = _workload()
    fpga = FpgaDevice("fpga", "emulated", resolve_spec("u55c"), torch.device("cpu"))
    base_power = fpga.model.dynamic_power_w
    run = w.bind(HETERO, fpga)
    assert isinstance(fpga.model, DecodeEngineModel) and fpga.model.dynamic_power_w > base_power
    fpga.record()
    run(HostTimeline())
    assert fpga.recall == 1.0  # the functional pass decodes with the GPU's weights
    stats = fpga.tape_stats()
    assert stats.calls == 3  # one offload per round
    memory = w.memory.tokens.clone()
    w.rewind()
    fpga.replay()
    run(HostTimeline())
    assert torch.equal(w.memory.tokens, memory)
    baseline = w.bind(Placement("b", dict.fromkeys(Step, "gpu")), None)
    w.rewind()
    baseline(HostTimeline())
    assert torch.equal(w.memory.tokens, memory)
    # The modeled time of the last round: launch, KV in, four decode steps, token ids out.
    m = fpga.model
    s = w.model.shape
    kernel = fpga_decode(m, s, 2, 6 + 2 + 5, 4, 16)
    expect = (m.launch_s + m.transfer(2 * (13 * s.kv_bytes_per_token(2) + 4), "to_fpga") + kernel.seconds
              + m.transfer(2 * 5 * 4, "to_gpu"))
    assert fpga.modeled_time(w.method.fpga_call(w.memory, ChunkQuery(w.problem, w.document[:, 48:])))[0] == (
        pytest.approx(expect))


SUITE = """\
name: memagent-test
model: {layers: 1, hidden: 64, heads: 4, kv_heads: 2, head_dim: 16, ffn: 128, vocab: 1000}
method: {name: memagent, chunk: 24, problem_tokens: 6, memory_tokens: 4}
matrix: {context: [30], batch: [2]}
placements:
  baseline: {}
  hetero: PLACEMENT
devices:
  gpu: {device: cpu}
  fpga: {mode: emulated, spec: u55c, wait: host, functional: FUNCTIONAL}
measure: {warmup: 0, trials: 1, min_duration_s: 0.0, min_iterations: 1, idle_s: 0, composition: false}
"""


def _suite(tmp_path, placement="{prepare: fpga}", functional="reference"):
    path = tmp_path / "memagent.yaml"
    path.write_text(SUITE.replace("PLACEMENT", placement).replace("FUNCTIONAL", functional))
    return path


def test_tiny_run_through_the_runner(tmp_path):
    run = Runner(load_suite(_suite(tmp_path)), tmp_path / "out").run()
    records = run.records()
    assert not [r for r in records if r["kind"] == "failed"]
    trials = {r["placement"]: r for r in records if r["kind"] == "trial"}
    assert set(trials["baseline"]["steps_ms"]) == {"apply", "prepare", "retrieval"}
    hetero = trials["hetero"]
    assert set(hetero["steps_ms"]) == {"apply", "prepare", "retrieval"}
    assert hetero["fpga"]["calls_per_token"] == 1  # one decode offload per round (latency is per round)
    assert hetero["metrics"]["latency_ms"]["provenance"] == "emulated"
    warm = next(r for r in records if r["kind"] == "warmup" and r["placement"] == "hetero")
    assert warm["functional_pass"]["recall"] == 1.0


def test_only_prepare_moves_to_the_fpga_and_csim_is_refused(tmp_path):
    with pytest.raises(SuiteError, match="only prepare"):
        parse_suite(_suite(tmp_path, "{relevancy: fpga, retrieval: fpga}").read_text(), "t.yaml")
    with pytest.raises(UsageError, match="no HLS kernel"):
        Runner(load_suite(_suite(tmp_path, functional="csim")), tmp_path / "out").run()


def test_shipped_suites_parse_and_fit_an_80_gb_gpu():
    from bench.methods import get_method

    agent = get_method("memagent")
    for name in ("memagent", "memagent-tiny"):
        suite = load_suite(f"suites/methods/{name}.yaml")
        exp = next(iter(suite.experiments.values()))
        for case in suite.cases():
            need = agent.memory_bytes(case.params, exp.model.shape(), case, 1, 2)
            assert sum(need.values()) + agent.weight_bytes(exp.model) < 70 * 2**30
