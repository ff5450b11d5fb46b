"""The report of one or more runs: figures, tables, provenance and notes in one document.

:func:`write_report` draws the figures (:mod:`bench.report.figures`) into ``<out>/figures/`` and writes
either ``<out>/report.html``, self-contained (figures inlined as base64 PNG, styles inline, no external
source or link), or ``<out>/report.md``, which refers to the PNG files next to it. Both hold:

- the figures with their captions, the provenance labels of what each shows, and why any was skipped;
- per run, the case table (mean ± 95% CI, speedup and energy reduction vs the baseline with their
  intervals, provenance and validity), the composition check where the run made one, and the roofline
  points;
- per run, a provenance block: device, driver, software versions, commit, host, FPGA configuration,
  energy meters, and when the run started and ended;
- notes: invalid cases with their reasons, and every distinct warning.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.export import CASE_TABLE_HEADERS, case_table, device_name
from bench.provenance import utc_now
from bench.report import figures as figs
from bench.report import tables
from bench.report.roofline import Roof, RooflinePoint, load_copy_report
from bench.store import RunDir

REPORT_FORMATS = ("html", "markdown")
_CSS = """
body { font-family: sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; color: #111; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.85rem; }
th, td { border-bottom: 1px solid #999; padding: 0.2rem 0.5rem; text-align: left; vertical-align: top; }
th { border-bottom: 2px solid #111; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; border: 1px solid #ccc; }
figcaption, .notes { font-size: 0.85rem; } code { font-size: 0.85rem; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.1rem 1rem; font-size: 0.85rem; }
dt { font-weight: bold; }
"""


def write_report(runs: list[RunDir], out_dir: Path, fmt: str = "html",
                 kernels_report: Path | None = None) -> list[Path]:
    """Write the report of ``runs`` and its figures under ``out_dir``.

    Args:
        runs: Run directories (one, or several to compare, e.g. the same suite on two GPUs).
        out_dir: Output directory (created): ``report.html`` or ``report.md`` plus ``figures/``.
        fmt: ``html`` (self-contained) or ``markdown`` (refers to ``figures/*.png``).
        kernels_report: A ``bench kernels --json`` file; its measured copy bandwidth replaces the spec
            bandwidth in the roofline of the same card.

    Returns:
        The report file, then every figure file written (PNG and PDF).

    Raises:
        UsageError: No runs, or an unknown format.
    """
    if fmt not in REPORT_FORMATS:
        raise UsageError(f"unknown report format '{fmt}'; choose one of {', '.join(REPORT_FORMATS)}")
    if not runs:
        raise UsageError("no runs to report on; give at least one run directory or id")
    data = figs.load_runs(runs)
    results, ctx = figs.write_figures(data, out_dir / "figures", load_copy_report(kernels_report))
    sections = _Sections(data, results, ctx.get("roofline", []))
    text = sections.html() if fmt == "html" else sections.markdown()
    path = out_dir / ("report.html" if fmt == "html" else "report.md")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return [path, *(p for r in results for p in r.paths)]


def provenance_items(meta: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) pairs describing where a run's numbers come from."""
    gpu = meta.get("gpu") or {}
    soft = meta.get("software") or {}
    git = meta.get("git") or {}
    meters = meta.get("energy_meters") or {}
    driver = next((m.get("driver_version") for m in meters.values() if m.get("driver_version")), None)
    commit = git.get("commit")
    items = [
        ("suite", f"{meta.get('suite_name')} ({(meta.get('suite') or {}).get('file', '?')})"),
        ("run", f"{meta.get('run_id')}: {meta.get('status')}, {meta.get('started')} to {meta.get('ended')}"),
        ("device", f"{device_name(meta)} ({gpu.get('type', '?')}"
                   + (f", {gpu['memory_bytes'] / 2**30:.0f} GiB" if gpu.get("memory_bytes") else "") + ")"),
        ("driver", driver or "not recorded (no NVML on this run)"),
        ("CUDA runtime", str(soft.get("cuda_runtime") or gpu.get("cuda_runtime") or "none")),
        ("software", ", ".join(f"{k} {v}" for k, v in soft.items() if v and k != "cuda_runtime")),
        ("commit", f"{commit} on {git.get('branch')}" + (" (uncommitted changes)" if git.get("dirty") else "")
         if commit else "not recorded (no git checkout; set BENCH_GIT_COMMIT)"),
        ("host", f"{(meta.get('host') or {}).get('cpu', '?')}, {(meta.get('host') or {}).get('os', '?')}"),
    ]
    for name, f in (meta.get("fpga") or {}).items():
        clock = f"{f['clock_hz'] / 1e6:g} MHz" if f.get("clock_hz") else "clock not recorded"
        spec = Path(str(f.get("spec"))).name
        items.append((f"FPGA {name}", f"{f.get('mode')} {f.get('part') or ''} (spec {spec}, {clock}, control "
                                      f"{f.get('control')}, link {f.get('link')}, wait {f.get('wait')}; "
                                      f"energy {f.get('energy_method')})"))
    for scope, m in meters.items():
        state = (f"{m.get('method')} ({m.get('provenance')})" if m.get("available")
                 else f"unavailable: {m.get('unavailable_reason')}")
        items.append((f"energy meter {scope}", state))
    return items


class _Sections:
    """Builds the report's content once and renders it as HTML or Markdown."""

    def __init__(self, runs: list[figs.RunData], results: list[figs.FigureResult],
                 roofline: list[tuple[figs.RunData, RooflinePoint, Roof | None]]) -> None:
        self.runs, self.results, self.roofline = runs, results, roofline
        self.title = "bench report: " + ", ".join(dict.fromkeys(f"{r.meta.get('suite_name')} on {r.device}"
                                                              for r in runs))

    def _run_title(self, run: figs.RunData) -> str:
        return f"{run.meta.get('suite_name')} run {run.run.run_id} on {run.device}"

    def _roofline_rows(self, run: figs.RunData) -> list[list[str]]:
        rows = []
        for r, p, roof in self.roofline:
            if r is not run:
                continue
            share = f"{100 * p.performance / roof.attainable(p.intensity):.3g}%" if roof else "-"
            rows.append([p.step, p.device, p.placement, p.case_id, f"{p.intensity:.3g}",
                         f"{p.performance / 1e9:.3g}", share, f"{p.seconds * 1e3:.4g}",
                         f"{p.provenance} (time {p.time_provenance})"])
        return rows

    def _notes(self) -> list[str]:
        notes: dict[str, None] = {}
        for run in self.runs:
            for row in run.rows:
                if row["validity"] == "INVALID":
                    notes[f"INVALID {row['case_id']} {row['placement']} ({run.run.run_id}): "
                          + "; ".join(row["validity_reasons"])] = None
        warnings: dict[str, int] = {}
        for run in self.runs:
            for row in run.rows:
                for w in row.get("validity_warnings", []):
                    warnings[w] = warnings.get(w, 0) + 1
        notes.update({f"warning ({n} case x placement{'s' if n > 1 else ''}): {w}": None
                      for w, n in warnings.items()})
        for r in self.results:
            notes.update({f"{r.name}: {n}": None for n in r.notes})
        return list(notes)

    # -- HTML ---------------------------------------------------------------------------------------------

    def html(self) -> str:
        """The report as one self-contained HTML page."""
        h = html.escape
        out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
               f"<title>{h(self.title)}</title>", f"<style>{_CSS}</style></head><body>",
               f"<h1>{h(self.title)}</h1>",
               f"<p>Generated {h(utc_now())}. Every number carries its provenance: <b>measured</b> on real "
               "hardware, <b>emulated</b> (a real GPU timeline with a modeled FPGA latency injected) or "
               "<b>analytic</b> (from models).</p>", "<h2>Figures</h2>"]
        for r in self.results:
            out.append(f"<h3>{h(r.title)}</h3>")
            if r.skipped:
                out.append(f"<p class=notes>Not drawn: {h(r.skipped)}</p>")
                continue
            png = next(p for p in r.paths if p.suffix == ".png")
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            out.append(f'<figure><img alt="{h(r.title)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{h(r.caption)} <b>Provenance:</b> {h(', '.join(r.provenance))}."
                       + "".join(f"<br>{h(n)}" for n in r.notes) + "</figcaption></figure>")
        for run in self.runs:
            out.append(f"<h2>{h(self._run_title(run))}</h2>")
            cells, notes = case_table(run.rows)
            out += ["<h3>Cases</h3>", _html_table(CASE_TABLE_HEADERS, cells), _html_list(notes)]
            comp = [x for x in run.records if x.get("kind") == "composition"]
            if comp:
                out += [f"<h3>{h(_COMPOSITION_TITLE)}</h3>",
                        _html_table(tables.COMPOSITION_HEADERS, [tables.composition_cells(x) for x in comp]),
                        _html_list(tables.composition_notes(comp))]
            roof_rows = self._roofline_rows(run)
            if roof_rows:
                out += ["<h3>Roofline points</h3>", _html_table(_ROOF_HEADERS, roof_rows)]
            out += ["<h3>Provenance</h3>", "<dl>"]
            out += [f"<dt>{h(k)}</dt><dd>{h(v)}</dd>" for k, v in provenance_items(run.meta)]
            out.append("</dl>")
        out += ["<h2>What each figure shows</h2>",
                _html_list(f"{r.title}: {', '.join(r.provenance) if not r.skipped else 'not drawn'}"
                           for r in self.results),
                "<h2>Notes</h2>", _html_list(self._notes() or ["none"]), "</body></html>"]
        return "\n".join(out) + "\n"

    # -- Markdown -----------------------------------------------------------------------------------------

    def markdown(self) -> str:
        """The report as Markdown, referring to the figure files under ``figures/``."""
        out = [f"# {self.title}", "", f"Generated {utc_now()}. Every number carries its provenance: measured "
               "on real hardware, emulated (a real GPU timeline with a modeled FPGA latency injected) or "
               "analytic (from models).", "", "## Figures", ""]
        for r in self.results:
            out += [f"### {r.title}", ""]
            if r.skipped:
                out += [f"Not drawn: {r.skipped}", ""]
                continue
            png = next(p for p in r.paths if p.suffix == ".png")
            pdf = next((p for p in r.paths if p.suffix == ".pdf"), None)
            out += [f"![{r.title}](figures/{png.name})", "",
                    f"{r.caption} **Provenance:** {', '.join(r.provenance)}."
                    + (f" [PDF](figures/{pdf.name})" if pdf else ""), ""]
            out += [f"- {n}" for n in r.notes] + ([""] if r.notes else [])
        for run in self.runs:
            out += [f"## {self._run_title(run)}", "", "### Cases", ""]
            cells, notes = case_table(run.rows)
            out += [_md_table(CASE_TABLE_HEADERS, cells), *(f"- {_md(n)}" for n in notes), ""]
            comp = [x for x in run.records if x.get("kind") == "composition"]
            if comp:
                out += [tables.composition_markdown(comp, _COMPOSITION_TITLE)]
            roof_rows = self._roofline_rows(run)
            if roof_rows:
                out += ["### Roofline points", "", _md_table(_ROOF_HEADERS, roof_rows), ""]
            out += ["### Provenance", ""]
            out += [f"- **{k}:** {_md(v)}" for k, v in provenance_items(run.meta)] + [""]
        out += ["## What each figure shows", ""]
        out += [f"- {r.title}: {', '.join(r.provenance) if not r.skipped else 'not drawn'}"
                for r in self.results]
        out += ["", "## Notes", ""] + [f"- {_md(n)}" for n in self._notes() or ["none"]]
        return "\n".join(out) + "\n"


_ROOF_HEADERS = ["step", "device", "placement", "case", "FLOP/B", "GFLOP/s", "of roof", "ms/token",
                 "provenance"]
_COMPOSITION_TITLE = "Composition check (per-step measurements composed vs measured directly)"


def _html_table(headers: list[str], rows: Iterable[list[str]]) -> str:
    h = html.escape
    head = "".join(f"<th>{h(x)}</th>" for x in headers)
    body = "".join("<tr>" + "".join(f"<td>{h(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_list(items: Iterable[str]) -> str:
    return "<ul class=notes>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(headers: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
