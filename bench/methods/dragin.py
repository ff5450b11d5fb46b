"""DRAGIN: dynamic retrieval from real-time information needs (Su et al., arXiv 2403.10081; oneal2000/DRAGIN).

Per sentence (oneal2000/DRAGIN ``AttnWeightRAG`` with the Llama2-7b-chat 2WikiMultihopQA config: method
``attn_entropy``, ``attention_solver`` max, ``hallucination_threshold`` 1.2, ``retrieve_keep_top_k`` 40,
``retrieve_topk`` 3, ``check_real_words``):

1. Generate the sentence, keeping each token's entropy and the last layer's query.
2. **RIND** (the real trigger, recorded): an extra forward pass over the sentence alone with the last
   layer's attention materialized; token i scores entropy_i x (a_i / sum a) x sentence length, where a_i is
   the most attention any later token pays it (averaged over heads), on content words only; retrieval
   triggers when a score exceeds the threshold. Which sentences retrieve is set by ``retrieval_rate``.
3. On retrieval: **Prepare** the query (QFS): the attention of the highest-scoring token over every text
   position before it (the prompt and the generated text, not the passages), content words only, top
   ``query_words`` positions -> their terms; BM25 **Relevancy** + top-``top_k`` **Retrieval**; the sentence
   is discarded, the passages prefilled (**Apply**) and the sentence regenerated (as DRAGIN keeps the text
   before the hallucinated sentence and generates on from there with the documents).

Content words: DRAGIN keeps nouns, verbs, adjectives, proper nouns and numbers (spaCy POS); here the
``function_terms`` most frequent terms of the corpus stand in for the function words. QFS here reads the
cached keys with the decode step's query; DRAGIN's code re-runs the model over the whole text to get the
same attention row (a cost this model leaves out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from bench.errors import UsageError
from bench.methods.rag import (
    Bm25Retriever,
    RagParams,
    RagWorkload,
    dedupe_terms,
    rate_schedule,
    span_attention,
)
from bench.model.decoder import Decoder
from bench.pipeline import DENSE, Step
from bench.schema import param
from bench.timeline import Timeline


@dataclass(frozen=True)
class DraginParams(RagParams):
    """DRAGIN's parameters; defaults from oneal2000/DRAGIN ``config/Llama2-7b-chat/2WikiMultihopQA``."""

    top_k: int = param(3, min=1, max=64, help="documents retrieved and prefilled per retrieval event",
                       source="oneal2000/DRAGIN: retrieve_topk 3")
    threshold: float = param(1.2, min=0.0, help="RIND score above which a token triggers retrieval",
                             source="oneal2000/DRAGIN Llama2-7b-chat 2Wiki: hallucination_threshold 1.2")
    query_words: int = param(40, min=1, max=256, help="words of the attention-chosen query",
                             source="oneal2000/DRAGIN: retrieve_keep_top_k 40")
    function_terms: int = param(33, min=0, max=65536,
                                help="most frequent corpus terms treated as function words",
                                source="bench choice: the size of Elasticsearch's English stop list (33 "
                                       "words), standing in for DRAGIN's spaCy part-of-speech filter")
    retrieval_rate: float = param(0.5, min=0.0, max=1.0,
                                  help="fraction of sentences that retrieve (set: synthetic weights make the "
                                       "trigger meaningless)",
                                  source="bench choice: no per-sentence rate is published for these models")


class DraginWorkload(RagWorkload):
    """DRAGIN generation: RIND every sentence, QFS queries, regeneration after retrieval."""

    name = "dragin"
    Params = DraginParams

    def __init__(self, params: Any, model: Decoder, case: Any, decode_tokens: int, seed: int) -> None:
        p: DraginParams = params
        if case.context < p.query_words:
            raise UsageError(f"DRAGIN picks {p.query_words} query words from the text; the prompt has only "
                             f"{case.context} tokens")
        super().__init__(params, model, case, decode_tokens, seed)
        s, dev = model.shape, model.device
        pmf = torch.from_numpy(self.corpus.term_pmf)
        frequent = torch.topk(pmf, min(p.function_terms, self.corpus.vocab))
        function_term = torch.zeros(self.corpus.vocab, dtype=torch.bool)
        function_term[frequent.indices] = True
        #: Whether each model token is a content word.
        self.content = ~function_term.to(dev)[self.term_of]
        self.queries = torch.zeros(case.batch, p.sentence_tokens, s.heads, s.head_dim, dtype=model.dtype,
                                   device=dev)
        self.span_cos, self.span_sin = model.rope.cos_sin(torch.arange(p.sentence_tokens, device=dev))
        self.positions = torch.arange(self.cache.capacity, device=dev)

    @classmethod
    def schedule(cls, params: Any, sentences: int) -> list[bool]:
        """Sentences spread evenly at ``retrieval_rate``."""
        return rate_schedule(sentences, params.retrieval_rate)

    def generate(self, retrieve: Bm25Retriever, timeline: Timeline) -> None:
        """Generate, score RIND, and on the scheduled sentences form a QFS query, retrieve and regenerate."""
        p: DraginParams = self.params
        entropy = self.signal
        tok = self.start_tokens
        for i, n in enumerate(self.sentences):
            start = self.cache.length
            for j in range(n):
                logits, q = self.decode(tok, timeline)
                with timeline.section(Step.PREPARE.value):
                    logp = torch.log_softmax(logits, dim=-1)
                    entropy[:, j] = -(logp.exp() * logp).sum(dim=-1)
                    self.queries[:, j] = q
                with timeline.section(DENSE):
                    tok = logits.argmax(dim=-1)
                    self.sentence[:, j] = tok
            with timeline.section(Step.PREPARE.value):
                rind = self.rind(n)
                self.triggered[i] = (rind > p.threshold).any(dim=-1)
            if not self.retrieves[i]:
                continue
            with timeline.section(Step.PREPARE.value):
                queries = self.qfs(rind, start)
            docs = retrieve(queries, timeline)
            self.cache.length = start  # the sentence is regenerated with the documents
            tok = self.write_sentence(self.apply(docs, timeline), n, timeline)

    def rind(self, n: int) -> torch.Tensor:
        """RIND score of each token of the current sentence, fp32 [B, n] (0 on function words)."""
        span = self.sentence[:, :n]
        attn = span_attention(self.model, span, self.span_cos[:n], self.span_sin[:n])
        share = attn / attn.sum(dim=-1, keepdim=True).clamp_min(1e-30)
        return self.signal[:, :n] * share * n * self.content[span]

    def qfs(self, rind: torch.Tensor, start: int) -> torch.Tensor:
        """Query formulation by self-attention: int64 [B, query_words] term ids (-1 padded, distinct)."""
        p: DraginParams = self.params
        s = self.model.shape
        b = rind.shape[0]
        length = self.cache.length
        at = rind.argmax(dim=-1)  # the token with the strongest information need
        q = self.queries[torch.arange(b, device=at.device), at]  # [B, H_q, D]
        keys = self.cache.k[-1][:, :, :length]  # [B, H_kv, L, D]
        logits = torch.matmul(q.view(b, s.kv_heads, s.group, s.head_dim).float(),
                              keys.float().transpose(-1, -2)) / math.sqrt(s.head_dim)  # [B, H_kv, g, L]
        before = self.positions[:length].unsqueeze(0) <= (start + at).unsqueeze(1)  # [B, L]
        attn = torch.softmax(logits.masked_fill(~before[:, None, None], float("-inf")), dim=-1)
        weight = attn.mean(dim=(1, 2))
        words = self.tokens[:, :length]
        keep = before & self.is_text[:length] & self.content[words]
        top = torch.topk(weight.masked_fill(~keep, -1.0), p.query_words, dim=-1)
        terms = self.term_of[torch.gather(words, 1, top.indices)].masked_fill(top.values < 0, -1)
        return dedupe_terms(terms)

