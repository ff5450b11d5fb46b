"""LaCT: hand-written fast-weight gradients match autograd, chunked sliding-window attention matches a
full-sequence reference, the arithmetic intensities, the GPU-only rule, and a tiny run through the Runner."""


import pytest
import torch
import torch.nn.functional as F

from bench.errors import SuiteError, UsageError
from bench.methods.lact import (
    ChunkInputs,
    FastWeights,
    LactMethod,
    LactParams,
    LactWorkload,
    WholeMemory,
    arithmetic_intensity,
)
from bench.model.decoder import Decoder, Rope
from bench.model.presets import ModelShape
from bench.runner import Runner
from bench.suite import Case, load_suite, parse_suite
from bench.timeline import HostTimeline, NullTimeline

SHAPE = ModelShape("inline", 2, 48, 4, 4, 12, 80, 301, 1 << 20, 10000.0)


def _weights(rows, d, dh, gen):
    w0 = torch.randn(rows, dh, d, generator=gen, dtype=torch.float64) / d**0.5
    w1 = torch.randn(rows, d, dh, generator=gen, dtype=torch.float64) / dh**0.5
    w2 = torch.randn(rows, dh, d, generator=gen, dtype=torch.float64) / d**0.5
    norms = tuple(w.norm(dim=2, keepdim=True) for w in (w0, w1, w2))
    return FastWeights(w0, w1, w2, norms)


def _inputs(rows, n, d, gen, lr=1.0):
    def x():
        return torch.randn(rows, n, d, generator=gen, dtype=torch.float64)

    return ChunkInputs(x(), x(), x(), torch.full((rows, n, 3), lr, dtype=torch.float64))


def test_apply_is_the_swiglu_fast_weight_function():
    gen = torch.Generator().manual_seed(1)
    w, inp = _weights(3, 5, 7, gen), _inputs(3, 11, 5, gen)
    out = LactMethod().apply(w, WholeMemory(w), inp)
    for r in range(3):
        for t in (0, 10):
            x = inp.q[r, t]
            expect = w.w1[r] @ (F.silu(w.w0[r] @ x) * (w.w2[r] @ x))
            torch.testing.assert_close(out[r, t], expect)


def test_loss_and_update_match_autograd():
    gen = torch.Generator().manual_seed(2)
    rows, n, d, dh = 2, 9, 6, 10
    w, inp = _weights(rows, d, dh, gen), _inputs(rows, n, d, gen, lr=0.3)
    leaves = [x.clone().requires_grad_(True) for x in (w.w0, w.w1, w.w2)]
    hidden = F.silu(torch.bmm(inp.k, leaves[0].transpose(1, 2))) * torch.bmm(inp.k, leaves[2].transpose(1, 2))
    loss = -(torch.bmm(hidden, leaves[1].transpose(1, 2)) * inp.v).sum(dim=(1, 2))  # negative dot product
    loss.sum().backward()
    m = LactMethod()
    scores = m.relevancy(w, inp)
    torch.testing.assert_close(scores.loss, loss.detach().float())
    m.prepare(w, ChunkInputs(inp.q, inp.k, inp.v, inp.lr, scores))
    for new, leaf, norm in zip((w.w0, w.w1, w.w2), leaves, w.norms, strict=True):
        stepped = leaf.detach() - 0.3 * leaf.grad  # one descent step at the (uniform) learning rate
        expect = stepped / (stepped.norm(dim=2, keepdim=True) + 1e-5) * norm
        torch.testing.assert_close(new, expect)


def test_update_scales_with_the_learning_rate_and_keeps_row_norms():
    gen = torch.Generator().manual_seed(3)
    m = LactMethod()
    w = _weights(2, 4, 8, gen)
    inp = _inputs(2, 6, 4, gen, lr=0.01)
    start = [x.clone() for x in (w.w0, w.w1, w.w2)]
    m.prepare(w, ChunkInputs(inp.q, inp.k, inp.v, inp.lr, m.relevancy(w, inp)))
    for x, x0, nrm in zip((w.w0, w.w1, w.w2), start, w.norms, strict=True):
        assert not torch.allclose(x, x0)
        torch.testing.assert_close(x.norm(dim=2, keepdim=True), nrm, rtol=1e-5, atol=1e-4)
    with pytest.raises(RuntimeError, match="Relevancy"):
        m.prepare(w, inp)


def test_arithmetic_intensity_of_the_760m_shape():
    shape = ModelShape("inline", 24, 1536, 24, 24, 64, 4096, 32000, 1 << 20)
    ai = arithmetic_intensity(LactParams(), shape)
    d, c = 384, 2048  # 4 fast-weight heads of 1536 / 4; the 2048-token chunk
    flops = 6 * c * d * d
    assert ai["apply"]["flops"] == flops
    assert ai["apply"]["flop_per_byte"] == pytest.approx(flops / (3 * d * d * 4 + 2 * c * d * 2))
    update_bytes = 2 * 3 * d * d * 4 + 2 * c * d * 2 + 3 * c * 4
    assert ai["update"]["flop_per_byte"] == pytest.approx(2 * flops / update_bytes)
    # Apply and the fused update sit above the H100's ~295 FLOP/B ridge; the split steps do not.
    assert ai["apply"]["flop_per_byte"] > 295 and ai["update"]["flop_per_byte"] > 500
    assert ai["prepare"]["flop_per_byte"] < ai["relevancy"]["flop_per_byte"] < 295


def _workload(context=45, chunk=16, window=11, batch=2, seed=0):
    model = Decoder(SHAPE, torch.float32, torch.device("cpu"), seed=seed)
    params = LactParams(chunk=chunk, window=window, fw_heads=2)
    return model, LactWorkload(params, model, Case("c", "e", context, batch, params, {}), 1, seed)


def test_chunked_sliding_window_matches_a_full_sequence_reference():
    model, w = _workload()
    for t in w.ttt:
        t.out_norm.zero_()  # silence the fast weights: the layer is then plain sliding-window attention
    got = torch.cat([w.read_chunk(c, NullTimeline()) for c in range(len(w.chunks))], dim=1)
    tokens, window = w.tokens, 11
    t = tokens.shape[1]
    pos = torch.arange(t)
    band = (pos[None, :] <= pos[:, None]) & (pos[None, :] > pos[:, None] - window)
    cos, sin = model.rope.cos_sin(pos)
    h = F.embedding(tokens, model.embed)
    for layer in model.layers:
        q, k, v = layer.project_qkv(h)
        q, k = Rope.rotate(q.transpose(1, 2), cos, sin), Rope.rotate(k.transpose(1, 2), cos, sin)
        att = F.scaled_dot_product_attention(q, k, v.transpose(1, 2), attn_mask=band)
        h = layer.finish(h, att.transpose(1, 2).reshape(2, t, -1))
    torch.testing.assert_close(got, h, rtol=1e-4, atol=1e-4)


def test_iterations_repeat_and_skip_the_last_chunks_update():
    _, w = _workload()
    run = w.bind(_placement(), None)
    w.rewind()
    timeline = HostTimeline()
    run(timeline)
    first = w.weights[0].w0.clone()
    assert not torch.equal(first, w.ttt[0].init[0].repeat(2, 1, 1))  # trained on the first two chunks
    w.rewind()
    run(NullTimeline())
    torch.testing.assert_close(w.weights[0].w0, first)
    assert {"dense", "apply", "relevancy", "prepare"} == set(timeline.totals())
    assert w.steps_per_iteration == 3 and w.tokens_per_iteration == 90


def _placement():
    from bench.pipeline import Placement, Step

    return Placement("baseline", dict.fromkeys(Step, "gpu"))


def test_shape_checks_and_window_bound():
    gqa = ModelShape("inline", 1, 64, 4, 2, 16, 64, 100, 1 << 20)
    model = Decoder(gqa, torch.float32, torch.device("cpu"))
    params = LactParams(chunk=16, window=16, fw_heads=2)
    with pytest.raises(UsageError, match="kv_heads == heads"):
        LactWorkload(params, model, Case("c", "e", 32, 1, params, {}), 1, 0)
    assert LactParams(chunk=16, window=17).problems()[0][0] == "window"


SUITE = """\
name: lact-test
model: {layers: 1, hidden: 48, heads: 4, kv_heads: 4, head_dim: 12, ffn: 80, vocab: 301}
method: {name: lact, chunk: 16, window: 16, fw_heads: 2}
matrix: {context: [40], batch: [2]}
placements:
  baseline: {}
PLACEMENT
devices:
  gpu: {device: cpu}
  fpga: {mode: emulated}
measure: {warmup: 0, trials: 1, min_duration_s: 0.0, min_iterations: 1, idle_s: 0, composition: false}
"""


def test_an_fpga_placement_is_refused():
    with pytest.raises(SuiteError, match="compute-bound"):
        parse_suite(SUITE.replace("PLACEMENT", "  hetero: {relevancy: fpga, retrieval: fpga}"), "t.yaml")


def test_tiny_run_through_the_runner(tmp_path):
    path = tmp_path / "lact.yaml"
    path.write_text(SUITE.replace("PLACEMENT", ""))
    run = Runner(load_suite(path), tmp_path / "out").run()
    trials = [r for r in run.records() if r["kind"] == "trial"]
    assert trials and all(r["status"] == "ok" for r in trials)
    for r in trials:
        assert set(r["steps_ms"]) == {"dense", "apply", "relevancy", "prepare"}
        assert all(v["provenance"] == "measured" and v["device"] == "gpu" for v in r["steps_ms"].values())
    assert not [r for r in run.records() if r["kind"] == "failed"]


def test_shipped_suites_fit_an_80_gb_gpu():
    from bench.methods import get_method

    for name in ("lact", "lact-tiny"):
        suite = load_suite(f"suites/methods/{name}.yaml")
        exp = next(iter(suite.experiments.values()))
        for case in suite.cases():
            need = get_method("lact").memory_bytes(case.params, exp.model.shape(), case, 1, 2)
            assert sum(need.values()) + get_method("lact").weight_bytes(exp.model) < 60 * 2**30
