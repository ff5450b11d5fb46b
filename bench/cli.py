"""The ``bench`` command line: it parses, calls the library, and prints.

Errors a user can cause are :class:`~bench.errors.BenchError`; each command prints their message (no
traceback) and exits with their code (2 for bad input).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bench.errors import BenchError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Benchmark whether a GPU+FPGA system makes long-context LLM inference faster and cheaper in energy "
         "than a GPU alone (He, Ma, Sun, Cong, arXiv 2603.29002).",
)
# Piped or logged output would otherwise wrap tables at Rich's 80-column default; COLUMNS still wins.
_LOG_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160
out = Console(width=_LOG_WIDTH)
err = Console(stderr=True, width=_LOG_WIDTH)
F = TypeVar("F", bound=Callable[..., Any])


def _say(console: Console, message: str) -> None:
    """Print plain text: no markup, no highlighting, no hard wrapping (lines stay greppable)."""
    console.print(message, markup=False, highlight=False, soft_wrap=True)

RESULTS = Path("results")


def _errors(fn: F) -> F:
    """Print a BenchError's message (no traceback) and exit with its code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BenchError as exc:
            _say(err, f"error: {exc}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _say(err, "interrupted: every record written so far is kept; finish with 'bench run SUITE --resume RUN'")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


class _RichReporter:
    """Draws the runner's progress as a Rich progress bar with an ETA."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("starting", total=None)

    def start(self, total: int) -> None:
        self.progress.update(self.task, total=total)

    def advance(self, description: str) -> None:
        self.progress.update(self.task, description=description)
        self.progress.advance(self.task)

    def note(self, message: str) -> None:
        _say(self.progress.console, message)


class Executor(str, Enum):
    """Where cases run."""

    local = "local"
    ray = "ray"


class Scope(str, Enum):
    """Energy scopes."""

    accel_total = "accel_total"
    gpu = "gpu"
    fpga = "fpga"
    cpu = "cpu"


class ExportFormat(str, Enum):
    """Export formats."""

    csv = "csv"
    latex = "latex"
    json = "json"
    markdown = "markdown"


class ReportFormat(str, Enum):
    """Report document formats."""

    html = "html"
    markdown = "markdown"


@app.command()
@_errors
def run(
    suite: Annotated[Path, typer.Argument(help="suite YAML file, e.g. suites/quickstart.yaml")],
    out_dir: Annotated[Path, typer.Option("--out", help="results root; runs go to OUT/<suite>/<run-id>")] = RESULTS,
    resume: Annotated[str | None, typer.Option("--resume", help="complete an interrupted run (dir or id)")] = None,
    executor: Annotated[Executor, typer.Option("--executor", help="run here or on a Ray cluster")] = Executor.local,
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster address (default: a local Ray)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the expanded matrix and a time estimate")] = False,
    only: Annotated[str | None, typer.Option("--only", help="run only these experiments (comma-separated)")] = None,
) -> None:
    """Run a suite: every case on every placement, recording latency, tokens/s and energy per token."""
    from bench.runner import Runner
    from bench.store import resolve_run
    from bench.suite import load_suite

    s = load_suite(suite)
    if only:
        s = s.select([n.strip() for n in only.split(",") if n.strip()])
    if dry_run:
        rows = Runner(s, out_dir).plan()
        for r in rows:
            _say(out, f"{r['case']}  {r['method']} on {r['model']}  placements: {', '.join(r['placements'])}  "
                      f"trials: {r['trials']}  >= {r['min_seconds']:.0f} s")
        total = sum(r["min_seconds"] for r in rows)
        _say(out, f"{len(rows)} case(s); at least {total / 60:.1f} min of measurement (warm-up, compilation and "
                  "windows that outlast their minimum come on top)")
        return
    previous = resolve_run(resume, out_dir) if resume else None
    if previous is not None and previous.meta().get("suite_text") != s.text:
        raise BenchError(f"{previous.path} was run from a different version of {suite}; start a new run instead")
    if executor is Executor.ray:
        from bench.executors import RayExecutor

        chosen = RayExecutor(address)
    else:
        from bench.executors import LocalExecutor

        chosen = LocalExecutor()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=False) as progress:
        runner = Runner(s, out_dir, _RichReporter(progress), resume=previous, executor=chosen)
        result = runner.run()
    _say(out, f"run written to {result.path}")
    if runner.failed:
        _say(err, f"{runner.failed} case(s) failed; see the 'failed' records in {result.records_path}")
        raise typer.Exit(1)


@app.command()
@_errors
def validate(suite: Annotated[Path, typer.Argument(help="suite YAML file to check")]) -> None:
    """Check a suite without running it (exit code 2 and the file, line and field if it is invalid)."""
    from bench.suite import load_suite

    s = load_suite(suite)
    cases = s.cases()
    _say(out, f"{suite}: valid: {len(cases)} case(s) x {len(s.placements)} placement(s) "
              f"({', '.join(s.placements)}), {s.measure.trials} trial(s) each")


@app.command()
@_errors
def compare(
    baseline: Annotated[str, typer.Argument(help="reference placement, e.g. baseline")],
    other: Annotated[str, typer.Argument(help="compared placement, e.g. hetero")],
    run_dirs: Annotated[list[str] | None, typer.Option(
        "--run", help="run directory or id (default: the latest run); give two to compare BASELINE of the first "
                      "with OTHER of the second (e.g. one suite on two GPUs)")] = None,
    results: Annotated[Path, typer.Option("--results", help="results root to search")] = RESULTS,
    markdown: Annotated[bool, typer.Option("--markdown", help="print a Markdown table")] = False,
    scope: Annotated[Scope, typer.Option("--scope", help="energy scope to compare")] = Scope.accel_total,
    allow_mixed: Annotated[bool, typer.Option("--allow-mixed-boundaries",
                                              help="compare energy figures that cover different boundaries")] = False,
    check_composition: Annotated[bool, typer.Option(
        "--check-composition", help="also show per-step measurements composed vs the direct run")] = False,
) -> None:
    """Print speedup and energy reduction of OTHER over BASELINE per case, with 95% intervals."""
    from bench.compare import across_runs
    from bench.compare import compare as do_compare
    from bench.report import tables
    from bench.store import resolve_run

    if run_dirs and len(run_dirs) > 2:
        raise BenchError("give at most two runs (--run A --run B)")
    runs = [resolve_run(d, results) for d in run_dirs] if run_dirs else [resolve_run(None, results)]
    r = runs[0]
    meta = r.meta()
    records = r.records()
    if len(runs) == 2:
        meta_b = runs[1].meta()
        rows, warnings = across_runs({**meta, "run_id": r.run_id}, records, {**meta_b, "run_id": runs[1].run_id},
                                     runs[1].records(), baseline, other, scope=scope.value,
                                     allow_mixed_boundaries=allow_mixed)
        for w in warnings:
            _say(err, f"warning: {w}")
        baseline, other = f"{baseline} [{r.run_id}]", f"{other} [{runs[1].run_id}]"
        device = f"{(meta.get('gpu') or {}).get('name', '?')} vs {(meta_b.get('gpu') or {}).get('name', '?')}"
        title = f"{meta.get('suite_name')} across runs on {device}: {other} vs {baseline} (energy: {scope.value})"
    else:
        rows = do_compare(records, baseline, other, scope=scope.value, allow_mixed_boundaries=allow_mixed)
        device = (meta.get("gpu") or {}).get("name", "?")
        title = f"{meta.get('suite_name')} run {r.run_id} on {device}: {other} vs {baseline} (energy: {scope.value})"
    if markdown:
        _say(out, tables.comparison_markdown(rows, baseline, other, title))
    else:
        out.print(tables.comparison_table(rows, baseline, other, title))
    if check_composition:
        comp = [x for x in records if x.get("kind") == "composition"]
        if not comp:
            raise BenchError("this run has no composition checks (measure.composition: true and a 'baseline' "
                             "placement make them)")
        ctitle = f"composition check ({comp[0]['placement']}): per-step measurements composed vs measured directly"
        if markdown:
            _say(out, tables.composition_markdown(comp, ctitle))
        else:
            out.print(tables.composition_table(comp, ctitle))


@app.command()
@_errors
def export(
    fmt: Annotated[ExportFormat, typer.Option("--format", help="output format")] = ExportFormat.csv,
    run_dir: Annotated[str | None, typer.Option("--run", help="run directory or id (default: the latest run)")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="file to write (default: stdout)")] = None,
    results: Annotated[Path, typer.Option("--results", help="results root to search")] = RESULTS,
    trials: Annotated[bool, typer.Option("--trials", help="one row per trial instead of per case x placement "
                                                          "(csv, json, markdown)")] = False,
    macros: Annotated[Path | None, typer.Option("--macros", help="latex: also write a \\newcommand per headline "
                                                                 "number to this file")] = None,
) -> None:
    """Export a run: one row per case x placement (or per trial), each number with its provenance."""
    from bench.export import export_run
    from bench.store import resolve_run

    r = resolve_run(run_dir, results)
    if output is None:
        export_run(r, fmt.value, trials, sys.stdout, macros)
        return
    tmp = output.with_name(output.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        rows = export_run(r, fmt.value, trials, fh, macros)
    tmp.replace(output)
    _say(err, f"wrote {rows} rows to {output}" + (f" and macros to {macros}" if macros else ""))


@app.command()
@_errors
def report(
    run_dirs: Annotated[list[str] | None, typer.Option("--run", help="run directory or id; repeat to show "
                                                                     "several runs (default: the latest run)")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="directory for the report and its figures")] = Path("report"),
    fmt: Annotated[ReportFormat, typer.Option("--format", help="html (self-contained) or markdown")] = (
        ReportFormat.html),
    results: Annotated[Path, typer.Option("--results", help="results root to search")] = RESULTS,
    kernels_json: Annotated[Path | None, typer.Option(
        "--kernels-json", help="a 'bench kernels --json' report: its measured copy bandwidth replaces the spec "
                               "bandwidth in the roofline of that card")] = None,
) -> None:
    """Write figures (PNG and PDF) and a report with tables, provenance and notes for one or more runs."""
    import logging

    from bench.report.document import write_report
    from bench.store import resolve_run

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    runs = [resolve_run(r, results) for r in run_dirs] if run_dirs else [resolve_run(None, results)]
    paths = write_report(runs, out_dir, fmt.value, kernels_json)
    _say(out, f"report written to {paths[0]} ({len(paths) - 1} figure files in {paths[0].parent / 'figures'})")


@app.command()
@_errors
def devices() -> None:
    """Show what was detected: the GPU, the energy meters, and the FPGA modes available here."""
    from bench.devices import detect

    for section, items in detect().items():
        out.print(f"[bold]{section}[/]")
        for key, val in items.items():
            _say(out, f"  {key}: {val}")


@app.command()
@_errors
def kernels(
    only: Annotated[str | None, typer.Option("--kernels", help="kernel families, comma-separated")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="one size per kernel, fewer repeats")] = False,
    device: Annotated[str, typer.Option("--device", help="cuda, cuda:N, or cpu (a functional check only)")] = "cuda",
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the report as JSON")] = None,
    markdown_out: Annotated[Path | None, typer.Option("--markdown", help="also write the table as Markdown")] = None,
    profile: Annotated[bool, typer.Option("--profile", help="also list where each path's time goes, kernel by "
                                                             "kernel (torch.profiler)")] = False,
) -> None:
    """Roofline table of the GPU kernels: time, GB/s, % of measured copy bandwidth, speedup vs torch."""
    from kernels_gpu.benchmark import run_benchmark

    families = [k.strip() for k in only.split(",") if k.strip()] if only else None
    report = run_benchmark(device, families, quick, profile=profile)
    table = report.to_markdown()
    if json_out is not None:
        json_out.write_text(report.to_json())
    if markdown_out is not None:
        markdown_out.write_text(table)
    _say(out, table)
    if report.failed:
        raise typer.Exit(1)


def main() -> None:
    """Entry point of the ``bench`` console script and ``python main.py``."""
    app()
