r"""LaTeX for papers: booktabs tables of a run's case rows, and a macros file naming each headline number.

Tables (:func:`tables`): one ``table`` per experiment, ``\toprule`` / ``\midrule`` / ``\bottomrule`` from the
``booktabs`` package, one row per case x placement: mean ± the 95% t-interval half-width over trials, and
speedup and energy reduction vs the baseline placement with their 95% bootstrap interval. A provenance
column gives the time / energy labels (M measured, E emulated, A analytic); why a cell is empty is listed
under the table.

Macros (:func:`macros`): ``\newcommand{\bench<Metric><Experiment><Placement><Case>}{<number>}``, each
preceded by a comment with what it is, its provenance, the device and the run. TeX control-word names
hold letters only, so names are built as follows:

- every name part is split at characters other than letters and digits, and each piece is capitalized:
  ``hetero-dev`` -> ``HeteroDev``, ``seer-attention-r`` -> ``SeerAttentionR``;
- digits are spelled, one word per digit (``qwen3`` -> ``QwenThree``, ``0.5`` -> ``ZeroPointFive``);
- a context or batch that is a multiple of 1024 (1024^2) is written with a ``K`` (``M``) suffix first:
  ``context=131072`` -> ``CtxOneTwoEightK``, ``batch=1`` -> ``BatchOne``; other matrix values follow as
  ``<Key><Value>``.

So the speedup of placement ``hetero`` over ``baseline`` for SeerAttention-R at 128K context and batch 1 is
``\benchSpeedupSeerAttentionRHeteroCtxOneTwoEightKBatchOne``. Metrics: ``Latency`` (ms/token), ``JPerToken``
(J/token, the headline energy scope), and for each non-baseline placement ``Speedup`` and
``EnergyReduction`` with ``Low`` / ``High`` interval ends. A null number expands to ``--``; its comment
gives the reason. Two names that would collide get ``VariantTwo``, ``VariantThree``... appended.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from bench.export import device_name, experiment_config, point

_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}
_DIGITS = ("Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine")
_PROV = {"measured": "M", "emulated": "E", "analytic": "A"}


def escape(text: Any) -> str:
    r"""``text`` with the LaTeX special characters escaped (``& % $ # _ { } ~ ^ \``)."""
    return "".join(_SPECIALS.get(ch, ch) for ch in str(text))


def compact_count(n: Any) -> str:
    """``131072`` -> ``128K``, ``2097152`` -> ``2M``; other values unchanged (as text)."""
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
        if n % 2**20 == 0:
            return f"{n // 2**20}M"
        if n % 2**10 == 0:
            return f"{n // 2**10}K"
    return str(n)


def name_part(text: Any) -> str:
    """A piece of a control-word name: letters kept (each word capitalized), digits spelled, rest dropped.

    ``.`` becomes ``Point`` and a leading ``-`` before a digit ``Minus``, so numbers stay distinct.
    """
    s = str(text)
    out: list[str] = []
    word_start = True
    for i, ch in enumerate(s):
        if ch.isascii() and ch.isdigit():
            out.append(_DIGITS[int(ch)])
            word_start = True
        elif ch.isascii() and ch.isalpha():
            out.append(ch.upper() if word_start else ch)
            word_start = False
        else:
            nxt = s[i + 1] if i + 1 < len(s) else ""
            if ch == "." and nxt.isdigit() and i > 0 and s[i - 1].isdigit():
                out.append("Point")
            elif ch == "-" and nxt.isdigit() and (i == 0 or not s[i - 1].isalnum()):
                out.append("Minus")
            word_start = True
    return "".join(out)


def case_name(case: dict[str, Any]) -> str:
    """The case part of a macro name: ``Ctx<context>Batch<batch>`` then other matrix values."""
    parts = []
    for key, value in case.items():
        label = {"context": "Ctx", "batch": "Batch"}.get(key, name_part(key))
        shown = compact_count(value) if key in ("context", "batch") else value
        parts.append(label + name_part(shown))
    return "".join(parts)


def _decimals(v: float, sig: int) -> int:
    """Decimals that show ``v`` to ``sig`` significant digits."""
    if v == 0 or not math.isfinite(v):
        return 0
    return max(0, sig - 1 - math.floor(math.log10(abs(v))))


def _num(v: float, sig: int = 3) -> str:
    """``v`` with ``sig`` significant digits in fixed notation (no exponent, which reads badly in prose)."""
    return f"{v:.{_decimals(v, sig)}f}" if math.isfinite(v) else f"{v:g}"


def _ratio_digits(v: float) -> str:
    return f"{v:.2f}"


def _prov(label: str | None) -> str:
    if not label:
        return "--"
    return "/".join(_PROV.get(p, p) for p in label.split("/"))


def _cell_mean(fig: dict[str, Any]) -> str:
    m = point(fig)
    if m is None:
        return "--"
    lo, hi = fig.get("ci_low"), fig.get("ci_high")
    if lo is None or hi is None:
        return f"${_num(m)}$"
    half = (hi - lo) / 2
    # Half-width to 2 significant digits, the mean to at least 3 and to the half-width's last digit.
    d = min(6, max(_decimals(m, 3), _decimals(half, 2)))
    return f"${m:.{d}f} \\pm {half:.{d}f}$"


def _cell_ratio(fig: dict[str, Any]) -> str:
    r = fig.get("ratio")
    if r is None:
        return "--"
    lo, hi = fig.get("ci_low"), fig.get("ci_high")
    if lo is None or hi is None:
        return f"${_ratio_digits(r)}\\times$"
    return f"${_ratio_digits(r)}\\times$ {{\\scriptsize[{_ratio_digits(lo)}, {_ratio_digits(hi)}]}}"


def _by_experiment(rows: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["experiment"], []).append(r)
    return out


def tables(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    r"""Booktabs tables of case rows, one per experiment (needs ``\usepackage{booktabs}``).

    Args:
        rows: Case rows (:func:`bench.export.case_rows`).
        meta: The run's run.json.
    """
    device, run_id = device_name(meta), meta.get("run_id")
    out = [f"% bench export: run {_comment(run_id)} of suite {_comment(meta.get('suite_name'))} on "
           f"{_comment(device)}; needs \\usepackage{{booktabs}}", ""]
    for experiment, group in _by_experiment(rows).items():
        extra = sorted({k for r in group for k in r["case"] if k not in ("context", "batch")})
        baseline = next((r["baseline"] for r in group if r["baseline"]), None)
        head = ["Context", "Batch", *(escape(k) for k in extra), "Placement", "ms/token", "J/token"]
        align = "rr" + "r" * len(extra) + "lrr"
        if baseline:
            head += ["Speedup", "Energy red."]
            align += "ll"
        head.append("Prov.")
        align += "c"
        label = "tab:bench-" + re.sub(r"[^A-Za-z0-9-]+", "-", f"{meta.get('suite_name')}-{experiment}")
        vs = f"; ratios vs \\texttt{{{escape(baseline)}}} with 95\\% bootstrap CI" if baseline else ""
        out += [
            "\\begin{table}[t]",
            "\\centering",
            f"\\caption{{{escape(experiment)} on {escape(device)} (suite {escape(meta.get('suite_name'))}, "
            f"run \\texttt{{{escape(run_id)}}}): mean $\\pm$ 95\\% CI half-width over trials{vs}. Provenance "
            "time/energy: M measured, E emulated, A analytic.}",
            f"\\label{{{label}}}",
            f"\\begin{{tabular}}{{{align}}}",
            "\\toprule",
            " & ".join(head) + " \\\\",
            "\\midrule",
        ]
        notes: dict[str, None] = {}
        previous = None
        for r in group:
            if previous is not None and r["case_id"] != previous:
                out.append("\\addlinespace")
            previous = r["case_id"]
            f = r["figures"]
            cells = [escape(compact_count(r["context"])), escape(r["batch"]),
                     *(escape(r["case"].get(k, "")) for k in extra), escape(r["placement"]),
                     _cell_mean(f["latency_ms"]), _cell_mean(f["j_per_token"])]
            if baseline:
                cells += [_cell_ratio(f["speedup"]), _cell_ratio(f["energy_reduction"])]
            cells.append(f"{_prov(f['latency_ms']['provenance'])}/{_prov(f['j_per_token']['provenance'])}")
            out.append(" & ".join(cells) + " \\\\")
            for name, unit in (("latency_ms", "ms/token"), ("j_per_token", "J/token")):
                if point(f[name]) is None and f[name].get("reason"):
                    notes[f"{unit} empty: {f[name]['reason']}"] = None
            if r["status"] not in ("ok",) and r["reason"]:
                notes[f"{r['case_id']} {r['placement']}: {r['status']}: {r['reason']}"] = None
        out += ["\\bottomrule", "\\end{tabular}"]
        if notes:
            out.append("\\par\\smallskip{\\footnotesize " + "; ".join(escape(n) for n in notes) + ".}")
        out += ["\\end{table}", ""]
    return "\n".join(out)


def _comment(text: Any) -> str:
    """Text safe inside a TeX comment line (one line)."""
    return " ".join(str(text).split())


def headline_numbers(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The headline numbers of case rows, each with its macro name, value, provenance and description.

    Args:
        rows: Case rows (:func:`bench.export.case_rows`).

    Returns:
        ``{"name", "value" (float or None), "text" (the macro body), "provenance", "reason", "what",
        "row"}`` dicts in row order; names are unique.
    """
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for r in rows:
        base = name_part(r["experiment"]) + name_part(r["placement"]) + case_name(r["case"])
        f = r["figures"]
        items = [("Latency", f["latency_ms"], "mean", "ms/token", _num),
                 ("JPerToken", f["j_per_token"], "mean", "J/token", _num)]
        if r["baseline"] and r["placement"] != r["baseline"]:
            for metric, fig in (("Speedup", f["speedup"]), ("EnergyReduction", f["energy_reduction"])):
                items += [(metric + suffix, fig, key, "x", _ratio_digits)
                          for suffix, key in (("", "ratio"), ("Low", "ci_low"), ("High", "ci_high"))]
        for metric, fig, key, unit, fmt in items:
            name = "bench" + metric + base
            n = seen.get(name, 0) + 1
            seen[name] = n
            if n > 1:
                name += "Variant" + name_part(n)
            v = fig.get(key)
            why = None if v is not None else fig.get("reason") or "unavailable"
            vs = f" vs {r['baseline']}" if metric.startswith(("Speedup", "EnergyReduction")) else ""
            out.append({"name": name, "value": v, "text": "--" if v is None else fmt(v), "row": r,
                        "provenance": fig.get("provenance"), "reason": why,
                        "what": f"{metric} ({key}, {unit}) of {r['placement']}{vs}, {r['experiment']}, "
                                f"{r['case_id']}"})
    return out


def macros(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    r"""The macros file: a header, then a commented ``\newcommand`` per headline number.

    Args:
        rows: Case rows (:func:`bench.export.case_rows`).
        meta: The run's run.json.
    """
    device, run_id = _comment(device_name(meta)), _comment(meta.get("run_id"))
    fpga = {n: f"{n} ({f.get('mode')} {_comment(f.get('part') or f.get('spec'))})"
            for n, f in (meta.get("fpga") or {}).items()}
    fpgas = "; ".join(fpga.values())
    lines = [
        f"% bench headline numbers: suite {_comment(meta.get('suite_name'))}, run {run_id}, device {device}"
        + (f"; FPGAs {fpgas}" if fpgas else ""),
        "% Names: \\bench<Metric><Experiment><Placement><Case>; letters only, digits spelled, context/batch",
        "% multiples of 1024 written with K (M for 1024^2). Null numbers expand to --, the reason in the",
        "% comment above them.",
        "",
    ]
    for h in headline_numbers(rows):
        note = f"; null: {_comment(h['reason'])}" if h["value"] is None else ""
        steps = (experiment_config(meta, h["row"]["experiment"]).get("placements") or {}).get(
            h["row"]["placement"], {}).get("steps") or {}
        on = "".join(f" + FPGA {fpga[d]}" for d in sorted(set(steps.values())) if d in fpga)
        lines.append(f"% {_comment(h['what'])}: provenance {h['provenance'] or 'none'}; device {device}{on}; "
                     f"run {run_id}{note}")
        lines.append(f"\\newcommand{{\\{h['name']}}}{{{h['text']}}}")
    return "\n".join(lines) + "\n"
