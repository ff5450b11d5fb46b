"""pyxrt host code for a real Alveo board: load an xclbin, keep keys and the BM25 index resident, run kernels.

``pyxrt`` (XRT's Python bindings) is imported lazily, inside :meth:`FpgaBoard.open`, so this module
imports on machines without XRT. Supported XRT: 2.13 to 2.23. On 2.16+ (``pyxrt.hw_context`` present)
the xclbin is registered and a hardware context created (``register_xclbin`` + ``hw_context(device,
uuid)`` + ``kernel(context, name)``); on older XRT it is loaded with ``device.load_xclbin`` and the kernel
opened with ``pyxrt.kernel(device, uuid, name, pyxrt.kernel.shared)``.

The kernels are those of ``kernels_fpga/hls``; argument positions come from
:data:`kernels_fpga.interface.KERNELS` and buffer layouts from :mod:`kernels_fpga.layout`, the same
modules the C-simulation uses. Every buffer is allocated on its argument's memory bank
(``kernel.group_id``, set by ``hls/connectivity_u55c.cfg``): one bank per key port, one per BM25 channel.

* **Keys** (``relevancy_topk``, ``threshold_select``; they share the key banks and so the key buffers):
  :meth:`FpgaBoard.load_keys` stripes a *key set* (one layer's keys, say; key sets sit side by side in HBM)
  over the 8 key-port buffers with a row stride (capacity) and syncs each once; :meth:`FpgaBoard.append_key`
  writes and syncs only the new key's bytes on its one port; a run writes and syncs only the query (and the
  threshold's one-element buffer), passes the row stride and ``sync_from`` (the first key the kernel must
  copy into its on-chip tiers: 0 after a load or after a run on another key set, the old count after
  appends), and reads back only the results.
* **BM25** (``bm25_topk``): :meth:`FpgaBoard.load_bm25_corpus` writes the 4 channel buffers once,
  :meth:`FpgaBoard.load_bm25_idf` loads the IDF table on chip with one ``load_idf = 1`` call, and
  :meth:`FpgaBoard.run_bm25_topk` writes only the 8 KB query bitmap.

Every time this module reports is **measured** (``time.perf_counter`` around each step).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError, DeviceUnavailableError, UsageError
from kernels_fpga.interface import KERNELS, arg_index
from kernels_fpga.layout import Stripes, bm25_channels, pack_query_bitmap
from kernels_fpga.params import KernelParams, kernel_params
from kernels_fpga.reference import bm25_query_mask

RELEVANCY = "relevancy_topk"
THRESHOLD = "threshold_select"
BM25 = "bm25_topk"
KEY_KERNELS = (RELEVANCY, THRESHOLD)
"""Kernels that read the resident key buffers (keys0..keys7 on the same banks)."""
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


@dataclass
class _KeySet:
    """One resident key set: striping, rows, keys per row, the key kernels given its buffers, its source."""

    stripes: Stripes
    rows: int
    n: list[int]
    kernels: tuple[str, ...]
    source: object | None = None


def _set_prefix(key_set: int) -> str:
    return f"set{key_set}."


class FpgaBoard:
    """One Alveo card with an xclbin loaded. Create it with :meth:`open`; use as a context manager.

    Attributes:
        xclbin_path: The xclbin that was loaded.
        uses_hw_context: True when opened through ``pyxrt.hw_context`` (XRT 2.16+).
        params: Compile-time parameters the xclbin was built with (:mod:`kernels_fpga.params`).
        last_timings: Measured seconds of the last run's steps: ``sync_in``, ``kernel``, ``sync_out``.
        bm25_source: What the resident BM25 corpus was loaded from (the ``source`` given to
            :meth:`load_bm25_corpus`), so callers load a corpus once per board.
    """

    def __init__(self, pyxrt: Any, device: Any, xclbin: Any, uuid: Any, context: Any | None,
                 kernels: dict[str, Any], xclbin_path: Path, params: KernelParams, sysfs_root: Path) -> None:
        self._xrt = pyxrt
        self._device = device
        self._xclbin = xclbin
        self._uuid = uuid
        self._context = context
        self._kernels = kernels
        self.xclbin_path = xclbin_path
        self.uses_hw_context = context is not None
        self.params = params
        self._sysfs_root = sysfs_root
        self._bos: dict[str, Any] = {}
        self._key_sets: dict[int, _KeySet] = {}
        # Per key kernel: (the key set its on-chip tiers hold, how many of that set's keys per row are there).
        self._on_chip: dict[str, tuple[int, int]] = {}
        self._n_docs = -1
        self._idf_loaded = False
        self.last_timings: dict[str, float] = {}
        self.bm25_source: object | None = None

    @classmethod
    def open(cls, device: int | str, xclbin: str | Path, kernels: Sequence[str] = (RELEVANCY,), *,
             params: KernelParams | None = None, sysfs_root: str | Path = "/sys") -> FpgaBoard:
        """Open a card, load an xclbin and open its kernels.

        Args:
            device: Device index, or PCIe BDF string (``"0000:81:00.1"``).
            xclbin: Path of the xclbin built for this card.
            kernels: Kernel names to open (as in ``kernels_fpga/hls``).
            params: Compile-time parameters the xclbin was built with; default the header defaults
                (:func:`kernels_fpga.params.kernel_params`). Pass the same ``-D`` overrides as the build.
            sysfs_root: Root of sysfs, for the hwmon power fallback.

        Raises:
            DeviceUnavailableError: No pyxrt, no xclbin file, no such device, or the xclbin does not load,
                lacks a requested kernel, or has a kernel whose argument count differs from the source's
                (an xclbin built from other sources).
        """
        unknown = [name for name in kernels if name not in KERNELS]
        if unknown:
            raise UsageError(f"unknown kernel {', '.join(unknown)}; kernels: {', '.join(KERNELS)}")
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
            for name in kernels:
                count = _num_args(in_file[name])
                if count is not None and count != len(KERNELS[name]):
                    raise DeviceUnavailableError(
                        f"{path.name}'s {name} takes {count} arguments but kernels_fpga/hls/{name}.cpp declares "
                        f"{len(KERNELS[name])}: the xclbin was built from other sources; rebuild it ({_BUILD_HINT})")
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
        return cls(pyxrt, dev, xb, uuid, context, opened, path, params or kernel_params(), Path(sysfs_root))

    # ---- keys --------------------------------------------------------------------------------------

    def load_keys(self, rows: int, keys_int16: np.ndarray, capacity: int | None = None, key_set: int = 0,
                  source: object | None = None) -> None:
        """Allocate a key set's buffers, stripe the keys over the 8 key ports and sync each port once.

        A key set is one resident set of keys (one layer's gate keys, say); sets live side by side in HBM,
        each with its own buffers, and a run names the set it scores. The kernels' on-chip tiers hold one set
        at a time: a run on another set than the last copies its keys on chip again (``sync_from`` 0).

        Args:
            rows: Rows (batch x kv-heads), >= 1.
            keys_int16: int16 [rows, n, dim] keys.
            capacity: Keys per row the buffers hold (the kernels' row stride, >= n and >= 1), so
                :meth:`append_key` grows rows in place; default n.
            key_set: Which key set this is (>= 0); loading a set again replaces it.
            source: Kept as the set's :meth:`key_set_source` (what the keys were loaded from), so a caller
                loads each key set once per board.

        Raises:
            UsageError: No key kernel opened, wrong shape or dtype, capacity below n, or a negative key set.
            DeviceUnavailableError: The key kernels' key ports sit on different banks (fix the .cfg).
        """
        opened = [name for name in KEY_KERNELS if name in self._kernels]
        if not opened:
            raise UsageError(f"open the board with one of {', '.join(KEY_KERNELS)} to load keys")
        if isinstance(key_set, bool) or not isinstance(key_set, int) or key_set < 0:
            raise UsageError(f"key_set must be an integer >= 0, got {key_set!r}")
        dim = self.params.d
        keys = np.ascontiguousarray(keys_int16)
        if rows < 1 or keys.dtype != np.int16 or keys.ndim != 3 or keys.shape[0] != rows or keys.shape[2] != dim:
            raise UsageError(f"keys must be int16 [rows={rows} >= 1, n, dim={dim}], got {keys.dtype} {keys.shape}")
        n = keys.shape[1]
        capacity = n if capacity is None else capacity
        if capacity < max(n, 1) or capacity > self.params["BENCH_MAX_KEYS"]:
            raise UsageError(f"capacity {capacity} must be >= the {n} keys loaded per row, >= 1 and <= "
                             f"BENCH_MAX_KEYS = {self.params['BENCH_MAX_KEYS']}")
        self._check_shared_key_banks(opened)
        home = self._kernels[opened[0]]
        stripes = Stripes(self.params.n_pe, self.params.stripe(1), capacity)
        self._drop(_set_prefix(key_set))
        ports = stripes.split(keys)
        for p, port in enumerate(ports):
            bo = self._alloc(f"{_set_prefix(key_set)}keys{p}", port.nbytes, home, arg_index(opened[0], f"keys{p}"))
            bo.write(port, 0)
            bo.sync(self._to_device, port.nbytes, 0)
        self._alloc(f"{_set_prefix(key_set)}q", rows * dim * 2, home, arg_index(opened[0], "q"))
        words = -(-capacity // 64)
        k_max = self.params.k_max
        outputs = {RELEVANCY: (("out_index", rows * k_max * 4), ("out_score", rows * k_max * 8)),
                   THRESHOLD: (("threshold", 8), ("out_bitmap", rows * words * 8), ("out_count", rows * 4))}
        for name in opened:
            for arg, nbytes in outputs[name]:
                self._alloc(f"{_set_prefix(key_set)}{name}.{arg}", nbytes, self._kernels[name], arg_index(name, arg))
        self._key_sets[key_set] = _KeySet(stripes, rows, [n] * rows, tuple(opened), source)
        self._forget_on_chip(key_set, 0)  # on-chip tiers holding this set hold its old keys

    def append_key(self, row: int, key: np.ndarray, key_set: int = 0) -> None:
        """Write one new key at the end of ``row`` and sync only its bytes, on the one port that holds it.

        Args:
            row: Row index.
            key: int16 [dim] key.
            key_set: The key set.

        Raises:
            UsageError: No such key set, bad row, bad key, or the row is at capacity.
        """
        ks = self._require_keys(key_set)
        if not 0 <= row < ks.rows:
            raise UsageError(f"row {row} is outside 0..{ks.rows - 1}")
        vec = np.ascontiguousarray(key)
        if vec.dtype != np.int16 or vec.shape != (self.params.d,):
            raise UsageError(f"key must be int16 [{self.params.d}], got {vec.dtype} {vec.shape}")
        index = ks.n[row]
        if index >= ks.stripes.capacity:
            raise UsageError(f"row {row} is full ({ks.stripes.capacity} keys); load_keys with a larger capacity")
        port, entry = ks.stripes.location(row, index)
        offset = entry * vec.nbytes
        bo = self._bos[f"{_set_prefix(key_set)}keys{port}"]
        bo.write(vec, offset)
        bo.sync(self._to_device, vec.nbytes, offset)
        ks.n[row] += 1
        self._forget_on_chip(key_set, index)

    def key_set_source(self, key_set: int) -> object | None:
        """The ``source`` a key set was loaded with; None when the set holds no keys."""
        ks = self._key_sets.get(key_set)
        return None if ks is None else ks.source

    def keys_per_row(self, key_set: int = 0) -> list[int]:
        """Keys currently resident in each row of a key set."""
        return list(self._require_keys(key_set).n)

    def truncate_keys(self, n: int, key_set: int = 0) -> None:
        """Forget every row's keys past the first ``n`` (host bookkeeping only: nothing moves).

        A benchmark that replays the same decode steps rewinds the resident index this way, so the next
        :meth:`append_key` writes at position ``n`` again.
        """
        ks = self._require_keys(key_set)
        if n < 0:
            raise UsageError(f"n must be >= 0, got {n}")
        ks.n = [min(count, n) for count in ks.n]
        self._forget_on_chip(key_set, n)

    # ---- key kernels -------------------------------------------------------------------------------

    def run_relevancy_topk(self, q_int16: np.ndarray, n_keys: int, k: int, timeout_ms: int = 10_000,
                           key_set: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Score the first ``n_keys`` resident keys of every row against its query and return the top-k.

        Writes and syncs only the query buffer, runs the kernel, waits, and syncs and reads back only
        ``rows * k`` indices and scores. Rows come back sorted by (score desc, index asc), as
        ``kernels_fpga.csim`` returns them, so results compare bit for bit.

        Args:
            q_int16: int16 [rows, dim] queries.
            n_keys: Keys per row to score (<= the keys resident in every row).
            k: Keys to select (1..BENCH_K_MAX).
            timeout_ms: How long to wait for the kernel.
            key_set: The key set to score.

        Returns:
            (index int32 [rows, k], score int64 [rows, k]); slots past the candidates hold -1 / INT64_MIN.

        Raises:
            UsageError: Kernel not opened, no keys, bad query, n_keys or k.
            FpgaRunError: The run ended in a state other than COMPLETED.
        """
        if not 1 <= k <= self.params.k_max:
            raise UsageError(f"k must be in 1..{self.params.k_max} (the kernel's top-k registers), got {k}")
        t0 = time.perf_counter()
        ks, sync_from = self._key_run_inputs(RELEVANCY, q_int16, n_keys, key_set)
        t1 = time.perf_counter()
        bram, uram = self._tier_requests(ks)
        pre = _set_prefix(key_set)
        bos = self._bos
        self.run_kernel(RELEVANCY, [bos[f"{pre}q"], *self._key_bos(key_set), bos[f"{pre}{RELEVANCY}.out_index"],
                                    bos[f"{pre}{RELEVANCY}.out_score"], ks.rows, n_keys, ks.stripes.capacity, k,
                                    bram, uram, sync_from], timeout_ms)
        self._on_chip[RELEVANCY] = (key_set, n_keys)
        t2 = time.perf_counter()
        index = self._read(f"{pre}{RELEVANCY}.out_index", np.int32, ks.rows * k).reshape(ks.rows, k)
        score = self._read(f"{pre}{RELEVANCY}.out_score", np.int64, ks.rows * k).reshape(ks.rows, k)
        self.last_timings = {"sync_in": t1 - t0, "kernel": t2 - t1, "sync_out": time.perf_counter() - t2}
        return sort_topk(index, score)

    def run_threshold_select(self, q_int16: np.ndarray, n_keys: int, threshold: int, timeout_ms: int = 10_000,
                             key_set: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Select, per row, the first ``n_keys`` resident keys whose score is >= ``threshold``.

        The int64 threshold goes through its one-element buffer (written and synced, 8 bytes): pyxrt
        cannot pass a scalar that does not fit a C int.

        Args:
            q_int16: int16 [rows, dim] queries.
            n_keys: Keys per row to score (<= the keys resident in every row).
            threshold: int64 threshold in the scores' fixed point.
            timeout_ms: How long to wait for the kernel.
            key_set: The key set to score.

        Returns:
            (bitmap uint64 [rows, ceil(n_keys / 64)], bit b of word w = key 64 w + b; count int32 [rows]).

        Raises:
            UsageError: Kernel not opened, no keys, bad query, n_keys or threshold.
            FpgaRunError: The run ended in a state other than COMPLETED.
        """
        if isinstance(threshold, bool) or not isinstance(threshold, int | np.integer) or \
                not -(2**63) <= int(threshold) < 2**63:
            raise UsageError(f"threshold must be an integer that fits int64, got {threshold!r}")
        t0 = time.perf_counter()
        ks, sync_from = self._key_run_inputs(THRESHOLD, q_int16, n_keys, key_set)
        pre = _set_prefix(key_set)
        limit = np.array([threshold], dtype=np.int64)
        bo = self._bos[f"{pre}{THRESHOLD}.threshold"]
        bo.write(limit, 0)
        bo.sync(self._to_device, limit.nbytes, 0)
        t1 = time.perf_counter()
        bram, uram = self._tier_requests(ks)
        bos = self._bos
        self.run_kernel(THRESHOLD, [bos[f"{pre}q"], bo, *self._key_bos(key_set), bos[f"{pre}{THRESHOLD}.out_bitmap"],
                                    bos[f"{pre}{THRESHOLD}.out_count"], ks.rows, n_keys, ks.stripes.capacity,
                                    bram, uram, sync_from], timeout_ms)
        self._on_chip[THRESHOLD] = (key_set, n_keys)
        t2 = time.perf_counter()
        words = -(-n_keys // 64)
        bitmap = self._read(f"{pre}{THRESHOLD}.out_bitmap", np.uint64, ks.rows * words).reshape(ks.rows, words)
        count = self._read(f"{pre}{THRESHOLD}.out_count", np.int32, ks.rows)
        self.last_timings = {"sync_in": t1 - t0, "kernel": t2 - t1, "sync_out": time.perf_counter() - t2}
        return bitmap, count

    # ---- BM25 --------------------------------------------------------------------------------------

    def load_bm25_corpus(self, doc_ptr: np.ndarray, term_ids: np.ndarray, tfs: np.ndarray,
                         source: object | None = None) -> None:
        """Lay a CSR corpus out over the 4 BM25 channels and sync each channel's buffers once.

        The layout is :func:`kernels_fpga.layout.bm25_channels`: postings placed by lane, documents padded to
        whole beats.

        Args:
            doc_ptr: int [N + 1] offsets: document d owns postings doc_ptr[d]:doc_ptr[d + 1].
            term_ids: int [P] term ids < BENCH_VOCAB.
            tfs: int [P] term frequencies < 65536.
            source: Kept as :attr:`bm25_source` (e.g. the corpus object the arrays came from).

        Raises:
            UsageError: Kernel not opened or a malformed corpus.
        """
        kernel = self._kernel(BM25)
        p = self.params
        try:
            channels = bm25_channels(doc_ptr, term_ids, tfs, p.bm25_channels, p.bm25_lanes, p.vocab)
        except ValueError as exc:
            raise UsageError(f"bad BM25 corpus: {exc}") from None
        self._drop(f"{BM25}.")
        for c, (ptr, postings) in enumerate(channels):
            for name, array in ((f"doc_ptr{c}", ptr), (f"postings{c}", postings)):
                bo = self._alloc(f"{BM25}.{name}", array.nbytes, kernel, arg_index(BM25, name))
                bo.write(array, 0)
                bo.sync(self._to_device, array.nbytes, 0)
        for name, nbytes in (("query_bitmap", p.vocab // 8), ("idf_q16", p.vocab * 4),
                             ("out_index", p.k_max * 4), ("out_score", p.k_max * 8)):
            self._alloc(f"{BM25}.{name}", nbytes, kernel, arg_index(BM25, name))
        self._n_docs = len(doc_ptr) - 1
        self._idf_loaded = False  # a new corpus needs its IDF table loaded again
        self.bm25_source = source

    def load_bm25_idf(self, idf_q16: np.ndarray, timeout_ms: int = 10_000) -> None:
        """Write the IDF table and load it into the kernel's on-chip banks (one call with ``load_idf = 1``).

        Args:
            idf_q16: int32 [BENCH_VOCAB] non-negative IDF in Q16 (:func:`kernels_fpga.reference.bm25_idf_q16`).
            timeout_ms: How long to wait for the kernel.

        Raises:
            UsageError: No corpus loaded, or a malformed table.
            FpgaRunError: The run ended in a state other than COMPLETED.
        """
        self._require_corpus()
        idf = np.ascontiguousarray(idf_q16)
        if idf.dtype != np.int32 or idf.shape != (self.params.vocab,) or (idf.size and idf.min() < 0):
            raise UsageError(f"idf_q16 must be int32 [{self.params.vocab}], non-negative; got {idf.dtype} {idf.shape}")
        bo = self._bos[f"{BM25}.idf_q16"]
        bo.write(idf, 0)
        bo.sync(self._to_device, idf.nbytes, 0)
        self.run_kernel(BM25, self._bm25_args(n_docs=0, k=1, load_idf=1), timeout_ms)
        self._idf_loaded = True

    def run_bm25_topk(self, query_terms: np.ndarray | Sequence[int], k: int,
                      timeout_ms: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
        """Score every resident document against a query and return the top-k documents.

        Writes and syncs only the query bitmap (BENCH_VOCAB / 8 bytes) and reads back only k results.

        Args:
            query_terms: Query term ids, or a bool mask of length BENCH_VOCAB.
            k: Documents to select (1..BENCH_K_MAX).
            timeout_ms: How long to wait for the kernel.

        Returns:
            (document index int32 [k], score int64 [k]) sorted by (score desc, index asc).

        Raises:
            UsageError: No corpus or IDF loaded, a bad query or k.
            FpgaRunError: The run ended in a state other than COMPLETED.
        """
        self._require_corpus()
        if not self._idf_loaded:
            raise UsageError("no IDF table on the board: call load_bm25_idf(idf_q16) first")
        if not 1 <= k <= self.params.k_max:
            raise UsageError(f"k must be in 1..{self.params.k_max}, got {k}")
        try:
            bitmap = pack_query_bitmap(bm25_query_mask(query_terms, self.params.vocab))
        except ValueError as exc:
            raise UsageError(f"bad query: {exc}") from None
        t0 = time.perf_counter()
        bo = self._bos[f"{BM25}.query_bitmap"]
        bo.write(bitmap, 0)
        bo.sync(self._to_device, bitmap.nbytes, 0)
        t1 = time.perf_counter()
        self.run_kernel(BM25, self._bm25_args(n_docs=self._n_docs, k=k, load_idf=0), timeout_ms)
        t2 = time.perf_counter()
        index = self._read(f"{BM25}.out_index", np.int32, k)
        score = self._read(f"{BM25}.out_score", np.int64, k)
        self.last_timings = {"sync_in": t1 - t0, "kernel": t2 - t1, "sync_out": time.perf_counter() - t2}
        sorted_index, sorted_score = sort_topk(index[None, :], score[None, :])
        return sorted_index[0], sorted_score[0]

    # ---- any kernel --------------------------------------------------------------------------------

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
        kernel = self._kernel(name)
        run = self._xrt.run(kernel)
        keep = []  # scalar buffers must outlive the run
        for i, arg in enumerate(args):
            if isinstance(arg, np.generic):
                bo = self._new_bo(arg.nbytes, kernel, i)
                bo.write(np.atleast_1d(arg), 0)
                bo.sync(self._to_device, arg.nbytes, 0)
                keep.append(bo)
                run.set_arg(i, bo)
            elif isinstance(arg, int | np.integer) and not isinstance(arg, bool):
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
            "kernel_params": self.params.describe(),
        }

    def close(self) -> None:
        """Release buffers, kernels and the hardware context (the xclbin stays on the card)."""
        self._bos = {}
        self._key_sets = {}
        self._kernels = {}
        self._context = None

    def __enter__(self) -> FpgaBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- helpers -----------------------------------------------------------------------------------

    @property
    def _to_device(self) -> Any:
        return self._xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE

    def _kernel(self, name: str) -> Any:
        if name not in self._kernels:
            raise UsageError(f"kernel {name!r} was not opened; opened: {', '.join(self._kernels) or 'none'}")
        return self._kernels[name]

    def _new_bo(self, nbytes: int, kernel: Any, arg: int) -> Any:
        """A normal buffer on the memory bank the linker gave kernel argument ``arg``."""
        try:
            return self._xrt.bo(self._device, nbytes, self._xrt.bo.normal, kernel.group_id(arg))
        except (RuntimeError, IndexError) as exc:
            raise DeviceUnavailableError(f"could not allocate {nbytes} B for kernel argument {arg}: {exc}") from None

    def _alloc(self, key: str, nbytes: int, kernel: Any, arg: int) -> Any:
        self._bos[key] = self._new_bo(nbytes, kernel, arg)
        return self._bos[key]

    def _drop(self, prefix: str) -> None:
        """Forget the buffers whose names start with ``prefix`` (a key set's, or ``bm25_topk.``: the corpus)."""
        self._bos = {k: v for k, v in self._bos.items() if not k.startswith(prefix)}

    def _read(self, key: str, dtype: type, count: int) -> np.ndarray:
        """Sync the first ``count`` elements of a result buffer from the card and read them."""
        nbytes = count * np.dtype(dtype).itemsize
        bo = self._bos[key]
        bo.sync(self._xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_FROM_DEVICE, nbytes, 0)
        return np.frombuffer(bytes(bo.read(nbytes, 0)), dtype=dtype).copy()

    def _check_shared_key_banks(self, opened: list[str]) -> None:
        """The key buffers are shared, so every opened key kernel must see keys<p> on the same bank."""
        for p in range(self.params.n_pe):
            banks = {name: self._kernels[name].group_id(arg_index(name, f"keys{p}")) for name in opened}
            if len(set(banks.values())) > 1:
                raise DeviceUnavailableError(
                    f"keys{p} sits on different memory banks for {', '.join(f'{k} ({v})' for k, v in banks.items())};"
                    " map both kernels' keys<p> to the same HBM bank (kernels_fpga/hls/connectivity_u55c.cfg)")

    def _require_keys(self, key_set: int) -> _KeySet:
        if key_set not in self._key_sets:
            loaded = ", ".join(map(str, sorted(self._key_sets))) or "none"
            raise UsageError(f"no keys in key set {key_set} (key sets loaded: {loaded}): call load_keys(rows, keys) "
                             "first")
        return self._key_sets[key_set]

    def _key_bos(self, key_set: int) -> list[Any]:
        return [self._bos[f"{_set_prefix(key_set)}keys{p}"] for p in range(self.params.n_pe)]

    def _forget_on_chip(self, key_set: int, index: int) -> None:
        """Keys of ``key_set`` from ``index`` on changed: on-chip copies of them are stale."""
        for name, (held, count) in self._on_chip.items():
            if held == key_set:
                self._on_chip[name] = (held, min(count, index))

    def _key_run_inputs(self, name: str, q_int16: np.ndarray, n_keys: int, key_set: int) -> tuple[_KeySet, int]:
        """Validates a key kernel run, writes and syncs the query; returns the key set and the run's ``sync_from``."""
        self._kernel(name)
        ks = self._require_keys(key_set)
        if name not in ks.kernels:
            raise UsageError(f"{name} was opened after load_keys; call load_keys again to give it the key buffers")
        q = np.ascontiguousarray(q_int16)
        if q.dtype != np.int16 or q.shape != (ks.rows, self.params.d):
            raise UsageError(f"q must be int16 [{ks.rows}, {self.params.d}], got {q.dtype} {q.shape}")
        if not 0 <= n_keys <= min(ks.n):
            raise UsageError(f"n_keys must be in 0..{min(ks.n)} (keys resident in every row), got {n_keys}")
        bo = self._bos[f"{_set_prefix(key_set)}q"]
        bo.write(q, 0)
        bo.sync(self._to_device, q.nbytes, 0)
        held, count = self._on_chip.get(name, (key_set, 0))
        return ks, min(count if held == key_set else 0, n_keys)

    def _tier_requests(self, ks: _KeySet) -> tuple[int, int]:
        """Keys per row to keep on chip: an even share of each tier (the kernel rounds to whole stripes)."""
        return self.params.bram_keys // ks.rows, self.params.uram_keys // ks.rows

    def _require_corpus(self) -> None:
        self._kernel(BM25)
        if self._n_docs < 0:
            raise UsageError("no BM25 corpus on the board: call load_bm25_corpus(doc_ptr, term_ids, tfs) first")

    def _bm25_args(self, n_docs: int, k: int, load_idf: int) -> list[Any]:
        bos, channels = self._bos, range(self.params.bm25_channels)
        return [*(bos[f"{BM25}.doc_ptr{c}"] for c in channels), *(bos[f"{BM25}.postings{c}"] for c in channels),
                bos[f"{BM25}.query_bitmap"], bos[f"{BM25}.idf_q16"], bos[f"{BM25}.out_index"],
                bos[f"{BM25}.out_score"], n_docs, k, load_idf]

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
