"""Executors: a sweep on a local Ray cluster lands in one run directory with per-node provenance."""

import os
import signal
import subprocess
import sys
import time

import pytest

from bench.runner import Runner
from bench.store import RunDir
from bench.suite import load_suite


def test_ray_executor_runs_a_sweep_into_one_run(write_suite, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is in the dev extras; install them to run this test")
    from bench.executors import RayExecutor

    suite = load_suite(write_suite(contexts="256, 320"))
    try:
        run = Runner(suite, tmp_path / "out", executor=RayExecutor(num_cpus=2)).run()
    finally:
        ray.shutdown()
    meta = run.meta()
    assert meta["executor"]["kind"] == "ray" and meta["executor"]["nodes"]
    records = run.records()
    trials = [r for r in records if r["kind"] == "trial"]
    assert len(trials) == 2 * 3 * 2
    assert all(r["node"]["hostname"] and r["node"]["ray_node_id"] for r in records)
    assert {r["case_id"] for r in trials} == {"context=256,batch=1", "context=320,batch=1"}
    assert meta["status"] == "complete"


def test_ray_failures_are_retried_once_then_recorded(write_suite, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray is in the dev extras; install them to run this test")
    from bench import executors

    suite = load_suite(write_suite())
    calls = []

    class FlakyRay:
        """A stand-in for the ray module whose tasks always fail: tests the executor's retry bookkeeping."""

        @staticmethod
        def remote(**_):
            def wrap(fn):
                class Task:
                    @staticmethod
                    def remote(*args):
                        calls.append(args[3])
                        return object()
                return Task
            return wrap

        @staticmethod
        def wait(refs, num_returns):
            return refs[:1], refs[1:]

        @staticmethod
        def get(ref):
            raise RuntimeError("worker died")

        @staticmethod
        def cluster_resources():
            return {"CPU": 2}

    ex = executors.RayExecutor.__new__(executors.RayExecutor)
    ex.ray, ex.address = FlakyRay, None
    emitted = []
    failed = ex.run(suite, "r1", [(c, ["baseline"]) for c in suite.cases()], set(), emitted.append,
                    executors.NullReporter())
    assert calls == ["context=256,batch=1", "context=256,batch=1"]  # the first try and one retry
    assert failed == 1 and emitted[0]["kind"] == "failed" and emitted[0]["attempts"] == 2
    del ray


def test_dry_run_lists_cases_without_running(write_suite, tmp_path):
    rows = Runner(load_suite(write_suite(contexts="256, 320")), tmp_path).plan()
    assert [r["case"] for r in rows] == ["context=256,batch=1", "context=320,batch=1"]
    assert rows[0]["placements"] == ["baseline", "baseline-torch", "hetero"] and rows[0]["min_seconds"] >= 0
    assert not (tmp_path / "tiny").exists()


def test_sigkill_keeps_every_completed_record_and_resume_finishes(write_suite, tmp_path):
    suite = write_suite(contexts="256, 320, 384, 448")
    text = suite.read_text().replace("min_duration_s: 0.0", "min_duration_s: 0.3")
    suite.write_text(text)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "main.py", "run", str(suite), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = None
    deadline = time.time() + 120
    while time.time() < deadline:
        paths = list(out.glob("tiny/*/records.jsonl"))
        if paths and paths[0].read_text().count('"kind": "trial"') >= 4:
            records = paths[0]
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert records is not None, "the run wrote no trial records in time"
    run = RunDir(records.parent)
    before = run.records()  # readable after SIGKILL (a torn last line, if any, is skipped)
    assert before and run.meta()["status"] == "running"
    done = subprocess.run([sys.executable, "main.py", "run", str(suite), "--out", str(out), "--resume",
                           str(run.path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    after = run.records()
    assert after[: len(before)] == before
    trials = {(r["case_id"], r["placement"], r["trial"]) for r in after if r["kind"] == "trial"}
    assert len(trials) == 4 * 3 * 2
    assert run.meta()["status"] == "complete"
