"""DeepSeek Sparse Attention in the MLA model: the four steps against simple references, the FPGA numerics
against the C-simulation, the model's MoE and sizes, and a tiny suite end to end through the Runner."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from bench.devices.fpga import SPEC_DIR, FpgaDevice
from bench.errors import SuiteError, UsageError
from bench.methods import dsa
from bench.methods.dsa import (
    DeepSeekSparseAttention,
    DsaAttention,
    DsaParams,
    DsaWorkload,
    IndexerIndex,
    IndexerQuery,
    LatentMemory,
    fpga_index_scores,
    fpga_query,
    hadamard,
)
from bench.methods.seer_attention import exact_topk
from bench.model.mla import (
    MLA_PRESETS,
    DenseMlaAttention,
    MlaAttentionInput,
    MlaDecoder,
    dense_mla_decode,
    routed_experts,
)
from bench.pipeline import Placement, Step
from bench.records import value
from bench.suite import ModelConfig, load_suite, parse_suite
from bench.timeline import HostTimeline, NullTimeline
from kernels_fpga import reference as fpga_ref
from tests.methods.sparse_suite import run_tiny

TINY = MLA_PRESETS["deepseek-tiny"]
CPU = torch.device("cpu")
GPU_ONLY = {s: "gpu" for s in Step}
HETERO = {Step.PREPARE: "gpu", Step.RELEVANCY: "fpga", Step.RETRIEVAL: "fpga", Step.APPLY: "gpu"}


def _setup(context, topk, batch=2, dtype=torch.float32, keys="bf16", seed=0, spare=16):
    model = MlaDecoder(TINY, dtype, CPU, seed=seed)
    cache = model.new_cache(batch, context + spare)
    method = DeepSeekSparseAttention(DsaParams(topk=topk, index_keys=keys), kernels="torch")
    method.attach(model, cache)
    model.fill_cache(cache, context, seed=seed + 1, chunk=64, on_chunk=method.observe_fill)
    method.fill_done(context)
    return model, cache, method


def _step_inputs(model, cache, seed):
    """One decode step's attention input for layer 0 (the new latent row written, as decode_step does)."""
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(cache.latent[0].shape[0], TINY.hidden, generator=gen).to(model.device, model.dtype)
    pos = cache.length
    x, q_c, q, row = model.layers[0].project(h, *model.rope_at(pos))
    cache.latent[0][:, pos] = row
    cache.length = pos + 1
    return MlaAttentionInput(0, x, q_c, q, pos, cache)


def test_sparse_mla_equals_dense_mla_when_topk_covers_every_token():
    context = 203
    model, cache, method = _setup(context, topk=2048)
    dense = model.new_cache(2, context + 16)
    for a, b in zip(dense.latent, cache.latent, strict=True):
        a.copy_(b)
    for kernels in ("torch", "optimized"):
        cache.length = dense.length = context
        backend = DsaAttention(method.with_kernels(kernels), Placement("b", GPU_ONLY, kernels), None)
        inp = _step_inputs(model, cache, seed=3)
        out = backend.decode(inp, HostTimeline())
        ref = dense_mla_decode(inp.q, cache.latent[0], cache.length, TINY.d_v)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        cache.length = context
        t_sparse = t_dense = torch.tensor([3, 250])
        for _ in range(5):  # every layer and the whole model, step after step
            t_sparse = model.decode_step(t_sparse, cache, backend, HostTimeline())
            t_dense = model.decode_step(t_dense, dense, DenseMlaAttention(), HostTimeline())
            assert torch.equal(t_sparse, t_dense)


def test_apply_attends_exactly_the_selected_tokens():
    model, cache, method = _setup(150, topk=32)
    inp = _step_inputs(model, cache, seed=4)
    memory = LatentMemory(cache.latent[0], cache.length, 0, TINY.d_v)
    query = IndexerQuery(inp.x, inp.q_c, inp.q, inp.pos)
    sel = method.relevancy_retrieve(memory, method.prepare(memory, query), query)
    assert sel.tokens.shape == (2, 32) and (sel.tokens >= 0).all()
    out = method.apply(memory, sel, query)
    for b in range(2):  # dense attention over just the selected rows
        rows = cache.latent[0][b : b + 1, sel.tokens[b].long()]
        ref = dense_mla_decode(inp.q[b : b + 1], rows, rows.shape[1], TINY.d_v)
        torch.testing.assert_close(out[b : b + 1], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fp8", [False, True])
def test_indexer_topk_is_exact_on_integer_inputs(fp8):
    # Small integers are exact in bf16 and e4m3, so every path must give the exact top-k; ties are frequent
    # and go to the lower position.
    gen = torch.Generator().manual_seed(11 + fp8)
    b, heads, d, cap, n, k = 3, 5, 128, 97, 90, 17
    q = torch.randint(-3, 4, (b, heads, d), generator=gen).to(torch.bfloat16)
    w = torch.randint(-2, 4, (b, heads), generator=gen).float()
    ints = torch.randint(-4, 5, (b, cap, d), generator=gen).float()
    ints[:, 40] = ints[:, 7]  # a guaranteed tie between positions 7 and 40
    scale = None
    keys = ints.to(torch.bfloat16)
    if fp8:
        scale = 2.0 ** torch.randint(-2, 3, (b, cap), generator=gen).float()
        scale[:, 40] = scale[:, 7]
        keys = ints.to(torch.float8_e4m3fn)
    expect = torch.einsum("bhd,bnd->bhn", q.double(), ints.double())
    if fp8:
        expect = expect * scale.double()[:, None]
    expect = (expect.clamp_min(0) * w.double()[:, :, None]).sum(1)[:, :n]
    want = exact_topk(expect, k)
    method = DeepSeekSparseAttention(DsaParams(topk=k), kernels="torch")
    index = IndexerIndex(keys, scale, q, w, n)
    memory = LatentMemory(torch.empty(0), n, 0, 0)
    split = method.retrieve(memory, method.relevancy(index, None)).tokens
    fused = method.relevancy_retrieve(memory, index, None).tokens
    for got in (split, fused):
        assert got.dtype == torch.int32
        assert torch.equal(got.long(), want)
    # More requested than cached: every token once, then -1 padding.
    wide = DeepSeekSparseAttention(DsaParams(topk=128), kernels="torch")
    padded = wide.retrieve(memory, wide.relevancy(index, None)).tokens
    assert torch.equal(padded[:, :n].sort(-1).values, torch.arange(n).expand(b, n).int())
    assert (padded[:, n:] == -1).all()


def test_incremental_index_key_equals_the_key_a_fill_makes():
    model, cache, method = _setup(130, topk=64)
    inp = _step_inputs(model, cache, seed=5)
    memory = LatentMemory(cache.latent[0], cache.length, 0, TINY.d_v)
    method.prepare(memory, IndexerQuery(inp.x, inp.q_c, inp.q, inp.pos))
    decoded = method.state.keys[0][:, inp.pos].clone()
    method.state.keys[0][:, inp.pos] = 0
    method.observe_fill(0, inp.pos, inp.x[:, None])  # the fill's code path, same input, same position
    assert decoded.abs().sum() > 0
    torch.testing.assert_close(method.state.keys[0][:, inp.pos], decoded, rtol=0, atol=0)


def test_hadamard_is_orthonormal_and_keeps_dot_products():
    h = hadamard(128, CPU)
    torch.testing.assert_close(h @ h.T, torch.eye(128), rtol=0, atol=1e-6)
    gen = torch.Generator().manual_seed(6)
    a, b = torch.randn(4, 128, generator=gen), torch.randn(9, 128, generator=gen)
    torch.testing.assert_close((a @ h) @ (b @ h).T, a @ b.T, rtol=1e-5, atol=1e-5)


def test_fpga_index_scores_are_exact_across_chunks(monkeypatch):
    monkeypatch.setattr(dsa, "_REFERENCE_CHUNK", 7)
    rng = np.random.default_rng(7)
    extremes = np.array([-32768, 32767], dtype=np.int16)
    q = rng.choice(extremes, size=(2, 64, 128))
    w = rng.choice(extremes, size=(2, 64))
    keys = rng.integers(-32768, 32767, size=(2, 23, 128), endpoint=True, dtype=np.int16)
    keys[:, 3] = rng.choice(extremes, size=(2, 128))
    got = fpga_index_scores(torch.from_numpy(q), torch.from_numpy(w), torch.from_numpy(keys))
    np.testing.assert_array_equal(got.numpy(), fpga_ref.dsa_index_scores(q, w, keys))


def test_fpga_query_folds_head_scales_into_the_weights():
    gen = torch.Generator().manual_seed(8)
    q = torch.randn(2, 6, 128, generator=gen) * torch.tensor([1e-3, 1, 5, 0.2, 30, 2])[None, :, None]
    w = torch.randn(2, 6, generator=gen)
    keys = torch.randn(2, 40, 128, generator=gen)
    q16, w16 = fpga_query(q, w)
    assert q16.dtype == w16.dtype == torch.int16
    assert (q16.abs().amax(-1) == 32767).all() and (w16.abs().amax(-1) == 32767).all()
    exact = ((q @ keys.transpose(1, 2)).relu() * w[:, :, None]).sum(1)
    fixed = ((q16.float() @ keys.transpose(1, 2)).relu() * w16.float()[:, :, None]).sum(1)
    # One positive factor per row relates the two, so the fixed-point ranking is the float ranking.
    factor = (fixed * exact).sum(-1, keepdim=True) / (exact * exact).sum(-1, keepdim=True)
    assert (factor > 0).all()
    err = (fixed / factor - exact).abs().amax(-1) / exact.abs().amax(-1)
    assert (err < 1e-3).all()


@pytest.mark.parametrize("keys", ["bf16", "fp8"])
def test_fpga_reference_equals_csim_and_recalls_the_gpu_selection(keys):
    model, cache, method = _setup(333, topk=64, keys=keys, dtype=torch.bfloat16)
    inp = _step_inputs(model, cache, seed=9)
    memory = LatentMemory(cache.latent[0], cache.length, 0, TINY.d_v)
    query = IndexerQuery(inp.x, inp.q_c, inp.q, inp.pos)
    index = method.prepare(memory, query)
    call = method.fpga_call(memory, index, query)
    assert call.kernel == "dsa_indexer_topk"
    # Two layers take turns on the kernel's on-chip tiers: each call copies its share again (all 334 keys).
    assert TINY.layers == 2
    assert call.shape == {"rows": 2, "n_keys": 334, "heads": TINY.index_heads, "dim": 128, "k": 64,
                          "new_keys": 334}
    assert call.bytes_in == 2 * TINY.index_heads * 129 * 2 and call.bytes_out == 2 * 64 * 4
    assert call.bytes_append == 2 * 128 * 2
    ref, sim = call.reference().tokens, call.csim().tokens
    assert torch.equal(ref, sim)
    # The new key was appended to the resident int16 copy before scoring.
    assert (method.state.keys_q[0][:, inp.pos] != 0).any()
    gpu = method.relevancy_retrieve(memory, index, query)
    assert method.recall(call.reference(), gpu) >= 0.9


def test_routing_keeps_the_best_groups_and_normalizes_weights():
    model = MlaDecoder(TINY, torch.float32, CPU)
    layer = model.layers[0]
    layer.gate.zero_()
    layer.gate[:, 0] = torch.tensor([3.0, 2.9, 0.0, 5.0])  # groups {0, 1} and {2, 3}
    y = torch.zeros(1, TINY.hidden)
    y[0, 0] = 1.0
    experts, weights = layer.route(y)
    # Group {0, 1} sums higher (its top two), so expert 3 is out although it scores highest alone.
    assert sorted(experts[0].tolist()) == [0, 1]
    s = torch.tensor([3.0, 2.9]).sigmoid()
    torch.testing.assert_close(weights[0].sort(descending=True).values, s / s.sum() * TINY.route_scale)


def test_triton_routed_experts_match_the_torch_path():
    gen = torch.Generator().manual_seed(10)
    y = torch.randn(3, 37, generator=gen)
    w_gate_up = torch.randn(5, 2 * 21, 37, generator=gen) / 6
    w_down = torch.randn(5, 37, 21, generator=gen) / 5
    experts = torch.tensor([[0, 4], [2, 2], [1, 3]])
    weights = torch.rand(3, 2, generator=gen)
    want = torch.zeros(3, 37)
    for t in range(3):  # per token, per chosen expert, a plain SwiGLU
        for e, g in zip(experts[t].tolist(), weights[t].tolist(), strict=True):
            gate, up = (w_gate_up[e] @ y[t]).chunk(2)
            want[t] += g * (w_down[e] @ (torch.nn.functional.silu(gate) * up))
    for impl in ("torch", "triton"):
        torch.testing.assert_close(routed_experts(y, experts, weights, w_gate_up, w_down, impl=impl), want,
                                   rtol=1e-5, atol=1e-5)


def test_sizes_match_the_built_model_and_the_published_total():
    config = ModelConfig(preset="deepseek-tiny", dtype="bf16")
    model = DsaWorkload.build_model(config, CPU)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert sum(p.numel() * p.element_size() for p in model.parameters()) == DsaWorkload.weight_bytes(config)
    # Full V3.2 (61 layers, 256 routed experts, the first 3 layers' FFN dense 18432): ~671B parameters.
    full = replace(MLA_PRESETS["deepseek-v3.2"], experts=256)
    routed = 256 * (3 * full.hidden * full.moe_ffn + full.hidden + 1)
    total = full.weight_params() - 3 * routed + 3 * 3 * full.hidden * (18432 - 2048)
    assert abs(total / 671e9 - 1) < 0.01
    assert DsaWorkload.model_shape(ModelConfig(preset="deepseek-v3.2", layers=2)).layers == 2
    with pytest.raises(UsageError, match="preset"):
        DsaWorkload.model_shape(ModelConfig(hidden=64, heads=4, kv_heads=4, head_dim=16, ffn=8, vocab=9,
                                            layers=1))


def test_memory_bytes_bound_what_a_case_allocates():
    suite = load_suite("suites/methods/dsa-tiny.yaml")
    case = suite.cases()[1]
    model = MlaDecoder(TINY, torch.bfloat16, CPU)
    work = DsaWorkload(replace(case.params, index_keys="fp8"), model, case, 3, seed=0)
    need = DsaWorkload.memory_bytes(replace(case.params, index_keys="fp8"), TINY, case, 3, 2)
    st = work.method.state
    assert need["kv_cache"] == work.cache.nbytes()
    index = sum(k.numel() * k.element_size() for k in st.keys) + sum(s.numel() * 4 for s in st.scales)
    assert need["index"] == index
    assert need["fpga_copy"] == sum(k.numel() * 2 for k in st.keys_q)
    auto = DsaWorkload.memory_bytes(case.params, TINY, case, 3, 2)
    assert auto["index"] > need["index"]  # auto counts bf16 keys, the larger format


def test_hetero_offloads_exactly_the_indexer_and_topk():
    kinds = {"gpu": "gpu", "fpga": "fpga"}
    DsaWorkload.check_placement(Placement("hetero", HETERO), kinds)
    with pytest.raises(UsageError, match="together"):
        DsaWorkload.check_placement(Placement("x", {**GPU_ONLY, Step.RETRIEVAL: "fpga"}), kinds)
    with pytest.raises(UsageError, match="together"):
        DsaWorkload.check_placement(Placement("x", {**HETERO, Step.APPLY: "fpga"}), kinds)


def test_suites_validate_against_the_mla_presets():
    for path in ("suites/methods/dsa.yaml", "suites/methods/dsa-tiny.yaml"):
        suite = load_suite(path)
        assert list(suite.experiments) == ["dsa"]
    real = load_suite("suites/methods/dsa.yaml")
    assert real.experiments["dsa"].params.topk == 2048 and len(real.cases()) == 6
    text = load_suite("suites/methods/dsa-tiny.yaml").text
    with pytest.raises(SuiteError, match=r"unknown preset 'llama-3\.1-8b'"):
        parse_suite(text.replace("preset: deepseek-tiny", "preset: llama-3.1-8b"), "x.yaml")
    with pytest.raises(SuiteError, match="has 2 layers"):
        parse_suite(text.replace("  preset: deepseek-tiny", "  layers: 3\n  preset: deepseek-tiny"), "x.yaml")


def test_tiny_suite_runs_end_to_end(tmp_path):
    run, trials = run_tiny(tmp_path, "dsa-e2e", "{preset: deepseek-tiny, layers: 1}", "{name: dsa, topk: 64}",
                           "{context: [300], batch: [2]}", decode_tokens=2, composition=True)
    meta = run.meta()
    assert meta["suite"]["experiments"]["dsa"]["model_shape"]["name"] == "deepseek-tiny"
    hetero = trials["hetero"]
    assert hetero["steps_ms"]["prepare"]["provenance"] == "measured"
    assert hetero["fpga"]["calls_per_token"] == 1  # one layer: one offload per token
    assert hetero["metrics"]["latency_ms"]["provenance"] == "emulated" and value(hetero, "latency_ms") > 0
    warm = next(r for r in run.records() if r["kind"] == "warmup" and r["placement"] == "hetero")
    assert warm["functional_pass"]["recall"] >= 0.9
    assert meta["suite"]["experiments"]["dsa"]["placements"]["hetero"]["steps"] == {
        "prepare": "gpu", "relevancy": "fpga", "retrieval": "fpga", "apply": "gpu"}


def test_fpga_device_tapes_the_offload_and_replays_it():
    model, cache, method = _setup(200, topk=32, dtype=torch.bfloat16)
    fpga = FpgaDevice("fpga", "analytic", SPEC_DIR / "u55c.yaml", CPU)
    backend = DsaAttention(method, Placement("hetero", HETERO), fpga)
    fpga.record()
    tok = torch.tensor([1, 2])
    for _ in range(2):
        tok = model.decode_step(tok, cache, backend, HostTimeline())
    assert fpga.tape_stats().calls == 2 * TINY.layers
    taped = [sel.tokens.clone() for sel, *_ in fpga._tape]
    cache.length = 200
    fpga.replay()
    tok2 = torch.tensor([1, 2])
    for _ in range(2):
        tok2 = model.decode_step(tok2, cache, backend, HostTimeline())
    assert torch.equal(tok, tok2)
    assert all(torch.equal(a, sel.tokens) for a, (sel, *_) in zip(taped, fpga._tape, strict=True))
    with pytest.raises(UsageError, match="no FPGA device"):
        DsaAttention(method, Placement("hetero", HETERO), None)


@pytest.mark.gpu
def test_gpu_kernels_agree_with_the_torch_paths_and_capture_in_a_graph():
    dev = torch.device("cuda")
    model = MlaDecoder(TINY, torch.bfloat16, dev, seed=2)
    cache = model.new_cache(2, 600)
    method = DeepSeekSparseAttention(DsaParams(topk=64))
    method.attach(model, cache)
    model.fill_cache(cache, 500, seed=3, on_chunk=method.observe_fill)
    method.fill_done(500)
    assert method.state.fp8  # auto: fp8 keys on CUDA
    inp = _step_inputs(model, cache, seed=12)
    fast = DsaAttention(method, Placement("b", GPU_ONLY), None).decode(inp, NullTimeline())
    naive = DsaAttention(method.with_kernels("torch"), Placement("t", GPU_ONLY, "torch"), None)
    slow = naive.decode(inp, NullTimeline())
    assert float((fast.float() - slow.float()).norm() / slow.float().norm()) < 2e-2
    # The routed experts at DeepSeek-V3.2 widths: the Triton GEMVs against the torch path.
    gen = torch.Generator(device=dev).manual_seed(13)
    y = torch.randn(2, 7168, generator=gen, device=dev).to(torch.bfloat16)
    w_gate_up = (torch.randn(3, 4096, 7168, generator=gen, device=dev) / 85).to(torch.bfloat16)
    w_down = (torch.randn(3, 7168, 2048, generator=gen, device=dev) / 45).to(torch.bfloat16)
    experts = torch.tensor([[0, 2], [1, 0]], device=dev)
    weights = torch.rand(2, 2, generator=gen, device=dev)
    tri = routed_experts(y, experts, weights, w_gate_up, w_down, impl="triton").float()
    ref = routed_experts(y, experts, weights, w_gate_up, w_down, impl="torch").float()
    assert float((tri - ref).norm() / ref.norm()) < 1e-2
    # A whole decode step (fused indexer, sparse MLA, MoE) captures in a CUDA graph and replays it.
    backend = DsaAttention(method, Placement("b", GPU_ONLY), None)
    tok = torch.tensor([5, 6], device=dev)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        cache.length = 500
        eager = model.decode_step(tok, cache, backend, NullTimeline())
    torch.cuda.current_stream().wait_stream(side)
    cache.length = 500
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = model.decode_step(tok, cache, backend, NullTimeline())
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager)
