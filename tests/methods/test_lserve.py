"""LServe: sparse equals dense at full budget, streaming heads, page selection, reuse, FPGA numerics, end to end."""

import contextlib
from pathlib import Path

import pytest
import torch

from bench.errors import UsageError
from bench.methods.attention import AttentionQuery, KVMemory
from bench.methods.lserve import LServe, LServeAttention, LServeParams, LServeWorkload
from bench.methods.quest import PageIndex
from bench.methods.seer_attention import selection_recall
from bench.model.decoder import Decoder, dense_decode_attention
from bench.model.presets import PRESETS
from bench.pipeline import FUSED, Placement, Step
from bench.suite import Case
from bench.timeline import HostTimeline, Timeline
from kernels_gpu.sparse_decode import reference_block_sparse_decode
from tests.methods.sparse_suite import run_tiny

GPU_ONLY = Placement("baseline-torch", dict.fromkeys(Step, "gpu"), "torch")
HETERO = Placement("hetero", {**dict.fromkeys(Step, "gpu"), Step.RELEVANCY: "fpga", Step.RETRIEVAL: "fpga"})


def _setup(params, context, batch=2, seed=0, kernels="torch", preset="tiny"):
    model = Decoder(PRESETS[preset], torch.float32, torch.device("cpu"), seed=seed)
    cache = model.new_cache(batch, context + 64)
    method = LServe(params, kernels)
    method.attach(model, cache, seed)
    model.fill_cache(cache, context, seed=seed + 1, chunk=128, on_chunk=method.observe_fill)
    method.fill_done(context)
    return model, cache, method


class _Sections(Timeline):
    """Records the section names in order."""

    def __init__(self):
        self.names = []

    def section(self, name):
        self.names.append(name)
        return contextlib.nullcontext()

    def totals(self):
        return {}


class _TapeFpga:
    """Evaluates each offload with the FPGA reference and keeps the calls."""

    def __init__(self):
        self.calls = []

    def offload(self, make_call, gpu, recall):
        call = make_call()
        self.calls.append(call)
        return call.reference()


class _CheckedAgainstDense(LServeAttention):
    err: float = 0.0

    def decode(self, inp, timeline):
        out = super().decode(inp, timeline)
        ref = dense_decode_attention(inp.q, inp.cache.k[inp.layer], inp.cache.v[inp.layer], inp.cache.length)
        self.err = max(self.err, float((out - ref).abs().max()))
        return out


@pytest.mark.parametrize(("kernels", "fraction", "sink", "local"),
                         [("torch", 0.0, 128, 256), ("optimized", 0.0, 128, 256), ("torch", 0.5, 64 * 3, 64 * 6)])
def test_full_budget_equals_dense_attention(kernels, fraction, sink, local):
    # Retrieval heads select every complete page; streaming heads' sink + local pages cover the context.
    params = LServeParams(token_budget=64 * 12, reselect_interval=1, streaming_fraction=fraction,
                          sink_tokens=sink, local_tokens=local)
    model, cache, method = _setup(params, 64 * 6 + 60, kernels=kernels)
    backend = _CheckedAgainstDense(method, GPU_ONLY, None)
    tok = torch.tensor([3, 5])
    for _ in range(8):  # crosses a page boundary
        tok = model.decode_step(tok, cache, backend, HostTimeline())
    assert backend.err < 1e-5


def test_streaming_heads_attend_sink_and_local_pages():
    params = LServeParams(token_budget=64 * 4, sink_tokens=64, local_tokens=100)  # 1 sink page, 2 local pages
    model, cache, method = _setup(params, 64 * 9 + 10)
    st = method.state
    assert [len(s) for s in st.streaming] == [1, 1] and [len(r) for r in st.retrieval] == [1, 1]
    backend = LServeAttention(method, GPU_ONLY, None)
    model.decode_step(torch.tensor([1, 2]), cache, backend, HostTimeline())
    lists = st.lists[0]
    assert lists.shape == (2, 2, 3)
    stream = lists[:, st.streaming[0]].flatten(0, 1)
    assert stream.tolist() == [[0, 7, 8], [0, 7, 8]]  # current page 9
    # Apply equals exact attention over those pages plus the current one (for the streaming head).
    memory = KVMemory(cache.k[0], cache.v[0], cache.length, 0)
    q = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(3))
    out = method.apply(memory, None, AttentionQuery(q, q, q[:, :2]))
    ref = reference_block_sparse_decode(q, cache.k[0], cache.v[0], cache.length, lists, 64)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


def test_page_score_is_the_max_of_its_sub_page_bounds():
    method = LServe(LServeParams(token_budget=64 * 3, sub_pages=4), "torch")  # 2 pages selected
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(1, 1, 2, 4, generator=gen)
    x = torch.randn(2, 1, 1, 12, 4, generator=gen)  # 12 sub-pages = 3 pages
    kmin, kmax = x.amin(0), x.amax(0)
    scores = method.relevancy(PageIndex(kmin, kmax, 12, q), None).scores.flatten()
    sub = torch.maximum(q[0, 0, :, None] * kmin[0, 0], q[0, 0, :, None] * kmax[0, 0]).sum(-1).amax(0)
    torch.testing.assert_close(scores, sub.view(3, 4).amax(-1))
    top = sorted(method.retrieve(None, method.relevancy(PageIndex(kmin, kmax, 12, q), None)).pages.flatten().tolist())
    assert top == sorted(scores.argsort(descending=True)[:2].tolist())
    fused = method.relevancy_retrieve(None, PageIndex(kmin, kmax, 12, q), None).pages.flatten().tolist()
    assert sorted(fused) == top


def test_selection_is_reused_between_reselect_steps():
    params = LServeParams(token_budget=64 * 3, reselect_interval=4, sink_tokens=64, local_tokens=64)
    context = 64 * 8 + 61
    model, cache, method = _setup(params, context, batch=1)
    fpga = _TapeFpga()
    backend = LServeAttention(method, HETERO, fpga)
    retrieval = method.state.retrieval[1]

    def iteration():
        per_step, kept = [], []
        tok = torch.tensor([6])
        for _ in range(9):
            timeline = _Sections()
            tok = model.decode_step(tok, cache, backend, timeline)
            per_step.append(timeline.names)
            kept.append(method.state.lists[1][:, retrieval].clone())
        return per_step, kept

    per_step, kept = iteration()
    fused = [s.count(FUSED) for s in per_step]
    assert fused == [2, 0, 0, 0, 2, 0, 0, 0, 2]  # steps 0, 4, 8 reselect (two layers each)
    assert all(s.count("prepare") == 2 and s.count("apply") == 2 for s in per_step)
    assert len(fpga.calls) == 6
    assert all(torch.equal(kept[0], k) for k in kept[1:4])
    # Sub-pages completed between reselections are appended with the next call: positions 573..581 complete
    # sub-page 35 at 575 and 36 at 591; the call at step 4 (position 577) appends 1 sub-page per row.
    assert [c.bytes_append // (c.shape["rows"] * 2 * c.shape["dim"] * 2) for c in fpga.calls] == [0, 0, 1, 1, 0, 0]
    # Rewound, the next iteration does the same work: the same sections and offloads, and the same pages up to
    # near-ties that CPU BLAS threading can flip under load (bitwise repeats are not guaranteed here).
    shapes = [c.shape for c in fpga.calls]
    method.rewind(context)
    cache.length = context
    fpga.calls.clear()
    per_step2, kept2 = iteration()
    assert per_step2 == per_step
    assert [c.shape for c in fpga.calls] == shapes
    assert all(selection_recall(b, a) >= 0.5 for a, b in zip(kept, kept2, strict=True))


def test_fpga_reference_matches_csim_and_the_gpu_selection():
    params = LServeParams(token_budget=64 * 5)
    context = 64 * 30 + 9
    _, cache, method = _setup(params, context)
    gen = torch.Generator().manual_seed(2)
    cache.k[0][:, :, context] = torch.randn(2, 2, 32, generator=gen)
    cache.length = context + 1
    memory = KVMemory(cache.k[0], cache.v[0], cache.length, 0)
    q = torch.randn(2, 8, 32, generator=gen)
    query = AttentionQuery(q, q, torch.zeros(2, 2, 32))
    index = method.prepare(memory, query)
    assert index.n_pages == 30 * 4
    call = method.fpga_call(memory, index, query)
    ref, sim = call.reference().pages, call.csim().pages
    assert ref.shape == (2, 1, 4)  # one retrieval head of two
    assert torch.equal(ref, sim)
    assert method.recall(call.reference(), method.relevancy_retrieve(memory, index, query)) >= 0.75
    # new_pages = n_pages: with 2 indexed layers every call re-syncs its pages on chip (entries_to_sync).
    assert call.shape == {"rows": 2, "n_pages": 120, "group": 4, "dim": 32, "k": 4, "sub": 4, "new_pages": 120}


def test_tiny_suite_runs_end_to_end(tmp_path: Path):
    _, trials = run_tiny(tmp_path, "lserve-e2e", "{preset: tiny}",
                         "{name: lserve, token_budget: 192, sink_tokens: 64, local_tokens: 64}",
                         "{context: [600], batch: [2]}", decode_tokens=6)
    hetero = trials["hetero"]
    assert hetero["steps_ms"][FUSED]["device"] == "fpga"
    # Two layers reselect on steps 0 and 4 of 6: 4 offloads per 6 tokens.
    assert hetero["fpga"]["calls_per_token"] == pytest.approx(4 / 6)
    assert hetero["fpga"]["recall"] >= 0.75


def test_memory_bound_params_and_head_roles():
    shape = PRESETS["llama-3.1-8b"].with_layers(4)
    p = LServeParams()
    assert (p.k_pages, p.streaming_pages, p.width, p.streaming_heads(8)) == (63, (2, 4), 63, 4)
    case = Case("c", "lserve", 131072, 32, p, {})
    need = LServeWorkload.memory_bytes(p, shape, case, 16, 2)
    bounds = 2 * 4 * 32 * 4 * (-(-(131072 + 16) // 16)) * 128 * 2  # retrieval heads only
    assert bounds < need["method"] < bounds + (3 << 30)
    assert LServeParams(token_budget=64).problems() and LServeParams(sub_pages=3).problems()
    with pytest.raises(UsageError, match="no retrieval heads"):
        _setup(LServeParams(streaming_fraction=0.9), 128)


def test_workload_describes_what_the_record_needs():
    params = LServeParams(token_budget=256)
    model = Decoder(PRESETS["tiny"], torch.float32, torch.device("cpu"), seed=0)
    w = LServeWorkload(params, model, Case("c", "lserve", 301, 1, params, {}), 9, seed=1)
    info = w.describe()
    assert info["reselect_steps_per_iteration"] == 3  # steps 0, 4 and 8
    assert info["retrieval_heads_per_layer"] == 1 and all(len(h) == 1 for h in info["streaming_heads"])
    assert "W8A8KV8" in info["precision"]
