"""Compare arithmetic: ratios of trial means with bootstrap intervals, boundaries, and runs compared."""

import pytest

from bench.compare import across_runs, compare
from bench.errors import UsageError


def _trial(case, placement, trial, latency, jpt, scope="accel_total"):
    return {"kind": "trial", "case_id": case, "case": {"context": 1}, "placement": placement, "trial": trial,
            "iterations": 10, "decode_tokens": 2, "batch": 1,
            "metrics": {"latency_ms": {"value": latency, "provenance": "measured"},
                        "j_per_token": {"value": jpt, "provenance": "measured", "scope": scope}}}


def _records():
    recs = []
    for t, (la, lb, ja, jb) in enumerate([(2.0, 1.0, 4.0, 1.0), (2.2, 1.1, 4.4, 1.1), (1.8, 0.9, 3.6, 0.9)]):
        recs += [_trial("c1", "baseline", t, la, ja), _trial("c1", "hetero", t, lb, jb)]
    return recs


def test_speedup_and_energy_reduction_are_ratios_of_means_with_intervals():
    (row,) = compare(_records(), "baseline", "hetero")
    assert row.speedup.ratio == pytest.approx(2.0)
    assert row.energy_reduction.ratio == pytest.approx(4.0)
    assert row.speedup.ci_low <= 2.0 <= row.speedup.ci_high
    assert row.speedup.verdict == "higher" and row.baseline.latency.mean == pytest.approx(2.0)
    assert row.baseline.latency.n == 3 and row.other.j_per_token.mean == pytest.approx(1.0)


def test_mixed_energy_boundaries_are_refused_unless_allowed():
    recs = _records()
    recs[1]["metrics"]["j_per_token"]["scope"] = "gpu"
    with pytest.raises(UsageError, match="different boundaries"):
        compare(recs, "baseline", "hetero")
    assert compare(recs, "baseline", "hetero", allow_mixed_boundaries=True)[0].speedup is not None


def test_unknown_placement_and_missing_trials():
    with pytest.raises(UsageError, match="not in this run"):
        compare(_records(), "baseline", "nope")
    recs = [*_records(), {"kind": "skipped", "case_id": "c2", "case": {}, "placement": "hetero", "reason": "OOM"}]
    rows = compare(recs, "baseline", "hetero")
    assert rows[1].note == "skipped: OOM" and rows[1].speedup is None


def test_across_runs_matches_cases_and_warns_on_machine_differences():
    a = [r for r in _records() if r["placement"] == "baseline"]
    b = [r for r in _records() if r["placement"] == "hetero"]
    meta_a = {"run_id": "A", "gpu": {"name": "H100"}, "software": {"torch": "2.11"}}
    meta_b = {"run_id": "B", "gpu": {"name": "H200"}, "software": {"torch": "2.11"}}
    rows, warnings = across_runs(meta_a, a, meta_b, b, "baseline", "hetero")
    assert rows[0].speedup.ratio == pytest.approx(2.0)
    assert rows[0].speedup.method == "bootstrap-independent"
    assert any("gpu.name differs" in w for w in warnings)
    assert not any("torch" in w for w in warnings)
