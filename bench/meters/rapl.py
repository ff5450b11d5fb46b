"""CPU package (or DRAM) energy from Linux powercap RAPL counters.

Each package domain ``intel-rapl:<N>`` (named ``package-<N>``) has a cumulative ``energy_uj`` counter that
wraps at ``max_energy_range_uj``; DRAM is the ``dram`` subzone ``intel-rapl:<N>:<M>``. Energy is the sum of
per-domain differences with wrap-around (codecarbon #309). A thread re-reads the counters every ``poll_s``
so a long window cannot wrap more than once unnoticed. ``psys`` (platform) and ``intel-rapl-mmio`` zones
are skipped: they overlap the package domains and would double count.

``energy_uj`` is root-only on most kernels since CVE-2020-8694. An unreadable counter makes the meter
unavailable with a reason, and every reading ``None``: never a TDP stand-in (codecarbon #244, #1316).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bench.meters.base import EnergyMeter, EnergyReading, Sync, null_reading

_MICRO = 1e-6  # powercap counters are in µJ.
_PACKAGE_ZONE = re.compile(r"intel-rapl:\d+")
_SUB_ZONE = re.compile(r"intel-rapl:\d+:\d+")


@dataclass(frozen=True)
class RaplZone:
    """One powercap zone: its directory, name and wrap range (µJ)."""

    path: Path
    name: str
    max_range_uj: int

    def read_uj(self) -> int:
        """Read the zone's cumulative counter in µJ."""
        return int((self.path / "energy_uj").read_text().strip())


def find_zones(root: Path, domain: Literal["package", "dram"]) -> list[RaplZone]:
    """List the powercap zones of one domain under ``root``.

    Args:
        root: The powercap directory, normally ``/sys/class/powercap``.
        domain: ``"package"`` for the ``package-*`` top zones, ``"dram"`` for the ``dram`` subzones.

    Returns:
        The zones, sorted by directory name.

    Raises:
        OSError: A zone's ``name`` or ``max_energy_range_uj`` cannot be read.
        ValueError: ``max_energy_range_uj`` is not an integer.
    """
    pattern = _PACKAGE_ZONE if domain == "package" else _SUB_ZONE
    zones = []
    seen: set[Path] = set()
    # /sys/class/powercap lists subzones both flat (symlinks) and nested in their parent: count each once.
    for path in sorted(root.glob("intel-rapl:*")) + sorted(root.glob("intel-rapl:*/intel-rapl:*")):
        if not pattern.fullmatch(path.name) or path.resolve() in seen:
            continue
        seen.add(path.resolve())
        name = (path / "name").read_text().strip()
        if (domain == "package" and name.startswith("package")) or (domain == "dram" and name == "dram"):
            max_range = int((path / "max_energy_range_uj").read_text().strip())
            zones.append(RaplZone(path, name, max_range))
    return zones


class RaplMeter(EnergyMeter):
    """Energy of all CPU packages (or all DRAM domains) over a window, from RAPL counters."""

    def __init__(
        self,
        root: str | Path = "/sys/class/powercap",
        sync: Sync | None = None,
        *,
        domain: Literal["package", "dram"] = "package",
        poll_s: float = 10.0,
    ) -> None:
        """Find the zones and check their counters can be read; else the meter is unavailable.

        Args:
            root: The powercap directory.
            sync: Called at both window edges.
            domain: ``"package"`` (scope ``"cpu"``) or ``"dram"`` (scope ``"dram"``).
            poll_s: Interval in s between background counter reads that catch wrap-arounds; it must be
                shorter than one wrap (a 262 kJ range lasts minutes even at 500 W).
        """
        super().__init__("cpu" if domain == "package" else "dram", "rapl", sync=sync)
        self.root = Path(root)
        self.domain = domain
        self.poll_s = poll_s
        self.zones: list[RaplZone] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: list[int] = []
        self._total_uj = 0
        self._reads = 0
        self._error: str | None = None
        self.unavailable_reason = self._discover()

    def _discover(self) -> str | None:
        try:
            self.zones = find_zones(self.root, self.domain)
        except (OSError, ValueError) as exc:
            return f"RAPL zones under {self.root} are unreadable ({exc})"
        if not self.zones:
            return (
                f"no RAPL {self.domain} domains under {self.root} (VM, non-Linux host, or CPU without the "
                "powercap RAPL driver): CPU energy not measured"
            )
        try:
            for zone in self.zones:
                zone.read_uj()
        except PermissionError as exc:
            return (
                f"RAPL energy_uj is readable only by root ({exc.filename}: permission denied): run as root "
                "or grant read access to energy_uj; CPU energy not measured"
            )
        except (OSError, ValueError) as exc:
            return f"RAPL counter unreadable ({exc}): CPU energy not measured"
        self.device = ", ".join(f"{z.name} ({z.path.name})" for z in self.zones)
        return None

    def _accumulate(self) -> None:
        """Add each zone's advance since the last read to the total, unwrapping at its range."""
        try:
            values = [zone.read_uj() for zone in self.zones]
        except (OSError, ValueError) as exc:
            with self._lock:
                self._error = self._error or f"{type(exc).__name__}: {exc}"
            return
        with self._lock:
            for i, (zone, value) in enumerate(zip(self.zones, values, strict=True)):
                delta = value - self._last[i]
                self._total_uj += delta if delta >= 0 else delta + zone.max_range_uj
                self._last[i] = value
            self._reads += 1

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._accumulate()

    def _open_window(self) -> float:
        t0 = self._clock()
        self._total_uj, self._reads, self._error = 0, 1, None
        try:
            self._last = [zone.read_uj() for zone in self.zones]
        except (OSError, ValueError) as exc:
            self._error = f"{type(exc).__name__}: {exc}"
            return t0
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="bench-rapl-poll", daemon=True)
        self._thread.start()
        return t0

    def _close_window(self, t0: float) -> EnergyReading:
        t1 = self._clock()
        self._stop_polling()
        if self._error is None:
            self._accumulate()
        seconds = t1 - t0
        if self._error is not None:
            reason = f"RAPL read failed during the window ({self._error})"
            return null_reading(self.scope, reason, seconds, method=self.method, device=self.device)
        joules = self._total_uj * _MICRO
        return EnergyReading(
            scope=self.scope,
            joules=joules,
            seconds=seconds,
            method=self.method,
            provenance="measured",
            sample_period_s=None,
            samples=self._reads,
            distinct_samples=None,
            device=self.device,
            mean_power_w=joules / seconds if seconds > 0 else None,
        )

    def _stop_polling(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def describe(self) -> dict[str, Any]:
        """Return method, zones with their wrap ranges, and the poll interval."""
        info = super().describe()
        info["zones"] = [
            {"zone": z.path.name, "name": z.name, "max_energy_range_j": z.max_range_uj * _MICRO} for z in self.zones
        ]
        info["poll_s"] = self.poll_s
        return info

    def close(self) -> None:
        """Stop the poll thread if a window is open."""
        super().close()
        self._stop_polling()
