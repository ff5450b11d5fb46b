"""The FPGA as a device of a placement: emulated, analytic or real hardware.

``emulated`` (the default without a board): the GPU runs its own steps for real; where the FPGA would
work, the GPU timeline stalls for the modeled time (transfer in + kernel + transfer out, from the
analytic model in :mod:`kernels_fpga.model`). The offloaded steps' results come from a functional pass
that uses the FPGA's numerics (int16 inputs, wide accumulators), run before the measured window and
replayed inside it, so the reference costs no GPU time or energy in the window.

``analytic``: the same functional pass and replay, but no stall; the modeled FPGA time is added to the
composed end-to-end time by the runner instead.

``hardware``: the offloaded steps run on a real board through pyxrt (:mod:`kernels_fpga.host`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.errors import DeviceUnavailableError, UsageError
from bench.pipeline import Selection
from bench.timeline import FpgaWait

SPEC_DIR = Path(__file__).resolve().parents[2] / "kernels_fpga" / "specs"


@dataclass
class FpgaCall:
    """One offload of fused steps to the FPGA, as a method describes it.

    Attributes:
        kernel: Kernel family, a method of :class:`kernels_fpga.model.FpgaModel` (``"relevancy_topk"``).
        shape: Keyword arguments of that model method (rows, n_keys, dim, k, ...).
        bytes_in: Bytes sent to the FPGA for this call (the query; keys stay resident).
        bytes_out: Bytes read back (the selected indices).
        bytes_append: Bytes of new keys appended to the resident index before the call (0 if none).
        reference: Evaluates the offloaded steps with the FPGA's numerics in PyTorch (exact integers).
        csim: Evaluates them through the HLS kernels compiled for C-simulation.
        hardware: Runs them on a real board (a :class:`kernels_fpga.host.FpgaBoard`); None if the method
            has no host code for this kernel.
    """

    kernel: str
    shape: dict[str, int]
    bytes_in: int
    bytes_out: int
    bytes_append: int
    reference: Callable[[], Selection]
    csim: Callable[[], Selection]
    hardware: Callable[[Any], Selection] | None = None


@dataclass
class OffloadStats:
    """Modeled FPGA work: calls, total modeled time, kernel-busy time, and time by part (seconds)."""

    calls: int = 0
    modeled_s: float = 0.0
    busy_s: float = 0.0
    parts_s: dict[str, float] = field(default_factory=dict)

    def per_call(self) -> dict[str, float]:
        """Mean modeled seconds per call, total and by part."""
        n = max(self.calls, 1)
        return {"total": self.modeled_s / n, **{k: v / n for k, v in self.parts_s.items()}}


def resolve_spec(spec: str, base: Path | None = None) -> Path:
    """Find a device spec: a name under ``kernels_fpga/specs`` (``u55c``) or a path (relative to ``base``)."""
    candidates = [SPEC_DIR / f"{spec}.yaml"]
    p = Path(spec)
    candidates += [p] if p.is_absolute() else [(base or Path.cwd()) / p, Path.cwd() / p]
    for c in candidates:
        if c.is_file():
            return c
    known = sorted(x.stem for x in SPEC_DIR.glob("*.yaml"))
    raise UsageError(f"FPGA spec '{spec}' not found; use one of {', '.join(known)} or a path to a spec file")


class FpgaDevice:
    """An FPGA device of a suite, in one of three modes.

    Args:
        name: Device name in the suite (``fpga``).
        mode: ``emulated``, ``analytic`` or ``hardware``.
        spec_path: Device spec file (clock, memories, link, power; every value with its source).
        torch_device: The GPU whose timeline an emulated wait stalls.
        wait: ``host`` or ``device`` (emulated mode only; see :class:`bench.timeline.FpgaWait`).
        functional: ``reference`` (PyTorch, exact integers) or ``csim`` (the HLS kernels through g++).
        control: Kernel control mode: ``host-started``, ``auto-restart`` or ``free-running``.
        link: ``p2p`` (peer-to-peer PCIe), ``host`` (staged through host memory), ``network``; None: the spec's.
        clock_mhz: Kernel clock override; the spec's default otherwise.
        xclbin: Hardware mode: the xclbin to load.
        board: Hardware mode: the card's index or PCIe BDF.
    """

    def __init__(self, name: str, mode: str, spec_path: Path, torch_device: torch.device, wait: str = "host",
                 functional: str = "reference", control: str = "host-started", link: str | None = None,
                 clock_mhz: float | None = None, xclbin: str | None = None, board: str = "0") -> None:
        from kernels_fpga.model import FpgaModel
        from kernels_fpga.spec import load_spec

        self.name, self.mode, self.functional = name, mode, functional
        self.xclbin, self.board_id = xclbin, board
        self.board: Any = None
        if mode == "hardware":
            _check_hardware(xclbin)
        self.spec_path = spec_path
        self.spec = load_spec(spec_path)
        self.model = FpgaModel(self.spec, clock_hz=clock_mhz * 1e6 if clock_mhz else None, control=control,
                               link=link)
        self.control, self.wait_where = control, wait
        self.link = link or self.spec.default_link
        self.waiter = FpgaWait(torch_device, wait) if mode == "emulated" else None
        self._tape: list[tuple[Selection, float, float, dict[str, float]]] = []
        self._cursor = 0
        self._recording = True
        self.recall_sum, self.recall_n = 0.0, 0
        #: While a replay plan is captured, modeled waits collect here instead of stalling.
        self.deferred: list[float] | None = None

    def record(self) -> None:
        """Start a functional pass: evaluate offloads with FPGA numerics and tape their results."""
        self._tape.clear()
        self._recording = True
        self.recall_sum, self.recall_n = 0.0, 0

    def replay(self) -> None:
        """Start (or restart) replaying the taped iteration; called at the start of every iteration."""
        if self._recording and not self._tape:
            raise RuntimeError("replay() before a functional pass recorded any offload")
        self._recording = False
        self._cursor = 0

    def tape_stats(self) -> OffloadStats:
        """What the FPGA does in one replayed iteration: calls, modeled time, busy time and its parts.

        Every iteration replays the same tape, so a window of n iterations costs n times this.
        """
        stats = OffloadStats()
        for _, total, busy, parts in self._tape:
            stats.calls += 1
            stats.modeled_s += total
            stats.busy_s += busy
            for k, v in parts.items():
                stats.parts_s[k] = stats.parts_s.get(k, 0.0) + v
        return stats

    @property
    def recall(self) -> float | None:
        """Mean top-k recall of the FPGA numerics against the GPU's selection over the functional pass."""
        return self.recall_sum / self.recall_n if self.recall_n else None

    def offload(self, make_call: Callable[[], FpgaCall], gpu_selection: Callable[[], Selection],
                recall: Callable[[Selection, Selection], float]) -> Selection:
        """Run the fused offloaded steps: evaluate and tape them, or replay the tape and stall the timeline."""
        if self.mode == "hardware":
            call = make_call()
            if call.hardware is None:
                raise DeviceUnavailableError(f"{call.kernel}: this method has no host code for a real board yet; "
                                             "use mode: emulated")
            if self.board is None:
                from kernels_fpga.host import FpgaBoard

                device: int | str = int(self.board_id) if self.board_id.isdigit() else self.board_id
                self.board = FpgaBoard.open(device, str(self.xclbin), kernels=(call.kernel,))
            return call.hardware(self.board)
        if not self._recording:
            sel, total, _, _ = self._tape[self._cursor]
            self._cursor = (self._cursor + 1) % len(self._tape)
            if self.deferred is not None:
                self.deferred.append(total)  # being captured: the replay plan will wait instead
            elif self.waiter is not None:
                self.waiter.wait(total)
            return sel
        call = make_call()
        sel = call.csim() if self.functional == "csim" else call.reference()
        self.recall_sum += recall(sel, gpu_selection())
        self.recall_n += 1
        total, busy, parts = self.modeled_time(call)
        self._tape.append((sel, total, busy, parts))
        return sel

    def modeled_time(self, call: FpgaCall) -> tuple[float, float, dict[str, float]]:
        """Modeled (total seconds, kernel-busy seconds, parts) of one offload, appended keys included."""
        kernel = getattr(self.model, call.kernel)(**call.shape)
        off = self.model.offload(kernel, call.bytes_in, call.bytes_out)
        parts = dict(off.parts)
        parts["append"] = self.model.transfer(call.bytes_append, "to_fpga") if call.bytes_append else 0.0
        return off.total_s + parts["append"], off.busy_s, parts

    def meter(self) -> Any:
        """The FPGA scope's meter: the sampled board sensor (hardware), else the spec's power model.

        The modeled meter charges static power for its whole window and dynamic power for the busy time
        the caller reports (:meth:`ModeledPowerMeter.add_busy`); its readings are labelled ``analytic``.
        """
        from bench.meters import ModeledPowerMeter, XrtPowerMeter

        if self.mode == "hardware":
            return XrtPowerMeter(lambda: self.board.board_power_w() if self.board is not None else None,
                                 device=f"FPGA board {self.board_id}")
        return ModeledPowerMeter(static_w=self.model.static_power_w, dynamic_w=self.model.dynamic_power_w,
                                 source=f"{self.spec_path.name}: power.static, and power.logic_dynamic + HBM "
                                        "rise at the kernel clock (kernels_fpga/model.py)")

    def describe(self) -> dict[str, Any]:
        """Provenance: mode, spec file and its hash, model settings."""
        return {
            "name": self.name,
            "mode": self.mode,
            "spec": str(self.spec_path),
            "spec_sha256": hashlib.sha256(self.spec_path.read_bytes()).hexdigest(),
            "part": self.spec.value("part") if self.spec.has("part") else None,
            "clock_hz": self.model.clock_hz,
            "control": self.control,
            "link": self.link,
            "wait": self.wait_where if self.mode == "emulated" else None,
            "functional": self.functional,
            "static_power_w": self.model.static_power_w,
            "dynamic_power_w": self.model.dynamic_power_w,
            "energy_method": "xrt_sensor (board power sampled and integrated)" if self.mode == "hardware"
            else "modeled (static x wall time + dynamic x busy time)",
            **({"xclbin": self.xclbin, "xclbin_sha256": hashlib.sha256(Path(self.xclbin).read_bytes()).hexdigest(),
                "board": self.board.provenance() if self.board is not None else {"id": self.board_id}}
               if self.mode == "hardware" and self.xclbin else {}),
        }


def _check_hardware(xclbin: str | None) -> None:
    """Fail early, saying what is missing, when hardware mode cannot start here."""
    from kernels_fpga.host import import_pyxrt

    import_pyxrt()  # raises DeviceUnavailableError naming XRT's setup script
    if not xclbin:
        raise UsageError("FPGA mode 'hardware' needs devices.<fpga>.xclbin: the xclbin built for the card "
                         "(see docs/fpga_hardware.md)")
    if not Path(xclbin).is_file():
        raise DeviceUnavailableError(f"xclbin not found: {xclbin} (see docs/fpga_hardware.md for the v++ build)")
