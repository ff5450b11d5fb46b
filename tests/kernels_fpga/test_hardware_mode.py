"""`mode: hardware` end to end through the pyxrt TEST DOUBLE (it records XRT calls and plays the C-simulated
kernels on its fake buffers; it models no timing or power of a real board)."""

import dataclasses

import pytest
import torch

from bench.corpus import SyntheticSpec, synthetic_corpus
from bench.errors import DeviceUnavailableError, UsageError
from bench.methods.attention import PipelineAttention
from bench.methods.rag import Bm25Retriever
from bench.methods.seer_attention import SeerAttentionParams, SeerAttentionWorkload
from bench.methods.seer_threshold import SeerThresholdParams, SeerThresholdWorkload
from bench.model.decoder import Decoder
from bench.model.presets import PRESETS
from bench.pipeline import Placement, Step
from bench.runner import Runner
from bench.suite import Case, load_suite
from bench.timeline import HostTimeline
from kernels_fpga.host import FpgaBoard
from kernels_fpga.interface import KERNELS

SUITE = """\
name: hw
model: {{preset: tiny, layers: {layers}}}
method: {{name: seer-attention-r, token_budget: 128}}
matrix: {{context: [380]}}
placements:
  baseline: {{}}
  hetero: {{relevancy: fpga, retrieval: fpga}}
devices:
  gpu: {{device: cpu}}
  fpga: {{mode: hardware, xclbin: {xclbin}}}
measure: {{warmup: 0, trials: 1, decode_tokens: 8, min_duration_s: 0.0, min_iterations: 2, idle_s: 0}}
"""


def _suite(tmp_path, layers=1, xclbin=None):
    if xclbin is None:
        xclbin = tmp_path / "bench.xclbin"
        xclbin.write_bytes(b"xclbin2\0 test double")
    path = tmp_path / "hw.yaml"
    path.write_text(SUITE.format(layers=layers, xclbin=xclbin))
    return load_suite(path)


def test_hardware_mode_drives_the_board_and_matches_the_fpga_numerics(tmp_path, fake_pyxrt, csim_kernel):
    fake = fake_pyxrt(on_run=csim_kernel)
    run = Runner(_suite(tmp_path), tmp_path / "out").run()
    trials = [r for r in run.records() if r["kind"] == "trial" and r["placement"] == "hetero"]
    assert trials and trials[0]["metrics"]["latency_ms"]["provenance"] == "measured"
    assert trials[0]["energy"]["fpga"]["method"] == "xrt_sensor"
    starts = [c for c in fake.calls if c[0] == "start"]
    # One kernel run per decode step (one layer), for every iteration the run made.
    iterations = sum(r["iterations"] for r in trials) + 1 + 1  # + cold + profile pass
    assert len(starts) == iterations * 8
    # Keys loaded once (8 port syncs of the whole stripe), then only appended keys and queries move in.
    to_device = [c for c in fake.calls if c[0] == "sync" and c[2] == "TO_DEVICE"]
    big = [c for c in to_device if c[3] > 2 * 128 * 2 * 4]
    assert len(big) <= 8
    # The 8 decode steps from context 380 close block 5 (position 383): one append per row, no reload.
    appends = [c for c in to_device if c[3] == 128 * 2]  # one int16 key of 128 dims
    assert len(appends) == iterations * 2  # two rows (batch 1 x 2 KV heads), block 5 appended once per iteration
    assert fake.calls.count(("hw_context",)) == 1
    assert run.meta()["fpga"]["fpga"]["mode"] == "hardware"


def test_hardware_mode_keeps_one_key_set_per_layer(tmp_path, fake_pyxrt, csim_kernel):
    fake = fake_pyxrt(on_run=csim_kernel)
    run = Runner(_suite(tmp_path, layers=2), tmp_path / "out").run()
    trials = [r for r in run.records() if r["kind"] == "trial" and r["placement"] == "hetero"]
    iterations = sum(r["iterations"] for r in trials) + 1 + 1  # + cold + profile pass
    starts = fake.events("start")
    assert len(starts) == iterations * 8 * 2  # one run per decode step per layer
    assert all(s[2][-1] == 0 for s in starts)  # layers alternate: each run copies its own set on chip again
    to_device = [c for c in fake.calls if c[0] == "sync" and c[2] == "TO_DEVICE"]
    assert len([c for c in to_device if c[3] > 2 * 128 * 2 * 4]) <= 8 * 2  # each layer's keys loaded once
    assert len([c for c in to_device if c[3] == 128 * 2]) == iterations * 2 * 2  # rows x layers appends


def test_hardware_mode_without_pyxrt_or_xclbin_says_what_is_missing(tmp_path, monkeypatch, fake_pyxrt):
    import sys

    monkeypatch.setitem(sys.modules, "pyxrt", None)
    with pytest.raises(DeviceUnavailableError, match="XRT"):
        Runner(_suite(tmp_path), tmp_path / "out").run()
    fake_pyxrt()
    with pytest.raises(DeviceUnavailableError, match="xclbin not found"):
        Runner(_suite(tmp_path, xclbin=tmp_path / "missing.xclbin"), tmp_path / "out").run()
    with pytest.raises(UsageError, match=r"needs devices\.<fpga>\.xclbin"):
        Runner(load_suite_text(tmp_path, SUITE.format(layers=1, xclbin="null")), tmp_path / "out").run()


def load_suite_text(tmp_path, text):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    return load_suite(path)


class _BoardBesideCsim:
    """Stands where the FPGA device goes: runs each offload on the board and checks it against C-simulation."""

    def __init__(self, board):
        self.board, self.calls = board, 0

    def offload(self, make_call, gpu_selection, recall):
        call = make_call()
        on_board, simulated = call.hardware(self.board), call.csim()
        assert torch.equal(on_board.blocks, simulated.blocks)
        self.calls += 1
        return on_board


def test_threshold_mode_on_the_board_selects_what_csim_selects(tmp_path, fake_pyxrt, csim_kernel):
    fake = fake_pyxrt(on_run=csim_kernel, kernel_args={"threshold_select": len(KERNELS["threshold_select"])})
    xclbin = tmp_path / "bench.xclbin"
    xclbin.write_bytes(b"xclbin2\0 test double")
    params = SeerThresholdParams(target_ratio=0.25)
    model = Decoder(dataclasses.replace(PRESETS["tiny"], layers=1), torch.float32, torch.device("cpu"), seed=0)
    w = SeerThresholdWorkload(params, model, Case("c", "seer-attention-r-threshold", 64 * 6 + 60, 2, params, {}),
                              8, seed=3)
    board = _BoardBesideCsim(FpgaBoard.open(0, str(xclbin), kernels=("threshold_select",)))
    hetero = Placement("hetero", {**dict.fromkeys(Step, "gpu"), Step.RELEVANCY: "fpga", Step.RETRIEVAL: "fpga"})
    backend = PipelineAttention(w.method, hetero, board)
    tok = w.start_tokens
    for _ in range(8):  # position 444 -> 451 closes block 6: one appended key per row
        tok = model.decode_step(tok, w.cache, backend, HostTimeline())
    assert board.calls == 8
    assert len([c for c in fake.calls if c[0] == "start"]) == 8
    appends = [c for c in fake.calls if c[0] == "sync" and c[2] == "TO_DEVICE" and c[3] == 128 * 2]
    assert len(appends) == 2 * 2  # rows = batch 2 x 2 KV heads: one 128-d int16 gate key each


def test_bm25_on_the_board_loads_the_corpus_once_and_selects_what_csim_selects(tmp_path, fake_pyxrt, csim_kernel):
    fake = fake_pyxrt(on_run=csim_kernel, kernel_args={"bm25_topk": len(KERNELS["bm25_topk"])})
    xclbin = tmp_path / "bench.xclbin"
    xclbin.write_bytes(b"xclbin2\0 test double")
    board = FpgaBoard.open(0, str(xclbin), kernels=("bm25_topk",))
    hetero = Placement("hetero", {**dict.fromkeys(Step, "gpu"), Step.RELEVANCY: "fpga", Step.RETRIEVAL: "fpga"})
    corpus = synthetic_corpus(SyntheticSpec(500, median_tokens=40, seed=7), torch.device("cpu"))
    retriever = Bm25Retriever(corpus, 5, hetero, object())  # hetero needs an FPGA named; the test calls it
    queries = torch.tensor([[9, 2, 40, 2], [3, 17, -1, -1], [-1, -1, -1, -1]])
    for row in range(3):
        call = retriever.fpga_call(queries, row)
        assert torch.equal(call.hardware(board).docs, call.csim().docs)
    loads = [c for c in fake.calls if c[0] == "start"]
    assert len(loads) == 1 + 3  # one IDF load, then one run per query: the corpus stayed resident
    assert board.bm25_source is corpus
    other = synthetic_corpus(SyntheticSpec(200, median_tokens=30, seed=8), torch.device("cpu"))
    call = Bm25Retriever(other, 5, hetero, object()).fpga_call(queries, 0)
    assert torch.equal(call.hardware(board).docs, call.csim().docs)  # another corpus is loaded in its place
    assert board.bm25_source is other


def test_two_layers_on_the_board_select_what_csim_selects(tmp_path, fake_pyxrt, csim_kernel):
    fake_pyxrt(on_run=csim_kernel)
    xclbin = tmp_path / "bench.xclbin"
    xclbin.write_bytes(b"xclbin2\0 test double")
    params = SeerAttentionParams(token_budget=128)
    model = Decoder(PRESETS["tiny"], torch.float32, torch.device("cpu"), seed=0)  # 2 layers
    w = SeerAttentionWorkload(params, model, Case("c", "seer-attention-r", 64 * 6 + 60, 2, params, {}), 8, seed=3)
    board = _BoardBesideCsim(FpgaBoard.open(0, str(xclbin)))
    hetero = Placement("hetero", {**dict.fromkeys(Step, "gpu"), Step.RELEVANCY: "fpga", Step.RETRIEVAL: "fpga"})
    backend = PipelineAttention(w.method, hetero, board)
    tok = w.start_tokens
    for _ in range(8):  # closes block 6 in both layers
        tok = model.decode_step(tok, w.cache, backend, HostTimeline())
    assert board.calls == 8 * 2
    assert board.board.keys_per_row(0) == board.board.keys_per_row(1) == [7] * 4
