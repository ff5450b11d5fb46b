"""Analytic model of the FPGA memory-processing kernels: cycles, seconds, transfers, launch and energy.

Every number this module returns is **analytic** (``provenance = "analytic"``): computed from a device
spec (:mod:`kernels_fpga.spec`, each figure with its source) and the loop structure of the HLS kernels
in ``kernels_fpga/hls/`` (modelled on the HeteroLLM kernels, paper.md §7). The kernel structure (PEs,
PE width, ports, stripes, tier sizes, packet, BM25 channels and lanes) is read from the kernels' own
parameter header (:mod:`kernels_fpga.params`), and buffer placement from :mod:`kernels_fpga.layout`, so
the model follows whatever build it is given. The spec supplies the device: clock, HBM bandwidth,
on-chip capacity, link, launch and power, plus the two synthesis figures the source does not fix
(``pe.topk_ii``, ``pe.fill_latency``). The structure:

* **Rows.** ``rows`` rows run one after another; each first syncs its newly appended on-chip keys
  (``sync_row``, one port beat per cycle on each port), then runs one dataflow region costing
  ``depth + II * (trip - 1)`` cycles as a pipelined loop (UG1393), ``depth`` = ``pe.fill_latency``.
* **Ports and tiers** (``bench_layout.h``). Entries are striped over the ``n_pe`` key ports in stripes of
  ``BENCH_PE_BLOCK`` keys (half as many pages); each PE keeps whole stripes of its first entries in BRAM,
  then URAM, the rest is read from its port. PE 0 holds the most entries of every tier.
* **Phases.** A row's BRAM, URAM and HBM entries are phases; within a phase the PEs, the memory and the
  packet consumer overlap through FIFOs, so it costs the slowest of: the busiest PE, the HBM bandwidth
  (``bytes / (n_pe * bw_per_pc)``) and the packet consumer (``topk_ii`` cycles per 16-score packet).
  PE cycles per tier, as ``bench_pe.h`` (keys; pages in ``page_topk.cpp`` with ``group`` heads per pass):
  BRAM ``ceil(n / BENCH_PE_BLOCK)`` passes, URAM ``ceil(n / BENCH_URAM_BLOCK)`` passes, each
  ``D / BENCH_PE_DIMS`` cycles; HBM ``D / port_words`` cycles a key. The DSA chain takes one key per
  cycle per head pass; its per-port readers one on-chip key per cycle or one HBM beat per cycle.
* **Top-k** (``kernels_fpga/hls/bench_topk.h``, as HeteroLLM's ``topk_parallel_cmp``). ``K``
  registers; each 16-score packet is compared with the current minimum in parallel (``topk_ii`` cycles).
  On a hit the insert loop walks the packet's ``packet`` candidates one per cycle (not pipelined), and
  each candidate that enters replaces the minimum, whose successor is found by a ``ceil(log2 K)``-level
  comparator tree. For scores in random order the indicator "item ``i`` is among the top ``K`` of the
  first ``i``" is independent across ``i`` with probability ``K/i`` (relative ranks of a random
  permutation are independent, Renyi 1962), so the expected replacements after the fill are
  ``K (H_n - H_K) ~ K ln(n/K)`` (with the fills, the classic ``K (1 + ln(n/K))`` top-K update count) and
  a packet of items ``a..b`` hits with probability ``1 - prod_{i=a..b} (1 - K/i)``. The worst case
  (ascending scores) hits every packet and replaces on every item after the fill (``n - K``). Most hits
  come early, in the BRAM phase where the top-k unit is the bottleneck, so their stalls are added in full.
  The result is written 16 slots (192 bytes) at a time through one port.

Keys stay resident on the card: a decode-step offload moves only the query in and the indices out
(:meth:`FpgaModel.offload`); a new key is appended with a small :meth:`FpgaModel.transfer` and synced
into the on-chip tiers by the next call (``new_keys``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.errors import UsageError
from kernels_fpga.layout import TierSplit, bm25_doc_ranges, bm25_expected_beats, port_count, tier_split
from kernels_fpga.params import KernelParams, kernel_params
from kernels_fpga.spec import DeviceSpec, load_spec

CONTROL_MODES = ("host-started", "auto-restart", "free-running")
DIRECTIONS = ("to_fpga", "to_gpu")
ORDERS = ("random", "ascending")
PROVENANCE = "analytic"

_LAUNCH_FIELD = {
    "host-started": "launch.host_started",
    "auto-restart": "launch.auto_restart",
    "free-running": "launch.free_running",
}
_TIERS = ("bram", "uram", "hbm")
_INT16_BYTES = 2
_SLOT_BYTES = 4 + 8  # a top-k slot: int32 out_index + int64 out_score (kernels_fpga/hls/bench_topk.h)
_BITMAP_WORD_BYTES = 8  # threshold_select packs 64 keys per uint64 word
_COUNT_BYTES = 4
_THRESHOLD_BYTES = 8  # threshold_select reads its int64 threshold from a one-element buffer
_IDF_BYTES = 4  # int32 Q16 IDF per term (bm25_topk.cpp)
_BM25_DOC_PTR_BYTES = 8  # doc_ptr<c> is int64 (bm25_topk.cpp)
_EULER_GAMMA = 0.5772156649015329


@dataclass(frozen=True)
class KernelEstimate:
    """Analytic estimate of one kernel call.

    Attributes:
        kernel: Kernel family (``relevancy_topk``, ``page_topk``...).
        seconds: Kernel run time in seconds (cycles / clock), launch and transfers excluded.
        cycles: Kernel clock cycles.
        busy_s: Seconds the kernel logic is active (equal to ``seconds`` for these streaming kernels).
        hbm_bytes: Bytes the kernel moves to or from HBM (keys past the on-chip tiers, queries, outputs).
        breakdown: Named cycle terms for all rows together (``fill``, ``bram``, ``uram``, ``hbm``,
            ``topk_scan``, ``topk_tree``, ``sync``, ``query_load``, ``idf_load``, ``drain``); they add up to
            ``cycles``. ``fill`` is ``depth - 1`` of ``depth + II * (trip - 1)`` per row plus the rounding up
            of fractional (expected) stalls.
        tier: Items (keys, pages or postings) per storage tier, all rows together.
        notes: Assumptions behind the estimate.
        provenance: Always ``"analytic"``.
    """

    kernel: str
    seconds: float
    cycles: int
    busy_s: float
    hbm_bytes: int
    breakdown: Mapping[str, float]
    tier: Mapping[str, int]
    notes: tuple[str, ...]
    provenance: str = PROVENANCE


@dataclass(frozen=True)
class OffloadEstimate:
    """One offload: launch, query in, kernel, indices out, run back to back.

    Attributes:
        parts: Seconds per part: ``launch``, ``transfer_in``, ``kernel``, ``transfer_out``.
        total_s: Wall time of the offload in seconds (sum of ``parts``).
        busy_s: Seconds the kernel logic is active (the dynamic-power window).
        control: Kernel control mode the launch cost assumes.
        link: GPU<->FPGA link mode the transfers assume.
        kernel: The kernel estimate it wraps.
        provenance: Always ``"analytic"``.
    """

    parts: Mapping[str, float]
    total_s: float
    busy_s: float
    control: str
    link: str
    kernel: KernelEstimate
    provenance: str = PROVENANCE


def entries_to_sync(n: int, appended: int, key_sets: int) -> int:
    """Entries per row a key kernel must copy into its on-chip tiers before it scores a row of ``n``.

    The kernels address their BRAM/URAM tiers by row, so the tiers hold one key set (one layer's keys) at a
    time: with several sets taking turns (a multi-layer model), every call copies its on-chip share again
    from HBM; with one set, only the entries appended since the last call. The kernel functions below take
    this as ``new_keys`` / ``new_pages``.

    Args:
        n: Entries per row this call scores.
        appended: Entries per row appended since the last call.
        key_sets: Key sets resident on the board together (layers with an index).
    """
    return n if key_sets > 1 else min(appended, n)


def pipelined_loop_cycles(depth: int, ii: int, trip: int) -> int:
    """Cycles of a pipelined loop: ``depth + II * (trip - 1)`` (UG1393, loop optimization); 0 when trip is 0.

    Args:
        depth: Pipeline depth in cycles (latency of one iteration).
        ii: Initiation interval in cycles.
        trip: Trip count (iterations).
    """
    if depth < 0 or ii < 1 or trip < 0:
        raise ValueError(f"need depth >= 0, ii >= 1, trip >= 0; got depth={depth}, ii={ii}, trip={trip}")
    return 0 if trip == 0 else depth + ii * (trip - 1)


def harmonic(n: int) -> float:
    """The harmonic number H_n = sum_{i=1..n} 1/i (exact sum below 10^4, else the asymptotic series)."""
    if n < 0:
        raise ValueError(f"harmonic number needs n >= 0, got {n}")
    if n < 10_000:
        return math.fsum(1.0 / i for i in range(1, n + 1))
    # Error of this truncation is below 1/(120 n^4) (Knuth, TAOCP vol. 1, 1.2.7).
    return math.log(n) + _EULER_GAMMA + 1.0 / (2 * n) - 1.0 / (12 * n * n)


def expected_topk_insertions(n: int, k: int) -> float:
    """Expected replacements in a top-k unit after its k fills, for n items in random order.

    Item i > k enters the running top-k with probability k/i, so the expectation is k * (H_n - H_k).

    Args:
        n: Items streamed.
        k: Entries kept.
    """
    if n <= k:
        return 0.0
    return k * (harmonic(n) - harmonic(k))


def worst_topk_insertions(n: int, k: int) -> int:
    """Replacements after the fill when every item beats the current minimum (ascending input): n - k."""
    return max(0, n - k)


@functools.lru_cache(maxsize=1024)
def expected_hit_packets(n: int, k: int, packet: int = 16) -> float:
    """Expected packets that hold at least one top-k entry (a fill or a replacement), random order.

    Packet j carries items a..b (1-based); it hits surely when a <= k (fills), else with probability
    1 - prod_{i=a..b} (1 - k/i) = 1 - [G(b-k+1) G(a)] / [G(a-k) G(b+1)] (G the gamma function), since
    the events are independent. The first 4096 packets are summed exactly; later ones, whose hit
    probability varies slowly, by the midpoint rule over buckets 1/64 of the packet index wide.

    Args:
        n: Items streamed.
        k: Entries kept.
        packet: Items per packet.
    """
    if n <= 0:
        return 0.0
    n_packets = math.ceil(n / packet)

    def p_hit(j: int) -> float:
        a, b = j * packet + 1, min((j + 1) * packet, n)
        if a <= k:
            return 1.0
        log_miss = (math.lgamma(b - k + 1) - math.lgamma(a - k)) - (math.lgamma(b + 1) - math.lgamma(a))
        return -math.expm1(log_miss)

    exact = min(n_packets, 4096)
    terms = [p_hit(j) for j in range(exact)]
    j = exact
    while j < n_packets:
        end = min(n_packets, j + max(1, j // 64))
        terms.append((end - j) * p_hit((j + end - 1) // 2))
        j = end
    return math.fsum(terms)


class FpgaModel:
    """Analytic model of one FPGA card running the memory-processing kernels.

    Args:
        spec: A :class:`DeviceSpec`, a spec path, or a shipped spec name (``"u55c"``).
        clock_hz: Kernel clock in Hz; default the spec's ``clock.kernel_default``. Use the achieved clock.
        control: Kernel control mode, one of :data:`CONTROL_MODES`; sets the per-call launch cost.
        link: GPU<->FPGA link mode: ``p2p``, ``host`` (staged through host memory) or ``network``;
            default the spec's ``link.default``.
        params: The kernel build modelled (:func:`kernels_fpga.params.kernel_params`); default the header
            defaults of ``kernels_fpga/hls/bench_params.h``.

    Raises:
        UsageError: Unknown control or link mode, a clock outside (0, clock.kernel_max], or a build whose
            ports or on-chip tiers do not fit the spec's device.
    """

    def __init__(
        self,
        spec: DeviceSpec | str | Path,
        clock_hz: float | None = None,
        control: str = "host-started",
        link: str | None = None,
        params: KernelParams | None = None,
    ) -> None:
        self.spec = spec if isinstance(spec, DeviceSpec) else load_spec(spec)
        s = self.spec
        fmax = float(s.value("clock.kernel_max"))
        self.clock_hz = float(s.value("clock.kernel_default")) if clock_hz is None else float(clock_hz)
        if not 0 < self.clock_hz <= fmax:
            raise UsageError(f"clock_hz {self.clock_hz:g} is outside (0, {fmax:g}] Hz, the kernel clock range "
                             f"of {s.name} ({s.source_of('clock.kernel_max')}); pass the achieved clock")
        if control not in CONTROL_MODES:
            raise UsageError(f"unknown control mode {control!r}; choose one of {', '.join(CONTROL_MODES)}")
        self.control = control
        self.link = s.default_link if link is None else link
        if self.link not in s.link_modes:
            raise UsageError(f"link {self.link!r} is not defined by spec {s.name}; it defines "
                             f"{', '.join(s.link_modes)}")
        self.params = kernel_params() if params is None else params
        p = self.params
        self._ports = p.n_pe
        self._port_bytes = p.port_bits // 8
        self._bw_pc = float(s.value("hbm.bw_per_pc"))
        self._packet = p.packet
        self._topk_ii: int = s.value("pe.topk_ii")
        self._fill: int = s.value("pe.fill_latency")
        pcs = s.value("hbm.pseudo_channels")
        if max(self._ports, p.bm25_channels) > pcs:
            raise UsageError(f"the kernels use {self._ports} key ports and {p.bm25_channels} BM25 ports, but "
                             f"{s.path.name} has hbm.pseudo_channels = {pcs}")
        for tier in ("bram", "uram"):
            need = p[f"BENCH_{tier.upper()}_KEYS"] * p.d * _INT16_BYTES
            have = s.value(f"onchip.{tier}_bytes")
            if need > have:
                raise UsageError(f"{p.describe()}: BENCH_{tier.upper()}_KEYS needs {need} B of {tier.upper()} but "
                                 f"{s.path.name} onchip.{tier}_bytes is {have} B; build with a smaller tier")

    # ---- capacities -------------------------------------------------------------------------------

    def on_chip_capacity_keys(self, dim: int = 128) -> int:
        """Keys of ``dim`` int16 values the kernel's BRAM + URAM tiers hold, chip total."""
        bram, uram = self._per_pe(dim, 1)
        return self._ports * (bram + uram)

    def residency(self, rows: int, n_keys: int, dim: int = 128) -> dict[str, int]:
        """Keys per tier when ``rows`` rows of ``n_keys`` keys each are resident at once.

        Args:
            rows: Rows resident together (batch x kv-heads); they share the on-chip tiers equally, in
                whole stripes of every PE.
            n_keys: Keys per row.
            dim: Key dimension (int16 values).

        Returns:
            ``{"bram": .., "uram": .., "hbm": ..}``: keys per tier, all rows together.
        """
        _check_counts(rows=rows, n_keys=n_keys, dim=dim)
        return _tier_dict(rows, self._tiers(rows, n_keys, dim, 1))

    def _per_pe(self, dim: int, vectors: int) -> tuple[int, int]:
        """Entries of ``vectors`` x ``dim`` int16 words each PE's BRAM and URAM tier hold.

        The tiers hold the same bytes as the build's ``BENCH_*_KEYS`` keys of ``BENCH_D`` words.
        """
        p = self.params
        per_entry = dim * vectors
        return (p.bram_keys * p.d // per_entry // self._ports, p.uram_keys * p.d // per_entry // self._ports)

    def _tiers(self, rows: int, n: int, dim: int, vectors: int) -> TierSplit:
        """The kernel's tier split when the host asks for an even share of each tier per row."""
        bram, uram = self._per_pe(dim, vectors)
        total_b, total_u = bram * self._ports, uram * self._ports
        return tier_split(rows, n, self.params.stripe(vectors), self._ports, total_b // rows, total_u // rows,
                          bram, uram)

    def _busiest(self, split: TierSplit, vectors: int) -> tuple[int, int, int]:
        """Entries of PE 0, the busiest, in each tier: (BRAM, URAM, HBM)."""
        stripe = self.params.stripe(vectors)

        def count(x: int) -> int:
            return port_count(x, 0, stripe, self._ports)

        return (count(split.bram_end), count(split.uram_end) - count(split.bram_end),
                count(split.n) - count(split.uram_end))

    # ---- shared phase model -----------------------------------------------------------------------

    def hbm_bandwidth(self, channels: int | None = None) -> float:
        """Sequential HBM read bandwidth in B/s over ``channels`` pseudo channels (default the key ports)."""
        n = self._ports if channels is None else channels
        if not 1 <= n <= self.spec.value("hbm.pseudo_channels"):
            raise ValueError(f"channels must be in 1..{self.spec.value('hbm.pseudo_channels')}, got {n}")
        return n * self._bw_pc

    def pe_array_cycles(self, tier: str, items: int, dim: int = 128) -> float:
        """Cycles the key PEs alone need to score ``items`` keys of ``dim`` held in ``tier`` (``bench_pe.h``).

        Keys are striped from index 0 (PE 0 is the busiest). A BRAM pass scores ``BENCH_PE_BLOCK`` keys
        and a URAM pass ``BENCH_URAM_BLOCK`` keys in ``dim / BENCH_PE_DIMS`` cycles; an HBM key takes
        ``dim / port_words`` cycles (one beat each). HBM bandwidth and the top-k unit are not included.

        Args:
            tier: ``bram``, ``uram`` or ``hbm``.
            items: Keys to score.
            dim: Key dimension.
        """
        if tier not in _TIERS:
            raise ValueError(f"tier must be one of {', '.join(_TIERS)}, got {tier!r}")
        _check_counts(n_keys=items, dim=dim)
        n = port_count(items, 0, self.params.stripe(1), self._ports)
        return float(self._key_pe_cycles(tier, n, dim))

    def _key_pe_cycles(self, tier: str, n: int, dim: int) -> int:
        p = self.params
        if tier == "hbm":
            return n * math.ceil(dim / p.port_words)
        lanes = p.pe_block if tier == "bram" else p.uram_block
        return math.ceil(n / lanes) * math.ceil(dim / p.pe_dims)

    def _page_pe_cycles(self, tier: str, n: int, dim: int, group: int) -> int:
        p = self.params
        if tier == "hbm":
            return n * (math.ceil(2 * dim / p.port_words) + group * math.ceil(dim / (p.port_words // 2)))
        lanes = (p.pe_block if tier == "bram" else p.uram_block) // 2
        return math.ceil(n / lanes) * group * math.ceil(dim / p.pe_dims)

    def _phases(self, split: TierSplit, pe_cycles: Callable[[str, int, int], float], entry_bytes: int,
                vectors: int, packets_per_item: float) -> dict[str, float]:
        """Cycles of one row's BRAM, URAM and HBM phases (see the module docstring).

        Args:
            split: The row's tier split.
            pe_cycles: (tier, PE 0's entries, all entries) -> cycles of the slowest PE or chain.
            entry_bytes: HBM bytes per entry.
            vectors: D-vectors per entry (keys 1, pages 2).
            packets_per_item: Packets per entry into the packet consumer (1/16 for scores, 0 for none).
        """
        mine = self._busiest(split, vectors)
        totals = (split.bram_end, split.uram_end - split.bram_end, split.n - split.uram_end)
        out: dict[str, float] = {}
        for tier, n0, total in zip(_TIERS, mine, totals, strict=True):
            if total == 0:
                out[tier] = 0.0
                continue
            mem = total * entry_bytes * self.clock_hz / self.hbm_bandwidth() if tier == "hbm" else 0.0
            packets = math.ceil(total * packets_per_item) * self._topk_ii
            out[tier] = float(math.ceil(max(pe_cycles(tier, n0, total), mem, packets)))
        return out

    @staticmethod
    def _synced(split: TierSplit, new: int) -> int:
        """How many of the row's ``new`` newest entries sit on chip, so ``sync_row`` copies them."""
        return max(0, split.uram_end - max(split.n - max(new, 0), 0))

    def _sync_cycles(self, split: TierSplit, new: int, entry_bytes: int, vectors: int) -> float:
        """Cycles to copy the row's newest on-chip entries from their ports, the ports in parallel."""
        low, high = max(split.n - max(new, 0), 0), split.uram_end
        if low >= high:
            return 0.0
        stripe = self.params.stripe(vectors)
        busiest = max(port_count(high, p, stripe, self._ports) - port_count(low, p, stripe, self._ports)
                      for p in range(self._ports))
        return float(busiest * math.ceil(entry_bytes / self._port_bytes))

    def _topk_stalls(self, n: int, k: int, order: str) -> tuple[float, float]:
        """(scan, tree) stall cycles of the top-k unit for n candidates (see the module docstring)."""
        if order not in ORDERS:
            raise UsageError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
        if order == "random":
            hits, replacements = expected_hit_packets(n, k, self._packet), expected_topk_insertions(n, k)
        else:
            hits, replacements = math.ceil(n / self._packet), worst_topk_insertions(n, k)
        trees = replacements + (1 if n >= k else 0)  # one tree when the registers first fill
        return hits * self._packet, trees * max(1, math.ceil(math.log2(k)))

    def _estimate(self, kernel: str, rows: int, row_terms: dict[str, float], hbm_bytes: int,
                  tier: dict[str, int], notes: list[str]) -> KernelEstimate:
        """Rows run one after another, each a dataflow region of depth ``pe.fill_latency``."""
        trip = math.ceil(math.fsum(row_terms.values()))
        cycles = rows * pipelined_loop_cycles(self._fill, 1, trip)
        breakdown = {name: rows * value for name, value in row_terms.items()}
        breakdown = {"fill": cycles - math.fsum(breakdown.values()), **breakdown}
        seconds = cycles / self.clock_hz
        notes = [f"clock {self.clock_hz / 1e6:g} MHz; control {self.control}; spec {self.spec.name} "
                 f"(sha256 {self.spec.sha256[:12]}); kernels {self.params.describe()}", *notes]
        return KernelEstimate(kernel=kernel, seconds=seconds, cycles=cycles, busy_s=seconds,
                              hbm_bytes=int(hbm_bytes), breakdown=breakdown, tier=tier, notes=tuple(notes))

    def _beats(self, nbytes: int) -> float:
        """Cycles to move ``nbytes`` through one port, a beat per cycle."""
        return float(math.ceil(nbytes / self._port_bytes))

    def _drain_cycles(self, k: int) -> float:
        """The top-k unit writes its k slots (int32 index + int64 score) 16 at a time through one port."""
        return float(math.ceil(k / self._packet) * math.ceil(self._packet * _SLOT_BYTES / self._port_bytes))

    # ---- kernel families --------------------------------------------------------------------------

    def relevancy_topk(self, rows: int, n_keys: int, dim: int = 128, k: int = 64, order: str = "random",
                       new_keys: int = 0) -> KernelEstimate:
        """Inner-product scores of one query per row against its keys, then the top-k keys per row.

        Args:
            rows: Rows (batch x kv-heads), each with its own query [dim] and keys [n_keys, dim], int16.
            n_keys: Keys per row.
            dim: Head dimension.
            k: Keys selected per row.
            order: Score order the top-k unit sees: ``random`` (expected case) or ``ascending`` (worst).
            new_keys: Keys per row appended since the last call, synced into the on-chip tiers first.

        Returns:
            The kernel estimate; ``tier`` counts keys.
        """
        _check_counts(rows=rows, n_keys=n_keys, dim=dim, k=k)
        split, key_bytes = self._tiers(rows, n_keys, dim, 1), dim * _INT16_BYTES
        row = self._phases(split, lambda t, n0, _: self._key_pe_cycles(t, n0, dim), key_bytes, 1,
                           1 / self._packet)
        row["topk_scan"], row["topk_tree"] = self._topk_stalls(n_keys, k, order)
        row["sync"] = self._sync_cycles(split, new_keys, key_bytes, 1)
        row["query_load"] = self._beats(key_bytes)
        row["drain"] = self._drain_cycles(k)
        read = split.n - split.uram_end + self._synced(split, new_keys)
        hbm = rows * (read * key_bytes + key_bytes + k * _SLOT_BYTES)
        return self._estimate("relevancy_topk", rows, row, hbm, _tier_dict(rows, split), [
            f"keys per row: {split.bram_end} BRAM, {split.uram_end - split.bram_end} URAM, "
            f"{split.n - split.uram_end} HBM (tiers shared by {rows} rows, whole stripes per PE)",
            f"top-k order {order}: {row['topk_scan'] + row['topk_tree']:.0f} stall cycles per row",
        ])

    def page_topk(self, rows: int, n_pages: int, group: int, dim: int = 128, k: int = 64, sub: int = 1,
                  order: str = "random", new_pages: int = 0) -> KernelEstimate:
        """Page scores from per-page min/max keys (Quest/LServe), a max over ``sub`` pages, then top-k.

        Page score = max_g sum_d max(q[g,d] * kmin[p,d], q[g,d] * kmax[p,d]) (``page_topk.cpp``): the
        page PEs take ``group`` passes per block of pages; the max-reduce stage takes a packet of pages
        per cycle.

        Args:
            rows: Rows (batch x kv-heads), each with ``group`` query heads (the GQA group).
            n_pages: Pages per row (each stores kmin and kmax, 2 x dim int16).
            group: Query heads per row.
            dim: Head dimension.
            k: Reduced pages selected per row.
            sub: Consecutive pages max-reduced into one (LServe 4, Quest 1).
            order: ``random`` or ``ascending`` (worst case) score order.
            new_pages: Pages per row appended since the last call, synced into the on-chip tiers first.

        Returns:
            The kernel estimate; ``tier`` counts pages.
        """
        _check_counts(rows=rows, n_pages=n_pages, group=group, dim=dim, k=k, sub=sub)
        split, page_bytes = self._tiers(rows, n_pages, dim, 2), 2 * dim * _INT16_BYTES
        row = self._phases(split, lambda t, n0, _: self._page_pe_cycles(t, n0, dim, group), page_bytes, 2,
                           1 / self._packet)
        reduced = math.ceil(n_pages / sub)
        row["topk_scan"], row["topk_tree"] = self._topk_stalls(reduced, k, order)
        row["sync"] = self._sync_cycles(split, new_pages, page_bytes, 2)
        row["query_load"] = self._beats(group * dim * _INT16_BYTES)
        row["drain"] = self._drain_cycles(k)
        hbm = rows * ((split.n - split.uram_end + self._synced(split, new_pages)) * page_bytes
                      + group * dim * _INT16_BYTES + k * _SLOT_BYTES)
        return self._estimate("page_topk", rows, row, hbm, _tier_dict(rows, split), [
            f"pages per row: {split.bram_end} BRAM, {split.uram_end - split.bram_end} URAM, "
            f"{split.n - split.uram_end} HBM (a page holds kmin and kmax)",
            f"{reduced} reduced pages per row (sub={sub}) into the top-k unit, order {order}",
        ])

    def threshold_select(self, rows: int, n_keys: int, dim: int = 128, new_keys: int = 0) -> KernelEstimate:
        """Inner-product scores compared with a threshold; a selection bitmap and count per row, no top-k.

        The same key PEs as :meth:`relevancy_topk`; the bitmap unit takes a 16-score packet per cycle.

        Args:
            rows: Rows, each with its own query and keys (int16).
            n_keys: Keys per row.
            dim: Head dimension.
            new_keys: Keys per row appended since the last call, synced into the on-chip tiers first.

        Returns:
            The kernel estimate; ``tier`` counts keys.
        """
        _check_counts(rows=rows, n_keys=n_keys, dim=dim)
        split, key_bytes = self._tiers(rows, n_keys, dim, 1), dim * _INT16_BYTES
        row = self._phases(split, lambda t, n0, _: self._key_pe_cycles(t, n0, dim), key_bytes, 1,
                           1 / self._packet)
        row["sync"] = self._sync_cycles(split, new_keys, key_bytes, 1)
        row["query_load"] = self._beats(key_bytes + _THRESHOLD_BYTES)
        bitmap = math.ceil(n_keys / 64) * _BITMAP_WORD_BYTES
        hbm = rows * ((split.n - split.uram_end + self._synced(split, new_keys)) * key_bytes + key_bytes
                      + _THRESHOLD_BYTES + bitmap + _COUNT_BYTES)
        return self._estimate("threshold_select", rows, row, hbm, _tier_dict(rows, split), [
            f"keys per row: {split.bram_end} BRAM, {split.uram_end - split.bram_end} URAM, "
            f"{split.n - split.uram_end} HBM",
            "bitmap unit: one 16-score packet per cycle, words written as completed; no top-k unit",
        ])

    def dsa_indexer_topk(self, rows: int, n_keys: int, heads: int = 64, dim: int = 128, k: int = 2048,
                         order: str = "random", new_keys: int = 0) -> KernelEstimate:
        """DeepSeek Sparse Attention lightning indexer: I[s] = sum_h w[h] relu(q[h] . k[s]), then top-k.

        As ``kernels_fpga/hls/dsa_indexer_topk.cpp``: the chain takes one (key, head pass) per cycle,
        ``ceil(heads / BENCH_DSA_HEADS_PER_PASS)`` passes per key (a partial last pass costs a full one), so
        extra heads cost cycles, not memory traffic; one reader per port feeds it (on-chip keys one per
        cycle, HBM keys a beat per cycle).

        Args:
            rows: Batch elements, each with ``heads`` query heads and ``n_keys`` int16 keys shared by them.
            n_keys: Keys per row.
            heads: Indexer query heads.
            dim: Indexer head dimension.
            k: Keys selected per row (DeepSeek-V3.2: 2048).
            order: ``random`` or ``ascending`` (worst case) score order.
            new_keys: Keys per row appended since the last call, synced into the on-chip tiers first.

        Returns:
            The kernel estimate; ``tier`` counts keys.
        """
        _check_counts(rows=rows, n_keys=n_keys, heads=heads, dim=dim, k=k)
        per_pass = self.params.dsa_heads_per_pass
        passes = math.ceil(heads / per_pass)
        chain_cycles_per_key = passes * math.ceil(dim / self.params.d)
        split, key_bytes = self._tiers(rows, n_keys, dim, 1), dim * _INT16_BYTES
        beats_per_key = math.ceil(key_bytes / self._port_bytes)

        def pe(tier: str, n0: int, total: int) -> float:
            return max(total * chain_cycles_per_key, n0 * (beats_per_key if tier == "hbm" else 1))

        row = self._phases(split, pe, key_bytes, 1, 1 / self._packet)
        row["topk_scan"], row["topk_tree"] = self._topk_stalls(n_keys, k, order)
        row["sync"] = self._sync_cycles(split, new_keys, key_bytes, 1)
        row["query_load"] = float(heads) * self._beats(key_bytes) + self._beats(heads * _INT16_BYTES)
        row["drain"] = self._drain_cycles(k)
        hbm = rows * ((split.n - split.uram_end + self._synced(split, new_keys)) * key_bytes
                      + heads * (dim + 1) * _INT16_BYTES + k * _SLOT_BYTES)
        return self._estimate("dsa_indexer_topk", rows, row, hbm, _tier_dict(rows, split), [
            f"{passes} head pass(es) of {per_pass} per key, one per cycle; keys read once",
            f"keys per row: {split.bram_end} BRAM, {split.uram_end - split.bram_end} URAM, "
            f"{split.n - split.uram_end} HBM; top-k order {order}",
        ])

    def bm25_topk(self, n_docs: int, n_postings_scanned: int, query_terms: int, k: int = 64,
                  order: str = "random", load_idf: bool = False) -> KernelEstimate:
        """BM25 over a forward index streamed from HBM, then the top-k documents.

        As ``kernels_fpga/hls/bm25_topk.cpp``: documents split into ``BENCH_BM25_CHANNELS`` contiguous
        ranges, one per port; a channel takes one beat of ``BENCH_BM25_LANES`` postings per cycle, and a
        document takes max(1, its fullest lane) beats (the host places postings by lane, term id mod
        lanes): :func:`kernels_fpga.layout.bm25_expected_beats` at the mean document length, taking term
        ids as uniform over the lanes. Per call the query bitmap is refreshed, one 512-bit beat per cycle;
        the IDF table stays on chip and costs ``VOCAB / 16`` cycles only on a call that loads it.

        Args:
            n_docs: Documents scored.
            n_postings_scanned: (term, tf) postings streamed, all documents together.
            query_terms: Distinct query terms (1..VOCAB); recorded only, as the bitmap costs the same.
            k: Documents selected.
            order: ``random`` or ``ascending`` (worst case) score order.
            load_idf: Whether this call also loads the IDF table (first call, or a new corpus).

        Returns:
            The kernel estimate; ``tier`` counts postings (all in HBM).
        """
        _check_counts(n_docs=n_docs, n_postings_scanned=n_postings_scanned, k=k)
        p = self.params
        if not 1 <= query_terms <= p.vocab:
            raise ValueError(f"query_terms must be in 1..{p.vocab}, got {query_terms}")
        channels, lanes = p.bm25_channels, p.bm25_lanes
        docs = max(end - begin for begin, end in bm25_doc_ranges(n_docs, channels))
        beats_per_doc = bm25_expected_beats(n_postings_scanned / n_docs, lanes) if n_docs else 0.0
        steps = docs * beats_per_doc
        ptr_bytes = (docs + 1) * _BM25_DOC_PTR_BYTES
        port = steps + ptr_bytes / self._port_bytes
        mem = (steps * self._port_bytes + ptr_bytes) * self.clock_hz / self._bw_pc
        topk = (math.ceil(n_docs / self._packet) + channels) * self._topk_ii
        row = {"hbm": float(math.ceil(max(port, mem, topk)))}
        row["topk_scan"], row["topk_tree"] = self._topk_stalls(n_docs, k, order)
        row["query_load"] = self._beats(p.vocab // 8)
        row["idf_load"] = self._beats(p.vocab * _IDF_BYTES) if load_idf else 0.0
        row["drain"] = self._drain_cycles(k)
        stream = round(n_docs * beats_per_doc * self._port_bytes) + (n_docs + channels) * _BM25_DOC_PTR_BYTES
        hbm = stream + p.vocab // 8 + (p.vocab * _IDF_BYTES if load_idf else 0) + k * _SLOT_BYTES
        bound = "HBM bandwidth" if mem >= max(port, topk) else ("lane beats" if port >= topk else "top-k unit")
        return self._estimate("bm25_topk", 1, row, hbm, {"bram": 0, "uram": 0, "hbm": n_postings_scanned}, [
            f"{channels} channels x {lanes} lanes, {beats_per_doc:.2f} beats per document; stream bound by {bound}",
            f"{query_terms} query terms as a {p.vocab}-bit bitmap; IDF resident on chip"
            + (" (loaded by this call)" if load_idf else "") + f"; top-k order {order}",
        ])

    # ---- data movement, launch, energy ------------------------------------------------------------

    def transfer(self, nbytes: int, direction: str) -> float:
        """Seconds to move ``nbytes`` between GPU and FPGA over this model's link.

        ``p2p``: the measured piecewise bandwidth model (spec ``link.p2p.to_fpga`` / ``to_gpu``,
        bandwidth in GiB/s as a function of size in KiB); ``host``: a GPU<->host hop
        (``link.host.gpu_hop_alpha``) plus the host DMA ``alpha + n / beta`` (chunks pipelined);
        ``network``: ``alpha + n / beta`` of ``link.network``.

        Args:
            nbytes: Bytes to move (>= 0).
            direction: ``to_fpga`` or ``to_gpu``.
        """
        _check_direction(nbytes, direction)
        if nbytes == 0:
            return 0.0
        s = self.spec
        if self.link == "p2p":
            segments = s.value(f"link.p2p.{direction}")
            return nbytes / (_piecewise(segments, nbytes / 1024) * 2**30)
        if self.link == "network":
            return float(s.value("link.network.alpha")) + nbytes / float(s.value("link.network.beta"))
        return float(s.value("link.host.gpu_hop_alpha")) + self.host_dma(nbytes, direction)

    def host_dma(self, nbytes: int, direction: str) -> float:
        """Seconds of one host<->FPGA DMA (XRT ``bo.sync``): ``alpha + n / beta`` (spec ``link.host``).

        Args:
            nbytes: Bytes to move (>= 0).
            direction: ``to_fpga`` (host to card) or ``to_gpu`` (card to host).
        """
        _check_direction(nbytes, direction)
        if nbytes == 0:
            return 0.0
        s = self.spec
        beta = s.value("link.host.beta_to_fpga" if direction == "to_fpga" else "link.host.beta_to_gpu")
        return float(s.value("link.host.alpha")) + nbytes / float(beta)

    @property
    def launch_s(self) -> float:
        """Per-call kernel start overhead in seconds for this model's control mode."""
        return float(self.spec.value(_LAUNCH_FIELD[self.control]))

    def offload(self, kernel: KernelEstimate, bytes_in: int, bytes_out: int) -> OffloadEstimate:
        """One offload: launch, ``bytes_in`` to the FPGA, the kernel, ``bytes_out`` back, in sequence.

        Keys are resident: ``bytes_in`` is the query (and any scalars), ``bytes_out`` the indices/scores.

        Args:
            kernel: The kernel estimate to wrap.
            bytes_in: Bytes sent GPU -> FPGA before the kernel.
            bytes_out: Bytes returned FPGA -> GPU after it.
        """
        parts = {
            "launch": self.launch_s,
            "transfer_in": self.transfer(bytes_in, "to_fpga"),
            "kernel": kernel.seconds,
            "transfer_out": self.transfer(bytes_out, "to_gpu"),
        }
        return OffloadEstimate(parts=parts, total_s=math.fsum(parts.values()), busy_s=kernel.busy_s,
                               control=self.control, link=self.link, kernel=kernel)

    @property
    def static_power_w(self) -> float:
        """Board power in W with the xclbin loaded and idle (spec ``power.static``)."""
        return float(self.spec.value("power.static"))

    @property
    def dynamic_power_w(self) -> float:
        """Extra board power in W while a kernel runs: logic plus the HBM channels it uses.

        Logic: ``power.logic_dynamic`` scaled by clock / ``power.logic_dynamic_clock``. HBM: the rise from
        idle to ``power.hbm_full_rate_board`` spread over the pseudo channels, for the kernels' key ports
        (``BENCH_N_PE``, one pseudo channel each) streaming at full rate (an upper bound when keys sit on
        chip).
        """
        s = self.spec
        logic = float(s.value("power.logic_dynamic")) * self.clock_hz / float(s.value("power.logic_dynamic_clock"))
        hbm_rise = float(s.value("power.hbm_full_rate_board")) - self.static_power_w
        return logic + hbm_rise * self._ports / s.value("hbm.pseudo_channels")

    def __repr__(self) -> str:
        return (f"FpgaModel({self.spec.name!r}, clock_hz={self.clock_hz:g}, control={self.control!r}, "
                f"link={self.link!r})")


def _piecewise(segments: list[list[float | None]], x: float) -> float:
    """Value of the first segment whose upper bound (None = open) is >= x: slope * x + intercept."""
    for upper, slope, intercept in segments:
        if upper is None or x <= upper:
            return max(float(slope) * x + float(intercept), 1e-9)
    raise ValueError("piecewise model has no open-ended last segment")


def _tier_dict(rows: int, split: TierSplit) -> dict[str, int]:
    return {"bram": rows * split.bram_end, "uram": rows * (split.uram_end - split.bram_end),
            "hbm": rows * (split.n - split.uram_end)}


def _check_counts(**counts: int) -> None:
    """Sizes must be integers; item counts may be 0, everything else at least 1."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
        low = 0 if name in ("n_keys", "n_pages", "n_docs", "n_postings_scanned") else 1
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")


def _check_direction(nbytes: int, direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
        raise ValueError(f"nbytes must be an int >= 0, got {nbytes!r}")
