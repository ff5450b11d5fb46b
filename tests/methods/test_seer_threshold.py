"""SeerAttention-R threshold mode: dense when everything passes, calibration, selection lists, FPGA, end to end."""

import math
from pathlib import Path

import pytest
import torch

from bench.methods.attention import AttentionQuery, KVMemory, PipelineAttention
from bench.methods.seer_attention import BlockScores, selection_recall
from bench.methods.seer_threshold import (
    SeerThresholdParams,
    SeerThresholdWorkload,
    ascending_lists,
    integer_threshold,
)
from bench.model.decoder import Decoder, dense_decode_attention
from bench.model.presets import PRESETS
from bench.pipeline import FUSED, Placement, Step
from bench.suite import Case
from bench.timeline import HostTimeline
from tests.methods.sparse_suite import run_tiny

GPU_ONLY = Placement("baseline-torch", dict.fromkeys(Step, "gpu"), "torch")


def _model():
    return Decoder(PRESETS["tiny"], torch.float32, torch.device("cpu"), seed=0)


def _workload(context, ratio=0.25, batch=2, decode_tokens=6):
    params = SeerThresholdParams(target_ratio=ratio)
    case = Case("c", "seer-attention-r-threshold", context, batch, params, {})
    return SeerThresholdWorkload(params, _model(), case, decode_tokens, seed=3)


class _CheckedAgainstDense(PipelineAttention):
    err: float = 0.0

    def decode(self, inp, timeline):
        out = super().decode(inp, timeline)
        ref = dense_decode_attention(inp.q, inp.cache.k[inp.layer], inp.cache.v[inp.layer], inp.cache.length)
        self.err = max(self.err, float((out - ref).abs().max()))
        return out


@pytest.mark.parametrize("kernels", ["torch", "optimized"])
def test_selecting_every_block_equals_dense_attention(kernels):
    w = _workload(64 * 6 + 40, ratio=1.0)
    method = w.method.with_kernels(kernels)
    method.calibration.thresholds = [-math.inf, -math.inf]
    assert method.calibration.width == -(-(64 * 6 + 40 + 6) // 64)  # width covers every block
    backend = _CheckedAgainstDense(method, GPU_ONLY, None)
    tok = w.start_tokens
    for _ in range(6):  # crosses a block boundary: a gate key is made during decode
        tok = w.model.decode_step(tok, w.cache, backend, HostTimeline())
    assert backend.err < 1e-5


def test_calibration_hits_the_target_ratio_and_iterations_repeat_it():
    w = _workload(64 * 60 + 17, ratio=0.1, batch=8, decode_tokens=4)
    info = w.describe()
    assert all(math.isfinite(t) for t in info["thresholds"])
    # Thresholds fitted to the first pass's logits select about the target in the second pass (its
    # trajectory differs a little, so the ratio is not exact).
    assert all(abs(r - 0.1) < 0.03 for r in info["selected_ratio"])
    peak, width, cap = info["peak_selected_blocks"], info["list_width"], info["list_width_cap"]
    assert cap == 16 * math.ceil((math.ceil(4 * 0.1 * 61) + 16) / 16)  # 61 blocks of capacity
    assert width == min(cap, 16 * math.ceil((peak + max(16, math.ceil(peak / 4))) / 16))
    assert peak <= width and not info["truncated"]
    # Two iterations from the rewound state select the same blocks.
    method = w.method.with_kernels("torch")
    seen = []
    original = method.apply

    def spy(memory, selection, query):
        seen.append(selection.blocks.clone())
        return original(memory, selection, query)

    method.apply = spy
    attention = PipelineAttention(method, GPU_ONLY, None)
    picks = []
    for _ in range(2):
        w.rewind()
        seen.clear()
        tok = w.start_tokens
        for _ in range(4):
            tok = w.model.decode_step(tok, w.cache, attention, HostTimeline())
        picks.append(list(seen))
    assert len(picks[0]) == len(picks[1]) == 8
    # Same list shapes and blocks, up to near-threshold logits that CPU BLAS threading can flip under load.
    assert all(a.shape == b.shape and selection_recall(b, a) >= 0.9 for a, b in zip(*picks, strict=True))
    counts = [(s >= 0).sum(-1) for s in picks[0]]
    assert any(int(c.max()) > int(c.min()) for c in counts)  # selection sizes vary by head and step


def test_selection_lists_on_a_constructed_example():
    mask = torch.tensor([[[False, True, False, True, True], [False, False, False, False, False]]])
    assert ascending_lists(mask, 4).tolist() == [[[1, 3, 4, -1], [-1, -1, -1, -1]]]
    assert ascending_lists(mask, 2).tolist() == [[[1, 3], [-1, -1]]]  # over-long lists keep the lowest ids
    assert ascending_lists(mask, 7).shape == (1, 2, 7)
    w = _workload(64 * 8, ratio=0.5, decode_tokens=1)
    method = w.method.with_kernels("torch")
    method.calibration.thresholds = [0.5, 0.5]
    method.calibration.width = 4
    scores = BlockScores(torch.tensor([[[0.1, 0.9, 0.5, 0.49, 2.0]]]))
    memory = KVMemory(w.cache.k[0], w.cache.v[0], 0, 0)
    assert method.retrieve(memory, scores).blocks.tolist() == [[[1, 2, 4, -1]]]


def test_fused_kernel_agrees_with_the_separate_steps():
    w = _workload(64 * 30 + 5, ratio=0.2, decode_tokens=1)
    cache = w.cache
    cache.length += 1
    memory = KVMemory(cache.k[1], cache.v[1], cache.length, 1)
    gen = torch.Generator().manual_seed(9)
    q = torch.randn(2, 8, 32, generator=gen)
    query = AttentionQuery(q, q, torch.randn(2, 2, 32, generator=gen))
    method = w.method.with_kernels("torch")
    index = method.prepare(memory, query)
    fused = method.relevancy_retrieve(memory, index, query).blocks
    separate = method.retrieve(memory, method.relevancy(index, query)).blocks
    assert torch.equal(fused, separate)
    assert fused.shape[-1] == method.calibration.width


def test_integer_threshold_is_equivalent_to_the_logit_threshold():
    gen = torch.Generator().manual_seed(1)
    q = torch.randint(-32767, 32768, (128,), generator=gen).double()
    keys = torch.randint(-32767, 32768, (500, 128), generator=gen).double()
    a, b = 3e-5, 7e-5
    logits = (keys @ q) * a * b / math.sqrt(128)
    t = float(logits.median())
    limit = integer_threshold(t, a, b, 128)
    assert torch.equal((keys @ q) >= limit, logits >= t)
    assert integer_threshold(math.inf, a, b, 128) == (1 << 63) - 1


def test_fpga_reference_matches_csim_and_the_gpu_selection():
    w = _workload(64 * 50 + 63, ratio=0.2, decode_tokens=1)
    cache = w.cache
    cache.length += 1  # position 64 x 50 + 63 closes block 50: its key is appended to the FPGA copy
    memory = KVMemory(cache.k[0], cache.v[0], cache.length, 0)
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(2, 8, 32, generator=gen)
    query = AttentionQuery(q, q, torch.randn(2, 2, 32, generator=gen))
    method = w.method
    index = method.prepare(memory, query)
    call = method.fpga_call(memory, index, query)
    ref, sim = call.reference().blocks, call.csim().blocks
    assert torch.equal(ref, sim)
    gpu = method.relevancy_retrieve(memory, index, query)
    assert method.recall(call.reference(), gpu) >= 0.9
    assert call.kernel == "threshold_select"
    # new_keys = n_keys: the tiny model's 2 layers take turns on the on-chip tiers (entries_to_sync).
    assert call.shape == {"rows": 4, "n_keys": 50, "dim": 128, "new_keys": 50}
    assert call.bytes_append == 4 * 128 * 2 and call.bytes_out == 4 * (8 + 4)


def test_tiny_suite_runs_end_to_end(tmp_path: Path):
    _, trials = run_tiny(tmp_path, "seer-threshold-e2e", "{preset: tiny}",
                         "{name: seer-attention-r-threshold, target_ratio: 0.25}", "{context: [640], batch: [2]}",
                         decode_tokens=3)
    hetero = trials["hetero"]
    assert hetero["steps_ms"][FUSED]["device"] == "fpga"
    assert hetero["fpga"]["calls_per_token"] == 2  # both layers
    assert hetero["fpga"]["recall"] >= 0.8


def test_memory_bound_covers_the_gate_and_the_lists():
    shape = PRESETS["llama-3.1-8b"].with_layers(4)
    p = SeerThresholdParams()
    case = Case("c", "seer-attention-r-threshold", 131072, 32, p, {})
    need = SeerThresholdWorkload.memory_bytes(p, shape, case, 16, 2)
    blocks = -(-(131072 + 16) // 64)
    keys = 4 * 32 * 8 * blocks * 128 * 4  # bf16 + int16 copy
    gathered = 32 * 8 * (p.width_cap(blocks) + 1) * 64 * 128 * 2 * 2
    assert keys + gathered < need["method"] < keys + gathered + (2 << 30)
    assert p.width_cap(blocks) == 16 * math.ceil((math.ceil(4 * 0.1 * blocks) + 16) / 16)
    assert p.width_cap(3) == 3
