"""Tidy exports of a run: one row per case x placement (the default) or per trial, as CSV, JSON or Markdown.

Rows come in two shapes:

- **case rows** (:func:`case_rows`): one per case x placement, from the ``summary`` records (statistics
  over trials, gross / idle / net energy by scope, validity), with the comparison against the
  ``baseline`` placement (speedup and energy reduction, each a ratio of trial means with a 95% paired
  bootstrap interval, from :func:`bench.compare.compare`) and the mean per-step times. A case that was
  skipped, failed or never reached still gets its rows, with the status and the reason.
- **trial rows** (:func:`tidy_rows`): one per trial record, flat.

Provenance travels with every number. In a case row each figure is a nested object
``{"mean" | "ratio" | "value", ..., "unit", "provenance", "reason"}``; flattened for CSV it becomes the
columns ``<figure>_<field>`` next to ``<figure>_provenance`` and ``<figure>_reason``. A missing value stays
empty (CSV) or ``null`` (JSON) and its reason column says why. In trial rows, :data:`PROVENANCE_COLUMN`
names the provenance column of every numeric column; counts and configuration (context, batch, trial,
iterations, layers) carry none.

LaTeX tables and the macros file are rendered by :mod:`bench.report.latex`; :func:`export_run` is the one
entry point for every format.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from bench.compare import CaseComparison, compare
from bench.errors import UsageError
from bench.records import FAILED, SKIPPED, TRIAL, weakest
from bench.stats import RatioEstimate, summarize
from bench.store import RunDir

FORMATS = ("csv", "latex", "json", "markdown")
#: The reference placement of every comparison.
BASELINE = "baseline"
#: Energy scopes reported per case row (``accel_total`` = gpu + fpga, the headline; cpu reported apart).
ENERGY_SCOPES = ("gpu", "fpga", "cpu", "accel_total")
#: Trial statistics per case row, with their units.
STAT_METRICS = {"latency_ms": "ms/token", "tokens_per_s": "tokens/s", "j_per_token": "J/token",
                "tokens_per_j": "tokens/J"}
#: Ratios per case row (placement vs the baseline).
RATIO_METRICS = ("speedup", "energy_reduction")

#: Leading columns of the trial CSV, in order; case values and per-step columns follow.
COLUMNS = [
    "run_id", "suite", "experiment", "method", "case_id", "placement", "trial", "status", "context", "batch",
    "latency_ms", "latency_provenance", "tokens_per_s", "j_per_token", "tokens_per_j", "energy_j",
    "energy_provenance", "energy_scope", "energy_reason", "gpu_energy_j", "gpu_energy_provenance",
    "gpu_energy_method", "fpga_energy_j", "fpga_energy_provenance", "fpga_energy_method", "window_s",
    "window_provenance", "iterations", "decode_tokens", "model", "layers", "layers_of_preset", "fpga_mode",
    "fpga_wait", "fpga_recall", "fpga_recall_provenance", "fpga_us_per_call", "fpga_us_per_call_provenance",
    "device",
]
#: Provenance column of each numeric trial column (``step_<s>_ms`` columns use ``step_<s>_provenance``).
PROVENANCE_COLUMN = {
    "latency_ms": "latency_provenance", "tokens_per_s": "latency_provenance",
    "j_per_token": "energy_provenance", "tokens_per_j": "energy_provenance", "energy_j": "energy_provenance",
    "gpu_energy_j": "gpu_energy_provenance", "fpga_energy_j": "fpga_energy_provenance",
    "window_s": "window_provenance", "fpga_recall": "fpga_recall_provenance",
    "fpga_us_per_call": "fpga_us_per_call_provenance",
}
#: Identity columns of the case CSV, in order; figure columns follow in a fixed order.
CASE_COLUMNS = ["run_id", "suite", "device", "experiment", "method", "case_id", "context", "batch",
                "placement", "baseline", "status", "reason", "trials", "validity", "validity_reasons"]


# -- run metadata ---------------------------------------------------------------------------------------


def experiment_config(meta: dict[str, Any], experiment: str | None) -> dict[str, Any]:
    """The suite section of one experiment: ``model_shape``, ``method`` (name and parameters), ``placements``.

    Runs recorded before suites had several experiments keep these keys at the top of ``suite``.

    Args:
        meta: The run's run.json.
        experiment: Experiment name from a record (None in such older runs).
    """
    suite = meta.get("suite") or {}
    experiments = suite.get("experiments") or {}
    if experiment in experiments:
        return experiments[experiment]
    if len(experiments) == 1 and experiment is None:
        return next(iter(experiments.values()))
    return suite


def experiment_of(rec: dict[str, Any], meta: dict[str, Any]) -> tuple[str, str]:
    """(experiment, method) of a record; older runs without these fields get the suite's method name."""
    config = experiment_config(meta, rec.get("experiment")).get("method") or {}
    method = rec.get("method") or config.get("name") or str(meta.get("suite_name"))
    return rec.get("experiment") or method, method


def device_name(meta: dict[str, Any]) -> str:
    """The run's GPU (or, on a CPU run, CPU) name as run.json records it."""
    return str((meta.get("gpu") or {}).get("name") or "unknown device")


def point(fig: dict[str, Any] | None) -> float | None:
    """The point estimate of a case-row figure: its mean, ratio or value (None when missing)."""
    if fig is None:
        return None
    for key in ("mean", "ratio", "value"):
        if key in fig:
            return fig[key]
    return None


# -- case rows --------------------------------------------------------------------------------------------


def _labels(values: Iterable[str | None]) -> str | None:
    """One provenance label for a set of records ("/"-joined if they differ; None if none is known)."""
    seen = sorted({v for v in values if v})
    return "/".join(seen) if seen else None


def _weakest(*labels: str | None) -> str | None:
    parts = [p for label in labels if label for p in label.split("/")]
    return weakest(*parts) if parts else None  # type: ignore[arg-type]


def _missing(unit: str, reason: str, keys: tuple[str, ...] = ("mean", "ci_low", "ci_high", "cv", "n"),
             provenance: str | None = None) -> dict[str, Any]:
    return {**dict.fromkeys(keys), "unit": unit, "provenance": provenance, "reason": reason}


def _stat_figure(metric: str, trials: list[dict[str, Any]], summary: dict[str, Any] | None) -> dict[str, Any]:
    """Mean, 95% CI, CV and n of one metric over a placement's trials, with provenance and null reason."""
    unit = STAT_METRICS[metric]
    figs = [t["metrics"][metric] for t in trials if metric in (t.get("metrics") or {})]
    prov = _labels(f.get("provenance") for f in figs)
    if not figs:
        return _missing(unit, "no trials")
    values = [f.get("value") for f in figs]
    if any(v is None for v in values):
        why = next((f.get("reason") for f in figs if f.get("value") is None and f.get("reason")), None)
        return _missing(unit, why or f"{metric} unavailable", provenance=prov)
    stats = ((summary or {}).get("stats") or {}).get(metric) or summarize(values).to_dict()
    return {"mean": stats["mean"], "ci_low": stats.get("ci_low"), "ci_high": stats.get("ci_high"),
            "cv": stats.get("cv"), "n": stats.get("n", len(values)), "unit": unit, "provenance": prov,
            "reason": stats.get("reason")}


def _scope_figures(scope: str, trials: list[dict[str, Any]],
                   summary: dict[str, Any] | None) -> dict[str, Any]:
    """Gross, net (gross minus idle power x time) J/token and idle W of one scope, each with provenance."""
    entry = ((summary or {}).get("energy_by_scope") or {}).get(scope)
    names = (f"{scope}_gross_j_per_token", f"{scope}_net_j_per_token", f"{scope}_idle_w")
    units = ("J/token", "J/token", "W")
    if summary is None:
        why = "no summary record (the case did not finish)"
        return {n: _missing(u, why, ("value",)) for n, u in zip(names, units, strict=True)}
    if entry is None:
        why = f"no {scope} energy in this placement"
        return {n: _missing(u, why, ("value",)) for n, u in zip(names, units, strict=True)}
    if scope == "accel_total":
        gross_prov = _labels((t["metrics"].get("j_per_token") or {}).get("provenance") for t in trials)
        gross_why = next((t["metrics"]["j_per_token"].get("reason") for t in trials
                          if (t["metrics"].get("j_per_token") or {}).get("reason")), None)
        parts = [((summary.get("energy_by_scope") or {}).get(c) or {}) for c in entry.get("components", [])]
        idle_prov = _weakest(*(p.get("idle_provenance") for p in parts))
        idle_why = next((p.get("idle_reason") for p in parts if p.get("idle_reason")), None)
    else:
        scoped = [(t.get("energy") or {}).get(scope) or {} for t in trials]
        gross_prov = _labels(s.get("provenance") for s in scoped)
        gross_why = next((s.get("reason") for s in scoped if s.get("reason")), None)
        idle_prov, idle_why = entry.get("idle_provenance"), entry.get("idle_reason")
    gross, net, idle = entry.get("gross_j_per_token"), entry.get("net_j_per_token"), entry.get("idle_w")
    gross_why = None if gross is not None else gross_why or f"{scope} energy unavailable"
    idle_why = None if idle is not None else idle_why or f"no {scope} idle power"
    net_why = None if net is not None else gross_why or idle_why or "net energy unavailable"
    return {
        names[0]: {"value": gross, "unit": "J/token", "provenance": gross_prov, "reason": gross_why},
        names[1]: {"value": net, "unit": "J/token", "provenance": _weakest(gross_prov, idle_prov),
                   "reason": net_why},
        names[2]: {"value": idle, "unit": "W", "provenance": idle_prov, "reason": idle_why},
    }


def _step_figures(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean time per decode step of each timeline section over the trials (profile pass), ms/token."""
    out: dict[str, Any] = {}
    sections: dict[str, list[dict[str, Any]]] = {}
    for t in trials:
        for name, fig in (t.get("steps_ms") or {}).items():
            sections.setdefault(name, []).append(fig)
    for name, figs in sections.items():
        values = [f["value"] for f in figs if f.get("value") is not None]
        out[f"step_{name}_ms"] = {
            "mean": sum(values) / len(values) if values else None, "n": len(values), "unit": "ms/token",
            "provenance": _labels(f.get("provenance") for f in figs),
            "device": _labels(f.get("device") for f in figs),
            "reason": None if values else "no per-step time recorded",
        }
    return out


def _ratio_figure(est: RatioEstimate | None, provenance: str | None, baseline: str,
                  why: str | None) -> dict[str, Any]:
    if est is None:
        return {"ratio": None, "ci_low": None, "ci_high": None, "verdict": None, "unit": "x",
                "provenance": provenance, "baseline": baseline, "reason": why or "not compared"}
    return {"ratio": est.ratio, "ci_low": est.ci_low, "ci_high": est.ci_high, "verdict": est.verdict,
            "unit": "x", "provenance": provenance, "baseline": baseline,
            "reason": None if est.ci_low is not None else "one trial a side: no interval"}


def _comparisons(records: list[dict[str, Any]], baseline: str, others: list[str],
                 seed: int) -> tuple[dict[tuple[str, str], CaseComparison], dict[str, str]]:
    """Comparison of each placement with the baseline, by (case, placement); why a placement has none."""
    found: dict[tuple[str, str], CaseComparison] = {}
    why: dict[str, str] = {}
    for other in others:
        try:
            for c in compare(records, baseline, other, seed=seed):
                found[(c.case_id, other)] = c
        except UsageError as exc:
            why[other] = str(exc)
    return found, why


def case_rows(records: list[dict[str, Any]], meta: dict[str, Any], baseline: str = BASELINE,
              seed: int = 0) -> list[dict[str, Any]]:
    """One row per case x placement (see the module docstring for its shape).

    Args:
        records: The run's records.
        meta: The run's run.json.
        baseline: Reference placement of the speedup and energy-reduction ratios.
        seed: Seed of the bootstrap intervals (fixed, so exports are reproducible).

    Returns:
        Rows in case order (as recorded), placements in the experiment's declared order. Identity fields
        are plain values; ``figures`` maps each figure name to its nested object.
    """
    cases: dict[str, dict[str, Any]] = {}
    trials: dict[tuple[str, str], list[dict[str, Any]]] = {}
    summaries: dict[tuple[str, str], dict[str, Any]] = {}
    skipped: dict[tuple[str, str], str] = {}
    failed: dict[str, str] = {}
    for r in records:
        cid = r.get("case_id")
        if cid is None:
            continue
        cases.setdefault(cid, r)
        kind, key = r.get("kind"), (cid, r.get("placement"))
        if kind == TRIAL:
            trials.setdefault(key, []).append(r)  # type: ignore[arg-type]
        elif kind == "summary":
            summaries[key] = r  # type: ignore[index]
        elif kind == SKIPPED:
            skipped[key] = str(r.get("reason"))  # type: ignore[index]
        elif kind == FAILED:
            failed[cid] = str(r.get("error"))
    placements_seen = list(dict.fromkeys(r["placement"] for r in records if r.get("placement")))
    has_baseline = baseline in placements_seen
    others = [p for p in placements_seen if p != baseline]
    comparisons, no_compare = _comparisons(records, baseline, others, seed) if has_baseline else ({}, {})
    rows = []
    for cid, first in cases.items():
        experiment, method = experiment_of(first, meta)
        declared = list(experiment_config(meta, first.get("experiment")).get("placements") or {})
        seen_here = [p for p in placements_seen
                     if (cid, p) in trials or (cid, p) in summaries or (cid, p) in skipped]
        for placement in declared + [p for p in seen_here if p not in declared]:
            rows.append(_case_row(first, meta, experiment, method, placement, baseline, has_baseline,
                                  trials.get((cid, placement), []), summaries.get((cid, placement)),
                                  skipped.get((cid, placement)), failed.get(cid),
                                  comparisons.get((cid, placement)), no_compare.get(placement)))
    return rows


def _case_row(first: dict[str, Any], meta: dict[str, Any], experiment: str, method: str, placement: str,
              baseline: str, has_baseline: bool, trials: list[dict[str, Any]], summary: dict[str, Any] | None,
              skipped: str | None, failed: str | None, comparison: CaseComparison | None,
              no_compare: str | None) -> dict[str, Any]:
    case = first.get("case") or {}
    trials = sorted(trials, key=lambda t: t.get("trial") or 0)
    if summary is not None:
        status, reason = "ok", None
    elif skipped is not None:
        status, reason = "skipped", skipped
    elif failed is not None:
        status, reason = "failed", failed
    elif trials:
        status, reason = "partial", "no summary record: the case was interrupted after some trials"
    else:
        status, reason = "missing", "no record for this placement (the run ended before it)"
    validity = (summary or {}).get("validity") or {}
    row: dict[str, Any] = {
        "run_id": first.get("run_id") or meta.get("run_id"), "suite": meta.get("suite_name"),
        "device": device_name(meta), "experiment": experiment, "method": method, "case_id": first["case_id"],
        "context": case.get("context", first.get("context")), "batch": case.get("batch", first.get("batch")),
        "case": case, "placement": placement, "baseline": baseline if has_baseline else None,
        "status": status, "reason": reason, "trials": len(trials), "validity": validity.get("status"),
        "validity_reasons": list(validity.get("reasons") or []),
        "validity_warnings": list(validity.get("warnings") or []),
    }
    figures: dict[str, Any] = {}
    for metric in STAT_METRICS:
        figures[metric] = (_stat_figure(metric, trials, summary) if trials
                           else _missing(STAT_METRICS[metric], reason or "no trials"))
    for scope in ENERGY_SCOPES:
        figures.update(_scope_figures(scope, trials, summary))
    figures.update(_ratios(placement, baseline, has_baseline, comparison, no_compare, reason))
    figures.update(_step_figures(trials))
    row["figures"] = figures
    return row


def _ratios(placement: str, baseline: str, has_baseline: bool, c: CaseComparison | None,
            no_compare: str | None, reason: str | None) -> dict[str, Any]:
    if not has_baseline:
        why = f"no '{baseline}' placement in this run to compare with"
        return {m: _ratio_figure(None, None, baseline, why) for m in RATIO_METRICS}
    if placement == baseline:
        return {m: _ratio_figure(None, None, baseline, "the reference placement") for m in RATIO_METRICS}
    if c is None or c.baseline is None or c.other is None:
        why = no_compare or (c.note if c is not None else None) or reason or "not compared"
        return {m: _ratio_figure(None, None, baseline, why) for m in RATIO_METRICS}
    lat = _weakest(c.baseline.latency_provenance, c.other.latency_provenance)
    energy_why = c.baseline.energy_reason or c.other.energy_reason
    en = _weakest(c.baseline.energy_provenance, c.other.energy_provenance) if c.energy_reduction else None
    return {"speedup": _ratio_figure(c.speedup, lat, baseline, None),
            "energy_reduction": _ratio_figure(c.energy_reduction, en, baseline,
                                              energy_why or "energy unavailable")}


def flatten_case_row(row: dict[str, Any]) -> dict[str, Any]:
    """A case row as flat CSV columns: identity, then ``<figure>_<field>`` with provenance and reason."""
    flat = {k: row[k] for k in CASE_COLUMNS}
    flat["validity_reasons"] = "; ".join(row["validity_reasons"])
    flat.update({f"case_{k}": v for k, v in row["case"].items() if k not in ("context", "batch")})
    for name, fig in row["figures"].items():
        for field, v in fig.items():
            if field != "unit":
                flat[f"{name}_{field}"] = v
    return flat


# -- trial rows -------------------------------------------------------------------------------------------


def tidy_rows(records: list[dict[str, Any]], meta: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per trial record (skipped and failed cases get a row with their reason)."""
    rows = []
    device = (meta.get("gpu") or {}).get("name")
    for r in records:
        kind = r.get("kind")
        if kind not in (TRIAL, SKIPPED, FAILED):
            continue
        experiment, method = experiment_of(r, meta)
        row: dict[str, Any] = {
            "run_id": r.get("run_id"), "suite": meta.get("suite_name"), "experiment": experiment,
            "method": method, "case_id": r.get("case_id"),
            "placement": r.get("placement"), "trial": r.get("trial"),
            "status": r.get("status", kind) if kind == TRIAL else kind, "device": device,
        }
        row.update({f"case_{k}": v for k, v in (r.get("case") or {}).items()})
        if kind != TRIAL:
            row["energy_reason"] = r.get("reason") or r.get("error")
            rows.append(row)
            continue
        m = r["metrics"]
        energy = m["energy_j"]
        gpu = (r.get("energy") or {}).get("gpu") or {}
        fpga_e = (r.get("energy") or {}).get("fpga") or {}
        fpga = r.get("fpga") or {}
        model = r.get("model") or {}
        us_per_call = (fpga.get("modeled_us_per_call") or {}).get("total")
        row.update({
            "context": r.get("context"), "batch": r.get("batch"),
            "latency_ms": m["latency_ms"]["value"], "latency_provenance": m["latency_ms"]["provenance"],
            "tokens_per_s": m["tokens_per_s"]["value"], "j_per_token": m["j_per_token"]["value"],
            "tokens_per_j": m["tokens_per_j"]["value"], "energy_j": energy["value"],
            "energy_provenance": energy["provenance"], "energy_scope": energy.get("scope"),
            "energy_reason": energy.get("reason"), "gpu_energy_j": gpu.get("joules"),
            "gpu_energy_provenance": gpu.get("provenance"), "gpu_energy_method": gpu.get("method"),
            "fpga_energy_j": fpga_e.get("joules"), "fpga_energy_provenance": fpga_e.get("provenance"),
            "fpga_energy_method": fpga_e.get("method"), "window_s": r.get("window_s"),
            "window_provenance": "measured" if r.get("window_s") is not None else None,
            "iterations": r.get("iterations"), "decode_tokens": r.get("decode_tokens"),
            "model": model.get("name"), "layers": model.get("layers"),
            "layers_of_preset": model.get("layers_of_preset"),
            "fpga_mode": fpga.get("mode"), "fpga_wait": fpga.get("wait"), "fpga_recall": fpga.get("recall"),
            # Recall is computed with the FPGA's numerics reproduced on the host, not on a card.
            "fpga_recall_provenance": "emulated" if fpga.get("recall") is not None else None,
            "fpga_us_per_call": us_per_call,
            "fpga_us_per_call_provenance": "analytic" if us_per_call is not None else None,
        })
        for name, fig in (r.get("steps_ms") or {}).items():
            row[f"step_{name}_ms"] = fig["value"]
            row[f"step_{name}_provenance"] = fig["provenance"]
        rows.append(row)
    return rows


# -- writers ----------------------------------------------------------------------------------------------


def _csv_value(v: Any) -> Any:
    return "" if v is None else v


def write_csv(rows: list[dict[str, Any]], out: TextIO, columns: list[str] | None = None) -> None:
    """Write flat ``rows`` as CSV: ``columns`` (default the trial columns) first, then the rest sorted.

    Args:
        rows: Flat rows (trial rows, or flattened case rows).
        out: Text stream to write to.
        columns: Leading columns in order.
    """
    lead = COLUMNS if columns is None else columns
    extra = sorted({k for r in rows for k in r} - set(lead))
    writer = csv.DictWriter(out, fieldnames=lead + extra, extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _csv_value(v) for k, v in r.items()})


def _case_csv_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Identity columns, then every figure's columns grouped by figure in first-seen order."""
    cols = list(CASE_COLUMNS)
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    return cols


def run_json(run: RunDir, trials: bool, baseline: str = BASELINE) -> dict[str, Any]:
    """The JSON export: the run's metadata, the case rows, and (with ``trials``) the trial rows."""
    meta, records = run.meta(), run.records()
    out: dict[str, Any] = {"run": meta, "cases": case_rows(records, meta, baseline)}
    if trials:
        out["trials"] = tidy_rows(records, meta)
    return out


def _fmt(x: float | None, digits: int) -> str:
    return "null" if x is None else f"{x:.{digits}f}"


def _mean_ci(fig: dict[str, Any], digits: int) -> str:
    m = fig.get("mean")
    if m is None:
        return "null"
    lo, hi = fig.get("ci_low"), fig.get("ci_high")
    return _fmt(m, digits) if lo is None or hi is None else f"{m:.{digits}f} ±{(hi - lo) / 2:.{digits}f}"


def _ratio_text(fig: dict[str, Any]) -> str:
    r = fig.get("ratio")
    if r is None:
        return "-"
    lo, hi = fig.get("ci_low"), fig.get("ci_high")
    return f"{r:.3f}x" if lo is None or hi is None else f"{r:.3f}x [{lo:.3f}, {hi:.3f}]"


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


CASE_TABLE_HEADERS = ["experiment", "case", "placement", "ms/token", "J/token", "speedup [95% CI]",
                      "energy reduction [95% CI]", "provenance (time/energy)", "validity"]


def case_table(rows: list[dict[str, Any]]) -> tuple[list[list[str]], list[str]]:
    """Case rows as table cells (under :data:`CASE_TABLE_HEADERS`) and the notes that go under the table.

    Notes hold what applies to many cells: why values are null, skipped or failed cases, how to read ±.
    """
    cells, notes = [], {}
    for r in rows:
        f = r["figures"]
        prov = "/".join((f[m]["provenance"] if f[m].get("mean") is not None else None) or "-"
                        for m in ("latency_ms", "j_per_token"))
        cells.append([r["experiment"], r["case_id"], r["placement"], _mean_ci(f["latency_ms"], 3),
                      _mean_ci(f["j_per_token"], 4), _ratio_text(f["speedup"]),
                      _ratio_text(f["energy_reduction"]), prov, r["validity"] or r["status"]])
        for name in ("latency_ms", "j_per_token"):
            if f[name].get("mean") is None and f[name].get("reason"):
                notes[f"{name} null: {f[name]['reason']}"] = None
        if r["reason"]:
            notes[f"{r['case_id']} {r['placement']}: {r['status']}: {r['reason']}"] = None
    notes["± is the 95% t-interval half-width over trials; ratios are ratios of means vs the baseline "
          "placement with a 95% paired bootstrap interval"] = None
    return cells, list(notes)


def case_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """A Markdown table of case rows, with provenance and the reasons for null values as notes."""
    cells, notes = case_table(rows)
    lines = [f"**{meta.get('suite_name')} run {meta.get('run_id')} on {device_name(meta)}**", "",
             "| " + " | ".join(CASE_TABLE_HEADERS) + " |", "|" + "---|" * len(CASE_TABLE_HEADERS)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in cells]
    lines += [""] + [f"- {_md_cell(n)}" for n in notes]
    return "\n".join(lines) + "\n"


def trial_markdown(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of trial rows (the leading trial columns that any row fills)."""
    cols = [c for c in COLUMNS if any(r.get(c) is not None for r in rows)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_md_cell("" if r.get(c) is None else r[c]) for c in cols) + " |"
              for r in rows]
    return "\n".join(lines) + "\n"


def export_run(run: RunDir, fmt: str, trials: bool = False, out: TextIO | None = None,
               macros_path: Path | None = None, baseline: str = BASELINE) -> int:
    r"""Export one run in one format; the single entry point of ``bench export``.

    Args:
        run: The run directory.
        fmt: ``csv``, ``latex``, ``json`` or ``markdown``.
        trials: One row per trial instead of per case x placement (csv, json, markdown).
        out: Stream the export is written to.
        macros_path: LaTeX only: also write the ``\newcommand`` macros file here (written atomically).
        baseline: Reference placement of the comparison columns.

    Returns:
        The number of rows exported (LaTeX: table rows).

    Raises:
        UsageError: An unknown format, ``trials`` with LaTeX, or ``macros_path`` with another format.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if trials and fmt == "latex":
        raise UsageError("--trials applies to csv, json and markdown; "
                         "LaTeX tables summarize case x placement")
    if macros_path is not None and fmt != "latex":
        raise UsageError("--macros applies to --format latex only")
    if out is None:
        raise UsageError("export_run needs an output stream")
    meta, records = run.meta(), run.records()
    if fmt == "json":
        doc = run_json(run, trials, baseline)
        json.dump(doc, out, indent=2, allow_nan=False, default=str)
        out.write("\n")
        return len(doc["trials"] if trials else doc["cases"])
    if trials:
        rows = tidy_rows(records, meta)
        if fmt == "csv":
            write_csv(rows, out)
        else:
            out.write(trial_markdown(rows))
        return len(rows)
    cases = case_rows(records, meta, baseline)
    if fmt == "csv":
        flat = [flatten_case_row(r) for r in cases]
        write_csv(flat, out, _case_csv_columns(flat))
    elif fmt == "markdown":
        out.write(case_markdown(cases, meta))
    else:
        from bench.report import latex

        out.write(latex.tables(cases, meta))
        if macros_path is not None:
            text = latex.macros(cases, meta)
            tmp = macros_path.with_name(macros_path.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, macros_path)
    return len(cases)
