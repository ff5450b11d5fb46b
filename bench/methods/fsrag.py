"""FS-RAG: fixed-sentence RAG, retrieving before every sentence (a baseline of DRAGIN, arXiv 2403.10081).

Before each sentence: **Prepare** the query from the last ``sentence_tokens`` tokens of text (the previous
sentence; before the first, the end of the prompt), BM25 **Relevancy** + top-``top_k`` **Retrieval**,
**Apply** (prefill the passages), then generate the sentence. There is no trigger: every sentence retrieves
(oneal2000/DRAGIN ``fix-sentence-retrieval``, ``retrieve_topk`` 3; its code queries with the question each
time, the paper describes the last sentence, which is what is modelled here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.errors import UsageError
from bench.methods.rag import Bm25Retriever, RagParams, RagWorkload, dedupe_terms
from bench.model.decoder import Decoder
from bench.pipeline import Step
from bench.schema import param
from bench.timeline import Timeline


@dataclass(frozen=True)
class FsRagParams(RagParams):
    """FS-RAG's parameters; defaults from oneal2000/DRAGIN ``config/Llama2-7b-chat/2WikiMultihopQA``."""

    top_k: int = param(3, min=1, max=64, help="documents retrieved and prefilled before every sentence",
                       source="oneal2000/DRAGIN FS-RAG config: retrieve_topk 3")


class FsRagWorkload(RagWorkload):
    """FS-RAG generation: retrieve, prefill and generate, sentence after sentence."""

    name = "fs-rag"
    Params = FsRagParams

    def __init__(self, params: Any, model: Decoder, case: Any, decode_tokens: int, seed: int) -> None:
        if case.context < params.sentence_tokens:
            raise UsageError(f"FS-RAG's first query is the prompt's last {params.sentence_tokens} tokens; "
                             f"the prompt has only {case.context}")
        super().__init__(params, model, case, decode_tokens, seed)

    @classmethod
    def schedule(cls, params: Any, sentences: int) -> list[bool]:
        """Every sentence retrieves."""
        return [True] * sentences

    def generate(self, retrieve: Bm25Retriever, timeline: Timeline) -> None:
        """Retrieve with the last sentence, prefill the passages, generate the next sentence."""
        s = self.params.sentence_tokens
        context = self.case.context
        for i, n in enumerate(self.sentences):
            with timeline.section(Step.PREPARE.value):
                text = self.tokens[:, context - s : context] if i == 0 else self.sentence
                queries = dedupe_terms(self.term_of[text])
                self.triggered[i] = True
            docs = retrieve(queries, timeline)
            self.write_sentence(self.apply(docs, timeline), n, timeline)
