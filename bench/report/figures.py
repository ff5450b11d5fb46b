"""Figures of one or more runs, as PNG and PDF, in a style that reads in greyscale.

Five figures, each built from the runs' case rows (:func:`bench.export.case_rows`):

- ``headline``: speedup and energy reduction of every placement vs the baseline, per method and case,
  with 95% bootstrap intervals (the study's headline figure);
- ``step_breakdown``: time per decode step split into the pipeline steps, vs context length, with the
  memory-processing share (everything but the dense decoder) above each bar;
- ``batch_scaling``: throughput and speedup vs batch size;
- ``energy_breakdown``: J/token by scope, GPU and FPGA, each split into net and idle (gross = net + idle);
- ``roofline``: each step by arithmetic intensity on the GPU (measured times) and the FPGA (modeled),
  under each device's ceilings (:mod:`bench.report.roofline`).

Series differ by hatch, marker and line style as well as grey level, so nothing depends on colour.
Several runs (the same suite on two GPUs) appear side by side, their series labelled by device (and run
id where devices repeat). A figure whose data is absent (no energy on a CPU run, one context length) is
skipped with its reason, logged and returned; the others are still written.

matplotlib is imported only when figures are drawn. Figures are ``matplotlib.figure.Figure`` objects
saved directly (never pyplot), so no GUI backend is loaded and PNGs are rendered by Agg: no display is
needed and no global backend state changes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.export import case_rows, device_name, point
from bench.pipeline import DENSE, FUSED, Step
from bench.report import roofline as rl
from bench.report.intensity import REGISTRY
from bench.report.latex import compact_count
from bench.store import RunDir

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

log = logging.getLogger("bench.report")

FORMATS = ("png", "pdf")
#: Timeline sections in stacking order; others follow in first-seen order.
SECTION_ORDER = (DENSE, Step.PREPARE.value, Step.RELEVANCY.value, Step.RETRIEVAL.value, FUSED,
                 Step.APPLY.value)
GREYS = ("0.15", "0.55", "0.85", "0.35", "1.0", "0.7")
HATCHES = ("", "//", "..", "xx", "\\\\", "oo", "--", "++")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES: tuple[Any, ...] = ("-", "--", ":", "-.", (0, (5, 1)), (0, (1, 1)), (0, (3, 1, 1, 1, 1, 1)))
#: Panels per figure beyond which rows are dropped (with a note): past this a figure stops being readable.
MAX_PANEL_ROWS = 6

STYLE = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7,
    "ytick.labelsize": 7, "axes.grid": True, "grid.color": "0.88", "grid.linewidth": 0.5,
    "axes.axisbelow": True, "axes.edgecolor": "0.2", "hatch.linewidth": 0.6, "hatch.color": "0.1",
    "lines.linewidth": 1.1, "lines.markersize": 4.5, "errorbar.capsize": 2, "savefig.dpi": 150,
    # TrueType fonts in the PDF, so the text stays text (searchable, editable) in papers.
    "pdf.fonttype": 42, "legend.frameon": False,
}


def series_style(i: int) -> dict[str, Any]:
    """The i-th series' look: face grey, hatch, marker and line style (distinct for i < 40)."""
    return {"face": GREYS[(i + i // len(HATCHES)) % len(GREYS)], "hatch": HATCHES[i % len(HATCHES)],
            "marker": MARKERS[i % len(MARKERS)], "linestyle": LINESTYLES[i % len(LINESTYLES)]}


class FigureSkipped(Exception):
    """A figure has no data to show; the message says why."""


@dataclass
class RunData:
    """One run, loaded for the report.

    Attributes:
        run: The run directory.
        meta: Its run.json.
        records: Its records.
        rows: Its case rows.
        label: How its series are labelled when several runs are shown ("" for a single run).
    """

    run: RunDir
    meta: dict[str, Any]
    records: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    label: str = ""

    @property
    def device(self) -> str:
        """The run's GPU (or CPU) name."""
        return device_name(self.meta)


def load_runs(runs: list[RunDir]) -> list[RunData]:
    """Load runs and label them: by device, plus run id where two runs share a device."""
    data = []
    for run in runs:
        meta, records = run.meta(), run.records()
        data.append(RunData(run, meta, records, case_rows(records, meta)))
    if len(data) > 1:
        devices = [d.device for d in data]
        for d in data:
            d.label = d.device if devices.count(d.device) == 1 else f"{d.device} {d.run.run_id}"
    return data


@dataclass
class FigureResult:
    """A figure written, or skipped.

    Attributes:
        name: File stem (``headline``...).
        title: What it shows.
        caption: How to read it, with sources and provenance.
        paths: Files written (PNG then PDF); empty when skipped.
        provenance: Provenance labels of the numbers it shows.
        skipped: Why it was not drawn (None when drawn).
        notes: What it leaves out, and why.
    """

    name: str
    title: str
    caption: str = ""
    paths: list[Path] = field(default_factory=list)
    provenance: list[str] = field(default_factory=list)
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class _Built:
    fig: Figure
    caption: str
    provenance: set[str]
    notes: list[str] = field(default_factory=list)


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _labels(*labels: str | None) -> set[str]:
    return {p for label in labels if label for p in label.split("/")}


def _case_label(row: dict[str, Any]) -> str:
    extra = ",".join(f"{k}={v}" for k, v in row["case"].items() if k not in ("context", "batch"))
    return f"{compact_count(row['context'])} b{row['batch']}" + (f"\n{extra}" if extra else "")


def _series(run: RunData, placement: str, provenance: str | None = None) -> str:
    text = placement + (f" ({provenance})" if provenance else "")
    return f"{text} [{run.label}]" if run.label else text


def _bar(ax: Axes, x: float, height: float, width: float, style: dict[str, Any], bottom: float = 0.0,
         label: str | None = None) -> None:
    ax.bar(x, height, width, bottom=bottom, color=style["face"], hatch=style["hatch"], edgecolor="0.1",
           linewidth=0.5, label=label)


def _handles(axes: Any) -> dict[str, Any]:
    """Legend handles of several axes by label, first seen first (a label drawn twice is listed once)."""
    out: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            out.setdefault(label, h)
    return out


# -- headline ---------------------------------------------------------------------------------------------


def headline(runs: list[RunData], ctx: dict[str, Any]) -> _Built:
    """Speedup and energy reduction vs the baseline per method and case, with 95% bootstrap intervals."""
    groups: dict[tuple[str, str], str] = {}
    series: dict[tuple[int, str], dict[str, Any]] = {}
    for ri, run in enumerate(runs):
        for row in run.rows:
            f = row["figures"]
            if f["speedup"]["ratio"] is None and f["energy_reduction"]["ratio"] is None:
                continue
            groups.setdefault((row["experiment"], row["case_id"]), _case_label(row))
            series.setdefault((ri, row["placement"]), {})[(row["experiment"], row["case_id"])] = f
    if not series:
        reasons = (r["figures"]["speedup"]["reason"] for run in runs for r in run.rows)
        why = next((w for w in reasons if w not in (None, "the reference placement")), "no comparison")
        raise FigureSkipped(f"no placement compared with a baseline: {why}")
    methods = {e for e, _ in groups}
    keys = list(groups)
    metrics = [("speedup", "speedup (x)")]
    notes = []
    every = [f for s in series.values() for f in s.values()]
    if any(f["energy_reduction"]["ratio"] is not None for f in every):
        metrics.append(("energy_reduction", "energy reduction (x)"))
    else:
        why = next((f["energy_reduction"]["reason"] for f in every if f["energy_reduction"]["reason"]),
                   "no energy figures")
        notes.append(f"energy reduction not drawn: {why}")
    fig = _figure(max(4.5, 0.5 * len(keys) * max(1, len(series)) ** 0.5 + 2.5), 2.4 * len(metrics) + 0.6)
    axes = fig.subplots(len(metrics), 1, sharex=True, squeeze=False)[:, 0]
    width = 0.8 / len(series)
    provenance: set[str] = set()
    for ax, (metric, ylabel) in zip(axes, metrics, strict=True):
        for si, ((ri, placement), by_case) in enumerate(series.items()):
            provs = {f[metric]["provenance"] for f in by_case.values() if f[metric]["provenance"]}
            label: str | None = _series(runs[ri], placement, "/".join(sorted(provs)) or None)
            for gi, key in enumerate(keys):
                fm = by_case.get(key, {}).get(metric)
                if not fm or fm["ratio"] is None:
                    continue
                provenance |= _labels(fm["provenance"])
                x = gi - 0.4 + width * (si + 0.5)
                _bar(ax, x, fm["ratio"], width, series_style(si), label=label)
                label = None  # one legend entry per series
                if fm["ci_low"] is not None and fm["ci_high"] is not None:
                    err = [[fm["ratio"] - fm["ci_low"]], [fm["ci_high"] - fm["ratio"]]]
                    ax.errorbar(x, fm["ratio"], yerr=err, fmt="none", ecolor="0")
        ax.axhline(1.0, color="0", linestyle="--", linewidth=0.8)
        ax.set_ylabel(ylabel)
        ax.grid(axis="x", visible=False)
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[-1].set_xticks(range(len(keys)))
    axes[-1].set_xticklabels([groups[k] if len(methods) == 1 else f"{k[0]}\n{groups[k]}" for k in keys])
    axes[-1].set_xlabel("case (context, batch)")
    axes[0].set_title(f"vs the baseline placement ({', '.join(sorted(methods))}); dashed line: parity")
    caption = ("Ratio of trial means (baseline / placement) for ms/token (speedup) and J/token over "
               "accel_total, the GPU plus any FPGA (energy reduction); bars are 95% paired bootstrap "
               "intervals; above 1 is better. Series labels give each placement's provenance.")
    return _Built(fig, caption, provenance, notes)


# -- per-step breakdown -------------------------------------------------------------------------------


def _section(figure_name: str) -> str | None:
    """The timeline section of a case-row figure name (``step_<section>_ms``), else None."""
    if figure_name.startswith("step_") and figure_name.endswith("_ms"):
        return figure_name[len("step_"):-len("_ms")]
    return None


def _sections(rows: list[dict[str, Any]]) -> list[str]:
    seen = list(dict.fromkeys(s for r in rows for n in r["figures"] if (s := _section(n))))
    return [s for s in SECTION_ORDER if s in seen] + [s for s in seen if s not in SECTION_ORDER]


def step_breakdown(runs: list[RunData], ctx: dict[str, Any]) -> _Built:
    """Stacked per-step time vs context length, one panel per (run, method, batch) and placement."""
    panels: list[tuple[RunData, str, int, list[str]]] = []
    for run in runs:
        combos: dict[tuple[str, int], set[int]] = {}
        for r in run.rows:
            if any(_section(n) and point(f) for n, f in r["figures"].items()):
                combos.setdefault((r["experiment"], r["batch"]), set()).add(r["context"])
        for (exp, batch), contexts in combos.items():
            if len(contexts) > 1:
                places = list(dict.fromkeys(r["placement"] for r in run.rows if r["experiment"] == exp))
                panels.append((run, exp, batch, places))
    if not panels:
        raise FigureSkipped("every method and batch has a single context length (or no per-step times): "
                            "add context lengths to the suite's matrix")
    notes = []
    if len(panels) > MAX_PANEL_ROWS:
        notes.append(f"{len(panels) - MAX_PANEL_ROWS} (run, method, batch) row(s) beyond the first "
                     f"{MAX_PANEL_ROWS} left out; the exports hold every per-step time")
        panels = panels[:MAX_PANEL_ROWS]
    sections = _sections([r for run, *_ in panels for r in run.rows])
    cols = max(len(p[3]) for p in panels)
    fig = _figure(1.9 * cols + 1.6, 1.9 * len(panels) + 0.9)
    axes = fig.subplots(len(panels), cols, squeeze=False, sharey="row")
    provenance: set[str] = set()
    for pi, (run, exp, batch, places) in enumerate(panels):
        for ci in range(cols):
            ax = axes[pi][ci]
            if ci >= len(places):
                ax.set_visible(False)
                continue
            rows = sorted((r for r in run.rows if r["experiment"] == exp and r["batch"] == batch
                           and r["placement"] == places[ci]), key=lambda r: r["context"])
            for xi, r in enumerate(rows):
                bottom, total, dense = 0.0, 0.0, 0.0
                for si, s in enumerate(sections):
                    f = r["figures"].get(f"step_{s}_ms")
                    v = point(f)
                    if not v:
                        continue
                    provenance |= _labels(f["provenance"])
                    _bar(ax, xi, v, 0.7, series_style(si), bottom, label=s if pi == 0 and xi == 0 else None)
                    bottom += v
                    total += v
                    dense += v if s == DENSE else 0.0
                if total:
                    share = f"{(total - dense) / total:.0%}"
                    ax.text(xi, bottom, share, ha="center", va="bottom", fontsize=6)
            ax.set_xticks(range(len(rows)))
            ax.set_xticklabels([compact_count(r["context"]) for r in rows])
            ax.set_title(f"{places[ci]}" + (f"\n{run.label}" if run.label else ""), fontsize=6)
            ax.margins(y=0.12)
            ax.grid(axis="x", visible=False)
            if ci == 0:
                ax.set_ylabel(f"{exp}\nbatch {batch}\nms/token")
            if pi == len(panels) - 1:
                ax.set_xlabel("context")
    handles = _handles(axes.flat)
    order = sorted(handles, key=sections.index)
    fig.legend([handles[s] for s in order], order, loc="outside lower center", ncol=len(order))
    caption = ("Mean time per decode step of each timeline section (profile pass after each trial; eager or "
               "per-section events as recorded), stacked; the percentage above each bar is the "
               "memory-processing share: everything but the dense decoder. On FPGA placements the "
               "relevancy+retrieval section is the emulated or modeled offload.")
    return _Built(fig, caption, provenance, notes)


# -- batch scaling ------------------------------------------------------------------------------------------


def batch_scaling(runs: list[RunData], ctx: dict[str, Any]) -> _Built:
    """Throughput (tokens/s) and speedup vs batch size, one row of panels per (run, method)."""
    panels = []
    for run in runs:
        for exp in dict.fromkeys(r["experiment"] for r in run.rows):
            rows = [r for r in run.rows if r["experiment"] == exp and point(r["figures"]["tokens_per_s"])]
            if len({r["batch"] for r in rows}) > 1:
                panels.append((run, exp, rows))
    if not panels:
        raise FigureSkipped("every method has a single batch size: add batch sizes to the suite's matrix")
    notes = []
    if len(panels) > MAX_PANEL_ROWS:
        notes.append(f"{len(panels) - MAX_PANEL_ROWS} (run, method) row(s) left out")
        panels = panels[:MAX_PANEL_ROWS]
    fig = _figure(7.5, 2.3 * len(panels) + 0.5)
    axes = fig.subplots(len(panels), 2, squeeze=False)
    provenance: set[str] = set()
    for pi, (run, exp, rows) in enumerate(panels):
        places = list(dict.fromkeys(r["placement"] for r in rows))
        contexts = sorted({r["context"] for r in rows})
        batches = sorted({r["batch"] for r in rows})
        for metric, ax in (("tokens_per_s", axes[pi][0]), ("speedup", axes[pi][1])):
            for p_i, place in enumerate(places):
                for c_i, context in enumerate(contexts):
                    pts = sorted((r for r in rows if r["placement"] == place and r["context"] == context),
                                 key=lambda r: r["batch"])
                    pts = [r for r in pts if point(r["figures"][metric]) is not None]
                    if not pts:
                        continue
                    fs = [r["figures"][metric] for r in pts]
                    provenance |= _labels(*(f["provenance"] for f in fs))
                    ys, err = _with_errors(fs)
                    ax.errorbar([r["batch"] for r in pts], ys, yerr=err, color="0.1",
                                linestyle=series_style(p_i)["linestyle"], marker=series_style(c_i)["marker"],
                                markerfacecolor=GREYS[c_i % len(GREYS)], markeredgecolor="0",
                                label=f"{_series(run, place)}, {compact_count(context)}")
            ax.set_xscale("log", base=2)
            ax.set_xticks(batches)
            ax.set_xticklabels([str(b) for b in batches])
            ax.set_xlabel("batch size")
        axes[pi][0].set_ylabel(f"{exp}\ntokens/s")
        axes[pi][1].set_ylabel("speedup vs baseline (x)")
        axes[pi][1].axhline(1.0, color="0", linestyle="--", linewidth=0.8)
        handles = _handles(axes[pi])
        axes[pi][1].legend(list(handles.values()), list(handles), loc="upper left",
                           bbox_to_anchor=(1.01, 1.0))
        if run.label:
            axes[pi][0].set_title(run.label)
    caption = ("Left: output tokens per second over the batch (mean over trials, 95% t-interval). Right: "
               "speedup of each placement over the baseline, ratio of means with a 95% paired bootstrap "
               "interval. Line style: placement; marker: context length.")
    return _Built(fig, caption, provenance, notes)


def _with_errors(fs: list[dict[str, Any]]) -> tuple[list[float], list[list[float]]]:
    """Point estimates of figures and their (below, above) error bar lengths (0 without an interval)."""
    ys = [point(f) or 0.0 for f in fs]
    below = [0.0 if f["ci_low"] is None else y - f["ci_low"] for y, f in zip(ys, fs, strict=True)]
    above = [0.0 if f["ci_high"] is None else f["ci_high"] - y for y, f in zip(ys, fs, strict=True)]
    return ys, [below, above]


# -- energy breakdown ---------------------------------------------------------------------------------------

_ENERGY_PARTS = (("gpu", "net", "GPU net"), ("gpu", "idle", "GPU idle"), ("fpga", "net", "FPGA net"),
                 ("fpga", "idle", "FPGA idle"))


def energy_breakdown(runs: list[RunData], ctx: dict[str, Any]) -> _Built:
    """J/token by scope (GPU, FPGA), each split into net and idle part (gross - net), per case x placement."""
    panels = []
    for run in runs:
        for exp in dict.fromkeys(r["experiment"] for r in run.rows):
            rows = [r for r in run.rows if r["experiment"] == exp
                    and r["figures"]["accel_total_gross_j_per_token"]["value"] is not None]
            if rows:
                panels.append((run, exp, rows))
    if not panels:
        reasons = (r["figures"]["accel_total_gross_j_per_token"]["reason"] for run in runs for r in run.rows)
        why = next((w for w in reasons if w), "no energy figures")
        raise FigureSkipped(f"no energy in any run: {why}")
    n_bars = max(len(rows) for *_, rows in panels)
    fig = _figure(max(5.0, 0.32 * n_bars + 2.8), 2.8 * len(panels) + 0.4)
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    provenance: set[str] = set()
    notes: dict[str, None] = {}
    for ax, (run, exp, rows) in zip(axes, panels, strict=True):
        labelled: set[str] = set()
        for xi, r in enumerate(rows):
            f, bottom = r["figures"], 0.0
            for pi, (scope, part, label) in enumerate(_ENERGY_PARTS):
                gross = f[f"{scope}_gross_j_per_token"]["value"]
                net = f[f"{scope}_net_j_per_token"]["value"]
                if gross is None:
                    continue
                if net is None:
                    why = f[f"{scope}_net_j_per_token"]["reason"]
                    notes[f"{scope} net energy null ({why}): its gross is drawn as net"] = None
                    net = gross
                if net < 0:
                    notes[f"{scope} net energy below zero (idle draw above the trial's): drawn as 0"] = None
                    net = 0.0
                v = net if part == "net" else gross - net
                # The net part is gross minus idle, so it carries the weaker of the two labels.
                provenance |= _labels(f[f"{scope}_net_j_per_token"]["provenance"])
                _bar(ax, xi, v, 0.7, series_style(pi), bottom, label=None if label in labelled else label)
                labelled.add(label)
                bottom += v
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([f"{r['placement']}\n{_case_label(r)}" for r in rows], rotation=90)
        ax.set_ylabel("J/token")
        ax.set_title(f"{exp}" + (f"\n{run.label}" if run.label else ""), fontsize=6)
        ax.grid(axis="x", visible=False)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    caption = ("Gross J per output token = net + idle part, by scope: the GPU's from its meter, the FPGA's "
               "from its model (static power for the whole window, dynamic while busy). The idle part is the "
               "scope's idle power times the trial time per token (for the FPGA, its modeled static power).")
    return _Built(fig, caption, provenance, list(notes))


# -- roofline -----------------------------------------------------------------------------------------------


def roofline(runs: list[RunData], ctx: dict[str, Any]) -> _Built:
    """Steps by arithmetic intensity and achieved FLOP/s under the GPU's and the FPGA's rooflines."""
    copy_report = ctx.get("copy_report")
    panels = []
    notes: dict[str, None] = {}
    for run in runs:
        roof, why = rl.gpu_roof(run.device, copy_report)
        gpu_pts, gpu_notes = rl.gpu_points(run.meta, run.rows)
        notes.update(dict.fromkeys(gpu_notes))
        if roof is None:
            if gpu_pts:
                notes[f"{run.device}: GPU steps not placed: {why}"] = None
            gpu_pts = []
        try:
            fpga_pts, fpga_roofs, fpga_notes = rl.fpga_points(run.meta, run.rows)
        except Exception as exc:  # a spec the model rejects must not stop the report
            fpga_pts, fpga_roofs, fpga_notes = [], {}, [f"FPGA steps not placed: {exc}"]
        notes.update(dict.fromkeys(fpga_notes))
        if gpu_pts or fpga_pts:
            panels.append((run, roof if gpu_pts else None, gpu_pts, fpga_roofs, fpga_pts))
    if not panels:
        raise FigureSkipped("no step could be placed: " + ("; ".join(notes) or "no per-step times or counts"))
    ctx["roofline"] = [(run, p, groof if p.kind == "gpu" else froofs[p.device])
                       for run, groof, g, froofs, f in panels for p in g + f]
    fig = _figure(4.6 * len(panels) + 1.8, 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    sources: dict[str, None] = {}
    steps = list(dict.fromkeys(p.step for *_, g, _, f in panels for p in g + f))
    for ax, (run, groof, gpts, froofs, fpts) in zip(axes, panels, strict=True):
        pts = gpts + fpts
        roofs = ([groof] if groof else []) + list(froofs.values())
        ridges = [r.ridge for r in roofs if r.ridge]
        xs = [p.intensity for p in pts] + ridges
        lo, hi = min(xs) / 4, max(xs) * 4
        grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
        for roof in roofs:
            _draw_roof(ax, roof, grid)
            sources[f"{roof.device} bandwidth: {roof.bandwidth_source}"] = None
            sources[f"{roof.device} peak: {roof.peak_source}"] = None
        for p in pts:
            style = series_style(steps.index(p.step))
            where = "GPU (measured time)" if p.kind == "gpu" else "FPGA (model)"
            ax.plot(p.intensity, p.performance, linestyle="none", marker=style["marker"], markersize=5,
                    markeredgecolor="0", markerfacecolor="0.25" if p.kind == "gpu" else "white",
                    label=f"{p.step} on {where}")
            ax.annotate(f"{compact_count(p.context)}/b{p.batch}", (p.intensity, p.performance),
                        fontsize=5, xytext=(3, 2), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_xlabel("arithmetic intensity (FLOP/byte of device memory)")
        ax.set_ylabel("achieved FLOP/s")
        ax.set_title(run.device if not run.label else run.label)
        handles = _handles([ax])
        ax.legend(list(handles.values()), list(handles), loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  fontsize=6)
    methods = {r["method"] for run, *_ in panels for r in run.rows}
    counts = [REGISTRY[m].note for m in sorted(methods) if m in REGISTRY and REGISTRY[m].note]
    caption = ("Filled markers: a step's analytic FLOP and byte counts over its measured time per decode "
               "step on the GPU (placements that keep every step there); hollow markers: the FPGA offload "
               "priced by the analytic FPGA model (kernel time; intensity over HBM bytes, keys held on chip "
               "not counted). Labels: context/batch. Ceilings: " + "; ".join(sources) + ". Counts: "
               + "; ".join(counts) + ".")
    return _Built(fig, caption, {"analytic"}, list(notes))


def _draw_roof(ax: Axes, roof: rl.Roof, grid: list[float]) -> None:
    """A roof (solid for a GPU, dashed for an FPGA) and its further ceilings (grey, other dash patterns)."""
    kind = "measured" if roof.provenance == "measured" else "spec"
    ax.plot(grid, [roof.attainable(x) for x in grid], color="0", linewidth=1.3,
            linestyle="-" if roof.kind == "gpu" else "--", label=f"{roof.device} roof ({kind} bandwidth)")
    for ci, (label, peak) in enumerate(roof.ceilings):
        ax.plot(grid, [min(roof.bandwidth * x, peak) for x in grid], color="0.4", linewidth=0.9,
                linestyle=LINESTYLES[(2 + ci) % len(LINESTYLES)], label=f"{roof.device}: {label}")
    for ci, (label, bw) in enumerate(roof.bandwidth_ceilings):
        ax.plot(grid, [min(bw * x, roof.peak or math.inf) for x in grid], color="0.6", linewidth=0.9,
                linestyle=LINESTYLES[(4 + ci) % len(LINESTYLES)], label=f"{roof.device}: {label}")


#: Figure builders in report order: (file stem, title, builder).
FIGURES: tuple[tuple[str, str, Callable[[list[RunData], dict[str, Any]], _Built]], ...] = (
    ("headline", "Speedup and energy reduction per method", headline),
    ("step_breakdown", "Per-step time vs context length", step_breakdown),
    ("batch_scaling", "Batch-size scaling", batch_scaling),
    ("energy_breakdown", "Energy by scope: gross, idle and net", energy_breakdown),
    ("roofline", "Roofline: steps on the GPU and the FPGA", roofline),
)


def write_figures(runs: list[RunData], out_dir: Path, copy_report: dict[str, Any] | None = None,
                  formats: tuple[str, ...] = FORMATS) -> tuple[list[FigureResult], dict[str, Any]]:
    """Draw every figure of ``runs`` into ``out_dir`` as ``<name>.png`` and ``<name>.pdf``.

    A figure without data, or one that fails to draw, is skipped with its reason (logged as a warning);
    the others are still written.

    Args:
        runs: Loaded runs (:func:`load_runs`).
        out_dir: Directory for the files (created).
        copy_report: A parsed ``bench kernels --json`` report for the roofline's measured bandwidth.
        formats: File formats to write.

    Returns:
        One result per figure, in report order, and what the builders computed for the document
        (``roofline``: (run, point, roof) of every placed step).
    """
    import matplotlib

    out_dir.mkdir(parents=True, exist_ok=True)
    ctx: dict[str, Any] = {"copy_report": copy_report}
    results = []
    with matplotlib.rc_context(STYLE):
        for name, title, build in FIGURES:
            result = FigureResult(name, title)
            try:
                built = build(runs, ctx)
            except FigureSkipped as exc:
                result.skipped = str(exc)
            except Exception as exc:  # one broken figure must not cost the others
                result.skipped = f"failed to draw: {type(exc).__name__}: {exc}"
            if result.skipped is not None:
                log.warning("figure %s skipped: %s", name, result.skipped)
                results.append(result)
                continue
            built.fig.suptitle(title, fontsize=9)
            for fmt in formats:
                path = out_dir / f"{name}.{fmt}"
                # No creation date in the PDF, so the same data gives the same file.
                meta = {"CreationDate": None} if fmt == "pdf" else {}
                built.fig.savefig(path, format=fmt, metadata=meta)
                result.paths.append(path)
            result.caption = built.caption
            result.provenance = sorted(built.provenance)
            result.notes = built.notes
            for note in built.notes:
                log.info("figure %s: %s", name, note)
            results.append(result)
    return results, ctx
