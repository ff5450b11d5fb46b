"""SeerAttention-R: sparse equals dense at full budget, top-k is right, incremental gate keys are right."""

import pytest
import torch

from bench.methods.attention import AttentionQuery, KVMemory, PipelineAttention
from bench.methods.seer_attention import (
    BlockScores,
    SeerAttentionParams,
    SeerAttentionR,
    exact_topk,
    selection_recall,
)
from bench.model.decoder import Decoder, DenseAttention
from bench.model.presets import PRESETS
from bench.pipeline import Placement, Step
from bench.timeline import HostTimeline


def _setup(context, budget, batch=2, dtype=torch.float32, seed=0):
    model = Decoder(PRESETS["tiny"], dtype, torch.device("cpu"), seed=seed)
    cache = model.new_cache(batch, context + 128)
    method = SeerAttentionR(SeerAttentionParams(token_budget=budget), kernels="torch")
    method.attach(model, cache, seed)
    model.fill_cache(cache, context, seed=seed + 1, chunk=128, on_chunk=method.observe_fill)
    method.fill_done(context)
    return model, cache, method


def test_decode_with_full_budget_equals_dense_decode():
    context = 64 * 5 + 60
    model, cache, method = _setup(context, budget=64 * 8)
    backend = PipelineAttention(method, Placement("baseline-torch", dict.fromkeys(Step, "gpu"), "torch"), None)
    tok = torch.tensor([3, 5])
    dense_cache = model.new_cache(2, context + 128)
    for i in range(2):
        dense_cache.k[i].copy_(cache.k[i])
        dense_cache.v[i].copy_(cache.v[i])
    dense_cache.length = context
    t_sparse, t_dense = tok, tok
    for _ in range(12):  # crosses a block boundary, so a gate key is made during decode
        t_sparse = model.decode_step(t_sparse, cache, backend, HostTimeline())
        t_dense = model.decode_step(t_dense, dense_cache, DenseAttention(), HostTimeline())
        assert torch.equal(t_sparse, t_dense)


def test_incremental_gate_keys_equal_keys_from_the_fill():
    model, cache, method = _setup(64 * 3 + 30, budget=128)
    # Decode to the end of the partial block; its key is made incrementally.
    backend = PipelineAttention(method, Placement("b", dict.fromkeys(Step, "gpu"), "torch"), None)
    tok = torch.tensor([1, 2])
    for _ in range(34):
        tok = model.decode_step(tok, cache, backend, HostTimeline())
    # Rebuild the gate keys from scratch with a fill over the same pre-RoPE keys: block 3 must agree.
    pre = method.state.pending[0].clone()
    expect = method._block_keys(0, pre.unsqueeze(2), 3)
    torch.testing.assert_close(method.state.keys[0][:, :, 3:4], expect)


def test_retrieve_picks_the_top_blocks_and_pads():
    method = SeerAttentionR(SeerAttentionParams(token_budget=64 * 3), kernels="torch")
    scores = torch.tensor([[[0.1, 0.9, 0.5, 0.7, 0.2]], [[1.0, 0.0, 0.0, 0.0, 0.0]]])
    sel = method.retrieve(None, BlockScores(scores)).blocks
    assert sorted(sel[0, 0].tolist()) == [1, 2, 3]
    assert sel[1, 0, 0].item() == 0
    few = method.retrieve(None, BlockScores(scores[:, :, :2])).blocks
    assert few.shape[-1] == 3 and (few[..., 2] == -1).all()


def test_exact_topk_breaks_ties_toward_the_lower_index():
    scores = torch.tensor([[5.0, 7.0, 7.0, 1.0, 7.0, 5.0]])
    assert exact_topk(scores, 2).tolist() == [[1, 2]]
    assert exact_topk(scores, 4).tolist() == [[1, 2, 4, 0]]


def test_selection_recall():
    gpu = torch.tensor([[[0, 1, 2, -1]]])
    assert selection_recall(torch.tensor([[[2, 1, 0, -1]]]), gpu) == 1.0
    assert selection_recall(torch.tensor([[[2, 5, 7, -1]]]), gpu) == pytest.approx(1 / 3)


def test_fpga_reference_selection_matches_gpu_on_exact_inputs():
    _, cache, method = _setup(64 * 10, budget=64 * 4, dtype=torch.float32)
    memory = KVMemory(cache.k[0], cache.v[0], cache.length + 1, 0)
    cache.length += 1
    q = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(5))
    query = AttentionQuery(q, q, torch.randn(2, 2, 32))
    index = method.prepare(memory, query)
    call = method.fpga_call(memory, index, query)
    fpga = call.reference().blocks
    gpu = method.relevancy_retrieve(memory, index, query).blocks
    assert fpga.shape == gpu.shape == (2, 2, 4)
    assert selection_recall(fpga, gpu) >= 0.75
    assert call.bytes_in == 2 * 2 * 128 * 2 and call.bytes_out == 2 * 2 * 4 * 4
    # new_keys = n_keys: the tiny model's 2 layers take turns on the on-chip tiers (entries_to_sync).
    assert call.shape == {"rows": 4, "n_keys": 10, "dim": 128, "k": 4, "new_keys": 10}


def test_with_kernels_shares_parameters_and_state_but_not_the_flavour():
    _, _, method = _setup(256, 128)
    optimized = method.with_kernels("optimized")
    assert type(optimized) is SeerAttentionR and optimized is not method
    assert optimized.kernels == "optimized" and optimized.impl == "auto"
    assert method.kernels == "torch" and method.impl == "torch"
    assert optimized.params is method.params and optimized.state is method.state
