"""Where cases run: in this process, or spread over a Ray cluster.

An executor takes the cases still to do and sends every record to one sink (the run directory), so a sweep
run on many machines still lands in one ``records.jsonl``. The local executor runs cases one after another
on this process's device. The Ray executor runs each case as a task pinned to one GPU (and, for FPGA
placements in hardware mode, to a node offering the custom resource ``fpga``); records come back per case
with the node that made them; a task that fails is retried once and then recorded as failed, and the sweep
goes on.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable
from typing import Any

from bench.errors import DeviceUnavailableError
from bench.records import FAILED
from bench.runner import CaseRunner, NullReporter, Reporter
from bench.suite import Case, Suite, parse_suite

Emit = Callable[[dict[str, Any]], None]
Todo = list[tuple[Case, list[str]]]


class LocalExecutor:
    """Runs the cases in this process, one after another."""

    def __init__(self) -> None:
        self._runner: CaseRunner | None = None

    def _case_runner(self, suite: Suite, reporter: Reporter) -> CaseRunner:
        if self._runner is None or self._runner.suite is not suite:
            self._runner = CaseRunner(suite, reporter)
        return self._runner

    def describe(self, suite: Suite) -> dict[str, Any]:
        """Provenance for run.json: this machine's devices and meters."""
        return {"executor": {"kind": "local", "hostname": socket.gethostname()},
                **self._case_runner(suite, NullReporter()).describe()}

    def run(self, suite: Suite, run_id: str, todo: Todo, done: set[tuple[str, str, Any]], emit: Emit,
            reporter: Reporter) -> int:
        """Run every case; returns the number that failed."""
        runner = self._case_runner(suite, reporter)
        runner.reporter = reporter
        try:
            for case, placements in todo:
                runner.run_case(run_id, case, placements, done, emit)
        finally:
            runner.close()
        return runner.failed


def _node() -> dict[str, Any]:
    """Where a Ray task runs: host, Ray node id, GPU."""
    import ray
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"hostname": socket.gethostname(), "ray_node_id": ray.get_runtime_context().get_node_id(), "gpu": gpu}


#: Case runners kept per worker process and suite, so a worker's later cases reuse its model.
_WORKER_RUNNERS: dict[str, CaseRunner] = {}


def _run_remote(suite_text: str, suite_file: str, run_id: str, case_id: str, placements: list[str],
                done: list[tuple[str, str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """A Ray task: run one case and return its records (each tagged with its node) and its failure count."""
    key = hashlib.sha256(suite_text.encode()).hexdigest()
    runner = _WORKER_RUNNERS.get(key)
    if runner is None:
        runner = _WORKER_RUNNERS[key] = CaseRunner(parse_suite(suite_text, suite_file))
    case = next(c for c in runner.suite.cases() if c.id == case_id)
    records: list[dict[str, Any]] = []
    before = runner.failed
    runner.run_case(run_id, case, placements, set(map(tuple, done)), records.append)
    node = {**_node(), "device": runner.describe()["gpu"]}
    return [{**r, "node": node} for r in records], runner.failed - before


class RayExecutor:
    """Runs cases as Ray tasks on an existing cluster (or a local one).

    Args:
        address: The cluster's address (``ray://host:10001``, ``host:6379`` or ``auto``); None starts a local
            Ray instance on this machine.
        num_cpus: CPUs of a local instance (ignored when joining a cluster).
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise DeviceUnavailableError(
                "--executor ray needs Ray: pip install 'ray>=2.9' (or use --executor local)") from None
        self.ray = ray
        self.address = address
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "logging_level": "ERROR", "ignore_reinit_error": True}
            if address:
                kwargs["address"] = address
            elif num_cpus:
                kwargs["num_cpus"] = num_cpus
            ray.init(**kwargs)

    def _resources(self, suite: Suite) -> dict[str, Any]:
        """One GPU per task where the cluster has GPUs and the suite wants one; an FPGA for hardware mode."""
        cluster = self.ray.cluster_resources()
        wants_gpu = suite.gpu.device != "cpu" and cluster.get("GPU", 0) > 0
        hardware = any(f.mode == "hardware" for f in suite.fpgas.values())
        opts: dict[str, Any] = {"num_gpus": 1 if wants_gpu else 0, "num_cpus": 1}
        if hardware:
            opts["resources"] = {"fpga": 1}
        return opts

    def describe(self, suite: Suite) -> dict[str, Any]:
        """Provenance for run.json: the cluster and what each task asks for (nodes are recorded per record)."""
        nodes = [{"hostname": n.get("NodeManagerHostname"), "node_id": n.get("NodeID"),
                  "resources": n.get("Resources")} for n in self.ray.nodes() if n.get("Alive")]
        return {"executor": {"kind": "ray", "address": self.address, "ray_version": self.ray.__version__,
                             "nodes": nodes, "task_resources": self._resources(suite)},
                "gpu": {"type": "per record", "note": "each record's 'node' says where it ran"}}

    def run(self, suite: Suite, run_id: str, todo: Todo, done: set[tuple[str, str, Any]], emit: Emit,
            reporter: Reporter) -> int:
        """Submit every case; write records as cases finish; retry a failed task once. Returns failures."""
        ray = self.ray
        task = ray.remote(**self._resources(suite))(_run_remote)
        done_list = sorted(done, key=repr)
        by_ref: dict[Any, tuple[Case, list[str], int]] = {}

        def submit(case: Case, placements: list[str], attempt: int) -> None:
            ref = task.remote(suite.text, str(suite.path), run_id, case.id, placements, done_list)
            by_ref[ref] = (case, placements, attempt)

        for case, placements in todo:
            submit(case, placements, 1)
        failed = 0
        while by_ref:
            ready, _ = ray.wait(list(by_ref), num_returns=1)
            ref = ready[0]
            case, placements, attempt = by_ref.pop(ref)
            try:
                records, case_failures = ray.get(ref)
            except Exception as exc:  # the task or its worker died: retry once, then record the failure
                if attempt == 1:
                    reporter.note(f"{case.id}: task failed ({type(exc).__name__}); retrying once")
                    submit(case, placements, 2)
                    continue
                failed += 1
                emit({"run_id": run_id, "case_id": case.id, "experiment": case.experiment, "case": case.values,
                      "kind": FAILED, "placement": None, "trial": None, "attempts": attempt,
                      "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__})
                reporter.note(f"{case.id}: failed twice; recorded as failed")
                continue
            for r in records:
                emit(r)
            failed += case_failures
            for _ in range(len(placements) * suite.experiments[case.experiment].measure.trials):
                reporter.advance(f"{case.id} done on {records[0]['node']['hostname'] if records else '?'}")
        return failed
