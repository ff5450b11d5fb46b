"""Tidy exports of a run's records: one row per case x placement x trial (CSV)."""

from __future__ import annotations

import csv
from typing import Any, TextIO

from bench.records import TRIAL

#: Leading columns, in order; case values and per-step columns follow.
COLUMNS = [
    "run_id", "suite", "experiment", "method", "case_id", "placement", "trial", "status", "context", "batch",
    "latency_ms", "latency_provenance", "tokens_per_s", "j_per_token", "tokens_per_j", "energy_j",
    "energy_provenance", "energy_scope", "energy_reason", "gpu_energy_j", "gpu_energy_method", "fpga_energy_j",
    "fpga_energy_method", "window_s", "iterations", "decode_tokens", "model", "layers", "layers_of_preset",
    "fpga_mode", "fpga_wait", "fpga_recall", "fpga_us_per_call", "device",
]


def tidy_rows(records: list[dict[str, Any]], meta: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per trial record (skipped and failed cases get a row with their reason)."""
    rows = []
    device = (meta.get("gpu") or {}).get("name")
    for r in records:
        kind = r.get("kind")
        if kind not in (TRIAL, "skipped", "failed"):
            continue
        row: dict[str, Any] = {
            "run_id": r.get("run_id"), "suite": meta.get("suite_name"), "experiment": r.get("experiment"),
            "method": r.get("method"), "case_id": r.get("case_id"),
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
        row.update({
            "context": r.get("context"), "batch": r.get("batch"),
            "latency_ms": m["latency_ms"]["value"], "latency_provenance": m["latency_ms"]["provenance"],
            "tokens_per_s": m["tokens_per_s"]["value"], "j_per_token": m["j_per_token"]["value"],
            "tokens_per_j": m["tokens_per_j"]["value"], "energy_j": energy["value"],
            "energy_provenance": energy["provenance"], "energy_scope": energy.get("scope"),
            "energy_reason": energy.get("reason"), "gpu_energy_j": gpu.get("joules"),
            "gpu_energy_method": gpu.get("method"), "fpga_energy_j": fpga_e.get("joules"),
            "fpga_energy_method": fpga_e.get("method"), "window_s": r.get("window_s"),
            "iterations": r.get("iterations"), "decode_tokens": r.get("decode_tokens"),
            "model": model.get("name"), "layers": model.get("layers"),
            "layers_of_preset": model.get("layers_of_preset"),
            "fpga_mode": fpga.get("mode"), "fpga_wait": fpga.get("wait"), "fpga_recall": fpga.get("recall"),
            "fpga_us_per_call": (fpga.get("modeled_us_per_call") or {}).get("total"),
        })
        for name, fig in (r.get("steps_ms") or {}).items():
            row[f"step_{name}_ms"] = fig["value"]
            row[f"step_{name}_provenance"] = fig["provenance"]
        rows.append(row)
    return rows


def write_csv(rows: list[dict[str, Any]], out: TextIO) -> None:
    """Write ``rows`` as CSV with a stable column order (fixed columns, then the rest sorted)."""
    extra = sorted({k for r in rows for k in r} - set(COLUMNS))
    writer = csv.DictWriter(out, fieldnames=COLUMNS + extra, extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in r.items()})
