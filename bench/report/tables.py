"""Comparison tables, rendered for the terminal (Rich) and for documents (Markdown)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from bench.compare import CaseComparison
from bench.stats import RatioEstimate

_VERDICT = {
    "speedup": {"higher": "faster", "lower": "slower"},
    "energy": {"higher": "less energy", "lower": "more energy"},
}


def _ratio(r: RatioEstimate | None, kind: str, missing: str) -> str:
    if r is None:
        return missing
    verdict = _VERDICT[kind].get(r.verdict, r.verdict)
    if r.ci_low is None or r.ci_high is None:
        return f"{r.ratio:.3f}x ({verdict})"
    return f"{r.ratio:.3f}x [{r.ci_low:.3f}, {r.ci_high:.3f}] {verdict}"


def _mean(summary: Any, digits: int) -> str:
    if summary is None:
        return "null"
    half = None if summary.ci_high is None else (summary.ci_high - summary.ci_low) / 2
    return f"{summary.mean:.{digits}f}" + (f" ±{half:.{digits}f}" if half is not None else "")


def headers(baseline: str, other: str) -> list[str]:
    """Column headers of a comparison table."""
    return ["case", f"{baseline} ms/token", f"{other} ms/token", "speedup [95% CI]",
            f"{baseline} J/token", f"{other} J/token", "energy reduction [95% CI]", "provenance"]


def cells(c: CaseComparison) -> list[str]:
    """The cells of one case's row (shared by every renderer)."""
    if c.baseline is None or c.other is None:
        return [c.case_id, "-", "-", c.note or "not compared", "-", "-", "-", "-"]
    a, b = c.baseline, c.other
    why = b.energy_reason or a.energy_reason or "energy unavailable"
    prov = f"time {a.latency_provenance}/{b.latency_provenance}; energy " + (
        f"{a.energy_provenance}/{b.energy_provenance}" if a.energy_provenance and b.energy_provenance else "null")
    return [
        c.case_id, _mean(a.latency, 3), _mean(b.latency, 3), _ratio(c.speedup, "speedup", "-"),
        _mean(a.j_per_token, 4), _mean(b.j_per_token, 4), _ratio(c.energy_reduction, "energy", f"null: {why}"),
        prov,
    ]


def comparison_table(rows: list[CaseComparison], baseline: str, other: str, title: str) -> Table:
    """A Rich table of a comparison."""
    table = Table(title=title, show_lines=False)
    for h in headers(baseline, other):
        table.add_column(h, overflow="fold")
    for c in rows:
        table.add_row(*cells(c))
    return table


def comparison_markdown(rows: list[CaseComparison], baseline: str, other: str, title: str) -> str:
    """A Markdown table of a comparison, with a title line."""
    hs = headers(baseline, other)
    lines = [f"**{title}**", "", "| " + " | ".join(hs) + " |", "|" + "---|" * len(hs)]
    lines += ["| " + " | ".join(cells(c)) + " |" for c in rows]
    return "\n".join(lines) + "\n"
