"""The runner: expands a suite into cases and measures every case on every placement.

Per case: set up (model once per run, synthetic fill, method index), then per placement a warm-up (the
functional pass for FPGA placements, first-call time, warm-up iterations, CUDA-graph capture and an eager
vs graphed timing), idle power before the trials, the trials with placements interleaved (ABAB...),
idle power after, then one summary per placement (statistics, gross/idle/net energy, validity) and the
composition check for the GPU-only baseline. Every record is appended to ``records.jsonl`` as soon as it
exists, so an interrupted run keeps everything it finished and can be resumed.
"""

from __future__ import annotations

import dataclasses
import gc
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from bench import measure
from bench.devices import gpu as gpu_dev
from bench.devices.fpga import FpgaDevice, resolve_spec
from bench.energy import ACCEL, ScopeEnergy, gpu_energy, per_token_figures, total
from bench.errors import BenchError, UsageError
from bench.execution import CaseRun
from bench.meters import EnergyMeter, ModeledPowerMeter, describe_meters, detect_meters, merge_idle, net_energy
from bench.methods import get_method
from bench.model.decoder import DTYPES
from bench.provenance import command_line, git_info, host_info, software_info, utc_now
from bench.records import FAILED, SKIPPED, TRIAL, WARMUP, Provenance, figure
from bench.stats import summarize
from bench.store import RunDir
from bench.suite import Case, Suite
from bench.timeline import synchronize
from bench.validity import ValidityInputs, assess

IDLE, SUMMARY, COMPOSITION = "idle", "summary", "composition"


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


class Runner:
    """Runs a suite and writes its records into one run directory.

    Args:
        suite: The validated suite.
        out: Results root; the run goes to ``out/<suite>/<run-id>``.
        reporter: Progress sink.
        resume: An earlier, interrupted run of the same suite to complete instead of starting anew.
        executor: Where cases run: in this process (default) or spread over a cluster
            (:mod:`bench.executors`).
    """

    def __init__(self, suite: Suite, out: Path, reporter: Reporter | None = None, resume: RunDir | None = None,
                 executor: Any = None) -> None:
        from bench.executors import LocalExecutor

        self.suite = suite
        self.out = out
        self.reporter = reporter or NullReporter()
        self.resume = resume
        self.executor = executor or LocalExecutor()
        self.failed = 0

    def todo(self, done: set[tuple[str, str, Any]]) -> list[tuple[Case, list[str]]]:
        """Cases with the placements that still miss a trial, in suite order."""
        exps = self.suite.experiments
        todo = [(c, [p for p in exps[c.experiment].placements
                     if any((c.id, p, t) not in done for t in range(exps[c.experiment].measure.trials))])
                for c in self.suite.cases()]
        return [(c, ps) for c, ps in todo if ps]

    def plan(self) -> list[dict[str, Any]]:
        """The expanded matrix without running it: per case, its placements, trials and a time lower bound.

        The bound counts the measured windows (trials x ``min_duration_s``), the idle windows and the
        composition check's per-section windows; warm-up, compilation and windows that outlast their minimum
        come on top.
        """
        rows = []
        for case, placements in self.todo(set()):
            exp = self.suite.experiments[case.experiment]
            m = exp.measure
            seconds = len(placements) * m.trials * m.min_duration_s + 2 * m.idle_s
            if m.composition and "baseline" in placements:
                seconds += 5 * m.min_duration_s  # about one window per timeline section
            rows.append({"case": case.id, "experiment": case.experiment, "method": exp.method,
                         "model": exp.model.preset or "inline", "placements": placements, "trials": m.trials,
                         "min_seconds": seconds})
        return rows

    def run(self) -> RunDir:
        """Run every case not already recorded; returns the run directory."""
        s = self.suite
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
                "software": software_info(),
                "git": git,
                "energy_scopes": {"headline": ACCEL, ACCEL: "gpu + fpga (the fpga only where a placement has one)",
                                  "cpu": "reported apart, not in the headline"},
                **self.executor.describe(s),
            }
            run = RunDir.create(self.out, s.name, git["commit"], meta)
            done = set()
        todo = self.todo(done)
        self.reporter.start(sum(len(ps) * s.experiments[c.experiment].measure.trials for c, ps in todo))
        try:
            self.failed = self.executor.run(s, run.run_id, todo, done, run.append, self.reporter)
        except BaseException as exc:
            run.update_meta(ended=utc_now(), status="aborted", abort_reason=str(exc).splitlines()[0] if str(exc)
                            else type(exc).__name__)
            raise
        run.update_meta(ended=utc_now(), status="complete" if not self.failed else "complete-with-failures")
        return run


class CaseRunner:
    """Runs cases of a suite on this process's device, emitting their records.

    Args:
        suite: The validated suite.
        reporter: Progress sink.
    """

    def __init__(self, suite: Suite, reporter: Reporter | None = None) -> None:
        self.suite = suite
        self.reporter = reporter or NullReporter()
        self.device = gpu_dev.resolve(suite.gpu.device)
        self.meters: dict[str, EnergyMeter] = detect_meters(str(self.device), sync=lambda: synchronize(self.device))
        self.model: Any = None
        self._model_of: str | None = None
        self.failed = 0

    def describe(self) -> dict[str, Any]:
        """Provenance of this process's devices: GPU, its state, FPGA devices, energy meters."""
        s = self.suite
        return {
            "gpu": gpu_dev.describe(self.device),
            "gpu_state": measure.gpu_state(self.meters),
            "fpga": {n: self._fpga(n).describe() for n in s.fpgas if self._uses(n)},
            "energy_meters": describe_meters(self.meters),
        }

    def close(self) -> None:
        """Stop the meters' background threads."""
        for m in self.meters.values():
            m.close()

    def _uses(self, fpga: str) -> bool:
        return any(fpga in p.steps.values() for p in self.suite.placements.values())

    def run_case(self, run_id: str, case: Case, placements: list[str], done: set[tuple[str, str, Any]],
                 emit: Callable[[dict[str, Any]], None]) -> None:
        """Measure one case on ``placements`` (skipping trials in ``done``); each record goes to ``emit``."""
        s = self.suite
        exp = s.experiments[case.experiment]
        m = exp.measure
        base = {"run_id": run_id, "case_id": case.id, "experiment": case.experiment, "method": exp.method,
                "case": case.values}
        need = self._memory_needed(case)
        free = gpu_dev.free_memory(self.device)
        if free is not None and need["total"] > free:
            parts = ", ".join(f"{k} {_gib(v)}" for k, v in need.items() if k != "total")
            reason = (f"does not fit: needs {_gib(need['total'])} GiB ({parts} GiB), "
                      f"{_gib(free)} GiB free on {self.device}")
            self._skip(emit, base, placements, reason, need, free)
            return
        cr: CaseRun | None = None
        try:
            try:
                cr = CaseRun(self._model(case.experiment), case, exp.method,
                             {p: exp.placements[p] for p in placements}, m.decode_tokens, self._fpga,
                             exp.model.seed)
            except torch.OutOfMemoryError as exc:
                self._skip(emit, base, placements, f"out of memory while setting up: {str(exc).splitlines()[0]}",
                           need, free)
                return
            # Planned ("auto") placements warm up last: the planner reads the baseline's profile of this case.
            for name in sorted(placements, key=lambda n: exp.placements[n].auto):
                emit({**base, "kind": WARMUP, "placement": name, "trial": None, **self._warmup(cr, name)})
            idle_before = measure.idle_window(self.meters, m.idle_s, self.device)
            emit({**base, "kind": IDLE, "placement": None, "trial": None, "phase": "before",
                        "idle": {k: dataclasses.asdict(v) for k, v in idle_before.items()}})
            trials: dict[str, list[dict[str, Any]]] = {p: [] for p in placements}
            for t in range(m.trials):
                for name in placements:
                    if (case.id, name, t) in done:
                        continue
                    self.reporter.advance(f"{case.id} {name} trial {t + 1}/{m.trials}")
                    if m.cooldown_s:
                        time.sleep(m.cooldown_s)
                    started = utc_now()
                    rec = self._trial(cr, name, idle_before)
                    rec = {**base, "kind": TRIAL, "placement": name, "trial": t, "started": started,
                           "ended": utc_now(), **rec}
                    emit(rec)
                    trials[name].append(rec)
            idle_after = measure.idle_window(self.meters, m.idle_s, self.device)
            emit({**base, "kind": IDLE, "placement": None, "trial": None, "phase": "after",
                        "idle": {k: dataclasses.asdict(v) for k, v in idle_after.items()}})
            idle = {scope: merge_idle(idle_before[scope], idle_after[scope]) for scope in idle_before}
            for name in placements:
                if trials[name]:
                    emit({**base, "kind": SUMMARY, "placement": name, "trial": None,
                                **self._summary(cr, name, trials[name], idle)})
            if m.composition and "baseline" in placements and trials["baseline"]:
                emit({**base, "kind": COMPOSITION, "placement": "baseline", "trial": None,
                            **self._composition(cr, "baseline", trials["baseline"], idle["gpu"].watts)})
        except UsageError:
            raise
        except Exception as exc:  # a failed case is recorded and the sweep goes on (a missing package too)
            self.failed += 1
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.reporter.note(f"{case.id}: failed: {first}")
            emit({**base, "kind": FAILED, "placement": None, "trial": None, "error": first,
                        "traceback": traceback.format_exc(limit=8)})
        finally:
            del cr
            gc.collect()
            gpu_dev.empty_cache(self.device)

    def _skip(self, emit: Callable[[dict[str, Any]], None], base: dict[str, Any], placements: list[str], reason: str,
              need: dict[str, int], free: int | None) -> None:
        self.reporter.note(f"{base['case_id']}: skipped: {reason}")
        for name in placements:
            emit({**base, "kind": SKIPPED, "placement": name, "trial": None, "reason": reason,
                        "memory_needed_bytes": need, "memory_free_bytes": free})
            for _ in range(self.suite.experiments[base["experiment"]].measure.trials):
                self.reporter.advance(f"{base['case_id']} skipped")

    # -- set-up -----------------------------------------------------------------------------------------

    def _model(self, experiment: str) -> Any:
        """The experiment's model, built on first use; the previous experiment's is freed first."""
        if self._model_of != experiment:
            if self._model_of is not None:
                get_method(self.suite.experiments[self._model_of].method).release_shared()
            self.model = None
            gc.collect()
            gpu_dev.empty_cache(self.device)
            exp = self.suite.experiments[experiment]
            self.model = get_method(exp.method).build_model(exp.model, self.device)
            self._model_of = experiment
        return self.model

    def _memory_needed(self, case: Case) -> dict[str, int]:
        """Bytes a case needs on the device, by part (weights only if its model is not loaded yet)."""
        exp = self.suite.experiments[case.experiment]
        workload = get_method(exp.method)
        shape = workload.model_shape(exp.model)
        dtype_bytes = DTYPES[exp.model.dtype].itemsize
        need = {
            "weights": 0 if self._model_of == case.experiment else workload.weight_bytes(exp.model),
            **workload.memory_bytes(case.params, shape, case, exp.measure.decode_tokens, dtype_bytes),
            # Logits and allocator slack.
            "workspace": case.batch * shape.vocab * 4 + (256 << 20),
        }
        need["total"] = sum(need.values())
        return need

    def _fpga(self, name: str) -> FpgaDevice:
        """A fresh FPGA device (each placement keeps its own tape of offloads)."""
        cfg = self.suite.fpgas[name]
        return FpgaDevice(name, cfg.mode, resolve_spec(cfg.spec, self.suite.path.parent), self.device, cfg.wait,
                          cfg.functional, cfg.control, cfg.link, cfg.clock_mhz, cfg.xclbin, cfg.board)

    # -- measurement ------------------------------------------------------------------------------------

    def _m(self, cr: CaseRun) -> Any:
        """The measurement settings of a case's experiment."""
        return self.suite.experiments[cr.case.experiment].measure

    def _timed(self, fn: Any) -> float:
        synchronize(self.device)
        t0 = time.perf_counter()
        fn()
        synchronize(self.device)
        return time.perf_counter() - t0

    def _warmup(self, cr: CaseRun, name: str) -> dict[str, Any]:
        """Functional pass, first-call time, warm-up iterations, graph capture, eager vs graphed."""
        m = self._m(cr)
        backend = cr.backends[name]
        out: dict[str, Any] = {}
        fpga = backend.fpga
        if fpga is not None and fpga.mode != "hardware":
            seconds = self._timed(lambda: cr.iteration(name, replay=False))
            per_it = fpga.tape_stats()
            out["functional_pass"] = {"seconds": seconds, "mode": fpga.functional, "recall": fpga.recall,
                                      "calls_per_iteration": per_it.calls}
        out["cold_s"] = self._timed(lambda: cr.iteration(name))
        out["warmup_s"] = [self._timed(lambda: cr.iteration(name)) for _ in range(m.warmup)]
        cr.capture(name, m.cuda_graphs)
        if backend.placement.auto:
            out["planner"] = self._plan(cr, name).to_dict()
            backend = cr.backends[name]
        out["graphed"] = backend.plan is not None
        out["graph_segments"] = backend.plan.segments if backend.plan is not None else 0
        out["eager_reason"] = backend.eager_reason
        if backend.plan is not None:
            n = max(m.min_iterations, 3)
            eager = self._timed(lambda: [cr.iteration(name) for _ in range(n)]) / (n * cr.steps_per_iteration)
            graphed = self._timed(lambda: [cr.run_once(name) for _ in range(n)]) / (n * cr.steps_per_iteration)
            out["eager_vs_graphed"] = {"eager_ms_per_token": eager * 1e3, "graphed_ms_per_token": graphed * 1e3,
                                       "iterations": n, "provenance": "measured"}
        return out

    def _plan(self, cr: CaseRun, name: str) -> Any:
        """Decide an ``auto`` placement for this case; fall back to the baseline's backend if the GPU wins."""
        from bench.planner import decide

        backend = cr.backends[name]
        stats = cr.fpga_per_iteration(name)
        if "baseline" not in cr.backends or stats is None:
            raise BenchError(f"placement '{name}' is auto: its case needs the 'baseline' placement and an FPGA")
        sections, _ = measure.profile(cr, "baseline", max(1, self._m(cr).profile_iterations))
        decision = decide(sections, backend.placement.offloaded_sections(), stats.modeled_s / cr.steps_per_iteration)
        if not decision.offload:
            cr.use_baseline(name)
        self.reporter.note(f"{cr.case.id} {name}: {decision.reason}")
        return decision

    def _trial(self, cr: CaseRun, name: str, idle_before: dict[str, Any]) -> dict[str, Any]:
        """One trial: a measured window of whole iterations, then a per-section profile pass."""
        m = self._m(cr)
        backend = cr.backends[name]
        fpga = backend.fpga
        meters = dict(self.meters)
        mode = fpga.mode if fpga is not None else None
        stats = cr.fpga_per_iteration(name)  # the tape the functional pass recorded: known before the window
        fpga_meter = fpga.meter() if fpga is not None else None
        if fpga_meter is not None:
            meters["fpga"] = fpga_meter
        modeled = fpga_meter if isinstance(fpga_meter, ModeledPowerMeter) and stats is not None else None
        unwaited_s = stats.modeled_s if modeled is not None and mode == "analytic" else 0.0  # nobody waited

        def once() -> None:
            cr.run_once(name)
            if modeled is not None:
                modeled.add_busy(stats.busy_s)
                modeled.add_unwaited(unwaited_s)

        w = measure.measure_window(once, meters, self.device, m.min_duration_s, m.min_iterations)
        steps = w.iterations * cr.steps_per_iteration
        tokens = w.iterations * cr.tokens_per_iteration
        unit = cr.workload.latency_unit
        modeled_s = stats.modeled_s * w.iterations if stats else 0.0
        busy_s = stats.busy_s * w.iterations if stats else 0.0
        time_prov: Provenance = {"emulated": "emulated", "analytic": "analytic"}.get(mode or "", "measured")
        # In analytic mode nothing waited for the FPGA: its modeled time is added to the measured GPU time.
        e2e = w.seconds + (modeled_s if mode == "analytic" else 0.0)
        scopes = {"gpu": gpu_energy(w.readings["gpu"], mode, modeled_s, idle_before["gpu"].watts)}
        if fpga_meter is not None:
            r = w.readings["fpga"]
            scopes["fpga"] = ScopeEnergy("fpga", r.joules, r.provenance, r.method, r.reason)
        cpu = w.readings.get("cpu")
        rec: dict[str, Any] = {
            "status": "ok",
            "iterations": w.iterations,
            "decode_tokens": cr.workload.decode_tokens,
            "batch": cr.case.batch,
            "context": cr.case.context,
            "window_s": w.seconds,
            "e2e_s": e2e,
            "graphed": backend.plan is not None,
            "placement_map": backend.placement.to_dict(),
            "steps_per_iteration": cr.steps_per_iteration,
            "tokens_per_iteration": cr.tokens_per_iteration,
            "latency_unit": unit,
            "workload": cr.workload.describe(),
            "metrics": {
                "latency_ms": figure(e2e / steps * 1e3, f"ms/{unit}", time_prov,
                                     note=f"time per {unit}" + (" (one token per sequence)"
                                                                if unit == "decode step" else "")),
                "tokens_per_s": figure(tokens / e2e, "tokens/s", time_prov),
                **per_token_figures(total(scopes), tokens),
            },
            "energy": {**{k: v.to_dict() for k, v in scopes.items()},
                       "readings": {k: r.to_dict() for k, r in w.readings.items()},
                       "cpu": None if cpu is None else ScopeEnergy("cpu", cpu.joules, cpu.provenance, cpu.method,
                                                                   cpu.reason).to_dict()},
            "gpu_state": {"before": w.state_before, "after": w.state_after},
            "model": self._model_info(cr.case.experiment),
            "kernels": backend.placement.kernels,
        }
        if fpga is not None and stats is not None:
            rec["fpga"] = {"mode": fpga.mode, "wait": fpga.wait_where if fpga.mode == "emulated" else None,
                           "calls_per_token": stats.calls / cr.steps_per_iteration,
                           "modeled_us_per_call": {k: v * 1e6 for k, v in stats.per_call().items()},
                           "busy_s": busy_s, "modeled_s": modeled_s, "recall": fpga.recall,
                           "functional": fpga.functional, "static_power_w": fpga.model.static_power_w,
                           "dynamic_power_w": fpga.model.dynamic_power_w}
        sections, timing = measure.profile(cr, name, m.profile_iterations)
        offloaded = backend.placement.offloaded_sections()
        rec["steps_ms"] = {}
        for section, sec in sections.items():
            on_fpga = fpga is not None and section in offloaded
            rec["steps_ms"][section] = figure(sec * 1e3, f"ms/{unit}", time_prov if on_fpga else "measured",
                                              device=fpga.name if on_fpga and fpga else "gpu", timing=timing)
        limit = (w.state_after or {}).get("power_limit_w")
        rec["validity"] = assess(ValidityInputs(
            window_s=w.seconds, min_window_s=m.min_duration_s, iterations=w.iterations,
            min_iterations=m.min_iterations, energy_requested=self.device.type == "cuda",
            readings=[w.readings["gpu"]], requested_provenance="measured" if m.require_measured else None,
            provenances={"latency": time_prov},
            idle_power_w={"gpu": idle_before["gpu"].watts}, power_limit_w={"gpu": limit},
            throttle_reasons=(w.state_after or {}).get("throttle_reasons"),
        )).to_dict()
        return rec

    def _summary(self, cr: CaseRun, name: str, trials: list[dict[str, Any]], idle: dict[str, Any]) -> dict[str, Any]:
        """Statistics over the trials, gross / idle / net energy by scope, and the placement's validity."""
        def series(metric: str) -> list[float] | None:
            vals = [t["metrics"][metric]["value"] for t in trials]
            return None if any(v is None for v in vals) else vals

        stats = {}
        for metric in ("latency_ms", "tokens_per_s", "j_per_token", "tokens_per_j"):
            vals = series(metric)
            stats[metric] = dataclasses.asdict(summarize(vals)) if vals else None
        fpga = cr.backends[name].fpga
        idle_w = {scope: r.watts for scope, r in idle.items()}
        if fpga is not None:
            idle_w["fpga"] = fpga.model.static_power_w  # modeled: the card's static power
        energy: dict[str, Any] = {}
        for scope in ("gpu", "fpga", "cpu"):
            per = [(t["energy"].get(scope) or {}).get("joules") for t in trials]
            if scope not in idle_w or (all(p is None for p in per) and scope == "fpga"):
                continue
            gross = [p / (t["iterations"] * cr.tokens_per_iteration) if p is not None else None
                     for p, t in zip(per, trials, strict=True)]
            net = [net_energy(p, idle_w.get(scope), t["e2e_s"]) for p, t in zip(per, trials, strict=True)]
            net = [n / (t["iterations"] * cr.tokens_per_iteration) if n is not None else None
                   for n, t in zip(net, trials, strict=True)]
            energy[scope] = {
                "gross_j_per_token": _mean(gross), "idle_w": idle_w.get(scope),
                "idle_provenance": "analytic" if scope == "fpga" else "measured",
                "net_j_per_token": _mean(net),
                "idle_warnings": list(idle[scope].warnings) if scope in idle else [],
                "idle_reason": idle[scope].reason if scope in idle else None,
            }
        parts = [energy[s] for s in ("gpu", "fpga") if s in energy]
        energy[ACCEL] = {
            "gross_j_per_token": _sum([p["gross_j_per_token"] for p in parts]),
            "idle_w": _sum([p["idle_w"] for p in parts]),
            "net_j_per_token": _sum([p["net_j_per_token"] for p in parts]),
            "components": [s for s in ("gpu", "fpga") if s in energy],
        }
        summaries = {k: summarize(v) for k in ("latency_ms", "j_per_token") if (v := series(k))}
        invalid = [f"trial {t['trial']}: {r}" for t in trials for r in t["validity"]["reasons"]]
        validity = assess(ValidityInputs(summaries=summaries))
        return {
            "trials": len(trials),
            "stats": stats,
            "energy_by_scope": energy,
            "validity": {"status": "INVALID" if invalid or not validity.valid else "VALID",
                         "reasons": invalid + list(validity.reasons),
                         "warnings": sorted({w for t in trials for w in t["validity"]["warnings"]}
                                            | set(validity.warnings))},
        }

    def _composition(self, cr: CaseRun, name: str, trials: list[dict[str, Any]],
                     idle_w: float | None) -> dict[str, Any]:
        """Compose end-to-end time and energy from per-step measurements; compare with the direct runs.

        Time: the per-section times of the placement's own replay (events inside its graphs, or around each
        section when eager) summed per token. Energy: each section's graphs replayed alone inside an energy
        window; isolating a section adds launch gaps between its small graphs, so the idle energy of that
        added time (measured idle power x the extra seconds) is taken off.
        """
        m = self._m(cr)
        per_step = [t["iterations"] * cr.steps_per_iteration for t in trials]
        direct_s = _mean([t["e2e_s"] / n for t, n in zip(trials, per_step, strict=True)])
        direct_j = _mean([None if t["energy"]["gpu"]["joules"] is None else t["energy"]["gpu"]["joules"] / n
                          for t, n in zip(trials, per_step, strict=True)])
        in_situ, timing = measure.profile(cr, name, max(3, m.profile_iterations))
        steps: dict[str, dict[str, Any]] = {k: {"ms_per_token": v * 1e3} for k, v in in_situ.items()}
        composed_s = sum(in_situ.values())
        composed_j: float | None = None
        raw_j: float | None = None
        why: str | None = None
        if direct_j is None:
            why = "no GPU energy meter"
        elif cr.backends[name].plan is None:
            why = "per-section energy needs the placement captured in CUDA graphs"
        else:
            costs = measure.section_costs(cr, name, self.meters["gpu"], m.min_duration_s, m.min_iterations)
            for k, c in costs.items():
                steps[k].update(isolated_ms_per_token=c.seconds_per_step * 1e3, replays=c.replays,
                                isolated_mj_per_token=None if c.joules_per_step is None else c.joules_per_step * 1e3)
            joules = [c.joules_per_step for c in costs.values()]
            if any(j is None for j in joules):
                why = next(c.reason for c in costs.values() if c.joules_per_step is None)
            else:
                raw_j = sum(j for j in joules if j is not None)
                if idle_w is None:
                    why = "needs the GPU idle power (measure.idle_s > 0) to remove the launch gaps of isolation"
                else:
                    for k, c in costs.items():
                        gap = max(0.0, c.seconds_per_step - in_situ.get(k, 0.0))
                        steps[k]["mj_per_token"] = (c.joules_per_step - idle_w * gap) * 1e3  # type: ignore[operator]
                    composed_j = sum(v["mj_per_token"] for v in steps.values() if "mj_per_token" in v) / 1e3
        return {
            "method": f"time: {timing}; energy: each section's graphs replayed alone in its own NVML window, "
                      "minus idle power x the launch gaps isolation adds",
            "steps": steps,
            "direct_ms_per_token": None if direct_s is None else direct_s * 1e3,
            "composed_ms_per_token": composed_s * 1e3,
            "time_error": composed_s / direct_s - 1 if direct_s else None,
            "direct_mj_per_step": None if direct_j is None else direct_j * 1e3,
            "composed_mj_per_step": None if composed_j is None else composed_j * 1e3,
            "composed_mj_per_step_without_gap_correction": None if raw_j is None else raw_j * 1e3,
            "idle_w": idle_w,
            "energy_error": composed_j / direct_j - 1 if composed_j is not None and direct_j else None,
            "energy_reason": why,
            "targets": {"time": 0.05, "energy": 0.10},
            "provenance": "measured",
        }

    def _model_info(self, experiment: str) -> dict[str, Any]:
        exp = self.suite.experiments[experiment]
        m = exp.model
        workload = get_method(exp.method)
        shape = workload.model_shape(m)
        full = workload.presets()[m.preset].layers if m.preset else shape.layers
        return {"name": shape.name, "layers": shape.layers, "layers_of_preset": full, "dtype": m.dtype,
                "weights": "synthetic (seeded)", "seed": m.seed}


def _mean(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals and len(vals) == len(xs) else None


def _sum(xs: list[float | None]) -> float | None:
    return None if not xs or any(x is None for x in xs) else sum(x for x in xs if x is not None)


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f}"
