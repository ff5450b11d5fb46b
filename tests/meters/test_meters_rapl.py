"""RAPL meter on a fake powercap tree: package sum, wrap-around, DRAM, overlap zones, unreadable."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.meters.rapl import RaplMeter


def set_energy(zone: Path, uj: int) -> None:
    (zone / "energy_uj").write_text(f"{uj}\n")


def test_sums_packages_with_wraparound_and_skips_overlapping_zones(powercap):
    pkg0 = powercap("intel-rapl:0", "package-0", energy_uj=999_000_000, max_range_uj=1_000_000_000)
    pkg1 = powercap("intel-rapl:1", "package-1", energy_uj=5_000_000)
    powercap("intel-rapl:2", "psys", energy_uj=0)  # platform domain overlaps packages
    powercap("intel-rapl-mmio:0", "package-0", energy_uj=0)  # MMIO duplicate of package 0
    dram = powercap("intel-rapl:0/intel-rapl:0:0", "dram", energy_uj=100)
    powercap("intel-rapl:0/intel-rapl:0:1", "core", energy_uj=0)
    meter = RaplMeter(powercap.root, poll_s=60)
    assert meter.available() and [z.name for z in meter.zones] == ["package-0", "package-1"]
    meter.begin()
    set_energy(pkg0, 2_500_000)  # wrapped: 1_000_000 to the range end, then 2_500_000
    set_energy(pkg1, 8_000_000)
    set_energy(dram, 10_000_000)
    r = meter.end()
    assert r.joules == pytest.approx(1.0 + 2.5 + 3.0)
    assert r.method == "rapl" and r.scope == "cpu" and r.provenance == "measured"


def test_dram_domain_is_reported_separately(powercap):
    powercap("intel-rapl:0", "package-0", energy_uj=0)
    dram = powercap("intel-rapl:0/intel-rapl:0:0", "dram", energy_uj=1_000)
    meter = RaplMeter(powercap.root, domain="dram", poll_s=60)
    assert meter.scope == "dram" and [z.name for z in meter.zones] == ["dram"]
    meter.begin()
    set_energy(dram, 4_001_000)
    assert meter.end().joules == pytest.approx(4.0)


def test_poll_thread_catches_a_wrap_between_edges(powercap):
    pkg = powercap("intel-rapl:0", "package-0", energy_uj=100, max_range_uj=1_000)
    meter = RaplMeter(powercap.root, poll_s=0.01)
    meter.begin()
    set_energy(pkg, 900)
    import time

    time.sleep(0.1)  # the poller records 900
    set_energy(pkg, 300)  # wrapped once more: +400
    r = meter.end()
    assert r.joules == pytest.approx((800 + 400) * 1e-6)
    assert r.samples >= 3


def test_absent_tree_is_unavailable_with_one_line_reason(tmp_path):
    meter = RaplMeter(tmp_path / "nothing-here")
    assert not meter.available()
    assert "no RAPL package domains" in meter.unavailable_reason and "\n" not in meter.unavailable_reason
    meter.begin()
    r = meter.end()
    assert r.joules is None and r.reason == meter.unavailable_reason


def test_root_only_counter_is_unavailable_never_a_guess(powercap, monkeypatch):
    powercap("intel-rapl:0", "package-0", energy_uj=0)
    real_read_text = Path.read_text

    def deny(self: Path, *args, **kwargs) -> str:
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", deny)
    meter = RaplMeter(powercap.root)
    assert not meter.available()
    assert "readable only by root" in meter.unavailable_reason
    meter.begin()
    assert meter.end().joules is None


def test_counter_vanishing_mid_window_gives_reason(powercap):
    pkg = powercap("intel-rapl:0", "package-0", energy_uj=0)
    meter = RaplMeter(powercap.root, poll_s=60)
    meter.begin()
    (pkg / "energy_uj").unlink()
    r = meter.end()
    assert r.joules is None and "RAPL read failed" in r.reason
