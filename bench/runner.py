"""The runner: expands a suite into cases and measures every case on every placement.

For each case the runner builds the model (once per run), fills a KV cache of the case's context
synthetically (Prepare Memory indexes it as it fills), then for each placement runs a warm-up (and, for
placements with an FPGA, the functional pass whose results are replayed), and then the trials,
interleaving placements (ABAB...) so that drift cannot pose as a speedup. A trial repeats whole
iterations (``decode_tokens`` decode steps from the filled context) until both ``min_duration_s`` and
``min_iterations`` are met, inside one energy window; a short profile pass with per-section timing
follows. Every record is appended to the run's ``records.jsonl`` as soon as it exists.
"""

from __future__ import annotations

import gc
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from bench.devices import gpu as gpu_dev
from bench.devices.fpga import FpgaDevice, resolve_spec
from bench.errors import BenchError
from bench.meters import describe_meters, detect_meters
from bench.methods import get_method
from bench.methods.attention import PipelineAttention, SparseAttentionMethod
from bench.model.decoder import DTYPES, Decoder, KVCache
from bench.model.presets import PRESETS
from bench.pipeline import Placement
from bench.provenance import command_line, git_info, host_info, software_info, utc_now
from bench.records import FAILED, SKIPPED, TRIAL, WARMUP, Provenance, figure
from bench.store import RunDir
from bench.suite import Case, Suite
from bench.timeline import NullTimeline, Timeline, profiling_timeline, synchronize


class Reporter(Protocol):
    """Receives progress from the runner (the CLI draws it as a progress bar)."""

    def start(self, total: int) -> None:
        """The run has ``total`` units of work (case x placement x trial)."""

    def advance(self, description: str) -> None:
        """One unit finished; ``description`` says what runs next."""

    def note(self, message: str) -> None:
        """Something the user should read (a skipped case, a failure)."""


class NullReporter:
    """Reports nothing."""

    def start(self, total: int) -> None:
        """Ignore."""

    def advance(self, description: str) -> None:
        """Ignore."""

    def note(self, message: str) -> None:
        """Ignore."""


@dataclass
class _CaseRun:
    """Everything one case needs while it is measured."""

    case: Case
    cache: KVCache
    method: SparseAttentionMethod
    backends: dict[str, PipelineAttention]
    start_tokens: torch.Tensor


class Runner:
    """Runs a suite and writes its records.

    Args:
        suite: The validated suite.
        out: Results root; the run goes to ``out/<suite>/<run-id>``.
        reporter: Progress sink.
        resume: An earlier, interrupted run of the same suite to complete instead of starting anew.
    """

    def __init__(self, suite: Suite, out: Path, reporter: Reporter | None = None, resume: RunDir | None = None):
        self.suite = suite
        self.out = out
        self.reporter = reporter or NullReporter()
        self.resume = resume
        self.device = gpu_dev.resolve(suite.gpu.device)
        self.meters = detect_meters(str(self.device), sync=lambda: synchronize(self.device))
        self.model: Decoder | None = None
        self.failed = 0

    # -- the run --------------------------------------------------------------------------------------------

    def run(self) -> RunDir:
        """Run every case not already recorded; returns the run directory."""
        s = self.suite
        fpga_info = {n: self._fpga(n, "describe").describe() for n in self._fpga_names()}
        if self.resume is not None:
            run = self.resume
            done = {(r["case_id"], r["placement"], r.get("trial")) for r in run.records()
                    if r.get("kind") in (TRIAL, SKIPPED)}
            run.update_meta(status="running", resumed=[*run.meta().get("resumed", []), utc_now()])
        else:
            git = git_info()
            meta = {
                "suite_name": s.name,
                "suite": s.to_dict(),
                "suite_text": s.text,
                "command": command_line(),
                "started": utc_now(),
                "ended": None,
                "status": "running",
                "host": host_info(),
                "gpu": gpu_dev.describe(self.device),
                "software": software_info(),
                "git": git,
                "fpga": fpga_info,
                "energy_meters": describe_meters(self.meters),
            }
            run = RunDir.create(self.out, s.name, git["commit"], meta)
            done = set()
        cases = s.cases()
        trials = range(s.measure.trials)
        todo = [(c, [p for p in s.placements if any((c.id, p, t) not in done for t in trials)]) for c in cases]
        todo = [(c, ps) for c, ps in todo if ps]
        self.reporter.start(sum(len(ps) for _, ps in todo) * s.measure.trials)
        try:
            for case, placements in todo:
                self._run_case(run, case, placements, done)
        finally:
            run.update_meta(ended=utc_now(), status="complete" if not self.failed else "complete-with-failures")
        return run

    def _run_case(self, run: RunDir, case: Case, placements: list[str], done: set[tuple[str, str, Any]]) -> None:
        s = self.suite
        base = {"kind": TRIAL, "run_id": run.run_id, "case_id": case.id, "case": case.values}
        need = self._memory_needed(case)
        free = gpu_dev.free_memory(self.device)
        if free is not None and need["total"] > free:
            parts = ", ".join(f"{k} {_gib(v)}" for k, v in need.items() if k != "total")
            reason = (f"does not fit: needs {_gib(need['total'])} GiB ({parts} GiB), "
                      f"{_gib(free)} GiB free on {self.device}")
            self._skip(run, base, placements, reason, need, free)
            return
        try:
            cr = self._setup_case(case, placements)
        except torch.OutOfMemoryError as exc:
            self._skip(run, base, placements, f"out of memory while setting up: {str(exc).splitlines()[0]}", need, free)
            return
        try:
            for name in placements:
                run.append({**base, "kind": WARMUP, "placement": name, **self._warmup(cr, s.placements[name])})
            for t in range(s.measure.trials):
                for name in placements:
                    if (case.id, name, t) in done:
                        continue
                    self.reporter.advance(f"{case.id} {name} trial {t + 1}/{s.measure.trials}")
                    started = utc_now()
                    rec = self._trial(cr, s.placements[name])
                    run.append({**base, "placement": name, "trial": t, "started": started, "ended": utc_now(),
                                **rec})
        except BenchError:
            raise
        except Exception as exc:  # a failed case is recorded and the sweep goes on
            self.failed += 1
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.reporter.note(f"{case.id}: failed: {first}")
            run.append({**base, "kind": FAILED, "placement": None, "trial": None, "error": first,
                        "traceback": traceback.format_exc(limit=8)})
        finally:
            del cr
            gc.collect()
            gpu_dev.empty_cache(self.device)

    def _skip(self, run: RunDir, base: dict[str, Any], placements: list[str], reason: str,
              need: dict[str, int], free: int | None) -> None:
        self.reporter.note(f"{base['case_id']}: skipped: {reason}")
        for name in placements:
            run.append({**base, "kind": SKIPPED, "placement": name, "trial": None, "reason": reason,
                        "memory_needed_bytes": need, "memory_free_bytes": free})
            for _ in range(self.suite.measure.trials):
                self.reporter.advance(f"{base['case_id']} skipped")

    # -- set-up -----------------------------------------------------------------------------------------

    def _decoder(self) -> Decoder:
        if self.model is None:
            m = self.suite.model
            self.model = Decoder(m.shape(), DTYPES[m.dtype], self.device, seed=m.seed)
        return self.model

    def _capacity(self, case: Case) -> int:
        return case.context + self.suite.measure.decode_tokens

    def _memory_needed(self, case: Case) -> dict[str, int]:
        """Bytes a case needs on the device, by part (weights only if the model is not loaded yet)."""
        m = self.suite.model
        shape = m.shape()
        dtype_bytes = DTYPES[m.dtype].itemsize
        cap = self._capacity(case)
        method_cls = get_method(self.suite.method)
        need = {
            "weights": 0 if self.model is not None else shape.weight_params() * dtype_bytes,
            "kv_cache": case.batch * cap * shape.kv_bytes_per_token(dtype_bytes),
            "method": method_cls.memory_bytes(case.params, shape, case.batch, cap, dtype_bytes),
            # Logits and allocator slack.
            "workspace": case.batch * shape.vocab * 4 + (256 << 20),
        }
        need["total"] = sum(need.values())
        return need

    def _setup_case(self, case: Case, placements: list[str]) -> _CaseRun:
        s = self.suite
        model = self._decoder()
        cache = model.new_cache(case.batch, self._capacity(case))
        method = get_method(s.method)(case.params)
        method.attach(model, cache, s.model.seed)
        model.fill_cache(cache, case.context, seed=s.model.seed + case.context, on_chunk=method.observe_fill)
        method.fill_done(case.context)
        backends = {}
        for name in placements:
            p = s.placements[name]
            fpga_names = {d for d in p.steps.values() if d != "gpu"}
            fpga = self._fpga(next(iter(fpga_names)), name) if fpga_names else None
            backends[name] = PipelineAttention(method.with_kernels(p.kernels), p, fpga)
        gen = torch.Generator(device="cpu").manual_seed(s.model.seed)
        tokens = torch.randint(0, model.shape.vocab, (case.batch,), generator=gen).to(self.device)
        return _CaseRun(case, cache, method, backends, tokens)

    def _fpga_names(self) -> list[str]:
        return sorted({d for p in self.suite.placements.values() for d in p.steps.values() if d != "gpu"})

    def _fpga(self, name: str, placement: str) -> FpgaDevice:
        """A fresh FPGA device for one placement (each placement keeps its own tape of offloads)."""
        cfg = self.suite.fpgas[name]
        return FpgaDevice(name, cfg.mode, resolve_spec(cfg.spec, self.suite.path.parent), self.device, cfg.wait,
                          cfg.functional, cfg.control, cfg.link, cfg.clock_mhz)

    # -- measurement ------------------------------------------------------------------------------------

    def _iteration(self, cr: _CaseRun, backend: PipelineAttention, timeline: Timeline, replay: bool = True) -> None:
        """Decode ``decode_tokens`` tokens from the filled context (identical work every time).

        With ``replay`` False the FPGA evaluates and tapes its offloads instead (the functional pass).
        """
        model = self._decoder()
        cr.cache.length = cr.case.context
        cr.method.rewind(cr.case.context)
        if backend.fpga is not None and replay:
            backend.fpga.replay()
        tok = cr.start_tokens
        for _ in range(self.suite.measure.decode_tokens):
            tok = model.decode_step(tok, cr.cache, backend, timeline)

    def _timed(self, fn: Callable[[], None]) -> float:
        synchronize(self.device)
        t0 = time.perf_counter()
        fn()
        synchronize(self.device)
        return time.perf_counter() - t0

    def _warmup(self, cr: _CaseRun, placement: Placement) -> dict[str, Any]:
        """Functional pass (FPGA placements), first-call time, then the warm-up iterations."""
        backend = cr.backends[placement.name]
        null = NullTimeline()
        out: dict[str, Any] = {"trial": None}
        fpga = backend.fpga
        if fpga is not None:
            fpga.record()
            functional_s = self._timed(lambda: self._iteration(cr, backend, null, replay=False))
            out["functional_pass"] = {"seconds": functional_s, "mode": fpga.functional, "recall": fpga.recall,
                                      "calls_per_iteration": fpga.taped_calls}
        out["cold_s"] = self._timed(lambda: self._iteration(cr, backend, null))
        out["warmup_s"] = [self._timed(lambda: self._iteration(cr, backend, null))
                           for _ in range(self.suite.measure.warmup)]
        return out

    def _trial(self, cr: _CaseRun, placement: Placement) -> dict[str, Any]:
        """One trial: a measured window of whole iterations, then a per-section profile pass."""
        m = self.suite.measure
        backend = cr.backends[placement.name]
        fpga = backend.fpga
        null = NullTimeline()
        meter = self.meters["gpu"]
        if fpga is not None:
            fpga.reset_stats()
        meter.begin()
        t0 = time.perf_counter()
        iterations = 0
        while iterations < m.min_iterations or time.perf_counter() - t0 < m.min_duration_s:
            self._iteration(cr, backend, null)
            iterations += 1
        synchronize(self.device)
        window = time.perf_counter() - t0
        reading = meter.end()
        stats = fpga.stats if fpga is not None else None
        steps = iterations * m.decode_tokens
        tokens = steps * cr.case.batch
        mode = fpga.mode if fpga is not None else None
        time_prov: Provenance = {"emulated": "emulated", "analytic": "analytic"}.get(mode or "", "measured")
        # In analytic mode nothing waited for the FPGA: its modeled time is added to the measured GPU time.
        e2e = window + (stats.modeled_s if mode == "analytic" and stats else 0.0)
        energy = self._energy(reading, fpga, stats, window, e2e, tokens, mode)
        rec: dict[str, Any] = {
            "status": "ok",
            "iterations": iterations,
            "decode_tokens": m.decode_tokens,
            "batch": cr.case.batch,
            "context": cr.case.context,
            "window_s": window,
            "metrics": {
                "latency_ms": figure(e2e / steps * 1e3, "ms/token", time_prov,
                                     note="time per decode step (one token per sequence)"),
                "tokens_per_s": figure(tokens / e2e, "tokens/s", time_prov),
                **energy,
            },
            "energy": {"gpu": reading.to_dict()},
            "model": self._model_info(),
        }
        if fpga is not None and stats is not None:
            busy = stats.busy_s
            rec["energy"]["fpga"] = {
                "joules": fpga.energy_j(e2e, busy), "method": "modeled", "provenance": "analytic",
                "static_power_w": fpga.model.static_power_w, "dynamic_power_w": fpga.model.dynamic_power_w,
                "busy_s": busy, "seconds": e2e, "spec": str(fpga.spec_path)}
            rec["fpga"] = {"mode": fpga.mode, "wait": fpga.wait_where if fpga.mode == "emulated" else None,
                           "calls_per_token": stats.calls / steps,
                           "modeled_us_per_call": {k: v * 1e6 for k, v in stats.per_call().items()},
                           "recall": fpga.recall, "functional": fpga.functional}
        rec["steps_ms"] = self._profile(cr, backend, time_prov)
        return rec

    def _energy(self, reading: Any, fpga: FpgaDevice | None, stats: Any, window: float, e2e: float, tokens: int,
                mode: str | None) -> dict[str, Any]:
        """Energy figures (accelerator scope: GPU + FPGA), labeled; null with a reason when unmeasurable."""
        gpu_j = reading.joules
        if gpu_j is None:
            why = f"GPU energy unavailable: {reading.reason}"
            return {"energy_j": figure(None, "J", "measured", why),
                    "j_per_token": figure(None, "J/token", "measured", why),
                    "tokens_per_j": figure(None, "tokens/J", "measured", why)}
        prov: Provenance = "measured"
        total = gpu_j
        components = {"gpu": {"joules": gpu_j, "provenance": "emulated" if mode == "emulated" else "measured"}}
        if fpga is not None:
            if mode == "analytic":
                why = ("analytic energy needs the GPU's idle power while it waits for the FPGA, "
                       "which is not measured in this version")
                return {"energy_j": figure(None, "J", "analytic", why),
                        "j_per_token": figure(None, "J/token", "analytic", why),
                        "tokens_per_j": figure(None, "tokens/J", "analytic", why)}
            fpga_j = fpga.energy_j(e2e, stats.busy_s)
            components["fpga"] = {"joules": fpga_j, "provenance": "analytic"}
            total += fpga_j
            prov = "emulated" if mode == "emulated" else "measured"
        return {"energy_j": figure(total, "J", prov, scope="accel_total", components=components),
                "j_per_token": figure(total / tokens, "J/token", prov, scope="accel_total"),
                "tokens_per_j": figure(tokens / total, "tokens/J", prov, scope="accel_total")}

    def _profile(self, cr: _CaseRun, backend: PipelineAttention, time_prov: Provenance) -> dict[str, Any]:
        """Per-section time per decode step (ms) from a pass with device events (host clock on a CPU)."""
        m = self.suite.measure
        timeline = profiling_timeline(self.device)
        for _ in range(m.profile_iterations):
            self._iteration(cr, backend, timeline)
        totals = timeline.totals()
        steps = m.profile_iterations * m.decode_tokens
        out = {}
        for name, seconds in totals.items():
            on_fpga = backend.fpga is not None and name == "relevancy+retrieval"
            prov: Provenance = time_prov if on_fpga else "measured"
            out[name] = figure(seconds / steps * 1e3, "ms/token", prov,
                               device=backend.fpga.name if on_fpga and backend.fpga else "gpu")
        return out

    def _model_info(self) -> dict[str, Any]:
        m = self.suite.model
        shape = m.shape()
        full = PRESETS[m.preset].layers if m.preset else shape.layers
        return {"name": shape.name, "layers": shape.layers, "layers_of_preset": full, "dtype": m.dtype,
                "weights": "synthetic (seeded)", "seed": m.seed}


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f}"
