"""kernels_fpga.model: loop formulas, top-k statistics, tiers, kernel estimates, transfers, energy."""

from __future__ import annotations

import heapq
import math
from pathlib import Path

import numpy as np
import pytest

from bench.errors import UsageError
from kernels_fpga import model as fm
from kernels_fpga.layout import bm25_expected_beats, port_count
from kernels_fpga.model import FpgaModel
from kernels_fpga.params import kernel_params
from kernels_fpga.spec import SPEC_DIR, load_spec

BW_PC = 12.292e9
F = 250e6


@pytest.fixture(scope="module")
def m() -> FpgaModel:
    return FpgaModel("u55c")


def test_pipelined_loop_formula():
    assert fm.pipelined_loop_cycles(7, 2, 10) == 7 + 2 * 9
    assert fm.pipelined_loop_cycles(5, 1, 1) == 5
    assert fm.pipelined_loop_cycles(5, 3, 0) == 0
    with pytest.raises(ValueError):
        fm.pipelined_loop_cycles(1, 0, 4)


def test_harmonic_series_is_continuous_across_the_asymptotic_switch():
    assert fm.harmonic(1) == 1.0 and fm.harmonic(4) == pytest.approx(25 / 12)
    assert fm.harmonic(9_999) + 1 / 10_000 == pytest.approx(fm.harmonic(10_000), rel=1e-13)


def simulate_topk(n: int, k: int, packet: int, trials: int, seed: int) -> tuple[float, float]:
    """Monte Carlo: mean (replacements after fill, packets with any fill/replacement), random order."""
    rng = np.random.default_rng(seed)
    repl, hits = [], []
    for _ in range(trials):
        x = rng.permutation(n)
        heap: list[int] = []
        r = h = 0
        for p in range(0, n, packet):
            hit = False
            for v in x[p:p + packet]:
                if len(heap) < k:
                    heapq.heappush(heap, v)
                    hit = True
                elif v > heap[0]:
                    heapq.heapreplace(heap, v)
                    hit, r = True, r + 1
            h += hit
        repl.append(r)
        hits.append(h)
    return float(np.mean(repl)), float(np.mean(hits))


@pytest.mark.parametrize(("n", "k"), [(1_000, 32), (3_001, 64), (517, 7)])
def test_topk_statistics_match_a_monte_carlo_of_random_streams(n, k):
    repl, hits = simulate_topk(n, k, 16, trials=150, seed=n + k)
    assert fm.expected_topk_insertions(n, k) == pytest.approx(repl, rel=0.05)
    assert fm.expected_hit_packets(n, k, 16) == pytest.approx(hits, rel=0.05)
    # the textbook estimate k(1 + ln(n/k)) counts the k fills too
    assert fm.expected_topk_insertions(n, k) + k == pytest.approx(k * (1 + math.log(n / k)), rel=0.1)


def test_hit_packet_tail_approximation_matches_the_exact_sum():
    n, k, packet = 16 * 40_000 + 5, 64, 16

    def exact() -> float:
        total = 0.0
        for j in range(math.ceil(n / packet)):
            a, b = j * packet + 1, min((j + 1) * packet, n)
            if a <= k:
                total += 1
            else:
                total += -math.expm1(math.lgamma(b - k + 1) - math.lgamma(a - k) - math.lgamma(b + 1) + math.lgamma(a))
        return total

    assert fm.expected_hit_packets(n, k, packet) == pytest.approx(exact(), rel=1e-3)


def test_worst_case_and_small_streams():
    assert fm.worst_topk_insertions(100, 64) == 36 and fm.worst_topk_insertions(10, 64) == 0
    assert fm.expected_topk_insertions(50, 64) == 0.0
    assert fm.expected_hit_packets(50, 64, 16) == 4.0  # every packet fills
    assert fm.expected_hit_packets(0, 64, 16) == 0.0


def test_residency_fills_bram_then_uram_then_hbm(m):
    assert m.residency(1, 1_000, 128) == {"bram": 1_000, "uram": 0, "hbm": 0}
    assert m.residency(1, 16_384 + 77, 128) == {"bram": 16_384, "uram": 77, "hbm": 0}
    assert m.residency(1, 100_000, 128) == {"bram": 16_384, "uram": 32_768, "hbm": 100_000 - 49_152}
    # 3 rows: each gets whole 128-key stripes of every PE: 5 of 16 BRAM stripes, 10 of 32 URAM stripes
    got = m.residency(3, 20_000, 128)
    assert got == {"bram": 3 * 5 * 1024, "uram": 3 * 10 * 1024, "hbm": 3 * (20_000 - 15 * 1024)}
    assert sum(got.values()) == 3 * 20_000
    # 17 rows: less than a stripe of BRAM each, so BRAM stays empty and URAM takes one stripe per PE
    assert m.residency(17, 5_000, 128) == {"bram": 0, "uram": 17 * 1024, "hbm": 17 * (5_000 - 1024)}
    assert m.residency(1, 100_000, 64)["bram"] == 32_768  # half-size keys: twice as many fit
    assert m.on_chip_capacity_keys(128) == 49_152 and m.on_chip_capacity_keys(256) == 24_576


def test_relevancy_breakdown_adds_up_and_tiers_are_charged_their_rates(m):
    e = m.relevancy_topk(1, 100_000)
    assert sum(e.breakdown.values()) == pytest.approx(e.cycles)
    assert e.seconds == pytest.approx(e.cycles / F) and e.busy_s == e.seconds and e.provenance == "analytic"
    assert e.tier == {"bram": 16_384, "uram": 32_768, "hbm": 50_848}
    assert e.breakdown["bram"] == 16_384 / 16  # top-k unit bound: one 16-score packet per cycle
    assert e.breakdown["uram"] == 32_768 / 8  # 32 keys per 32-cycle pass per PE = one key per PE per cycle
    hbm_bytes = 50_848 * 256
    assert e.breakdown["hbm"] == math.ceil(hbm_bytes / (8 * BW_PC) * F)  # HBM bandwidth bound
    assert e.hbm_bytes == hbm_bytes + 256 + 64 * 12
    assert 70 <= e.breakdown["fill"] < 71  # depth 71 - 1, plus the rounding up of fractional stall cycles
    assert e.breakdown["query_load"] == 4  # 256 B of query, one 64 B beat per cycle
    assert e.breakdown["drain"] == 4 * 3  # 64 slots, 16 per iteration, 192 B = 3 beats each
    assert e.breakdown["sync"] == 0


def test_relevancy_grows_with_keys_rows_and_the_worst_order(m):
    sizes = [0, 17, 1_000, 16_384, 49_153, 300_001]
    cycles = [m.relevancy_topk(1, n).cycles for n in sizes]
    assert cycles == sorted(cycles) and cycles[0] > 0
    assert m.relevancy_topk(4, 5_000).cycles > 3.9 * m.relevancy_topk(1, 5_000).cycles - 400
    worst = m.relevancy_topk(1, 5_000, order="ascending")
    assert worst.breakdown["topk_tree"] == (5_000 - 64 + 1) * 6
    assert worst.cycles > m.relevancy_topk(1, 5_000).cycles
    with pytest.raises(UsageError, match="order"):
        m.relevancy_topk(1, 10, order="sorted")
    with pytest.raises(ValueError, match="rows"):
        m.relevancy_topk(0, 10)


def test_clock_scales_on_chip_time_but_not_hbm_bound_time():
    fast, slow = FpgaModel("u55c", clock_hz=250e6), FpgaModel("u55c", clock_hz=200e6)
    on_chip = (fast.relevancy_topk(1, 8_000), slow.relevancy_topk(1, 8_000))
    assert on_chip[0].cycles == on_chip[1].cycles
    assert on_chip[1].seconds == pytest.approx(1.25 * on_chip[0].seconds)
    # 8 ports x one 512-bit beat per cycle outrun 8 x 12.3 GB/s above ~192 MHz: bandwidth bound at both
    hbm = (fast.relevancy_topk(1, 2_000_000).breakdown["hbm"], slow.relevancy_topk(1, 2_000_000).breakdown["hbm"])
    assert hbm[0] / F == pytest.approx(hbm[1] / 200e6, rel=1e-6)
    port_bound = FpgaModel("u55c", clock_hz=125e6).relevancy_topk(1, 2_000_000).breakdown["hbm"]
    pe0 = port_count(2_000_000, 0, 128, 8) - port_count(49_152, 0, 128, 8)  # PE 0's HBM keys
    assert port_bound == pe0 * 128 / 32  # four 32-word beats a key


def test_pe_array_cycles_follow_the_reference_block_rate(m):
    # paper.md section 7: 128 / 32 / 8 keys per 32-cycle block per PE from BRAM / URAM / HBM
    assert m.pe_array_cycles("bram", 128 * 8) == 32
    assert m.pe_array_cycles("uram", 32) == 32 and m.pe_array_cycles("uram", 128 * 8) == 4 * 32
    assert m.pe_array_cycles("hbm", 8) == 32 and m.pe_array_cycles("hbm", 128 * 8) == 16 * 32
    assert m.pe_array_cycles("bram", 9) == 32  # a partial block costs a full pass
    assert m.pe_array_cycles("bram", 129) == 32  # key 128 starts the next stripe, on PE 1
    assert m.pe_array_cycles("bram", 1025) == 64  # key 1024 is PE 0's second block
    with pytest.raises(ValueError):
        m.pe_array_cycles("ddr", 8)


def test_page_topk_passes_per_head_and_the_hbm_tier(m):
    e = m.page_topk(1, 8_000, group=8, sub=1)
    pe0 = port_count(8_000, 0, 64, 8)  # pages stripe 64 at a time
    assert e.breakdown["bram"] == math.ceil(pe0 / 64) * 8 * 32  # a 64-page pass per head, 32 cycles each
    assert e.tier["bram"] == 8_000  # a page takes two key slots: 8,192 pages fit in BRAM
    assert m.page_topk(1, 9_000, group=1).tier == {"bram": 8_192, "uram": 808, "hbm": 0}
    reduced = m.page_topk(1, 8_000, group=1, sub=4)
    assert reduced.breakdown["bram"] == max(16 * 32, 8_000 / 16)  # PE passes vs a packet of pages per cycle
    assert sum(reduced.breakdown.values()) == pytest.approx(reduced.cycles)
    long = m.page_topk(1, 30_000, group=4)
    hbm0 = port_count(30_000, 0, 64, 8) - port_count(24_576, 0, 64, 8)
    assert long.breakdown["hbm"] == hbm0 * (8 + 4 * 8)  # 8 beats to read a page, 8 cycles per head


def test_threshold_select_has_no_topk_terms_and_is_cheaper(m):
    e = m.threshold_select(2, 20_000)
    assert not any(name.startswith("topk") for name in e.breakdown)
    assert e.cycles < m.relevancy_topk(2, 20_000).cycles
    assert e.tier["hbm"] == 0 and e.hbm_bytes == 2 * (256 + 8 + math.ceil(20_000 / 64) * 8 + 4)
    assert e.breakdown["query_load"] == 2 * 5  # per row: the query's 4 beats and the threshold's one


def test_dsa_head_passes_cost_cycles_not_traffic(m):
    one = m.dsa_indexer_topk(1, 10_000, heads=16)
    four = m.dsa_indexer_topk(1, 10_000, heads=64)
    assert one.breakdown["bram"] == 10_000  # 16 heads x 128 dims = 2048 MACs: one key per cycle
    assert four.breakdown["bram"] == 40_000
    assert m.dsa_indexer_topk(1, 10_000, heads=17).breakdown["bram"] == 20_000  # partial pass costs a full one
    assert four.hbm_bytes - one.hbm_bytes == (64 - 16) * 129 * 2  # only the extra query heads and weights
    assert four.breakdown["topk_tree"] > 0


def test_bm25_is_hbm_bound_on_a_wikipedia_scale_corpus(m):
    docs, postings = 2_000_000, 150_000_000
    e = m.bm25_topk(docs, postings, query_terms=12)
    beats = bm25_expected_beats(75.0, 16)
    assert 75 / 16 < beats < 75 / 16 * 3  # lanes fill unevenly: the fullest lane sets a document's beats
    channel_docs = docs // 4
    stream = channel_docs * beats * 64 + (channel_docs + 1) * 8
    assert e.breakdown["hbm"] == math.ceil(stream / BW_PC * F)  # one port per channel
    assert e.breakdown["query_load"] == 65_536 / 512 and e.breakdown["idf_load"] == 0
    assert e.tier == {"bram": 0, "uram": 0, "hbm": postings}
    assert "HBM bandwidth" in " ".join(e.notes)
    loaded = m.bm25_topk(docs, postings, query_terms=12, load_idf=True)
    assert loaded.breakdown["idf_load"] == 65_536 * 4 / 64 and loaded.cycles == e.cycles + 4_096
    # One posting per document, a beat each; below ~192 MHz a port's beats, not its bandwidth, bound it.
    short = FpgaModel("u55c", clock_hz=125e6).bm25_topk(100_000, 100_000, query_terms=1)
    assert short.breakdown["hbm"] == math.ceil(25_000 * bm25_expected_beats(1.0, 16) + 25_001 * 8 / 64)
    assert "lane beats" in " ".join(short.notes)
    with pytest.raises(ValueError, match="query_terms"):
        m.bm25_topk(10, 10, query_terms=0)


def test_p2p_transfer_follows_the_piecewise_bandwidth(m):
    n = 64 * 1024
    assert m.transfer(n, "to_fpga") == pytest.approx(n / ((0.0572196 * 64 + 0.146988822) * 2**30))
    assert m.transfer(2**30, "to_fpga") == pytest.approx(1 / 4.0)
    assert m.transfer(2**30, "to_gpu") == pytest.approx(1 / 6.09)
    assert m.transfer(0, "to_gpu") == 0.0
    times = [m.transfer(s, "to_gpu") for s in (1, 100, 4096, 131_072, 131_073, 2**26, 2**26 + 1, 2**28)]
    assert times == sorted(times)
    with pytest.raises(ValueError, match="direction"):
        m.transfer(10, "sideways")
    with pytest.raises(ValueError, match="nbytes"):
        m.transfer(-1, "to_gpu")


def test_host_staged_and_network_links():
    host = FpgaModel("u55c", link="host")
    n = 10_000_000
    assert host.transfer(n, "to_fpga") == pytest.approx(10e-6 + 5.5e-6 + n / 11e9)
    assert host.host_dma(n, "to_gpu") == pytest.approx(5.5e-6 + n / 12e9)
    net = FpgaModel("u55c-100gbe")
    assert net.link == "network"
    assert net.transfer(n, "to_gpu") == pytest.approx(2.53e-6 + n / 12.3e9)
    with pytest.raises(UsageError, match="not defined by spec u55c-100gbe"):
        FpgaModel("u55c-100gbe", link="p2p")


def test_offload_adds_launch_transfers_and_kernel_by_control_mode(m):
    k = m.relevancy_topk(1, 4_096)
    totals = {}
    for control in fm.CONTROL_MODES:
        model = FpgaModel("u55c", control=control)
        off = model.offload(k, 256, 768)
        assert set(off.parts) == {"launch", "transfer_in", "kernel", "transfer_out"}
        assert off.total_s == pytest.approx(sum(off.parts.values())) and off.busy_s == k.busy_s
        assert off.parts["launch"] == load_spec("u55c").value(fm._LAUNCH_FIELD[control])
        totals[control] = off.total_s
    assert totals["host-started"] > totals["auto-restart"] > totals["free-running"]
    with pytest.raises(UsageError, match="control"):
        FpgaModel("u55c", control="polling")


def test_static_and_dynamic_power(m):
    # Energy from these is the modeled FPGA meter's (bench.meters.modeled, tests/meters/test_meters_modeled.py).
    assert m.static_power_w == 18.0
    assert m.dynamic_power_w == pytest.approx(20.0 + (40.0 - 18.0) * 8 / 32)
    assert FpgaModel("u55c", clock_hz=125e6).dynamic_power_w == pytest.approx(10.0 + 5.5)


def test_clock_outside_the_spec_range_is_refused():
    with pytest.raises(UsageError, match="300"):
        FpgaModel("u55c", clock_hz=400e6)
    with pytest.raises(UsageError):
        FpgaModel("u55c", clock_hz=0)


def test_a_build_whose_tiers_do_not_fit_on_chip_is_refused(tmp_path: Path):
    with pytest.raises(UsageError, match="BENCH_BRAM_KEYS"):
        FpgaModel("u55c", params=kernel_params({"BENCH_BRAM_KEYS": 65_536}))
    text = (SPEC_DIR / "u55c.yaml").read_text().replace("uram_bytes: {value: 35389440,", "uram_bytes: {value: 3538944,")
    path = tmp_path / "small.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match="uram_bytes"):
        FpgaModel(path)


def test_the_model_follows_the_build_it_is_given():
    narrow = FpgaModel("u55c", params=kernel_params({"BENCH_PE_MACS": 256}))  # 2 dims per lane per cycle
    assert narrow.pe_array_cycles("bram", 1024) == 64
    assert FpgaModel("u55c").params == kernel_params()
    assert "BENCH_PE_MACS=256" in narrow.relevancy_topk(1, 100).notes[0]


def test_appended_keys_are_synced_into_the_on_chip_tiers(m):
    base = m.relevancy_topk(4, 3_000)
    one = m.relevancy_topk(4, 3_000, new_keys=1)
    assert one.breakdown["sync"] == 4 * 4  # per row: one key of four beats on one port
    assert one.cycles == base.cycles + 16
    assert m.relevancy_topk(1, 200_000, new_keys=1).breakdown["sync"] == 0  # the new key is in HBM
    full = m.relevancy_topk(1, 2_048, new_keys=2_048)  # a full reload: 256 keys per port, in parallel
    assert full.breakdown["sync"] == 256 * 4


def test_dsa_readers_keep_up_with_the_chain(m):
    e = m.dsa_indexer_topk(1, 100_000, heads=16)
    hbm_keys = 100_000 - 49_152
    mem = math.ceil(hbm_keys * 256 / (8 * BW_PC) * F)
    assert e.breakdown["hbm"] == max(hbm_keys, mem)  # one key per cycle vs 8 ports of bandwidth


@pytest.mark.parametrize("name", ["u280", "v80", "u55c-100gbe"])
def test_every_shipped_spec_gives_finite_estimates(name):
    model = FpgaModel(name)
    for est in (model.relevancy_topk(2, 70_000), model.page_topk(2, 3_000, 4, sub=4),
                model.threshold_select(1, 9_999), model.dsa_indexer_topk(1, 33_333), model.bm25_topk(1_000, 50_000, 3)):
        assert math.isfinite(est.seconds) and est.seconds > 0 and est.notes[0].startswith("clock")
    assert model.offload(model.relevancy_topk(1, 100), 256, 768).total_s > 0


def test_several_key_sets_resync_the_on_chip_tiers_every_call(m):
    assert fm.entries_to_sync(2048, 1, key_sets=1) == 1 and fm.entries_to_sync(0, 1, key_sets=1) == 0
    assert fm.entries_to_sync(2048, 1, key_sets=4) == 2048
    # SeerAttention-R at 128K, batch 1: 8 rows x 2,048 gate keys fit BRAM for one layer; four layers take
    # turns, so each call first copies its keys on chip again.
    one = m.relevancy_topk(rows=8, n_keys=2048, new_keys=fm.entries_to_sync(2048, 1, 1))
    four = m.relevancy_topk(rows=8, n_keys=2048, new_keys=fm.entries_to_sync(2048, 1, 4))
    assert four.seconds > one.seconds and four.hbm_bytes > one.hbm_bytes
