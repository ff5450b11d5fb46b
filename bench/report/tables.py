"""Comparison tables, rendered for the terminal (Rich) and for documents (Markdown).

Cells stay short; what applies to many rows (provenance, why energy is null) goes into notes under the
table, so the table reads on an 80-column terminal.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from bench.compare import CaseComparison
from bench.stats import RatioEstimate

_VERDICT = {
    "speedup": {"higher": "faster", "lower": "slower", "no significant difference": "n.s."},
    "energy": {"higher": "less", "lower": "more", "no significant difference": "n.s."},
}


def _ratio(r: RatioEstimate | None, kind: str) -> str:
    if r is None:
        return "null"
    verdict = _VERDICT[kind].get(r.verdict, r.verdict)
    if r.ci_low is None or r.ci_high is None:
        return f"{r.ratio:.3f}x ({verdict})"
    return f"{r.ratio:.3f}x [{r.ci_low:.3f}, {r.ci_high:.3f}] {verdict}"


def _mean(summary: Any, digits: int) -> str:
    if summary is None:
        return "null"
    if summary.ci_high is None or summary.ci_low is None:
        return f"{summary.mean:.{digits}f}"
    return f"{summary.mean:.{digits}f} ±{(summary.ci_high - summary.ci_low) / 2:.{digits}f}"


def headers(baseline: str, other: str) -> list[str]:
    """Column headers of a comparison table."""
    return ["case", f"{baseline} ms", f"{other} ms", "speedup [95% CI]", f"{baseline} J/tok",
            f"{other} J/tok", "energy reduction [95% CI]", "validity"]


def cells(c: CaseComparison) -> list[str]:
    """The cells of one case's row (shared by every renderer)."""
    if c.baseline is None or c.other is None:
        return [c.case_id, "-", "-", c.note or "not compared", "-", "-", "-", "-"]
    a, b = c.baseline, c.other
    return [c.case_id, _mean(a.latency, 3), _mean(b.latency, 3), _ratio(c.speedup, "speedup"),
            _mean(a.j_per_token, 4), _mean(b.j_per_token, 4), _ratio(c.energy_reduction, "energy"),
            "/".join(_status(v) for v in (c.baseline_validity, c.other_validity))]


def _status(validity: dict[str, Any] | None) -> str:
    return "?" if validity is None else str(validity["status"])


def notes(rows: list[CaseComparison]) -> list[str]:
    """Notes that hold for the table: what each side's figures are (provenance), why energy is null."""
    out: list[str] = []
    for side in ("baseline", "other"):
        seen: dict[str, None] = {}
        for c in rows:
            r = getattr(c, side)
            if r is not None:
                energy = r.energy_provenance or "null"
                seen[f"{r.placement}: latency {r.latency_provenance}, energy {energy}"] = None
        out += list(seen)
    units = sorted({r.unit for c in rows for r in (c.baseline, c.other) if r is not None})
    if units:
        out.append(f"ms = latency per {' or '.join(units)}; J/tok = joules per output token")
    reasons = {r.energy_reason for c in rows for r in (c.baseline, c.other) if r is not None and r.energy_reason}
    out += [f"energy null: {why}" for why in sorted(reasons)]
    for c in rows:
        for side, v in (("baseline", c.baseline_validity), ("other", c.other_validity)):
            r = getattr(c, side)
            if v is not None and v["status"] == "INVALID" and r is not None:
                out.append(f"INVALID {c.case_id} {r.placement}: {'; '.join(v['reasons'])}")
    out.append("± is the 95% t-interval half-width over trials; ratios are ratios of means with a 95% paired "
               "bootstrap interval; n.s. = no significant difference; validity: baseline/compared side")
    return out


def comparison_table(rows: list[CaseComparison], baseline: str, other: str, title: str) -> Table:
    """A Rich table of a comparison, with its notes as the caption."""
    table = Table(title=title, caption="\n".join(notes(rows)), caption_justify="left")
    for h in headers(baseline, other):
        table.add_column(h, overflow="fold")
    for c in rows:
        table.add_row(*cells(c))
    return table


def comparison_markdown(rows: list[CaseComparison], baseline: str, other: str, title: str) -> str:
    """A Markdown table of a comparison: title, table, notes."""
    hs = headers(baseline, other)
    lines = [f"**{title}**", "", "| " + " | ".join(hs) + " |", "|" + "---|" * len(hs)]
    lines += ["| " + " | ".join(cells(c)) + " |" for c in rows]
    lines += [""] + [f"- {n}" for n in notes(rows)]
    return "\n".join(lines) + "\n"


COMPOSITION_HEADERS = ["case", "direct ms/tok", "composed ms/tok", "time error", "direct mJ/step",
                       "composed mJ/step", "energy error", "within 5% / 10%"]


def composition_cells(rec: dict[str, Any]) -> list[str]:
    """One composition-check record as table cells."""
    def pct(x: float | None) -> str:
        return "null" if x is None else f"{x:+.1%}"

    def num(x: float | None, digits: int) -> str:
        return "null" if x is None else f"{x:.{digits}f}"

    t, e = rec.get("time_error"), rec.get("energy_error")
    ok_t = "yes" if t is not None and abs(t) <= rec["targets"]["time"] else "no" if t is not None else "-"
    ok_e = "yes" if e is not None and abs(e) <= rec["targets"]["energy"] else "no" if e is not None else "-"
    return [rec["case_id"], num(rec.get("direct_ms_per_token"), 3), num(rec.get("composed_ms_per_token"), 3), pct(t),
            num(rec.get("direct_mj_per_step"), 2), num(rec.get("composed_mj_per_step"), 2), pct(e), f"{ok_t} / {ok_e}"]


def composition_notes(records: list[dict[str, Any]]) -> list[str]:
    """How the composition was made, and why energy errors are null where they are."""
    out = sorted({f"method: {r['method']}" for r in records})
    out += sorted({f"energy null: {r['energy_reason']}" for r in records if r.get("energy_reason")})
    return out


def composition_table(records: list[dict[str, Any]], title: str) -> Table:
    """A Rich table of composition-check records."""
    table = Table(title=title, caption="\n".join(composition_notes(records)), caption_justify="left")
    for h in COMPOSITION_HEADERS:
        table.add_column(h, overflow="fold")
    for r in records:
        table.add_row(*composition_cells(r))
    return table


def composition_markdown(records: list[dict[str, Any]], title: str) -> str:
    """A Markdown table of composition-check records."""
    lines = [f"**{title}**", "", "| " + " | ".join(COMPOSITION_HEADERS) + " |", "|" + "---|" * len(COMPOSITION_HEADERS)]
    lines += ["| " + " | ".join(composition_cells(r)) + " |" for r in records]
    lines += [""] + [f"- {n}" for n in composition_notes(records)]
    return "\n".join(lines) + "\n"
