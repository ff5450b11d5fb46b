"""Comparison of two placements case by case: latency, speedup, J/token and energy reduction.

Speedup is ``latency(baseline) / latency(other)`` and energy reduction ``J/token(baseline) /
J/token(other)``; both are ratios of trial means with a 95% bootstrap interval over paired trials
(trial i of each placement ran back to back) and a verdict. Formatting lives in :mod:`bench.report`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from bench.energy import ACCEL
from bench.errors import UsageError
from bench.records import SKIPPED, TRIAL, value
from bench.stats import RatioEstimate, Summary, bootstrap_ratio, summarize


@dataclass
class PlacementResult:
    """One placement's trials of one case, summarized.

    Attributes:
        placement: Placement name.
        trials: Number of trials.
        latency: Summary of latency (ms/token) over trials.
        j_per_token: Summary of J/token over trials, or None when energy is unavailable.
        energy_reason: Why J/token is unavailable.
        latency_provenance: Provenance of the latency figures.
        energy_provenance: Provenance of the energy figures.
        latency_samples: Per-trial latency, in trial order.
        energy_samples: Per-trial J/token, in trial order (empty when unavailable).
    """

    placement: str
    trials: int
    latency: Summary
    j_per_token: Summary | None
    energy_reason: str | None
    latency_provenance: str
    energy_provenance: str | None
    latency_samples: list[float]
    energy_samples: list[float]
    unit: str = "decode step"


@dataclass
class CaseComparison:
    """The comparison of two placements on one case.

    Attributes:
        case_id: Case identifier.
        case: The case's matrix values.
        baseline: The reference placement's result (None if it has no trials).
        other: The compared placement's result (None if it has no trials).
        speedup: Latency ratio baseline / other with its interval, or None.
        energy_reduction: J/token ratio baseline / other with its interval, or None.
        note: Why the case could not be compared (skipped, failed, missing), if so.
        baseline_validity: VALID/INVALID with reasons for the baseline side (from its summary record).
        other_validity: The same for the compared side.
    """

    case_id: str
    case: dict[str, Any]
    baseline: PlacementResult | None
    other: PlacementResult | None
    speedup: RatioEstimate | None
    energy_reduction: RatioEstimate | None
    note: str | None = None
    baseline_validity: dict[str, Any] | None = None
    other_validity: dict[str, Any] | None = None


def j_per_token(rec: dict[str, Any], scope: str) -> tuple[float | None, str | None, str | None]:
    """(J/token, provenance, reason if None) of a trial record for an energy scope.

    ``accel_total`` is the record's headline figure; ``gpu``, ``fpga`` and ``cpu`` come from its per-scope
    energies divided by the trial's output tokens.
    """
    if scope == ACCEL:
        fig = rec["metrics"]["j_per_token"]
        return fig["value"], fig["provenance"], fig.get("reason")
    part = (rec.get("energy") or {}).get(scope)
    if not part:
        return None, None, f"no {scope} scope in this placement"
    if part.get("joules") is None:
        return None, part.get("provenance"), part.get("reason") or f"{scope} energy unavailable"
    tokens = rec["iterations"] * rec["decode_tokens"] * rec["batch"]
    return part["joules"] / tokens, part.get("provenance"), None


def placement_result(placement: str, trials: list[dict[str, Any]], scope: str = ACCEL) -> PlacementResult:
    """Summarize one placement's trial records of one case (in trial order) for an energy scope."""
    trials = sorted(trials, key=lambda r: r["trial"])
    lat = [value(r, "latency_ms") for r in trials]
    energy = [j_per_token(r, scope) for r in trials]
    jpt = [e[0] for e in energy]
    energy_ok = all(v is not None for v in jpt)
    why = None if energy_ok else next(e[2] for e in energy if e[0] is None)
    lat_prov = {r["metrics"]["latency_ms"]["provenance"] for r in trials}
    en_prov = {str(e[1]) for e in energy}
    return PlacementResult(
        placement=placement,
        trials=len(trials),
        latency=summarize(lat),  # type: ignore[arg-type]
        j_per_token=summarize(jpt) if energy_ok else None,  # type: ignore[arg-type]
        energy_reason=why,
        latency_provenance="/".join(sorted(lat_prov)),
        energy_provenance="/".join(sorted(en_prov)) if energy_ok else None,
        latency_samples=lat,  # type: ignore[arg-type]
        energy_samples=jpt if energy_ok else [],  # type: ignore[arg-type]
        unit=trials[0].get("latency_unit", "decode step"),
    )


def compare(records: list[dict[str, Any]], baseline: str, other: str, seed: int = 0, scope: str = ACCEL,
            allow_mixed_boundaries: bool = False, paired: bool = True) -> list[CaseComparison]:
    """Compare placement ``other`` with ``baseline`` on every case of a run's records.

    Args:
        records: A run's records.
        baseline: Reference placement.
        other: Compared placement.
        seed: Seed of the bootstrap.
        scope: Energy scope compared (``accel_total``, ``gpu``, ``fpga`` or ``cpu``).
        allow_mixed_boundaries: Compare even when the two sides' energy boundaries differ.
        paired: Pair trial i of each side in the bootstrap (placements interleaved in one run); False for
            sides from different runs.

    Raises:
        UsageError: If either placement does not appear in the records, or the energy boundaries differ
            and ``allow_mixed_boundaries`` is not set.
    """
    placements = {r["placement"] for r in records if r.get("placement")}
    for name in (baseline, other):
        if name not in placements:
            raise UsageError(f"placement '{name}' is not in this run; it has: {', '.join(sorted(placements))}")
    by_case: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    case_values: dict[str, dict[str, Any]] = {}
    notes: dict[str, str] = {}
    validity: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        case_values.setdefault(r["case_id"], r.get("case", {}))
        if r.get("kind") == "summary":
            validity[(r["case_id"], r["placement"])] = r["validity"]
        if r.get("kind") == TRIAL and r.get("placement") in (baseline, other):
            by_case[r["case_id"]][r["placement"]].append(r)
        elif r.get("kind") == SKIPPED and r.get("placement") in (baseline, other):
            notes[r["case_id"]] = f"skipped: {r.get('reason')}"
        elif r.get("kind") == "failed":
            notes[r["case_id"]] = f"failed: {r.get('error')}"
    out = []
    for case_id, values in case_values.items():
        trials = by_case.get(case_id, {})
        if not trials.get(baseline) or not trials.get(other):
            out.append(CaseComparison(case_id, values, None, None, None, None,
                                      notes.get(case_id, "no trials for one of the placements")))
            continue
        _check_boundaries(case_id, trials[baseline] + trials[other], scope, allow_mixed_boundaries)
        a = placement_result(baseline, trials[baseline], scope)
        b = placement_result(other, trials[other], scope)
        speedup = bootstrap_ratio(a.latency_samples, b.latency_samples, paired=paired, seed=seed)
        energy = (bootstrap_ratio(a.energy_samples, b.energy_samples, paired=paired, seed=seed)
                  if a.energy_samples and b.energy_samples else None)
        out.append(CaseComparison(case_id, values, a, b, speedup, energy, notes.get(case_id),
                                  validity.get((case_id, baseline)), validity.get((case_id, other))))
    return out


def boundary(rec: dict[str, Any], scope: str) -> str:
    """The energy boundary of a trial record: what its energy figure covers (and the meters behind it)."""
    if scope == ACCEL:
        fig = rec["metrics"]["j_per_token"]
        return f"{fig.get('scope', ACCEL)}"
    return scope


def _check_boundaries(case_id: str, trials: list[dict[str, Any]], scope: str, allow: bool) -> None:
    kinds = {boundary(r, scope) for r in trials}
    if len(kinds) > 1 and not allow:
        raise UsageError(f"{case_id}: the energy figures cover different boundaries ({', '.join(sorted(kinds))}); "
                         "compare one boundary (--scope) or pass --allow-mixed-boundaries")


#: What must match between two runs for their figures to compare like with like (run.json paths).
MACHINE_KEYS = (("gpu", "name"), ("gpu", "memory_bytes"), ("software", "torch"), ("software", "triton"),
                ("software", "bench"), ("software", "cuda_runtime"), ("host", "cpu"))


def across_runs(meta_a: dict[str, Any], records_a: list[dict[str, Any]], meta_b: dict[str, Any],
                records_b: list[dict[str, Any]], baseline: str, other: str, **kwargs: Any
                ) -> tuple[list[CaseComparison], list[str]]:
    """Compare placement ``baseline`` of run A with placement ``other`` of run B, case by case.

    Cases match by id; trials are not paired (the runs did not interleave them). Returns the comparison and
    warnings for every way the runs differ that could pose as a speedup: machine, versions, energy method.
    """
    tag_a, tag_b = f"{baseline} [{meta_a.get('run_id')}]", f"{other} [{meta_b.get('run_id')}]"
    relabeled = [{**r, "placement": tag_a} for r in records_a if r.get("placement") == baseline]
    relabeled += [{**r, "placement": tag_b} for r in records_b if r.get("placement") == other]
    relabeled += [r for r in records_a + records_b if r.get("kind") == "failed"]
    for name, recs, meta in ((baseline, records_a, meta_a), (other, records_b, meta_b)):
        if not any(r.get("placement") == name for r in recs):
            raise UsageError(f"placement '{name}' is not in run {meta.get('run_id')}")
    warnings = []
    for section, key in MACHINE_KEYS:
        va, vb = (meta_a.get(section) or {}).get(key), (meta_b.get(section) or {}).get(key)
        if va != vb:
            warnings.append(f"{section}.{key} differs: {va!r} vs {vb!r}")
    ea = {k: v.get("method") for k, v in (meta_a.get("energy_meters") or {}).items()}
    eb = {k: v.get("method") for k, v in (meta_b.get("energy_meters") or {}).items()}
    if ea != eb:
        warnings.append(f"energy meters differ: {ea} vs {eb}")
    return compare(relabeled, tag_a, tag_b, paired=False, **kwargs), warnings
