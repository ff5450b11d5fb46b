"""Analytic model of the FPGA memory-processing kernels: cycles, seconds, transfers, launch and energy.

Every number this module returns is **analytic** (``provenance = "analytic"``): computed from a device
spec (:mod:`kernels_fpga.spec`, each constant with its source) and the loop structure of the HLS kernels
in ``kernels_fpga/hls/`` (modelled on the HeteroLLM kernels, paper.md §7). Per-tier rates come from the
spec's ``pe.*`` figures, taken from the reference kernels: the C-simulation loads every tier at one entry
per cycle and leaves the rates to this model (``kernels_fpga/hls/bench_tiers.h``). The structure:

* **Dataflow.** load -> ``n_pe`` inner-product PEs -> top-k unit, connected by FIFOs. A dataflow region
  costs ``depth + II * (trip - 1)`` cycles as one pipelined loop (UG1393), with ``depth`` the spec's
  ``pe.fill_latency`` and ``trip`` the sum of the per-phase intervals below.
* **Key tiers.** Each row's keys sit in BRAM (first), URAM (next), HBM (rest), earliest tokens first
  (paper.md §7). The kernel's tier capacities (``pe.bram_keys``, ``pe.uram_keys``, counted in
  ``pe.key_dim_basis``-dim int16 keys) are chip totals; rows resident at once share them equally.
* **Phases.** A row streams its BRAM keys, then URAM, then HBM keys. Within a phase the PEs, the memory
  and the top-k unit overlap through FIFOs, so the phase costs the slowest of: PE compute
  (``max(read_elems / tier_width, MACs / macs_per_cycle)`` per item, items spread over the PEs), HBM
  (``bytes / (channels * bw_per_pc)``), and the top-k unit (``topk_ii`` cycles per 16-score packet).
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

Keys stay resident on the card: a decode-step offload moves only the query in and the indices out
(:meth:`FpgaModel.offload`); a new key is appended with a small :meth:`FpgaModel.transfer`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.errors import UsageError
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
_INT16_BYTES = 2
_INDEX_BYTES = 4  # int32 out_index (kernels_fpga/hls/*.cpp)
_SCORE_BYTES = 8  # int64 out_score
_BITMAP_WORD_BYTES = 8  # threshold_select packs 64 keys per uint64 word
_COUNT_BYTES = 4
_BM25_VOCAB = 65536  # BENCH_VOCAB (kernels_fpga/hls/bench_params.h; paper.md §7: a 64K-bit query bitmap)
_BM25_DOC_PTR_BYTES = 8  # doc_ptr is int64 (kernels_fpga/hls/bm25_topk.cpp)
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
            ``topk_scan``, ``topk_tree``, ``query_load``, ``drain``...); they add up to ``cycles``. ``fill``
            is ``depth - 1`` of ``depth + II * (trip - 1)`` plus the rounding up of fractional (expected) stalls.
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

    Raises:
        UsageError: Unknown control or link mode, a clock outside (0, clock.kernel_max], or a spec whose
            kernel tiers do not fit its on-chip memory.
    """

    def __init__(
        self,
        spec: DeviceSpec | str | Path,
        clock_hz: float | None = None,
        control: str = "host-started",
        link: str | None = None,
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
        self._n_pe: int = s.value("pe.n_pe")
        self._port_bytes: int = s.value("pe.port_width") // 8
        self._channels: int = s.value("pe.hbm_channels")
        self._bw_pc = float(s.value("hbm.bw_per_pc"))
        self._packet: int = s.value("pe.packet_scores")
        self._macs: int = s.value("pe.macs_per_cycle")
        self._width = {"bram": s.value("pe.bram_read_elems"), "uram": s.value("pe.uram_read_elems"),
                       "hbm": self._port_bytes // _INT16_BYTES}
        self._topk_ii: int = s.value("pe.topk_ii")
        self._fill: int = s.value("pe.fill_latency")
        if self._channels > s.value("hbm.pseudo_channels"):
            raise UsageError(f"{s.path.name}: pe.hbm_channels {self._channels} exceeds hbm.pseudo_channels")
        basis_bytes = s.value("pe.key_dim_basis") * _INT16_BYTES
        for tier in ("bram", "uram"):
            need = s.value(f"pe.{tier}_keys") * basis_bytes
            have = s.value(f"onchip.{tier}_bytes")
            if need > have:
                raise UsageError(f"{s.path.name}: pe.{tier}_keys needs {need} B of {tier.upper()} but "
                                 f"onchip.{tier}_bytes is {have} B; lower pe.{tier}_keys")

    # ---- capacities -------------------------------------------------------------------------------

    def on_chip_capacity_keys(self, dim: int = 128) -> int:
        """Keys of ``dim`` int16 values the kernel's BRAM + URAM tiers hold, chip total."""
        bram, uram = self._tier_caps(dim, vectors=1)
        return bram + uram

    def residency(self, rows: int, n_keys: int, dim: int = 128) -> dict[str, int]:
        """Keys per tier when ``rows`` rows of ``n_keys`` keys each are resident at once.

        Args:
            rows: Rows resident together (batch x kv-heads); they share the on-chip tiers equally.
            n_keys: Keys per row.
            dim: Key dimension (int16 values).

        Returns:
            ``{"bram": .., "uram": .., "hbm": ..}``: keys per tier, all rows together.
        """
        _check_counts(rows=rows, n_keys=n_keys, dim=dim)
        b, u, h = self._split(rows, n_keys, dim, vectors=1)
        return {"bram": rows * b, "uram": rows * u, "hbm": rows * h}

    def _tier_caps(self, dim: int, vectors: int) -> tuple[int, int]:
        basis = self.spec.value("pe.key_dim_basis")
        per_item = dim * vectors
        return (self.spec.value("pe.bram_keys") * basis // per_item,
                self.spec.value("pe.uram_keys") * basis // per_item)

    def _split(self, rows: int, n: int, dim: int, vectors: int) -> tuple[int, int, int]:
        """Items of one row in (BRAM, URAM, HBM), earliest first, each row holding 1/rows of each tier."""
        bram_cap, uram_cap = self._tier_caps(dim, vectors)
        b = min(n, bram_cap // rows)
        u = min(n - b, uram_cap // rows)
        return b, u, n - b - u

    # ---- shared phase model -----------------------------------------------------------------------

    def hbm_bandwidth(self, channels: int | None = None) -> float:
        """Sequential HBM read bandwidth in B/s over ``channels`` pseudo channels (default ``pe.hbm_channels``)."""
        n = self._channels if channels is None else channels
        if not 1 <= n <= self.spec.value("hbm.pseudo_channels"):
            raise ValueError(f"channels must be in 1..{self.spec.value('hbm.pseudo_channels')}, got {n}")
        return n * self._bw_pc

    def pe_array_cycles(self, tier: str, items: int, dim: int = 128) -> float:
        """Cycles the PE array alone needs for ``items`` inner products of ``dim`` held in ``tier``.

        Items are dealt to the PEs round robin; each PE reads ``dim`` values per item at its tier width
        (BRAM ``pe.bram_read_elems``, URAM ``pe.uram_read_elems``, HBM one ``pe.port_width`` beat) and the
        array does ``n_pe * pe.macs_per_cycle`` MACs per cycle. HBM bandwidth and the top-k unit are not
        included (see :meth:`relevancy_topk`).

        Args:
            tier: ``bram``, ``uram`` or ``hbm``.
            items: Keys to score.
            dim: Key dimension.
        """
        if tier not in self._width:
            raise ValueError(f"tier must be one of {', '.join(self._width)}, got {tier!r}")
        _check_counts(n_keys=items, dim=dim)
        return self._pe_cycles(tier, items, dim, dim, self._n_pe * self._macs)

    def _pe_cycles(self, tier: str, items: int, read_elems: int, macs: int, array_macs: float) -> float:
        per_pe = math.ceil(items / self._n_pe)
        return max(per_pe * read_elems / self._width[tier], items * macs / array_macs)

    def _phases(self, tiers: tuple[int, int, int], read_elems: int, macs: int, topk_items_per_item: float,
                extra_bytes_per_item: float = 0.0, macs_per_cycle: float | None = None) -> dict[str, float]:
        """Cycles of one row's BRAM, URAM and HBM phases (see the module docstring).

        Args:
            tiers: Items of the row in each tier.
            read_elems: int16 elements read per item.
            macs: Multiply-accumulates per item.
            topk_items_per_item: Scores each item sends to the top-k unit (0 when there is none).
            extra_bytes_per_item: HBM bytes per item besides the tier read (e.g. a selection bitmap).
            macs_per_cycle: MACs per cycle of the whole PE array; default n_pe * pe.macs_per_cycle.
        """
        array_macs = macs_per_cycle if macs_per_cycle is not None else self._n_pe * self._macs
        out: dict[str, float] = {}
        for name, items in zip(("bram", "uram", "hbm"), tiers, strict=True):
            if items == 0:
                out[name] = 0.0
                continue
            pe = self._pe_cycles(name, items, read_elems, macs, array_macs)
            hbm_bytes = extra_bytes_per_item * items
            if name == "hbm":
                hbm_bytes += items * read_elems * _INT16_BYTES
            mem = hbm_bytes * self.clock_hz / self.hbm_bandwidth()
            topk = math.ceil(items * topk_items_per_item / self._packet) * self._topk_ii
            out[name] = float(math.ceil(max(pe, mem, topk)))
        return out

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
        breakdown = {name: rows * value for name, value in row_terms.items()}
        trip = math.ceil(sum(breakdown.values()))
        cycles = pipelined_loop_cycles(self._fill, 1, trip)
        breakdown = {"fill": cycles - math.fsum(breakdown.values()), **breakdown}
        seconds = cycles / self.clock_hz
        notes = [f"clock {self.clock_hz / 1e6:g} MHz; control {self.control}; spec {self.spec.name} "
                 f"(sha256 {self.spec.sha256[:12]})", *notes]
        return KernelEstimate(kernel=kernel, seconds=seconds, cycles=cycles, busy_s=seconds,
                              hbm_bytes=int(hbm_bytes), breakdown=breakdown, tier=tier, notes=tuple(notes))

    def _query_cycles(self, nbytes: int) -> float:
        return float(math.ceil(nbytes / self._port_bytes))

    def _drain_cycles(self, k: int) -> float:
        return float(math.ceil(k / self._packet))

    # ---- kernel families --------------------------------------------------------------------------

    def relevancy_topk(self, rows: int, n_keys: int, dim: int = 128, k: int = 64,
                       order: str = "random") -> KernelEstimate:
        """Inner-product scores of one query per row against its keys, then the top-k keys per row.

        Args:
            rows: Rows (batch x kv-heads), each with its own query [dim] and keys [n_keys, dim], int16.
            n_keys: Keys per row.
            dim: Head dimension.
            k: Keys selected per row.
            order: Score order the top-k unit sees: ``random`` (expected case) or ``ascending`` (worst).

        Returns:
            The kernel estimate; ``tier`` counts keys.
        """
        _check_counts(rows=rows, n_keys=n_keys, dim=dim, k=k)
        tiers = self._split(rows, n_keys, dim, vectors=1)
        row = self._phases(tiers, read_elems=dim, macs=dim, topk_items_per_item=1.0)
        row["topk_scan"], row["topk_tree"] = self._topk_stalls(n_keys, k, order)
        row["query_load"] = self._query_cycles(dim * _INT16_BYTES)
        row["drain"] = self._drain_cycles(k)
        hbm = rows * (tiers[2] * dim * _INT16_BYTES + dim * _INT16_BYTES + k * (_INDEX_BYTES + _SCORE_BYTES))
        return self._estimate("relevancy_topk", rows, row, hbm, _tier_dict(rows, tiers), [
            f"keys per row: {tiers[0]} BRAM, {tiers[1]} URAM, {tiers[2]} HBM (tiers shared by {rows} rows)",
            f"top-k order {order}: {row['topk_scan'] + row['topk_tree']:.0f} stall cycles per row",
        ])

    def page_topk(self, rows: int, n_pages: int, group: int, dim: int = 128, k: int = 64, sub: int = 1,
                  order: str = "random") -> KernelEstimate:
        """Page scores from per-page min/max keys (Quest/LServe), a max over ``sub`` pages, then top-k.

        Page score = max_g sum_d max(q[g,d] * kmin[p,d], q[g,d] * kmax[p,d]): 2 * group * dim MACs and
        2 * dim key values per page.

        Args:
            rows: Rows (batch x kv-heads), each with ``group`` query heads (the GQA group).
            n_pages: Pages per row (each stores kmin and kmax, 2 x dim int16).
            group: Query heads per row.
            dim: Head dimension.
            k: Reduced pages selected per row.
            sub: Consecutive pages max-reduced into one (LServe 4, Quest 1).
            order: ``random`` or ``ascending`` (worst case) score order.

        Returns:
            The kernel estimate; ``tier`` counts pages.
        """
        _check_counts(rows=rows, n_pages=n_pages, group=group, dim=dim, k=k, sub=sub)
        tiers = self._split(rows, n_pages, dim, vectors=2)
        row = self._phases(tiers, read_elems=2 * dim, macs=2 * group * dim, topk_items_per_item=1.0 / sub)
        reduced = math.ceil(n_pages / sub)
        row["topk_scan"], row["topk_tree"] = self._topk_stalls(reduced, k, order)
        row["query_load"] = self._query_cycles(group * dim * _INT16_BYTES)
        row["drain"] = self._drain_cycles(k)
        hbm = rows * (tiers[2] * 2 * dim * _INT16_BYTES + group * dim * _INT16_BYTES
                      + k * (_INDEX_BYTES + _SCORE_BYTES))
        return self._estimate("page_topk", rows, row, hbm, _tier_dict(rows, tiers), [
            f"pages per row: {tiers[0]} BRAM, {tiers[1]} URAM, {tiers[2]} HBM (a page holds kmin and kmax)",
            f"{reduced} reduced pages per row (sub={sub}) into the top-k unit, order {order}",
        ])

    def threshold_select(self, rows: int, n_keys: int, dim: int = 128) -> KernelEstimate:
        """Inner-product scores compared with a threshold; a selection bitmap and count per row, no top-k.

        Args:
            rows: Rows, each with its own query and keys (int16).
            n_keys: Keys per row.
            dim: Head dimension.

        Returns:
            The kernel estimate; ``tier`` counts keys.
        """
        _check_counts(rows=rows, n_keys=n_keys, dim=dim)
        tiers = self._split(rows, n_keys, dim, vectors=1)
        # The bitmap (1 bit per key) is written to HBM as it is produced.
        row = self._phases(tiers, read_elems=dim, macs=dim, topk_items_per_item=0.0, extra_bytes_per_item=1 / 8)
        row["query_load"] = self._query_cycles(dim * _INT16_BYTES)
        bitmap = math.ceil(n_keys / 64) * _BITMAP_WORD_BYTES
        hbm = rows * (tiers[2] * dim * _INT16_BYTES + dim * _INT16_BYTES + bitmap + _COUNT_BYTES)
        return self._estimate("threshold_select", rows, row, hbm, _tier_dict(rows, tiers), [
            f"keys per row: {tiers[0]} BRAM, {tiers[1]} URAM, {tiers[2]} HBM",
            "bitmap written as produced; no top-k unit",
        ])

    def dsa_indexer_topk(self, rows: int, n_keys: int, heads: int = 64, dim: int = 128, k: int = 2048,
                         order: str = "random") -> KernelEstimate:
        """DeepSeek Sparse Attention lightning indexer: I[s] = sum_h w[h] relu(q[h] . k[s]), then top-k.

        As ``kernels_fpga/hls/dsa_indexer_topk.cpp``: the head array holds ``pe.dsa_heads_per_pass`` heads;
        each key stays in registers for ``ceil(heads / heads_per_pass)`` passes (a partial last pass costs
        a full one), so extra heads cost cycles, not memory traffic. The array does
        ``pe.dsa_macs_per_cycle`` MACs per cycle.

        Args:
            rows: Batch elements, each with ``heads`` query heads and ``n_keys`` int16 keys shared by them.
            n_keys: Keys per row.
            heads: Indexer query heads.
            dim: Indexer head dimension.
            k: Keys selected per row (DeepSeek-V3.2: 2048).
            order: ``random`` or ``ascending`` (worst case) score order.

        Returns:
            The kernel estimate; ``tier`` counts keys.
        """
        _check_counts(rows=rows, n_keys=n_keys, heads=heads, dim=dim, k=k)
        per_pass = self.spec.value("pe.dsa_heads_per_pass")
        passes = math.ceil(heads / per_pass)
        array_macs = self.spec.value("pe.dsa_macs_per_cycle")
        tiers = self._split(rows, n_keys, dim, vectors=1)
        row = self._phases(tiers, read_elems=dim, macs=passes * per_pass * dim, topk_items_per_item=1.0,
                           macs_per_cycle=array_macs)
        row["topk_scan"], row["topk_tree"] = self._topk_stalls(n_keys, k, order)
        row["query_load"] = self._query_cycles(heads * (dim + 1) * _INT16_BYTES)  # q and the head weights
        row["drain"] = self._drain_cycles(k)
        hbm = rows * (tiers[2] * dim * _INT16_BYTES + heads * (dim + 1) * _INT16_BYTES
                      + k * (_INDEX_BYTES + _SCORE_BYTES))
        return self._estimate("dsa_indexer_topk", rows, row, hbm, _tier_dict(rows, tiers), [
            f"{passes} head pass(es) of {per_pass} per key at {array_macs} MAC/cycle; keys read once",
            f"keys per row: {tiers[0]} BRAM, {tiers[1]} URAM, {tiers[2]} HBM; top-k order {order}",
        ])

    def bm25_topk(self, n_docs: int, n_postings_scanned: int, query_terms: int, k: int = 64,
                  order: str = "random") -> KernelEstimate:
        """BM25 over a forward index streamed from HBM, then the top-k documents.

        As ``kernels_fpga/hls/bm25_topk.cpp``: documents split into ``pe.bm25_hbm_channels`` contiguous
        ranges, one per channel; a channel reads each document's (term, tf) postings in beats of
        ``pe.bm25_lanes`` (a document starts a new beat, so on average (lanes - 1) / 2 lane slots per
        document go empty, taking document lengths mod lanes as uniform); one score per document goes to
        the top-k unit. Per query, the per-lane query-bit banks are rewritten one entry per lane per cycle
        (VOCAB / lanes cycles); IDF stays resident on chip.

        Args:
            n_docs: Documents scored.
            n_postings_scanned: (term, tf) postings streamed, all documents together.
            query_terms: Distinct query terms (1..65536); recorded only, as the bitmap costs the same.
            k: Documents selected.
            order: ``random`` or ``ascending`` (worst case) score order.

        Returns:
            The kernel estimate; ``tier`` counts postings (all in HBM).
        """
        _check_counts(n_docs=n_docs, n_postings_scanned=n_postings_scanned, k=k)
        if not 1 <= query_terms <= _BM25_VOCAB:
            raise ValueError(f"query_terms must be in 1..{_BM25_VOCAB}, got {query_terms}")
        s = self.spec
        channels, lanes = s.value("pe.bm25_hbm_channels"), s.value("pe.bm25_lanes")
        pair_bytes = s.value("pe.bm25_posting_bytes")
        stream_bytes = n_postings_scanned * pair_bytes + (n_docs + 1) * _BM25_DOC_PTR_BYTES
        beats = (n_postings_scanned + n_docs * (lanes - 1) / 2) / lanes
        port = math.ceil(beats / channels)
        mem = stream_bytes * self.clock_hz / self.hbm_bandwidth(channels)
        topk = math.ceil(n_docs / self._packet) * self._topk_ii
        row = {"hbm": float(math.ceil(max(port, mem, topk)))}
        row["topk_scan"], row["topk_tree"] = self._topk_stalls(n_docs, k, order)
        row["query_load"] = float(_BM25_VOCAB // lanes)
        row["drain"] = self._drain_cycles(k)
        hbm = stream_bytes + _BM25_VOCAB // 8 + k * (_INDEX_BYTES + _SCORE_BYTES)
        bound = "HBM bandwidth" if mem >= max(port, topk) else ("lane beats" if port >= topk else "top-k unit")
        return self._estimate("bm25_topk", 1, row, hbm, {"bram": 0, "uram": 0, "hbm": n_postings_scanned}, [
            f"{channels} channels x {lanes} lanes, {pair_bytes} B per posting; stream bound by {bound}",
            f"{query_terms} query terms as a {_BM25_VOCAB}-bit bitmap; IDF resident on chip; top-k order {order}",
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
        idle to ``power.hbm_full_rate_board`` spread over the pseudo channels, for ``pe.hbm_channels`` of
        them streaming at full rate (an upper bound when keys sit on chip).
        """
        s = self.spec
        logic = float(s.value("power.logic_dynamic")) * self.clock_hz / float(s.value("power.logic_dynamic_clock"))
        hbm_rise = float(s.value("power.hbm_full_rate_board")) - self.static_power_w
        return logic + hbm_rise * self._channels / s.value("hbm.pseudo_channels")

    def energy(self, wall_s: float, busy_s: float) -> float:
        """Board energy in joules: ``static_W * wall_s + dynamic_W * busy_s``.

        Args:
            wall_s: Window length in seconds (the card draws static power throughout).
            busy_s: Seconds of that window the kernel runs (0 <= busy_s <= wall_s).
        """
        if not 0 <= busy_s <= wall_s:
            raise ValueError(f"need 0 <= busy_s <= wall_s, got busy_s={busy_s}, wall_s={wall_s}")
        return self.static_power_w * wall_s + self.dynamic_power_w * busy_s

    def __repr__(self) -> str:
        return (f"FpgaModel({self.spec.name!r}, clock_hz={self.clock_hz:g}, control={self.control!r}, "
                f"link={self.link!r})")


def _piecewise(segments: list[list[float | None]], x: float) -> float:
    """Value of the first segment whose upper bound (None = open) is >= x: slope * x + intercept."""
    for upper, slope, intercept in segments:
        if upper is None or x <= upper:
            return max(float(slope) * x + float(intercept), 1e-9)
    raise ValueError("piecewise model has no open-ended last segment")


def _tier_dict(rows: int, tiers: tuple[int, int, int]) -> dict[str, int]:
    return {"bram": rows * tiers[0], "uram": rows * tiers[1], "hbm": rows * tiers[2]}


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
