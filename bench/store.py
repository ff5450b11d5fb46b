"""The result store: one directory per run, ``run.json`` plus ``records.jsonl``.

``results/<suite>/<run-id>/run.json`` holds the suite as run and the provenance of the run;
``records.jsonl`` holds one JSON record per line, appended, flushed and fsynced as each finishes, and
never rewritten, so a run killed at any point (even by SIGKILL) keeps every completed record. A torn last
line (a write cut short by a kill) is skipped with a warning when reading, and cut before a resumed run
appends; damage anywhere else is an error.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.errors import UsageError

RUN_FILE = "run.json"
RECORDS_FILE = "records.jsonl"
SCHEMA_VERSION = 1


class RunDir:
    """A run directory: its metadata and its append-only records."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tail_checked = False

    @property
    def run_json(self) -> Path:
        """Path of run.json."""
        return self.path / RUN_FILE

    @property
    def records_path(self) -> Path:
        """Path of records.jsonl."""
        return self.path / RECORDS_FILE

    @property
    def run_id(self) -> str:
        """The run's identifier (its directory name)."""
        return self.path.name

    @classmethod
    def create(cls, root: Path, suite: str, commit: str | None, meta: dict[str, Any]) -> RunDir:
        """Make ``root/<suite>/<utc time>-<commit>`` (a suffix keeps ids unique) and write run.json."""
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        base = f"{stamp}-{(commit or 'nogit')[:8]}"
        parent = root / suite
        parent.mkdir(parents=True, exist_ok=True)
        for n in range(1000):
            path = parent / (base if n == 0 else f"{base}.{n}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        else:
            raise UsageError(f"cannot make a new run directory under {parent}")
        run = cls(path)
        run.write_meta({"schema": SCHEMA_VERSION, "run_id": run.run_id, **meta})
        run.records_path.touch()
        return run

    @classmethod
    def open(cls, path: Path) -> RunDir:
        """An existing run directory; UsageError if it has no run.json."""
        run = cls(path)
        if not run.run_json.is_file():
            raise UsageError(f"{path} is not a run directory (no {RUN_FILE}); runs live under results/<suite>/")
        return run

    def meta(self) -> dict[str, Any]:
        """The parsed run.json."""
        try:
            return json.loads(self.run_json.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"{self.run_json}: unreadable run metadata ({exc})") from None

    def write_meta(self, meta: dict[str, Any]) -> None:
        """Replace run.json atomically (write a temporary file, then rename over the old one)."""
        tmp = self.run_json.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=False, default=str) + "\n")
        os.replace(tmp, self.run_json)

    def update_meta(self, **fields: Any) -> None:
        """Set top-level fields of run.json."""
        meta = self.meta()
        meta.update(fields)
        self.write_meta(meta)

    def append(self, record: dict[str, Any]) -> None:
        """Append one record as a JSON line; flushed and fsynced before returning."""
        line = json.dumps(record, default=str, allow_nan=False)
        if not self._tail_checked:
            self._tail_checked = True
            self._drop_torn_tail()
        with open(self.records_path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _drop_torn_tail(self) -> None:
        """Cut an incomplete last line (a write killed mid-way) before appending after it.

        Only bytes after the last newline go: they never formed a record, so no record is touched.
        """
        if not self.records_path.exists():
            return
        data = self.records_path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            warnings.warn(f"{self.records_path}: dropped a torn last record (the run was interrupted)", stacklevel=3)
            os.truncate(self.records_path, end)

    def records(self) -> list[dict[str, Any]]:
        """Every complete record; a torn last line is skipped with a warning."""
        return list(self.iter_records())

    def iter_records(self) -> Iterator[dict[str, Any]]:
        """Yield the records in the order they were written."""
        if not self.records_path.exists():
            return
        lines = self.records_path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                if i < len(lines) - 1:
                    raise UsageError(f"{self.records_path}:{i + 1}: corrupt record ({exc.msg})") from None
                # A last line cut short by a kill: it never formed a record, so nothing complete is lost.
                warnings.warn(f"{self.records_path}:{i + 1}: skipped a torn last record (the run was interrupted)",
                              stacklevel=2)


def find_runs(root: Path) -> list[RunDir]:
    """Every run under ``root`` (``root/<suite>/<run-id>``), oldest first by start time."""
    runs = [RunDir(p.parent) for p in root.glob(f"*/*/{RUN_FILE}")]
    return sorted(runs, key=lambda r: (r.meta().get("started", ""), r.path.name))


def resolve_run(run: str | Path | None, root: Path) -> RunDir:
    """A run by directory path, by run id under ``root``, or the latest run when ``run`` is None."""
    if run is None:
        runs = find_runs(root)
        if not runs:
            raise UsageError(f"no runs under {root}/; start one with 'bench run SUITE'")
        return runs[-1]
    p = Path(run)
    if p.is_dir():
        return RunDir.open(p)
    matches = [r for r in find_runs(root) if r.run_id == str(run)]
    if not matches:
        raise UsageError(f"no run '{run}': give a run directory or a run id under {root}/")
    return matches[-1]
