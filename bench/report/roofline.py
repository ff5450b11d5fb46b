"""Roofline data: each device's ceilings, and where each pipeline step of a run sits under them.

A point is (arithmetic intensity in FLOP/B, achieved FLOP/s) of one step of one case:

- **GPU** points: the FLOP and byte counts of :mod:`bench.report.intensity` over the step's measured time
  per decode step (``steps_ms``) in a placement that keeps every step on the GPU. The counts are analytic,
  so the point is too (its time is measured).
- **FPGA** points: the FPGA kernel call of the offloaded steps priced by the analytic FPGA model
  (:class:`kernels_fpga.model.FpgaModel`, kernel time only, launch and transfers excluded) with the
  device spec, clock and control mode the run recorded; intensity counts HBM bytes (keys held on chip
  do not count), so a kernel that keeps its keys on chip sits far right.

Ceilings: the GPU's peak memory bandwidth and dense BF16 peak from :data:`GPU_PEAKS` (vendor figures,
cited), or its copy bandwidth measured by ``bench kernels --json`` when that report is for the same card;
the FPGA's HBM bandwidth and DSP peak from its spec, plus the compute peak of the kernel build's PE array.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.export import experiment_config, point
from bench.pipeline import FUSED
from bench.report.intensity import DTYPE_BYTES, CaseShape, fpga_calls, step_costs

#: (label, regex on the device name, bytes/s, dense BF16 FLOP/s, source); first match wins.
GPU_PEAKS: tuple[tuple[str, str, float, float, str], ...] = (
    ("H200 SXM", r"\bH200\b(?!.*NVL)", 4.8e12, 989e12,
     "NVIDIA H200 datasheet: 4.8 TB/s HBM3e; BF16 1,979 TFLOPS with 2:4 sparsity, 989 dense (same GH100 "
     "compute as the H100 SXM5)"),
    ("H100 PCIe", r"\bH100\b.*PCIe", 2.0e12, 756e12,
     "hardware.md §3: H100 PCIe 2.0 TB/s, 756 TFLOPS (NVIDIA PB-11133)"),
    ("H100 SXM5", r"\bH100\b.*(HBM3|SXM)", 3.35e12, 989e12,
     "hardware.md §3: H100 SXM5 3.35 TB/s, 989 TFLOPS BF16 dense (glennklockwood.com H100 page)"),
    ("A100 SXM 80GB", r"A100.*SXM.*80GB", 2.039e12, 312e12,
     "hardware.md §3: A100 SXM 80 GB 2.039 TB/s, 312 TFLOPS BF16"),
    ("A100 PCIe 80GB", r"A100.*(80GB.*PCIe|PCIe.*80GB)", 1.935e12, 312e12,
     "hardware.md §3: A100 PCIe 80 GB 1.935 TB/s; 312 TFLOPS BF16"),
    ("A100 40GB", r"A100.*40GB", 1.555e12, 312e12, "hardware.md §3: A100 40 GB 1.555 TB/s; 312 TFLOPS BF16"),
    ("MI210", r"MI210", 1.6e12, 181e12,
     "hardware.md §3: MI210 1.6 TB/s, 181 TFLOPS FP16 matrix (AnandTech 17326)"),
)


@dataclass(frozen=True)
class Roof:
    """A device's roofline: ``min(bandwidth x intensity, peak)``.

    Attributes:
        device: Device label.
        kind: ``gpu`` or ``fpga``.
        bandwidth: Memory bandwidth in B/s.
        bandwidth_source: Where it comes from.
        peak: Compute peak in FLOP/s (None when unknown: the roof is the bandwidth slope alone).
        peak_source: Where it comes from.
        provenance: ``measured`` when the bandwidth was measured on this card, else ``analytic`` (a spec).
        ceilings: Further compute ceilings (label, FLOP/s), drawn as lower lines.
        bandwidth_ceilings: Further bandwidth ceilings (label, B/s).
    """

    device: str
    kind: str
    bandwidth: float
    bandwidth_source: str
    peak: float | None
    peak_source: str
    provenance: str
    ceilings: tuple[tuple[str, float], ...] = ()
    bandwidth_ceilings: tuple[tuple[str, float], ...] = ()

    def attainable(self, intensity: float) -> float:
        """Attainable FLOP/s at ``intensity`` FLOP/B."""
        slope = self.bandwidth * intensity
        return slope if self.peak is None else min(slope, self.peak)

    @property
    def ridge(self) -> float | None:
        """Intensity where the bandwidth slope meets the peak (FLOP/B), if the peak is known."""
        return None if self.peak is None else self.peak / self.bandwidth


@dataclass(frozen=True)
class RooflinePoint:
    """One step of one case placed on a roofline.

    Attributes:
        step: Timeline section (``prepare``, ``relevancy+retrieval``...).
        kind: ``gpu`` or ``fpga``.
        device: The device label of the roof it sits under (:attr:`Roof.device`).
        placement: Placement the step ran in.
        case_id: The case.
        context: Context length in tokens.
        batch: Batch size.
        intensity: FLOP per byte moved to or from device memory.
        performance: Achieved FLOP/s.
        seconds: Time per decode step of the step (all layers).
        provenance: ``analytic`` (counts are analytic; for GPU points the time is measured).
        time_provenance: Provenance of ``seconds``.
    """

    step: str
    kind: str
    device: str
    placement: str
    case_id: str
    context: int
    batch: int
    intensity: float
    performance: float
    seconds: float
    provenance: str
    time_provenance: str


def gpu_roof(name: str, copy_report: dict[str, Any] | None = None) -> tuple[Roof | None, str | None]:
    """The roofline of the GPU named ``name`` (as run.json records it), or None with the reason.

    Args:
        name: Device name, e.g. ``NVIDIA H200``.
        copy_report: A parsed ``bench kernels --json`` report; its measured copy bandwidth is used when its
            ``card`` is ``name``.
    """
    spec = next((s for s in GPU_PEAKS if re.search(s[1], name, re.IGNORECASE)), None)
    measured = None
    if copy_report and copy_report.get("card") == name and copy_report.get("copy_bandwidth"):
        copy = copy_report["copy_bandwidth"]
        measured = (float(copy["gbps"]) * 1e9,
                    f"measured copy bandwidth (read + write) by bench kernels on {name}, "
                    f"{copy_report.get('timestamp', '?')}, {copy.get('method', '')}".rstrip(", "))
    if spec is None and measured is None:
        return None, (f"no peak figures for '{name}' (bench.report.roofline.GPU_PEAKS); a 'bench kernels "
                      "--json' report of this card gives its measured bandwidth")
    if measured is not None:
        bw, bw_src, prov = measured[0], measured[1], "measured"
    else:
        assert spec is not None
        bw, bw_src, prov = spec[2], spec[4], "analytic"
    peak, peak_src = (spec[3], spec[4]) if spec else (None, "unknown compute peak")
    return Roof(name, "gpu", bw, bw_src, peak, peak_src, prov), None


def fpga_roof(fpga: dict[str, Any]) -> Roof:
    """The roofline of an FPGA from its run.json entry (spec, clock), with the model's kernel build.

    Ceilings: HBM bandwidth of all pseudo channels (``hbm.bw_total_measured``) and of the kernel's key
    ports; DSP peak (one int16 multiply-accumulate, 2 ops, per DSP48E2 per cycle) and the PE array's
    peak (``BENCH_N_PE x BENCH_PE_MACS`` MACs per cycle).
    """
    model = fpga_model(fpga)
    s, clock = model.spec, model.clock_hz
    p = model.params
    dsp_peak = float(s.value("resources.dsps")) * 2 * clock
    pe_peak = float(p.n_pe * p.pe_macs * 2) * clock
    label = f"{s.name} @ {clock / 1e6:g} MHz"
    return Roof(
        label, "fpga", float(s.value("hbm.bw_total_measured")),
        f"{s.name} spec hbm.bw_total_measured: {s.source_of('hbm.bw_total_measured')}",
        dsp_peak, f"derived: {s.value('resources.dsps')} DSPs x 2 ops x {clock / 1e6:g} MHz "
                  f"({s.source_of('resources.dsps')})",
        "analytic",
        ceilings=((f"PE array ({p.n_pe} x {p.pe_macs} MAC/cycle)", pe_peak),),
        bandwidth_ceilings=((f"kernel ports ({p.n_pe} HBM PCs)", model.hbm_bandwidth()),),
    )


def fpga_model(fpga: dict[str, Any]) -> Any:
    """The :class:`kernels_fpga.model.FpgaModel` a run's FPGA entry describes (spec file or shipped name)."""
    from kernels_fpga.model import FpgaModel
    from kernels_fpga.spec import load_spec

    spec = str(fpga.get("spec") or "u55c")
    source = spec if Path(spec).is_file() else Path(spec).stem
    return FpgaModel(load_spec(source), clock_hz=fpga.get("clock_hz"),
                     control=fpga.get("control") or "host-started", link=fpga.get("link"))


def case_shape(meta: dict[str, Any], row: dict[str, Any]) -> CaseShape | None:
    """The shapes of a case row's case, from the run's suite (None if the run does not record them)."""
    exp = experiment_config(meta, row["experiment"])
    shape = exp.get("model_shape") or {}
    if not all(k in shape for k in ("layers", "heads", "kv_heads", "head_dim")):
        return None
    params = {k: v for k, v in (exp.get("method") or {}).items() if k != "name"}
    params.update({k: v for k, v in row["case"].items() if k in params})
    measure = (meta.get("suite") or {}).get("measure") or {}
    dtype = ((exp.get("model") or {}).get("dtype")) or "bf16"
    return CaseShape(layers=int(shape["layers"]), heads=int(shape["heads"]), kv_heads=int(shape["kv_heads"]),
                     head_dim=int(shape["head_dim"]), batch=int(row["batch"]), context=int(row["context"]),
                     decode_tokens=int(measure.get("decode_tokens", 1)),
                     dtype_bytes=DTYPE_BYTES.get(dtype, 2), params=params)


def _placement_devices(meta: dict[str, Any], row: dict[str, Any]) -> dict[str, str]:
    exp = experiment_config(meta, row["experiment"])
    return ((exp.get("placements") or {}).get(row["placement"]) or {}).get("steps") or {}


def gpu_points(meta: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[list[RooflinePoint], list[str]]:
    """GPU points of every counted step of every placement that keeps all steps on the GPU.

    Args:
        meta: The run's run.json.
        rows: The run's case rows (:func:`bench.export.case_rows`).

    Returns:
        The points, and notes on what could not be placed.
    """
    points, notes = [], {}
    for row in rows:
        devices = _placement_devices(meta, row)
        if not devices or any(d != "gpu" for d in devices.values()):
            continue
        shape = case_shape(meta, row)
        costs = step_costs(row["method"], shape) if shape else {}
        if not costs:
            notes[f"{row['method']}: no FLOP/byte counts (bench.report.intensity registers none), "
                  "so its GPU steps are not placed"] = None
            continue
        for name, fig in row["figures"].items():
            if not (name.startswith("step_") and name.endswith("_ms")):
                continue
            step, ms = name[len("step_"):-len("_ms")], point(fig)
            if step not in costs or not ms:
                continue
            cost = costs[step]
            points.append(RooflinePoint(step, "gpu", row["device"], row["placement"], row["case_id"],
                                        row["context"], row["batch"], cost.intensity, cost.flop / (ms * 1e-3),
                                        ms * 1e-3, "analytic", fig.get("provenance") or "measured"))
    return points, list(notes)


def fpga_points(meta: dict[str, Any],
                rows: list[dict[str, Any]]) -> tuple[list[RooflinePoint], dict[str, Roof], list[str]]:
    """FPGA points of the offloaded steps of every placement with an FPGA, priced by the FPGA model.

    Placements on FPGAs with the same spec, clock and control share their points (the model gives them
    the same figures).

    Returns:
        The points, the roof of each FPGA configuration (by its label), and notes.
    """
    points: list[RooflinePoint] = []
    roofs: dict[str, Roof] = {}
    notes: dict[str, None] = {}
    done: set[tuple[Any, ...]] = set()
    fpgas = meta.get("fpga") or {}
    for row in rows:
        on_fpga = sorted({d for d in _placement_devices(meta, row).values() if d in fpgas})
        if not on_fpga:
            continue
        cfg = fpgas[on_fpga[0]]
        key = (cfg.get("spec"), cfg.get("clock_hz"), cfg.get("control"), row["case_id"])
        if key in done:
            continue
        done.add(key)
        shape = case_shape(meta, row)
        calls = fpga_calls(row["method"], shape) if shape else []
        if not calls:
            notes[f"{row['method']}: no FPGA kernel counts (bench.report.intensity), "
                  "so its offload is not placed"] = None
            continue
        roof = fpga_roof(cfg)
        roofs[roof.device] = roof
        model = fpga_model(cfg)
        ops = seconds = hbm = 0.0
        for call in calls:
            est = getattr(model, call.kernel)(**call.shape)
            ops += call.ops * call.calls
            seconds += est.seconds * call.calls
            hbm += est.hbm_bytes * call.calls
        if not (hbm and seconds):
            continue
        points.append(RooflinePoint(FUSED, "fpga", roof.device, row["placement"], row["case_id"],
                                    row["context"], row["batch"], ops / hbm, ops / seconds,
                                    seconds / len(calls), "analytic", "analytic"))
    return points, roofs, list(notes)


def load_copy_report(path: Path | None) -> dict[str, Any] | None:
    """A ``bench kernels --json`` report, parsed (None when no path is given)."""
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: not a readable 'bench kernels --json' report ({exc})") from None
