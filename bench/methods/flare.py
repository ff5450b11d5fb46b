"""FLARE: forward-looking active retrieval (Jiang et al., arXiv 2305.06983; jzbjyb/FLARE), over BM25.

Per sentence (the loop of jzbjyb/FLARE with ``look_ahead_filter_prob`` 0.8, ``look_ahead_mask_prob`` 0.4,
``topk`` 2 for 2WikiMultihopQA):

1. Generate a look-ahead sentence of ``sentence_tokens`` tokens, keeping each chosen token's probability.
2. The real trigger: does any token of the look-ahead have probability below ``theta``? (recorded; which
   sentences retrieve is set by ``retrieval_rate``, see :mod:`bench.methods.rag`).
3. On retrieval: **Prepare** the query, the look-ahead with the tokens below ``mask_prob`` masked; BM25
   **Relevancy** + top-``top_k`` **Retrieval**; discard the look-ahead, **Apply** (prefill the passages),
   then regenerate the sentence (its decode steps are dense time).

A sentence that retrieves costs two sentences of decoding plus the prefill; one that does not keeps its
look-ahead. The initial retrieval FLARE makes with the user input is not modelled (the prompt is synthetic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bench.methods.rag import Bm25Retriever, RagParams, RagWorkload, dedupe_terms, rate_schedule
from bench.pipeline import DENSE, Step
from bench.schema import param
from bench.timeline import Timeline


@dataclass(frozen=True)
class FlareParams(RagParams):
    """FLARE's parameters; defaults from jzbjyb/FLARE ``configs/2wikihop_flare_config.json``."""

    top_k: int = param(2, min=1, max=64, help="documents retrieved and prefilled per retrieval event",
                       source="jzbjyb/FLARE 2wikihop config: topk 2 (WikiAsp: 5)")
    theta: float = param(0.8, min=0.0, max=1.0,
                         help="a look-ahead token below this probability triggers retrieval",
                         source="jzbjyb/FLARE: look_ahead_filter_prob 0.8")
    mask_prob: float = param(0.4, min=0.0, max=1.0,
                             help="look-ahead tokens below this probability leave the query",
                             source="jzbjyb/FLARE: look_ahead_mask_prob 0.4")
    retrieval_rate: float = param(0.5, min=0.0, max=1.0,
                                  help="fraction of sentences that retrieve (set: synthetic weights make the "
                                       "trigger meaningless)",
                                  source="bench choice: no per-sentence rate is published for these models")


class FlareWorkload(RagWorkload):
    """FLARE generation with look-ahead, masked queries and sentence regeneration."""

    name = "flare"
    Params = FlareParams

    @classmethod
    def schedule(cls, params: Any, sentences: int) -> list[bool]:
        """Sentences spread evenly at ``retrieval_rate``."""
        return rate_schedule(sentences, params.retrieval_rate)

    def generate(self, retrieve: Bm25Retriever, timeline: Timeline) -> None:
        """Look ahead, check, and on the scheduled sentences retrieve, prefill and regenerate."""
        p: FlareParams = self.params
        conf = self.signal
        tok = self.start_tokens
        for i, n in enumerate(self.sentences):
            start = self.cache.length
            for j in range(n):
                logits, _ = self.decode(tok, timeline)
                with timeline.section(Step.PREPARE.value):
                    prob, tok = torch.softmax(logits, dim=-1).max(dim=-1)
                    conf[:, j] = prob
                with timeline.section(DENSE):
                    self.sentence[:, j] = tok
            with timeline.section(Step.PREPARE.value):
                self.triggered[i] = (conf[:, :n] < p.theta).any(dim=-1)
            if not self.retrieves[i]:
                continue
            with timeline.section(Step.PREPARE.value):
                terms = self.term_of[self.sentence[:, :n]].masked_fill(conf[:, :n] < p.mask_prob, -1)
                queries = dedupe_terms(terms)
            docs = retrieve(queries, timeline)
            self.cache.length = start  # the look-ahead is discarded
            tok = self.write_sentence(self.apply(docs, timeline), n, timeline)
