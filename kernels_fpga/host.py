"""pyxrt host code for a real Alveo board: load an xclbin, keep keys resident, run the relevancy kernel.

``pyxrt`` (XRT's Python bindings) is imported lazily, inside :meth:`FpgaBoard.open`, so this module
imports on machines without XRT. Supported XRT: 2.13 to 2.23. On 2.16+ (``pyxrt.hw_context`` present)
the xclbin is registered and a hardware context created (``register_xclbin`` + ``hw_context(device,
uuid)`` + ``kernel(context, name)``); on older XRT it is loaded with ``device.load_xclbin`` and the kernel
opened with ``pyxrt.kernel(device, uuid, name, pyxrt.kernel.shared)``.

Keys stay resident in FPGA HBM: :meth:`FpgaBoard.load_keys` writes and syncs them once,
:meth:`FpgaBoard.append_key` syncs only the new key's bytes, and :meth:`FpgaBoard.run_relevancy_topk`
syncs only the query in and only the indices and scores out (measurement.md §10; hardware.md rules of
thumb).

The relevancy kernel is ``relevancy_topk`` of ``kernels_fpga/hls/relevancy_topk.cpp``; arguments
(:data:`RELEVANCY_ARGS`): ``q, keys, out_index, out_score, rows, n_keys, k, bram_keys, uram_keys`` and,
when the xclbin's kernel has a tenth argument, ``key_stride`` (keys per row in the buffer). Without
``key_stride`` the kernel reads row ``r`` at ``r * n_keys`` keys, so keys cannot grow in place:
:meth:`FpgaBoard.append_key` then refuses and ``n_keys`` must equal the loaded count.

Every time this module reports is **measured** (``time.perf_counter`` around each call).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError, DeviceUnavailableError, UsageError

RELEVANCY = "relevancy_topk"
#: Argument positions of ``relevancy_topk`` (kernels_fpga/hls/relevancy_topk.cpp); ``key_stride`` optional.
RELEVANCY_ARGS = {"q": 0, "keys": 1, "out_index": 2, "out_score": 3, "rows": 4, "n_keys": 5, "k": 6,
                  "bram_keys": 7, "uram_keys": 8, "key_stride": 9}
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_BUILD_HINT = ("build it with v++ (docs/fpga_hardware.md: `v++ -c -t hw --platform "
               "xilinx_u55c_gen3x16_xdma_3_202210_1 -k relevancy_topk ...`, then `v++ -l --config "
               "kernels_fpga/hls/connectivity_u55c.cfg ...`)")
# Rails the card's management controller sums into board power (measurement.md §4).
_BOARD_RAILS = ("12v_pex", "12v_aux", "3v3_pex")


class FpgaRunError(BenchError):
    """A kernel run on the board did not complete; the message carries the XRT command state."""


def import_pyxrt() -> Any:
    """Import XRT's ``pyxrt`` module.

    Raises:
        DeviceUnavailableError: pyxrt is not importable; the message says where it comes from.
    """
    try:
        return importlib.import_module("pyxrt")
    except ImportError:
        raise DeviceUnavailableError(
            "pyxrt (XRT's Python bindings) is not importable. It ships with XRT, not PyPI (PyPI 'xrt' is an "
            "unrelated package): install XRT 2.13-2.23 and run `source /opt/xilinx/xrt/setup.sh`, which puts "
            "pyxrt on PYTHONPATH; or use mode: emulated (csim) / analytic (model) without a board."
        ) from None


class FpgaBoard:
    """One Alveo card with an xclbin loaded. Create it with :meth:`open`; use as a context manager.

    Attributes:
        xclbin_path: The xclbin that was loaded.
        uses_hw_context: True when opened through ``pyxrt.hw_context`` (XRT 2.16+).
        dim: Key dimension the kernels were built for (``BENCH_D``).
        k_max: Top-k registers of the kernel (``BENCH_K_MAX``); the output buffers hold this many per row.
        last_timings: Measured seconds of the last run's steps: ``sync_in``, ``kernel``, ``sync_out``.
    """

    def __init__(self, pyxrt: Any, device: Any, xclbin: Any, uuid: Any, context: Any | None,
                 kernels: dict[str, Any], num_args: dict[str, int | None], xclbin_path: Path, dim: int,
                 k_max: int, tier_keys: tuple[int, int], sysfs_root: Path) -> None:
        self._xrt = pyxrt
        self._device = device
        self._xclbin = xclbin
        self._uuid = uuid
        self._context = context
        self._kernels = kernels
        self._num_args = num_args
        self.xclbin_path = xclbin_path
        self.uses_hw_context = context is not None
        self.dim = dim
        self.k_max = k_max
        self._tier_keys = tier_keys
        self._sysfs_root = sysfs_root
        self._keys_bo: Any = None
        self._q_bo: Any = None
        self._idx_bo: Any = None
        self._score_bo: Any = None
        self._rows = 0
        self._capacity = 0
        self._n: list[int] = []
        self.last_timings: dict[str, float] = {}

    @classmethod
    def open(cls, device: int | str, xclbin: str | Path, kernels: Sequence[str] = (RELEVANCY,), *,
             dim: int = 128, k_max: int = 64, tier_keys: tuple[int, int] = (16384, 32768),
             sysfs_root: str | Path = "/sys") -> FpgaBoard:
        """Open a card, load an xclbin and open its kernels.

        Args:
            device: Device index, or PCIe BDF string (``"0000:81:00.1"``).
            xclbin: Path of the xclbin built for this card.
            kernels: Kernel names to open (as in ``kernels_fpga/hls``).
            dim: ``BENCH_D`` the xclbin was built with.
            k_max: ``BENCH_K_MAX`` the xclbin was built with.
            tier_keys: (``BENCH_BRAM_KEYS``, ``BENCH_URAM_KEYS``): on-chip key capacity, chip total.
            sysfs_root: Root of sysfs, for the hwmon power fallback.

        Raises:
            DeviceUnavailableError: No pyxrt, no xclbin file, no such device, or the xclbin does not load
                or lacks a requested kernel.
        """
        pyxrt = import_pyxrt()
        path = Path(xclbin)
        if not path.is_file():
            raise DeviceUnavailableError(f"xclbin not found: {path}; {_BUILD_HINT}")
        try:
            dev = pyxrt.device(device)
        except RuntimeError as exc:
            raise DeviceUnavailableError(f"no FPGA at device {device!r} ({exc}); check `xbutil examine` "
                                         "(`xrt-smi examine` on XRT 2.17+) for the card's BDF") from None
        try:
            xb = pyxrt.xclbin(str(path))
            in_file = {xk.get_name(): xk for xk in xb.get_kernels()}
            missing = [name for name in kernels if name not in in_file]
            if missing:
                raise DeviceUnavailableError(f"{path.name} has no kernel {', '.join(missing)} (it has "
                                             f"{', '.join(sorted(in_file)) or 'none'}); {_BUILD_HINT}")
            if hasattr(pyxrt, "hw_context") and hasattr(dev, "register_xclbin"):
                uuid = dev.register_xclbin(xb)
                context = pyxrt.hw_context(dev, uuid)
                opened = {name: pyxrt.kernel(context, name) for name in kernels}
            else:
                uuid = dev.load_xclbin(xb)
                context = None
                opened = {name: pyxrt.kernel(dev, uuid, name, pyxrt.kernel.shared) for name in kernels}
        except RuntimeError as exc:
            raise DeviceUnavailableError(f"could not load {path} on device {device!r}: {exc}") from None
        num_args = {name: _num_args(in_file[name]) for name in kernels}
        return cls(pyxrt, dev, xb, uuid, context, opened, num_args, path, dim, k_max, tuple(tier_keys),
                   Path(sysfs_root))

    # ---- keys --------------------------------------------------------------------------------------

    @property
    def has_key_stride(self) -> bool:
        """Whether the xclbin's relevancy kernel takes ``key_stride`` (keys can grow in place)."""
        return (self._num_args.get(RELEVANCY) or 0) > RELEVANCY_ARGS["key_stride"]

    def load_keys(self, rows: int, keys_int16: np.ndarray, capacity: int | None = None) -> None:
        """Allocate the kernel's buffers and write + sync all keys to HBM once.

        Args:
            rows: Rows (batch x kv-heads).
            keys_int16: int16 [rows, n, dim] keys.
            capacity: Keys per row the buffer holds (>= n) so :meth:`append_key` can grow rows in place;
                default n. Needs a kernel with ``key_stride`` when larger than n.

        Raises:
            UsageError: Wrong shape or dtype, capacity below n, or capacity > n without ``key_stride``.
        """
        keys = np.ascontiguousarray(keys_int16)
        if keys.dtype != np.int16 or keys.ndim != 3 or keys.shape[0] != rows or keys.shape[2] != self.dim:
            raise UsageError(f"keys must be int16 [rows={rows}, n, dim={self.dim}], got {keys.dtype} {keys.shape}")
        n = keys.shape[1]
        capacity = n if capacity is None else capacity
        if capacity < max(n, 1):
            raise UsageError(f"capacity {capacity} must be >= the {n} keys loaded per row (and >= 1)")
        if capacity > n and not self.has_key_stride:
            raise UsageError(f"{self.xclbin_path.name}'s relevancy_topk has no key_stride argument, so rows "
                             "cannot grow in place; load with capacity=None or rebuild the kernel with key_stride")
        kernel = self._kernels[RELEVANCY]
        key_bytes = self.dim * 2
        self._keys_bo = self._bo(rows * capacity * key_bytes, kernel, RELEVANCY_ARGS["keys"])
        self._q_bo = self._bo(rows * key_bytes, kernel, RELEVANCY_ARGS["q"])
        self._idx_bo = self._bo(rows * self.k_max * 4, kernel, RELEVANCY_ARGS["out_index"])
        self._score_bo = self._bo(rows * self.k_max * 8, kernel, RELEVANCY_ARGS["out_score"])
        staged = np.zeros((rows, capacity, self.dim), dtype=np.int16)
        staged[:, :n] = keys
        self._keys_bo.write(staged, 0)
        self._keys_bo.sync(self._xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE, staged.nbytes, 0)
        self._rows, self._capacity, self._n = rows, capacity, [n] * rows

    def append_key(self, row: int, key: np.ndarray) -> None:
        """Write one new key at the end of ``row`` and sync only its bytes.

        Args:
            row: Row index.
            key: int16 [dim] key.

        Raises:
            UsageError: No keys loaded, bad row, bad key, or the row is at capacity.
        """
        self._require_keys()
        if not 0 <= row < self._rows:
            raise UsageError(f"row {row} is outside 0..{self._rows - 1}")
        vec = np.ascontiguousarray(key)
        if vec.dtype != np.int16 or vec.shape != (self.dim,):
            raise UsageError(f"key must be int16 [{self.dim}], got {vec.dtype} {vec.shape}")
        if self._n[row] >= self._capacity:
            raise UsageError(f"row {row} is full ({self._capacity} keys); load_keys with a larger capacity")
        offset = (row * self._capacity + self._n[row]) * vec.nbytes
        self._keys_bo.write(vec, offset)
        self._keys_bo.sync(self._xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE, vec.nbytes, offset)
        self._n[row] += 1

    def keys_per_row(self) -> list[int]:
        """Keys currently resident in each row."""
        return list(self._n)

    # ---- runs --------------------------------------------------------------------------------------

    def run_relevancy_topk(self, q_int16: np.ndarray, n_keys: int, k: int,
                           timeout_ms: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
        """Score the first ``n_keys`` resident keys of every row against its query and return the top-k.

        Writes and syncs only the query buffer, runs the kernel, waits, and syncs and reads back only
        ``rows * k`` indices and scores. Rows come back sorted by (score desc, index asc), as
        ``kernels_fpga.csim`` returns them, so results compare bit for bit.

        Args:
            q_int16: int16 [rows, dim] queries.
            n_keys: Keys per row to score (<= the keys resident in every row).
            k: Keys to select (1..k_max).
            timeout_ms: How long to wait for the kernel.

        Returns:
            (index int32 [rows, k], score int64 [rows, k]); slots past the candidates hold -1 / INT64_MIN.

        Raises:
            UsageError: Bad query, n_keys or k.
            FpgaRunError: The run ended in a state other than COMPLETED.
        """
        self._require_keys()
        q = np.ascontiguousarray(q_int16)
        if q.dtype != np.int16 or q.shape != (self._rows, self.dim):
            raise UsageError(f"q must be int16 [{self._rows}, {self.dim}], got {q.dtype} {q.shape}")
        if not 1 <= k <= self.k_max:
            raise UsageError(f"k must be in 1..{self.k_max} (the kernel's top-k registers), got {k}")
        if not 0 <= n_keys <= min(self._n):
            raise UsageError(f"n_keys must be in 0..{min(self._n)} (keys resident in every row), got {n_keys}")
        if not self.has_key_stride and n_keys != self._capacity:
            raise UsageError(f"this relevancy_topk has no key_stride argument: n_keys must equal the "
                             f"{self._capacity} keys per row loaded")
        sync = self._xrt.xclBOSyncDirection
        t0 = time.perf_counter()
        self._q_bo.write(q, 0)
        self._q_bo.sync(sync.XCL_BO_SYNC_BO_TO_DEVICE, q.nbytes, 0)
        t1 = time.perf_counter()
        bram, uram = (cap // self._rows for cap in self._tier_keys)
        args: list[Any] = [self._q_bo, self._keys_bo, self._idx_bo, self._score_bo, self._rows, n_keys, k, bram,
                           uram]
        if self.has_key_stride:
            args.append(self._capacity)
        self.run_kernel(RELEVANCY, args, timeout_ms)
        t2 = time.perf_counter()
        n_idx, n_score = self._rows * k * 4, self._rows * k * 8
        self._idx_bo.sync(sync.XCL_BO_SYNC_BO_FROM_DEVICE, n_idx, 0)
        self._score_bo.sync(sync.XCL_BO_SYNC_BO_FROM_DEVICE, n_score, 0)
        index = np.frombuffer(bytes(self._idx_bo.read(n_idx, 0)), dtype=np.int32).reshape(self._rows, k)
        score = np.frombuffer(bytes(self._score_bo.read(n_score, 0)), dtype=np.int64).reshape(self._rows, k)
        t3 = time.perf_counter()
        self.last_timings = {"sync_in": t1 - t0, "kernel": t2 - t1, "sync_out": t3 - t2}
        return sort_topk(index, score)

    def run_kernel(self, name: str, args: Sequence[Any], timeout_ms: int = 10_000) -> None:
        """Run one kernel with positional arguments and wait for it.

        Arguments are buffer objects, Python ints that fit a C ``int`` (passed as scalars), or numpy
        scalars (``np.int64(...)``, ``np.float32(...)``), which go through a small buffer on the
        argument's memory bank: pyxrt silently drops scalars that do not fit a C ``int`` (measurement.md
        §10), so the kernel must take those as pointers.

        Args:
            name: An opened kernel.
            args: Its arguments in order.
            timeout_ms: How long to wait.

        Raises:
            UsageError: An int outside the C int range, or an unknown kernel.
            FpgaRunError: The run ended in a state other than COMPLETED.
        """
        if name not in self._kernels:
            raise UsageError(f"kernel {name!r} was not opened; opened: {', '.join(self._kernels)}")
        kernel = self._kernels[name]
        run = self._xrt.run(kernel)
        keep = []  # scalar buffers must outlive the run
        for i, arg in enumerate(args):
            if isinstance(arg, np.generic):
                bo = self._bo(arg.nbytes, kernel, i)
                bo.write(np.atleast_1d(arg), 0)
                bo.sync(self._xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE, arg.nbytes, 0)
                keep.append(bo)
                run.set_arg(i, bo)
            elif isinstance(arg, (int, np.integer)) and not isinstance(arg, bool):
                if not _INT32_MIN <= int(arg) <= _INT32_MAX:
                    raise UsageError(f"{name} argument {i} = {arg} does not fit a C int; pyxrt would drop it. "
                                     "Pass it as a numpy scalar (e.g. np.int64(v)) to a pointer argument")
                run.set_arg(i, int(arg))
            else:
                run.set_arg(i, arg)
        run.start()
        state = run.wait(timeout_ms)
        completed = self._xrt.ert_cmd_state.ERT_CMD_STATE_COMPLETED
        if state != completed:
            label = getattr(state, "name", str(state))
            raise FpgaRunError(f"{name} on {self.xclbin_path.name} ended in state {label}, not "
                               f"ERT_CMD_STATE_COMPLETED (timeout {timeout_ms} ms); check `dmesg` and "
                               "`xbutil examine -r dynamic-regions`")

    # ---- power and provenance ----------------------------------------------------------------------

    def board_power_w(self) -> float | None:
        """Board power in W: XRT's electrical report, else hwmon ``power1_input``; None when neither reads.

        The card refreshes its sensors about once a second (hardware.md §1); sample over windows >= 1 s.
        """
        try:
            text = self._device.get_info(self._xrt.xrt_info_device.electrical)
        except RuntimeError:
            text = ""
        watts = parse_electrical_power_w(text)
        if watts is not None:
            return watts
        return hwmon_power_w(self._bdf(), self._sysfs_root)

    def provenance(self) -> dict[str, Any]:
        """What ran where: card, BDF, platform (shell), xclbin path, SHA-256 and UUID, XRT version, API."""
        return {
            "backend": "xrt",
            "device": self._info("name"),
            "bdf": self._bdf(),
            "platform": _find_key(_json_or_none(self._info("platform")), "vbnv") or self._xsa_name(),
            "xclbin": str(self.xclbin_path),
            "xclbin_sha256": hashlib.sha256(self.xclbin_path.read_bytes()).hexdigest(),
            "xclbin_uuid": self._uuid.to_string(),
            "xrt_version": xrt_version(_json_or_none(self._info("host"))),
            "pyxrt_api": "hw_context" if self.uses_hw_context else "load_xclbin",
            "kernels": sorted(self._kernels),
            "key_stride": self.has_key_stride,
        }

    def close(self) -> None:
        """Release buffers, kernels and the hardware context (the xclbin stays on the card)."""
        self._keys_bo = self._q_bo = self._idx_bo = self._score_bo = None
        self._kernels = {}
        self._context = None

    def __enter__(self) -> FpgaBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- helpers -----------------------------------------------------------------------------------

    def _bo(self, nbytes: int, kernel: Any, arg: int) -> Any:
        """A normal buffer on the memory bank the linker gave kernel argument ``arg``."""
        try:
            return self._xrt.bo(self._device, nbytes, self._xrt.bo.normal, kernel.group_id(arg))
        except (RuntimeError, IndexError) as exc:
            raise DeviceUnavailableError(f"could not allocate {nbytes} B for kernel argument {arg}: {exc}") from None

    def _require_keys(self) -> None:
        if self._keys_bo is None:
            raise UsageError("no keys on the board: call load_keys(rows, keys) first")

    def _info(self, key: str) -> str:
        try:
            return self._device.get_info(getattr(self._xrt.xrt_info_device, key))
        except (RuntimeError, AttributeError):
            return ""

    def _bdf(self) -> str:
        return self._info("bdf")

    def _xsa_name(self) -> str | None:
        try:
            return self._xclbin.get_xsa_name()
        except (RuntimeError, AttributeError):
            return None


def sort_topk(index: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by (score desc, index asc); empty slots (-1, INT64_MIN) go last.

    Args:
        index: int32 [rows, k] indices in the kernel's slot order.
        score: int64 [rows, k] scores.
    """
    # ~score reverses int64 order without overflowing at INT64_MIN.
    order = np.lexsort((index, ~score), axis=-1)
    return np.take_along_axis(index, order, -1), np.take_along_axis(score, order, -1)


def parse_electrical_power_w(text: str) -> float | None:
    """Board power in W from XRT's electrical JSON (``device.get_info(electrical)``, every value a string).

    Uses ``power_consumption_watts``; when that is missing or "N/A", sums voltage x current of the
    12 V PEX, 12 V AUX and 3.3 V PEX rails if all three are present. None when neither is readable.

    Args:
        text: The JSON text.
    """
    data = _json_or_none(text)
    if data is None:
        return None
    watts = _to_float(_find_key(data, "power_consumption_watts"))
    if watts is not None:
        return watts
    rails = _find_key(data, "power_rails")
    if not isinstance(rails, list):
        return None
    total = 0.0
    for rail_id in _BOARD_RAILS:
        rail = next((r for r in rails if isinstance(r, dict) and r.get("id") == rail_id), None)
        if rail is None:
            return None
        volts = _to_float(_present(rail.get("voltage"), "volts"))
        amps = _to_float(_present(rail.get("current"), "amps"))
        if volts is None or amps is None:
            return None
        total += volts * amps
    return total


def hwmon_power_w(bdf: str, sysfs_root: str | Path = "/sys") -> float | None:
    """Board power in W from ``/sys/bus/pci/devices/<BDF>/hwmon/hwmon*/power1_input`` (microwatts).

    Args:
        bdf: PCIe address of the card's user function (``0000:81:00.1``); a short ``81:00.1`` gets the
            ``0000:`` domain.
        sysfs_root: sysfs mount point (a temp dir in tests).
    """
    if not bdf:
        return None
    full = bdf if bdf.count(":") == 2 else f"0000:{bdf}"
    base = Path(sysfs_root) / "bus" / "pci" / "devices" / full / "hwmon"
    for path in sorted(base.glob("hwmon*/power1_input")):
        try:
            microwatts = float(path.read_text().strip())
        except (OSError, ValueError):
            continue
        if math.isfinite(microwatts) and microwatts >= 0:
            return microwatts / 1e6
    return None


def xrt_version(host_info: Any = None, xrt_root: str | Path | None = None) -> str:
    """XRT version: from the device's ``host`` info JSON, else ``$XILINX_XRT/version.json``, else "unknown".

    Args:
        host_info: Parsed ``device.get_info(xrt_info_device.host)`` JSON, if any.
        xrt_root: XRT install folder; default ``$XILINX_XRT`` or /opt/xilinx/xrt.
    """
    found = _find_key(host_info, "version") if host_info is not None else None
    if isinstance(found, str) and found:
        return found
    root = Path(xrt_root or os.environ.get("XILINX_XRT", "/opt/xilinx/xrt"))
    data = _json_or_none(_read_text(root / "version.json"))
    version = _find_key(data, "BUILD_VERSION") if data is not None else None
    return version if isinstance(version, str) and version else "unknown"


def _num_args(xclbin_kernel: Any) -> int | None:
    try:
        return int(xclbin_kernel.get_num_args())
    except (AttributeError, RuntimeError):
        return None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def _json_or_none(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _find_key(node: Any, key: str) -> Any:
    """First value stored under ``key`` anywhere in a parsed JSON tree (XRT nests reports differently)."""
    return next((value for k, value in _walk(node) if k == key), None)


def _present(node: Any, key: str) -> Any:
    if not isinstance(node, dict) or str(node.get("is_present", "true")).lower() != "true":
        return None
    return node.get(key)


def _to_float(value: Any) -> float | None:
    """XRT reports numbers as strings and missing sensors as "N/A"."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None
