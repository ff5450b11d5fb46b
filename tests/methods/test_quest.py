"""Quest: sparse equals dense at full budget, page bounds and selection are right, FPGA numerics, end to end."""

from pathlib import Path

import pytest
import torch

from bench.errors import UsageError
from bench.methods.attention import AttentionQuery, KVMemory
from bench.methods.quest import (
    PageIndex,
    PageScores,
    Quest,
    QuestAttention,
    QuestParams,
    QuestWorkload,
    fpga_page_scores,
    quantize_int16,
)
from bench.model.decoder import Decoder, dense_decode_attention
from bench.model.presets import PRESETS
from bench.pipeline import FUSED, Placement, Step
from bench.suite import Case
from bench.timeline import HostTimeline
from kernels_fpga import reference as fpga_ref
from tests.methods.sparse_suite import run_tiny

GPU_ONLY = Placement("baseline-torch", dict.fromkeys(Step, "gpu"), "torch")


def _setup(params, context, batch=2, seed=0, kernels="torch"):
    model = Decoder(PRESETS["tiny"], torch.float32, torch.device("cpu"), seed=seed)
    cache = model.new_cache(batch, context + 64)
    method = Quest(params, kernels)
    method.attach(model, cache, seed)
    model.fill_cache(cache, context, seed=seed + 1, chunk=128, on_chunk=method.observe_fill)
    method.fill_done(context)
    return model, cache, method


class _CheckedAgainstDense(QuestAttention):
    """Runs Quest and records the largest deviation from dense attention per layer."""

    def __init__(self, *args):
        super().__init__(*args)
        self.err: dict[int, float] = {}

    def decode(self, inp, timeline):
        out = super().decode(inp, timeline)
        ref = dense_decode_attention(inp.q, inp.cache.k[inp.layer], inp.cache.v[inp.layer], inp.cache.length)
        self.err[inp.layer] = max(self.err.get(inp.layer, 0.0), float((out - ref).abs().max()))
        return out


@pytest.mark.parametrize("kernels", ["torch", "optimized"])
def test_full_budget_equals_dense_attention(kernels):
    context = 16 * 21 + 5  # the fill leaves a partial page; decoding completes it and starts another
    model, cache, method = _setup(QuestParams(token_budget=16 * 40, dense_layers=1), context, kernels=kernels)
    backend = _CheckedAgainstDense(method, GPU_ONLY, None)
    tok = torch.tensor([3, 5])
    for _ in range(14):
        tok = model.decode_step(tok, cache, backend, HostTimeline())
    assert set(backend.err) == {0, 1}
    assert max(backend.err.values()) < 1e-5


def test_small_budget_differs_from_dense_and_layer_zero_stays_dense():
    model, cache, method = _setup(QuestParams(token_budget=32, dense_layers=1), 16 * 30)
    backend = _CheckedAgainstDense(method, GPU_ONLY, None)
    model.decode_step(torch.tensor([1, 2]), cache, backend, HostTimeline())
    assert backend.err[0] < 1e-6  # dense layer
    assert backend.err[1] > 1e-4  # 3 of 30 pages: not dense


def test_incremental_page_bounds_equal_bounds_of_the_cached_keys():
    context = 16 * 9 + 11
    model, cache, method = _setup(QuestParams(token_budget=64, dense_layers=0), context)
    backend = QuestAttention(method, GPU_ONLY, None)
    tok = torch.tensor([7, 9])
    for _ in range(25):
        tok = model.decode_step(tok, cache, backend, HostTimeline())
    n = cache.length
    bounds = method.state.bounds
    for layer in range(2):
        keys = cache.k[layer][:, :, :n]
        for page in range(-(-n // 16)):
            chunk = keys[:, :, page * 16 : (page + 1) * 16]
            torch.testing.assert_close(bounds.kmin[layer][:, :, page], chunk.amin(2), rtol=0, atol=0)
            torch.testing.assert_close(bounds.kmax[layer][:, :, page], chunk.amax(2), rtol=0, atol=0)
    # Rewinding restores the partial page the fill left.
    method.rewind(context)
    page = context // 16
    fill_keys = cache.k[0][:, :, page * 16 : context]
    torch.testing.assert_close(bounds.kmin[0][:, :, page], fill_keys.amin(2), rtol=0, atol=0)


def test_relevancy_and_retrieval_on_a_constructed_example():
    # One batch row, one KV head, a group of 2 queries, D = 2, 5 pages.
    q = torch.tensor([[[[1.0, -2.0], [0.5, 1.0]]]])
    kmin = torch.tensor([[[[0.0, 0.0], [-1.0, -1.0], [2.0, -3.0], [0.0, 1.0], [-5.0, 0.0]]]])
    kmax = torch.tensor([[[[1.0, 1.0], [3.0, 0.0], [4.0, -1.0], [0.5, 2.0], [-4.0, 4.0]]]])
    # Bound of query g on page p: sum_d max(q_d kmin_d, q_d kmax_d); the page takes the max over g.
    want = []
    for p in range(5):
        per_g = [sum(max(q[0, 0, g, d] * kmin[0, 0, p, d], q[0, 0, g, d] * kmax[0, 0, p, d]) for d in range(2))
                 for g in range(2)]
        want.append(float(max(per_g)))
    assert want == [1.5, 5.0, 10.0, 2.25, 2.0]
    method = Quest(QuestParams(token_budget=32), "torch")  # max(3, 32 / 16) = 3 pages
    index = PageIndex(kmin, kmax, 5, q)
    scores = method.relevancy(index, None)
    assert scores.scores.flatten().tolist() == want
    assert sorted(method.retrieve(None, scores).pages.flatten().tolist()) == [1, 2, 3]
    fused = method.relevancy_retrieve(None, index, None).pages.flatten().tolist()
    assert sorted(fused) == [1, 2, 3]
    # Ties go to the lower page; fewer candidates than k pad with -1.
    tied = method.retrieve(None, PageScores(torch.tensor([[[2.0, 7.0, 2.0, 2.0]]])))
    assert sorted(tied.pages.flatten().tolist()) == [0, 1, 2]
    few = method.retrieve(None, PageScores(torch.tensor([[[2.0, 7.0]]])))
    assert sorted(few.pages.flatten().tolist()) == [-1, 0, 1]
    none = method.retrieve(None, PageScores(torch.zeros(1, 1, 0)))
    assert none.pages.flatten().tolist() == [-1, -1, -1]


def test_fpga_reference_matches_csim_and_the_gpu_selection():
    context = 16 * 40 + 3
    _, cache, method = _setup(QuestParams(token_budget=16 * 6, dense_layers=0), context)
    gen = torch.Generator().manual_seed(11)
    cache.k[1][:, :, context] = torch.randn(2, 2, 32, generator=gen)
    cache.length = context + 1
    memory = KVMemory(cache.k[1], cache.v[1], cache.length, 1)
    q = torch.randn(2, 8, 32, generator=gen)
    query = AttentionQuery(q, q, torch.zeros(2, 2, 32))
    index = method.prepare(memory, query)
    call = method.fpga_call(memory, index, query)
    ref, sim = call.reference().pages, call.csim().pages
    assert ref.shape == (2, 2, 6)
    assert torch.equal(ref, sim)
    gpu = method.relevancy_retrieve(memory, index, query)
    assert method.recall(call.reference(), gpu) >= 0.8
    # The float64 scores are the integer reference's, exactly.
    q_int = quantize_int16(index.query.reshape(4, 4, 32), index.query.reshape(4, -1).abs().amax(1).view(4, 1, 1)
                           / 32767.0)
    kmin, kmax = index.kmin.view(4, -1, 32)[:, :40], index.kmax.view(4, -1, 32)[:, :40]
    scale = method.state.bounds.scale[1]
    ours = fpga_page_scores(q_int, kmin, kmax, scale, 1)
    theirs = fpga_ref.page_scores(q_int.numpy(), quantize_int16(kmin, scale).numpy(),
                                  quantize_int16(kmax, scale).numpy())
    assert torch.equal(ours, torch.from_numpy(theirs).double())
    # new_pages = n_pages: with 2 indexed layers every call re-syncs its pages on chip (entries_to_sync).
    assert call.shape == {"rows": 4, "n_pages": 40, "group": 4, "dim": 32, "k": 6, "sub": 1, "new_pages": 40}
    assert call.bytes_append == 0
    assert call.bytes_in == 4 * 4 * 32 * 2 and call.bytes_out == 4 * 6 * 4


def test_completed_pages_are_appended_to_the_fpga_copy_once():
    context = 16 * 10 + 14
    model, cache, method = _setup(QuestParams(token_budget=48, dense_layers=0), context, batch=1)
    calls = []

    class Fpga:
        def offload(self, make_call, gpu, recall):
            call = make_call()
            calls.append(call)
            return call.reference()

    backend = QuestAttention(method, Placement("hetero", {**dict.fromkeys(Step, "gpu"), Step.RELEVANCY: "fpga",
                                                          Step.RETRIEVAL: "fpga"}), Fpga())
    tok = torch.tensor([4])
    for _ in range(4):  # positions 174..177: page 10 completes at 175
        tok = model.decode_step(tok, cache, backend, HostTimeline())
    appended = [c.bytes_append // (2 * 2 * 32 * 2) for c in calls]  # rows x (kmin + kmax) x D x int16
    assert appended == [0, 0, 1, 1, 0, 0, 0, 0]  # two layers per step
    # Two layers' bounds take turns on the kernel's on-chip tiers: each call copies all of its pages again.
    assert [c.shape["new_pages"] for c in calls] == [c.shape["n_pages"] for c in calls]
    method.rewind(context)
    assert method.state.synced == [10, 10]


def test_tiny_suite_runs_end_to_end(tmp_path: Path):
    _, trials = run_tiny(tmp_path, "quest-e2e", "{preset: tiny}", "{name: quest, token_budget: 48, dense_layers: 1}",
                         "{context: [500], batch: [2]}", decode_tokens=4)
    hetero = trials["hetero"]
    assert hetero["steps_ms"][FUSED]["device"] == "fpga"
    assert hetero["steps_ms"]["apply"]["device"] == "gpu"
    assert hetero["fpga"]["calls_per_token"] == 1  # one sparse layer; layer 0 is dense
    assert hetero["fpga"]["recall"] >= 0.8


def test_workload_memory_bound_and_placement_rules():
    shape = PRESETS["llama-3.1-8b"].with_layers(4)
    case = Case("c", "quest", 131072, 32, QuestParams(dense_layers=0), {})
    need = QuestWorkload.memory_bytes(case.params, shape, case, 16, 2)
    kv = 32 * (131072 + 16) * shape.kv_bytes_per_token(2)
    assert need["kv_cache"] == kv
    bounds = 2 * 4 * 32 * 8 * (-(-(131072 + 16) // 16)) * 128 * 2
    assert bounds < need["method"] < bounds + (4 << 30)
    assert QuestParams(token_budget=100).problems()
    bad = Placement("x", {**dict.fromkeys(Step, "gpu"), Step.RELEVANCY: "fpga"})
    with pytest.raises(UsageError, match="together"):
        QuestWorkload.check_placement(bad, {"gpu": "gpu", "fpga": "fpga"})


def test_workload_describes_what_the_record_needs():
    params = QuestParams(token_budget=2048, dense_layers=1)
    model = Decoder(PRESETS["tiny"], torch.float32, torch.device("cpu"), seed=0)
    w = QuestWorkload(params, model, Case("c", "quest", 300, 1, params, {}), 2, seed=1)
    info = w.describe()
    assert info["pages_selected"] == 128 and info["sparse_layers"] == 1
    assert info["fpga_topk_registers_needed"] == 128 and info["fpga_topk_registers_default"] == 64
