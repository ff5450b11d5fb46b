"""How the host lays out the kernels' buffers in FPGA memory, as ``hls/bench_layout.h`` and ``bm25_topk.cpp`` read them.

**Striped key ports.** A row's entries (keys, or pages of a min and a max vector) are striped over the
``ports`` key ports in stripes of ``stripe`` entries: entry ``i`` is on port ``(i // stripe) % ports`` at
local index ``(i // (stripe * ports)) * stripe + i % stripe``, so PE ``p`` reads only port ``p``. Each
port holds ``port_stride`` entries per row: the row stride (capacity) rounded up to whole stripes, so
appending entry ``i`` writes only its bytes, on one port.

**On-chip tiers.** Each PE keeps its first local entries of every row on chip: whole stripes, BRAM first,
then URAM, shared evenly by the rows (:func:`tier_split`). The tiers are row prefixes.

**BM25 channels.** Documents are split into ``channels`` contiguous ranges; in a channel each document's
postings are placed by lane (term id mod ``lanes``) and padded to whole beats, one uint32 per posting
(term id in bits 0-15, tf in bits 16-31), with per-document beat offsets (:func:`bm25_channels`).

:mod:`kernels_fpga.csim` and :mod:`kernels_fpga.host` write buffers with these functions and
:mod:`kernels_fpga.model` counts cycles with them, so all three follow the kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Stripes:
    """Striping of one buffer family over the key ports.

    Attributes:
        ports: Key ports (PEs).
        stripe: Entries per stripe (``BENCH_PE_BLOCK`` keys, or half as many pages).
        capacity: Row stride in entries: what a row may grow to without moving.
    """

    ports: int
    stripe: int
    capacity: int

    @property
    def port_stride(self) -> int:
        """Entries per row on each port: the capacity rounded up to whole stripes of every port."""
        round_ = self.stripe * self.ports
        return -(-max(self.capacity, 0) // round_) * self.stripe

    def location(self, row: int, index: int) -> tuple[int, int]:
        """(port, entry offset in that port's buffer) of entry ``index`` of ``row``."""
        port = (index // self.stripe) % self.ports
        local = (index // (self.stripe * self.ports)) * self.stripe + index % self.stripe
        return port, row * self.port_stride + local

    def split(self, entries: np.ndarray) -> list[np.ndarray]:
        """The port buffers of ``entries`` [rows, n, *entry] (n <= capacity).

        Returns ``ports`` C-contiguous arrays [rows, port_stride, *entry], zero past each row's entries.
        """
        rows, n = entries.shape[:2]
        if n > self.capacity:
            raise ValueError(f"{n} entries per row exceed the capacity {self.capacity}")
        padded_n = self.port_stride * self.ports
        padded = np.zeros((rows, padded_n, *entries.shape[2:]), dtype=entries.dtype)
        padded[:, :n] = entries
        # [rows, rounds, ports, stripe, ...] -> port p holds [rows, rounds * stripe, ...]
        shaped = padded.reshape(rows, padded_n // (self.stripe * self.ports), self.ports, self.stripe,
                                *entries.shape[2:])
        return [np.ascontiguousarray(shaped[:, :, p].reshape(rows, self.port_stride, *entries.shape[2:]))
                for p in range(self.ports)]


def port_count(x: int, port: int, stripe: int, ports: int) -> int:
    """Entries of ``port`` among a row's entries [0, x) (``port_count`` in bench_layout.h)."""
    round_ = stripe * ports
    rest = x % round_ - port * stripe
    return (x // round_) * stripe + min(max(rest, 0), stripe)


@dataclass(frozen=True)
class TierSplit:
    """Where a row's entries are read from (``make_layout`` in bench_layout.h).

    Attributes:
        bram_local: BRAM entries per row on each PE (whole stripes).
        uram_local: URAM entries per row on each PE (whole stripes).
        bram_end: Entries [0, bram_end) of a row are in BRAM.
        uram_end: Entries [bram_end, uram_end) are in URAM, the rest are read from HBM.
        n: Entries per row.
    """

    bram_local: int
    uram_local: int
    bram_end: int
    uram_end: int
    n: int


def tier_share(request: int, rows: int, stripe: int, ports: int, per_pe: int) -> int:
    """Per-row, per-PE share of a tier in entries: the request in whole stripes, cut to fit ``rows`` rows."""
    local = max(request, 0) // (stripe * ports) * stripe
    fit = per_pe // rows // stripe * stripe if rows > 0 else per_pe
    return min(local, fit)


def tier_split(rows: int, n: int, stripe: int, ports: int, bram_request: int, uram_request: int,
               bram_per_pe: int, uram_per_pe: int) -> TierSplit:
    """The kernel's tier split for ``rows`` rows of ``n`` entries.

    Args:
        rows: Rows sharing the tiers.
        n: Entries per row.
        stripe: Entries per stripe.
        ports: PEs.
        bram_request: BRAM entries per row the host asks for (all PEs together).
        uram_request: URAM entries per row the host asks for.
        bram_per_pe: Each PE's BRAM tier in entries.
        uram_per_pe: Each PE's URAM tier in entries.
    """
    b = tier_share(bram_request, rows, stripe, ports, bram_per_pe)
    u = tier_share(uram_request, rows, stripe, ports, uram_per_pe)
    return TierSplit(b, u, min(n, ports * b), min(n, ports * (b + u)), n)


def bm25_doc_ranges(n_docs: int, channels: int) -> list[tuple[int, int]]:
    """[begin, end) document range of each channel: contiguous blocks of ceil(n_docs / channels)."""
    chunk = -(-n_docs // channels)
    return [(min(c * chunk, n_docs), min((c + 1) * chunk, n_docs)) for c in range(channels)]


def bm25_channels(doc_ptr: np.ndarray, term_ids: np.ndarray, tfs: np.ndarray, channels: int, lanes: int,
                  vocab: int = 1 << 16) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per channel, (doc_ptr int64 [docs + 1] in beats, postings uint32 [beats * lanes]).

    Slot s of a beat holds a posting whose term id t has t % lanes == s, or 0 (an empty slot); a document
    takes as many beats as its fullest lane. Postings keep their document; their order within a lane
    follows the input.

    Args:
        doc_ptr: int [N + 1] CSR offsets over the postings: doc_ptr[0] = 0, non-decreasing,
            doc_ptr[N] = P.
        term_ids: int [P] term ids in [0, vocab).
        tfs: int [P] term frequencies in [0, 65535].
        channels: Posting ports.
        lanes: Postings per beat.
        vocab: Vocabulary size, at most 65536 (a posting holds a 16-bit term id).

    Raises:
        ValueError: A malformed corpus.
    """
    doc_ptr = np.asarray(doc_ptr)
    term_ids = np.asarray(term_ids)
    tfs = np.asarray(tfs)
    for name, array in (("doc_ptr", doc_ptr), ("term_ids", term_ids), ("tfs", tfs)):
        if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"{name} must be a 1-D integer array, got dtype {array.dtype}, shape {array.shape}")
    doc_ptr, term_ids = doc_ptr.astype(np.int64), term_ids.astype(np.int64)
    if (len(doc_ptr) == 0 or doc_ptr[0] != 0 or (np.diff(doc_ptr) < 0).any() or doc_ptr[-1] != len(term_ids)
            or len(tfs) != len(term_ids)):
        raise ValueError("doc_ptr must start at 0, never decrease and end at len(term_ids) == len(tfs)")
    if term_ids.size and (term_ids.min() < 0 or term_ids.max() >= min(vocab, 1 << 16)):
        raise ValueError(f"term ids must lie in [0, {min(vocab, 1 << 16)})")
    if tfs.size and (tfs.min() < 0 or tfs.max() > 0xFFFF):
        raise ValueError("term frequencies must lie in [0, 65535]")
    n_docs = len(doc_ptr) - 1
    lengths = np.diff(doc_ptr)
    doc_of = np.repeat(np.arange(n_docs, dtype=np.int64), lengths)
    lane = term_ids % lanes
    # Rank of each posting among its document's postings in the same lane = its beat within the document.
    key = doc_of * lanes + lane
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    first = np.searchsorted(sorted_key, sorted_key, side="left")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order)) - first
    per_lane = np.bincount(key, minlength=n_docs * lanes).reshape(n_docs, lanes)
    beats = per_lane.max(axis=1) if n_docs else np.zeros(0, dtype=np.int64)
    word = (term_ids | (np.asarray(tfs, dtype=np.int64) << 16)).astype(np.uint32)
    out = []
    for begin, end in bm25_doc_ranges(n_docs, channels):
        ptr = np.zeros(end - begin + 1, dtype=np.int64)
        np.cumsum(beats[begin:end], out=ptr[1:])
        postings = np.zeros(max(int(ptr[-1]), 1) * lanes, dtype=np.uint32)  # a buffer is never empty
        mine = slice(doc_ptr[begin], doc_ptr[end])
        slot = (ptr[doc_of[mine] - begin] + rank[mine]) * lanes + lane[mine]
        postings[slot] = word[mine]
        out.append((ptr, postings))
    return out


def bm25_expected_beats(mean_postings: float, lanes: int) -> float:
    """Expected beats of a document, max(1, its fullest lane), for term ids uniform over the lanes.

    Poissonization: a document of mean length m puts Poisson(m / lanes) postings in each lane,
    independently, so P(fullest lane <= t) = F(t)^lanes with F the Poisson CDF, and
    E[max(1, M)] = 1 + sum_{t >= 1} (1 - F(t)^lanes).

    Args:
        mean_postings: Mean postings per document (>= 0).
        lanes: Lanes per beat.
    """
    if mean_postings <= 0:
        return 1.0
    lam = mean_postings / lanes
    term = cdf = float(np.exp(-lam))
    total, t = 1.0, 0
    while True:
        t += 1
        term *= lam / t
        cdf += term
        tail = 1.0 - min(cdf, 1.0) ** lanes
        if t > lam and tail < 1e-12:
            return total
        total += tail


def pack_query_bitmap(mask: np.ndarray) -> np.ndarray:
    """A boolean term mask [V] as the kernel's bitmap: uint64 [V / 64], term t at bit t % 64 of word t // 64."""
    return np.packbits(np.asarray(mask, dtype=bool), bitorder="little").view("<u8").astype(np.uint64)

