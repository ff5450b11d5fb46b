"""C-simulation backend of the FPGA kernels: ``hls/*.cpp`` built with g++ and called through ctypes.

The HLS sources compile unchanged with g++ (pragmas are ignored), so this backend computes exactly what
the synthesized kernels compute, bit for bit, but takes no hardware time: results from it are labelled
``emulated``, never ``measured``. :func:`build` compiles every ``.cpp`` under ``hls/`` into one shared
library, cached under ``kernels_fpga/.build/<digest>/``; the digest covers the sources, the flags, the
``-D`` overrides and the compiler's ``--version`` text, so changing any of them builds a new library and
an unchanged tree reuses the old one. :func:`load` builds if needed and returns a :class:`CsimLibrary`,
whose methods (also available as module functions using the default build) take and return numpy arrays.

Top-k results are returned sorted per row by (score descending, index ascending), with index -1 and
score ``INT64_MIN`` in unfilled slots, so they compare directly with :mod:`kernels_fpga.reference`; the
kernels themselves emit their top-k registers in slot order.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shlex
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.ctypeslib import ndpointer

from bench.errors import DeviceUnavailableError, UsageError
from kernels_fpga.interface import KERNELS
from kernels_fpga.layout import Stripes, bm25_channels, pack_query_bitmap
from kernels_fpga.params import HEADER, parse_header
from kernels_fpga.reference import bm25_query_mask

SOURCE_DIR = Path(__file__).resolve().parent / "hls"
"""The HLS C++ sources (``*.h``, ``*.cpp``)."""
BUILD_ROOT = Path(__file__).resolve().parent / ".build"
"""Where built libraries are cached, one folder per digest."""
LIBRARY_NAME = "libbench_hls.so"
CXX_FLAGS = ("-O2", "-std=c++17", "-fPIC", "-shared", "-fno-gnu-unique")
"""g++ flags; -fno-gnu-unique lets a rebuilt library load beside an older one in the same process."""
DEFAULT_COMPILER = "g++"

PARAMETERS = tuple(parse_header(HEADER.read_text(encoding="utf-8")))
"""Compile-time parameters of ``hls/bench_params.h`` that ``overrides`` may set, in header order."""

_COMPILER_OUTPUT_LINES = 20
_INT16_HINT = "quantize with kernels_fpga.quantize.to_int16"


class KernelInputError(UsageError, ValueError):
    """An array or argument passed to a kernel has the wrong type, shape or range (a ``ValueError`` too)."""


@dataclass(frozen=True)
class BuildInfo:
    """How the C-simulation library is (or would be) built: provenance for every emulated result.

    Attributes:
        compiler: the compiler executable as given.
        compiler_version: first line of ``<compiler> --version``.
        command: the compile command (it writes to a temporary file renamed to ``library`` on success).
        overrides: ``-D`` parameter overrides, sorted by name.
        digest: hex digest over sources, flags, overrides and the full compiler version text.
        library: path of the built shared library.
    """

    compiler: str
    compiler_version: str
    command: tuple[str, ...]
    overrides: tuple[tuple[str, int], ...]
    digest: str
    library: Path

    def as_dict(self) -> dict[str, Any]:
        """The build provenance as plain JSON-ready values."""
        return {
            "backend": "csim",
            "compiler": self.compiler,
            "compiler_version": self.compiler_version,
            "command": shlex.join(self.command),
            "overrides": dict(self.overrides),
            "digest": self.digest,
            "library": str(self.library),
        }


@functools.lru_cache(maxsize=8)
def compiler_version(compiler: str = DEFAULT_COMPILER) -> str:
    """The full ``--version`` text of a C++ compiler.

    Args:
        compiler: executable name or path.

    Returns:
        The compiler's ``--version`` output.

    Raises:
        DeviceUnavailableError: if the compiler cannot be run.
    """
    command = [compiler, "--version"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as error:
        raise DeviceUnavailableError(
            f"the FPGA C-simulation needs the C++ compiler {compiler!r}, which could not be run "
            f"({error.strerror or error}; command: {shlex.join(command)}). Install g++ (for example "
            "`apt-get install g++`) or pass compiler=<path to a g++-compatible compiler>."
        ) from error
    if result.returncode != 0:
        raise DeviceUnavailableError(
            f"{shlex.join(command)} exited with {result.returncode}: {_head(result.stderr or result.stdout)}"
            "\nCheck that it is a working g++-compatible compiler."
        )
    return result.stdout


def _head(text: str) -> str:
    return "\n".join(text.strip().splitlines()[:_COMPILER_OUTPUT_LINES])


def _signature(sources: list[Path]) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime, size) of each source: a change to any file changes the signature."""
    stats = [(path, path.stat()) for path in sources]
    return tuple((str(path), stat.st_mtime_ns, stat.st_size) for path, stat in stats)


@functools.lru_cache(maxsize=32)
def _sources_digest(signature: tuple[tuple[str, int, int], ...]) -> str:
    """sha256 over the names and contents of the sources.

    Cached per signature, so an unchanged tree is hashed once per process (load() runs before every
    module-level kernel call).
    """
    digest = hashlib.sha256()
    for path, _, _ in signature:
        digest.update(Path(path).name.encode() + b"\0" + Path(path).read_bytes() + b"\0")
    return digest.hexdigest()


def _check_overrides(overrides: Mapping[str, int] | None) -> tuple[tuple[str, int], ...]:
    if not overrides:
        return ()
    for name, value in overrides.items():
        if name not in PARAMETERS:
            raise KernelInputError(f"unknown kernel parameter override {name!r}; valid names: {', '.join(PARAMETERS)}")
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise KernelInputError(f"override {name} must be an integer, got {value!r}")
    return tuple(sorted((name, int(value)) for name, value in overrides.items()))


def build_info(
    overrides: Mapping[str, int] | None = None,
    *,
    compiler: str = DEFAULT_COMPILER,
    source_dir: Path = SOURCE_DIR,
    build_root: Path = BUILD_ROOT,
) -> BuildInfo:
    """Describes the build for these sources, overrides and compiler, without compiling.

    Args:
        overrides: compile-time parameters to set with ``-DNAME=value`` (names in :data:`PARAMETERS`).
        compiler: C++ compiler executable.
        source_dir: folder holding the ``.h`` and ``.cpp`` sources.
        build_root: cache folder; the library goes to ``build_root/<digest>/``.

    Returns:
        The :class:`BuildInfo`; its ``library`` may not exist yet.

    Raises:
        KernelInputError: on an unknown or non-integer override.
        DeviceUnavailableError: if the compiler cannot be run, or there are no sources.
    """
    pairs = _check_overrides(overrides)
    version = compiler_version(compiler)
    source_dir = Path(source_dir)
    sources = sorted(p for p in source_dir.iterdir() if p.suffix in (".h", ".cpp")) if source_dir.is_dir() else []
    cpp = [p for p in sources if p.suffix == ".cpp"]
    if not cpp:
        raise DeviceUnavailableError(
            f"no .cpp kernel sources in {source_dir}; reinstall bench (they ship in kernels_fpga/hls/)"
        )
    defines = [f"-D{name}={value}" for name, value in pairs]
    digest = hashlib.sha256()
    for part in (compiler, version, *CXX_FLAGS, *defines, _sources_digest(_signature(sources))):
        digest.update(part.encode() + b"\0")
    hex_digest = digest.hexdigest()[:20]
    library = Path(build_root) / hex_digest / LIBRARY_NAME
    command = (compiler, *CXX_FLAGS, *defines, "-I", str(source_dir), *map(str, cpp), "-o", str(library))
    return BuildInfo(compiler, version.splitlines()[0].strip(), command, pairs, hex_digest, library)


def build(
    force: bool = False,
    overrides: Mapping[str, int] | None = None,
    *,
    compiler: str = DEFAULT_COMPILER,
    source_dir: Path = SOURCE_DIR,
    build_root: Path = BUILD_ROOT,
) -> Path:
    """Compiles the kernels into one shared library, unless an identical build is already cached.

    The compiler writes a temporary file in the cache folder that is renamed onto the library only when
    complete, so concurrent builds (threads or processes) never leave or load a partial library.

    Args:
        force: compile even if the library already exists.
        overrides: compile-time parameters to set with ``-DNAME=value`` (names in :data:`PARAMETERS`).
        compiler: C++ compiler executable.
        source_dir: folder holding the ``.h`` and ``.cpp`` sources.
        build_root: cache folder.

    Returns:
        Path of the shared library.

    Raises:
        KernelInputError: on an unknown or non-integer override.
        DeviceUnavailableError: if the compiler is missing or the compilation fails (the message names the
            compiler, the command and the first lines of its output).
    """
    info = build_info(overrides, compiler=compiler, source_dir=source_dir, build_root=build_root)
    if info.library.exists() and not force:
        return info.library
    info.library.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=info.library.parent)
    os.close(handle)
    command = [*info.command[:-1], temporary]
    try:
        try:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError as error:
            raise DeviceUnavailableError(
                f"could not run the C++ compiler {compiler!r} ({error.strerror or error}); "
                f"command: {shlex.join(command)}"
            ) from error
        if result.returncode != 0:
            raise DeviceUnavailableError(
                f"{compiler} failed (exit {result.returncode}) building the FPGA C-simulation library.\n"
                f"Command: {shlex.join(command)}\nFirst lines of the compiler output:\n"
                f"{_head(result.stderr or result.stdout)}\n"
                "Fix the sources or the overrides, then build again."
            )
        os.chmod(temporary, 0o755)  # mkstemp creates 0600; others sharing the cache must be able to load it
        os.replace(temporary, info.library)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return info.library


def _ptr(dtype: type) -> type:
    return ndpointer(dtype=dtype, flags="C_CONTIGUOUS")


def _argtypes(kernel: str) -> list[Any]:
    """Ctypes argument types of a top function, from :data:`kernels_fpga.interface.KERNELS`."""
    return [_ptr(arg.dtype.type) if arg.is_pointer else ctypes.c_int32 for arg in KERNELS[kernel]]


def _sort_selection(index: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorts each row's top-k slots by (score desc, index asc), unfilled slots (index -1) last."""
    valid = index >= 0
    negated = np.where(valid, -score, 0)  # unfilled slots hold INT64_MIN, which must not be negated
    order = np.lexsort((index, negated, ~valid), axis=-1)
    return np.take_along_axis(index, order, axis=-1), np.take_along_axis(score, order, axis=-1)


class CsimLibrary:
    """One loaded C-simulation library: the five kernels as numpy functions.

    The kernels keep state between calls, as on the board: the key kernels' on-chip tiers and the BM25
    IDF table. The numpy methods are stateless anyway (they refresh the tiers on every call, ``sync_from
    = 0``, and reload the IDF table whenever one is passed); :meth:`call` exposes the raw top functions
    for host-level tests. Calls are serialized by a lock, since that state is shared.

    Attributes:
        info: how the library was built (:class:`BuildInfo`).
        params: compile-time parameters reported by the library itself, e.g. ``params["BENCH_D"]``.
    """

    def __init__(self, info: BuildInfo) -> None:
        self.info = info
        self._lib = ctypes.CDLL(str(info.library))
        self._lock = threading.Lock()
        self._idf_loaded = False
        for name in KERNELS:
            function = getattr(self._lib, name)
            function.argtypes = _argtypes(name)
            function.restype = None
        self._lib.bench_param_count.restype = ctypes.c_int
        self._lib.bench_param_name.restype = ctypes.c_char_p
        self._lib.bench_param_name.argtypes = [ctypes.c_int]
        self._lib.bench_param_value.restype = ctypes.c_longlong
        self._lib.bench_param_value.argtypes = [ctypes.c_int]
        self._lib.bench_layout_probe.argtypes = [*[ctypes.c_int32] * 8, _ptr(np.int32)]
        self._lib.bench_layout_probe.restype = None
        for name in ("bench_port_count", "bench_global_index"):
            getattr(self._lib, name).argtypes = [ctypes.c_int32] * 3
            getattr(self._lib, name).restype = ctypes.c_int32
        self.params: dict[str, int] = {
            self._lib.bench_param_name(i).decode(): int(self._lib.bench_param_value(i))
            for i in range(self._lib.bench_param_count())
        }

    def provenance(self) -> dict[str, Any]:
        """Build provenance plus the compiled parameters, as plain values for a result record."""
        return {**self.info.as_dict(), "params": dict(self.params)}

    def call(self, kernel: str, *args: Any) -> None:
        """Runs a top function with its exact arguments (:data:`kernels_fpga.interface.KERNELS`).

        Buffers are C-contiguous numpy arrays laid out as on the board (:mod:`kernels_fpga.layout`),
        scalars Python ints; outputs are written in place. Kernel state (on-chip tiers, IDF table) is the
        library's own, so a call with ``sync_from > 0`` or ``load_idf = 0`` sees what earlier calls left.

        Raises:
            KernelInputError: unknown kernel or wrong argument count.
        """
        if kernel not in KERNELS:
            raise KernelInputError(f"unknown kernel {kernel!r}; kernels: {', '.join(KERNELS)}")
        if len(args) != len(KERNELS[kernel]):
            raise KernelInputError(f"{kernel} takes {len(KERNELS[kernel])} arguments, got {len(args)}")
        with self._lock:
            if kernel == "bm25_topk" and args[-1]:
                self._idf_loaded = True
            getattr(self._lib, kernel)(*args)

    def kernel_layout(self, rows: int, n: int, row_stride: int, vectors: int, bram_request: int,
                      uram_request: int) -> dict[str, int]:
        """The kernels' own ``make_layout`` (``hls/bench_layout.h``) for one call, as compiled.

        Args:
            rows: Rows in the call.
            n: Entries per row.
            row_stride: Row stride (capacity) in entries.
            vectors: D-dim vectors per entry (keys 1, pages 2).
            bram_request: BRAM entries per row the host asks for.
            uram_request: URAM entries per row the host asks for.

        Returns:
            ``port_stride``, ``bram_local``, ``uram_local``, ``bram_end``, ``uram_end`` (entries).
        """
        p = self.params
        out = np.zeros(5, dtype=np.int32)
        self._lib.bench_layout_probe(rows, n, row_stride, p["BENCH_PE_BLOCK"] // vectors, bram_request, uram_request,
                                     p["BENCH_BRAM_KEYS"] // p["BENCH_N_PE"] // vectors,
                                     p["BENCH_URAM_KEYS"] // p["BENCH_N_PE"] // vectors, out)
        return dict(zip(("port_stride", "bram_local", "uram_local", "bram_end", "uram_end"), map(int, out),
                        strict=True))

    def port_count(self, x: int, port: int, stripe: int) -> int:
        """The kernels' ``port_count``: entries of ``port`` among a row's entries [0, x)."""
        return int(self._lib.bench_port_count(x, port, stripe))

    def global_index(self, local: int, port: int, stripe: int) -> int:
        """The kernels' ``global_index``: row index of local entry ``local`` of ``port``."""
        return int(self._lib.bench_global_index(local, port, stripe))

    # ----------------------------------------------------------------------------------------------
    # validation

    def _array(
        self, name: str, value: Any, dtype: type, ndim: int, hint: str = "", contiguous: bool = True
    ) -> np.ndarray:
        if not isinstance(value, np.ndarray):
            raise KernelInputError(f"{name} must be a numpy array of {np.dtype(dtype)}, got {type(value).__name__}")
        if value.dtype != dtype:
            extra = f"; {hint}" if hint else ""
            raise KernelInputError(f"{name} must have dtype {np.dtype(dtype)}, got {value.dtype}{extra}")
        if value.ndim != ndim:
            raise KernelInputError(f"{name} must have {ndim} dimensions, got shape {value.shape}")
        if contiguous and not value.flags.c_contiguous:
            raise KernelInputError(f"{name} must be C-contiguous; pass np.ascontiguousarray({name})")
        return value

    def _check_dim(self, name: str, dim: int) -> None:
        compiled = self.params["BENCH_D"]
        if dim != compiled:
            raise KernelInputError(
                f"{name} has head dimension {dim}, but the C-simulation library was compiled for D={compiled}; "
                f"rebuild with kernels_fpga.csim.load(overrides={{'BENCH_D': {dim}}})"
            )

    def _check_count(self, what: str, value: int, low: int, param: str, advice: str = "") -> int:
        high = self.params[param]
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or not low <= value <= high:
            raise KernelInputError(
                f"{what} must be an integer in [{low}, {high}] ({param}), got {value!r}"
                + (f"; {advice}" if advice else f"; rebuild with overrides={{'{param}': ...}} for more")
            )
        return int(value)

    def _check_k(self, k: int, param: str = "BENCH_K_MAX") -> int:
        return self._check_count("k", k, 1, param, f"rebuild with overrides={{'{param}': <power of two >= k>}}")

    def _tiers(self, rows: int, bram: int | None, uram: int | None, vectors: int) -> tuple[int, int]:
        """Per-row tier requests in entries: by default the on-chip tiers are shared evenly by the rows.

        The kernel keeps whole stripes of every PE, so a request is rounded down to a multiple of
        N_PE x stripe entries (bench_layout.h); it never changes results, only where entries are read from.
        """
        caps = []
        for name, given, param in (("bram", bram, "BENCH_BRAM_KEYS"), ("uram", uram, "BENCH_URAM_KEYS")):
            most = self.params[param] // vectors
            if given is None:
                caps.append(most // max(rows, 1))
            elif isinstance(given, bool) or not isinstance(given, int | np.integer) or not 0 <= given <= most:
                raise KernelInputError(f"{name} tier request must be an integer in [0, {most}], got {given!r}")
            else:
                caps.append(int(given))
        return caps[0], caps[1]

    def _ports(self, entries: np.ndarray, row_stride: int | None, vectors: int) -> tuple[list[np.ndarray], int]:
        """The striped port buffers of entries [R, N, vectors * D] for a row stride (default N)."""
        n = entries.shape[1]
        stride = n if row_stride is None else row_stride
        if isinstance(stride, bool) or not isinstance(stride, int | np.integer) or not n <= stride:
            raise KernelInputError(f"row stride (capacity) must be an integer >= the {n} entries per row, "
                                   f"got {row_stride!r}")
        self._check_count("row stride", int(stride), 0, "BENCH_MAX_KEYS")
        stripes = Stripes(self.params["BENCH_N_PE"], self.params["BENCH_PE_BLOCK"] // vectors, int(stride))
        return stripes.split(entries), int(stride)

    def _key_inputs(self, q: np.ndarray, keys: np.ndarray, q_ndim: int) -> tuple[np.ndarray, np.ndarray]:
        q = self._array("q", q, np.int16, q_ndim, _INT16_HINT)
        keys = self._array("keys", keys, np.int16, 3, _INT16_HINT)
        self._check_dim("keys", keys.shape[2])
        self._check_count("rows", keys.shape[0], 0, "BENCH_MAX_ROWS")
        self._check_count("keys per row", keys.shape[1], 0, "BENCH_MAX_KEYS")
        return q, keys

    # ----------------------------------------------------------------------------------------------
    # kernels

    def relevancy_topk(
        self,
        q: np.ndarray,
        keys: np.ndarray,
        k: int,
        *,
        row_stride: int | None = None,
        bram_keys: int | None = None,
        uram_keys: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Inner-product scores of every key, then the top k per row (``hls/relevancy_topk.cpp``).

        Args:
            q: int16 [R, D] one query per row (a row is a (batch, KV head) pair).
            keys: int16 [R, N, D] keys per row.
            k: keys to select per row, in [1, BENCH_K_MAX]; k > N pads with -1.
            row_stride: keys per row the striped port buffers hold (the capacity a resident row may grow
                to), >= N; default N. Never changes results.
            bram_keys: keys per row to keep in BRAM; default BENCH_BRAM_KEYS // R. Never changes results.
            uram_keys: keys per row to keep in URAM; default BENCH_URAM_KEYS // R. Never changes results.

        Returns:
            (index int32 [R, k], score int64 [R, k]) per row sorted by (score desc, index asc); unfilled
            slots hold -1 and INT64_MIN.

        Raises:
            KernelInputError: on a wrong dtype, shape, contiguity, head dimension, row stride or k.
        """
        q, keys = self._key_inputs(q, keys, 2)
        rows, n, dim = keys.shape
        if q.shape != (rows, dim):
            raise KernelInputError(f"q must have shape (R, D) = {(rows, dim)} to match keys, got {q.shape}")
        k = self._check_k(k)
        ports, stride = self._ports(keys, row_stride, 1)
        bram, uram = self._tiers(rows, bram_keys, uram_keys, 1)
        index = np.empty((rows, k), dtype=np.int32)
        score = np.empty((rows, k), dtype=np.int64)
        self.call("relevancy_topk", q, *ports, index, score, rows, n, stride, k, bram, uram, 0)
        return _sort_selection(index, score)

    def threshold_select(
        self,
        q: np.ndarray,
        keys: np.ndarray,
        threshold: int,
        *,
        row_stride: int | None = None,
        bram_keys: int | None = None,
        uram_keys: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Selects the keys whose inner-product score is >= threshold (``hls/threshold_select.cpp``).

        Args:
            q: int16 [R, D] one query per row.
            keys: int16 [R, N, D] keys per row.
            threshold: int64 threshold in the integer score's fixed point (for float scores s and int16
                scales a, b from :func:`kernels_fpga.quantize.to_int16`: about s / (a * b)). The kernel
                reads it from a one-element buffer.
            row_stride: keys per row the port buffers hold, >= N; default N. Never changes results.
            bram_keys: keys per row to keep in BRAM; default BENCH_BRAM_KEYS // R. Never changes results.
            uram_keys: keys per row to keep in URAM; default BENCH_URAM_KEYS // R. Never changes results.

        Returns:
            (bitmap uint64 [R, ceil(N / 64)], where bit b of word w is key 64 * w + b;
            count int32 [R] of selected keys).

        Raises:
            KernelInputError: on a wrong dtype, shape, contiguity, head dimension, row stride or threshold.
        """
        q, keys = self._key_inputs(q, keys, 2)
        rows, n, dim = keys.shape
        if q.shape != (rows, dim):
            raise KernelInputError(f"q must have shape (R, D) = {(rows, dim)} to match keys, got {q.shape}")
        info = np.iinfo(np.int64)
        if isinstance(threshold, bool) or not isinstance(threshold, int | np.integer):
            raise KernelInputError(f"threshold must be an integer, got {threshold!r}")
        if not info.min <= threshold <= info.max:
            raise KernelInputError(f"threshold must fit int64, got {threshold}")
        ports, stride = self._ports(keys, row_stride, 1)
        bram, uram = self._tiers(rows, bram_keys, uram_keys, 1)
        bitmap = np.zeros((rows, -(-n // 64)), dtype=np.uint64)
        count = np.zeros(rows, dtype=np.int32)
        limit = np.array([threshold], dtype=np.int64)
        self.call("threshold_select", q, limit, *ports, bitmap, count, rows, n, stride, bram, uram, 0)
        return bitmap, count

    def page_topk(
        self,
        q: np.ndarray,
        kmin: np.ndarray,
        kmax: np.ndarray,
        k: int,
        sub: int = 1,
        *,
        page_stride: int | None = None,
        bram_pages: int | None = None,
        uram_pages: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Quest/LServe page scores, max over ``sub`` pages, then the top k groups (``hls/page_topk.cpp``).

        Args:
            q: int16 [R, G, D] the GQA group's query heads per row, 1 <= G <= BENCH_MAX_GROUP.
            kmin: int16 [R, P, D] element-wise key minimum per page.
            kmax: int16 [R, P, D] element-wise key maximum per page.
            k: page groups to select per row, in [1, BENCH_K_MAX].
            sub: consecutive pages per group (LServe 4, Quest 1); the last group may be partial.
            page_stride: pages per row the port buffers hold, >= P; default P. Never changes results.
            bram_pages: pages per row to keep in BRAM (a page stores 2 vectors); default
                BENCH_BRAM_KEYS // (2 R). Never changes results.
            uram_pages: pages per row to keep in URAM; default BENCH_URAM_KEYS // (2 R).

        Returns:
            (group index int32 [R, k], score int64 [R, k]) sorted by (score desc, index asc); group j covers
            pages [j * sub, (j + 1) * sub); unfilled slots hold -1 and INT64_MIN.

        Raises:
            KernelInputError: on a wrong dtype, shape, contiguity, head dimension, group size, sub or k.
        """
        q = self._array("q", q, np.int16, 3, _INT16_HINT)
        kmin = self._array("kmin", kmin, np.int16, 3, _INT16_HINT, contiguous=False)
        kmax = self._array("kmax", kmax, np.int16, 3, _INT16_HINT, contiguous=False)
        rows, group, dim = q.shape
        self._check_dim("q", dim)
        if kmin.shape != kmax.shape or kmin.shape[0] != rows or kmin.shape[2] != dim:
            raise KernelInputError(
                f"kmin and kmax must both have shape (R, P, D) with R={rows}, D={dim}; "
                f"got {kmin.shape} and {kmax.shape}"
            )
        n_pages = kmin.shape[1]
        self._check_count("rows", rows, 0, "BENCH_MAX_ROWS")
        self._check_count("group size (query heads per KV head)", group, 1, "BENCH_MAX_GROUP")
        self._check_count("pages per row", n_pages, 0, "BENCH_MAX_KEYS")
        if isinstance(sub, bool) or not isinstance(sub, int | np.integer) or sub < 1:
            raise KernelInputError(f"sub (pages per group) must be an integer >= 1, got {sub!r}")
        k = self._check_k(k)
        # A page is one entry: its min and max vectors side by side, one burst on the board.
        ports, stride = self._ports(np.concatenate((kmin, kmax), axis=2), page_stride, 2)
        bram, uram = self._tiers(rows, bram_pages, uram_pages, 2)
        index = np.empty((rows, k), dtype=np.int32)
        score = np.empty((rows, k), dtype=np.int64)
        self.call("page_topk", q, *ports, index, score, rows, group, n_pages, stride, int(sub), k, bram, uram, 0)
        return _sort_selection(index, score)

    def dsa_indexer_topk(
        self,
        q: np.ndarray,
        w: np.ndarray,
        keys: np.ndarray,
        k: int,
        *,
        row_stride: int | None = None,
        bram_keys: int | None = None,
        uram_keys: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """DSA lightning-indexer scores sum_j w_j relu(q_j . k), then the top k tokens (``hls/dsa_indexer_topk.cpp``).

        Args:
            q: int16 [R, H, D] indexer query heads per row (a row is one batch element), 1 <= H <=
                BENCH_DSA_HEADS.
            w: int16 [R, H] fixed-point head weights.
            keys: int16 [R, N, D] indexer keys, one per cached token, shared by the heads.
            k: tokens to select per row, in [1, BENCH_DSA_K_MAX].
            row_stride: keys per row the port buffers hold, >= N; default N. Never changes results.
            bram_keys: keys per row to keep in BRAM; default BENCH_BRAM_KEYS // R. Never changes results.
            uram_keys: keys per row to keep in URAM; default BENCH_URAM_KEYS // R. Never changes results.

        Returns:
            (token index int32 [R, k], score int64 [R, k]) sorted by (score desc, index asc); unfilled
            slots hold -1 and INT64_MIN.

        Raises:
            KernelInputError: on a wrong dtype, shape, contiguity, head dimension, head count or k.
        """
        q, keys = self._key_inputs(q, keys, 3)
        w = self._array("w", w, np.int16, 2, _INT16_HINT)
        rows, n, dim = keys.shape
        heads = q.shape[1]
        if q.shape != (rows, heads, dim) or w.shape != (rows, heads):
            raise KernelInputError(
                f"q must have shape (R, H, D) and w (R, H) with R={rows}, D={dim}; got {q.shape} and {w.shape}"
            )
        self._check_count("indexer heads", heads, 1, "BENCH_DSA_HEADS")
        k = self._check_k(k, "BENCH_DSA_K_MAX")
        ports, stride = self._ports(keys, row_stride, 1)
        bram, uram = self._tiers(rows, bram_keys, uram_keys, 1)
        index = np.empty((rows, k), dtype=np.int32)
        score = np.empty((rows, k), dtype=np.int64)
        self.call("dsa_indexer_topk", q, w, *ports, index, score, rows, heads, n, stride, k, bram, uram, 0)
        return _sort_selection(index, score)

    def bm25_load_idf(self, idf_q16: np.ndarray) -> None:
        """Loads the IDF table into the kernel's on-chip banks (a call with ``load_idf = 1``, no documents).

        Later :meth:`bm25_topk` calls with ``idf_q16=None`` use it, as a board keeps it between queries.

        Args:
            idf_q16: int32 [BENCH_VOCAB] non-negative IDF in Q16 (:func:`kernels_fpga.reference.bm25_idf_q16`).

        Raises:
            KernelInputError: on a malformed IDF table.
        """
        self._bm25_run(np.zeros(1, np.int64), np.zeros(0, np.uint32), np.zeros(0, np.uint16), [], idf_q16, 1)

    def bm25_topk(
        self,
        doc_ptr: np.ndarray,
        term_ids: np.ndarray,
        tfs: np.ndarray,
        query_terms: np.ndarray | Sequence[int],
        idf_q16: np.ndarray | None,
        k: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Integer BM25 score of every document, then the top k documents (``hls/bm25_topk.cpp``).

        Args:
            doc_ptr: integer [N + 1] CSR offsets: document d owns postings doc_ptr[d]:doc_ptr[d + 1];
                doc_ptr[0] = 0, non-decreasing, doc_ptr[N] = number of postings.
            term_ids: integer [P] term id per posting, each in [0, BENCH_VOCAB).
            tfs: integer [P] term frequency per posting, each in [0, 65535].
            query_terms: the query's term ids, or a bool mask of length BENCH_VOCAB.
            idf_q16: int32 [BENCH_VOCAB] non-negative IDF in Q16
                (:func:`kernels_fpga.reference.bm25_idf_q16`), loaded with this call; or None to use the
                table resident from :meth:`bm25_load_idf` or an earlier call.
            k: documents to select, in [1, BENCH_K_MAX].

        Returns:
            (document index int32 [k], score int64 [k]) sorted by (score desc, index asc); unfilled slots
            hold -1 and INT64_MIN. Scores are Q16 (divide by 65536 for the real BM25 value).

        Raises:
            KernelInputError: on a malformed corpus, query, IDF table or k, or ``idf_q16=None`` before any
                table was loaded.
        """
        if idf_q16 is None and not self._idf_loaded:
            raise KernelInputError("no IDF table is resident yet: pass idf_q16 or call bm25_load_idf first")
        return self._bm25_run(doc_ptr, term_ids, tfs, query_terms, idf_q16, k)

    def _bm25_run(self, doc_ptr: Any, term_ids: Any, tfs: Any, query_terms: Any, idf_q16: np.ndarray | None,
                  k: int) -> tuple[np.ndarray, np.ndarray]:
        vocab = self.params["BENCH_VOCAB"]
        doc_ptr = self._integers("doc_ptr", doc_ptr, np.int64, 0, np.iinfo(np.int64).max)
        if len(doc_ptr) == 0:
            raise KernelInputError("doc_ptr must hold N + 1 offsets, so at least [0] for an empty corpus")
        n_docs = len(doc_ptr) - 1
        lengths = np.diff(doc_ptr)
        term_ids = self._integers("term_ids", term_ids, np.uint32, 0, vocab - 1)
        tfs = self._integers("tfs", tfs, np.uint16, 0, np.iinfo(np.uint16).max)
        if doc_ptr[0] != 0 or (lengths < 0).any() or doc_ptr[-1] != len(term_ids) or len(tfs) != len(term_ids):
            raise KernelInputError(
                "doc_ptr must start at 0, never decrease and end at len(term_ids) == len(tfs); got "
                f"doc_ptr[0]={doc_ptr[0]}, doc_ptr[-1]={doc_ptr[-1]}, {len(term_ids)} term ids, {len(tfs)} tfs"
            )
        self._check_count("documents", n_docs, 0, "BENCH_MAX_DOCS")
        if lengths.size and lengths.max() > self.params["BENCH_MAX_DOC_TERMS"]:
            raise KernelInputError(
                f"a document has {lengths.max()} postings, more than BENCH_MAX_DOC_TERMS="
                f"{self.params['BENCH_MAX_DOC_TERMS']}; merge repeated terms or rebuild with a larger bound"
            )
        if idf_q16 is None:
            idf_q16, load = np.zeros(vocab, dtype=np.int32), 0
        else:
            hint = "compute it with kernels_fpga.reference.bm25_idf_q16"
            idf_q16 = self._array("idf_q16", idf_q16, np.int32, 1, hint)
            if idf_q16.shape != (vocab,) or (idf_q16.size and idf_q16.min() < 0):
                raise KernelInputError(f"idf_q16 must hold {vocab} non-negative Q16 values, got shape {idf_q16.shape}")
            load = 1
        try:
            mask = bm25_query_mask(query_terms, vocab)
        except ValueError as error:
            raise KernelInputError(str(error)) from error
        k = self._check_k(k)
        channels = bm25_channels(doc_ptr, term_ids, tfs, self.params["BENCH_BM25_CHANNELS"],
                                 self.params["BENCH_BM25_LANES"])
        index = np.empty(k, dtype=np.int32)
        score = np.empty(k, dtype=np.int64)
        self.call("bm25_topk", *(ptr for ptr, _ in channels), *(post for _, post in channels),
                  pack_query_bitmap(mask), idf_q16, index, score, n_docs, k, load)
        sorted_index, sorted_score = _sort_selection(index[None, :], score[None, :])
        return sorted_index[0], sorted_score[0]

    def _integers(self, name: str, value: Any, dtype: type, low: int, high: int) -> np.ndarray:
        """A 1-D integer array checked to lie in [low, high] and converted to dtype."""
        array = np.asarray(value)
        if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
            raise KernelInputError(f"{name} must be a 1-D integer array, got dtype {array.dtype}, shape {array.shape}")
        if array.size and (array.min() < low or array.max() > high):
            raise KernelInputError(f"{name} values must lie in [{low}, {high}]")
        return np.ascontiguousarray(array, dtype=dtype)


_loaded: dict[str, CsimLibrary] = {}
_load_lock = threading.Lock()


def load(overrides: Mapping[str, int] | None = None, *, compiler: str = DEFAULT_COMPILER) -> CsimLibrary:
    """Builds (if the sources, overrides or compiler changed) and loads the C-simulation library.

    Loaded libraries are kept per digest for the life of the process.

    Args:
        overrides: compile-time parameters to set with ``-DNAME=value`` (names in :data:`PARAMETERS`).
        compiler: C++ compiler executable.

    Returns:
        The loaded :class:`CsimLibrary`.

    Raises:
        KernelInputError: on an unknown or non-integer override.
        DeviceUnavailableError: if the compiler is missing or the build fails.
    """
    info = build_info(overrides, compiler=compiler)
    with _load_lock:
        if info.digest not in _loaded:
            build(overrides=overrides, compiler=compiler)
            _loaded[info.digest] = CsimLibrary(info)
        return _loaded[info.digest]


def relevancy_topk(q: np.ndarray, keys: np.ndarray, k: int, **layout: int) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`CsimLibrary.relevancy_topk` on the default build."""
    return load().relevancy_topk(q, keys, k, **layout)


def threshold_select(q: np.ndarray, keys: np.ndarray, threshold: int, **layout: int) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`CsimLibrary.threshold_select` on the default build."""
    return load().threshold_select(q, keys, threshold, **layout)


def page_topk(
    q: np.ndarray, kmin: np.ndarray, kmax: np.ndarray, k: int, sub: int = 1, **layout: int
) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`CsimLibrary.page_topk` on the default build."""
    return load().page_topk(q, kmin, kmax, k, sub, **layout)


def dsa_indexer_topk(
    q: np.ndarray, w: np.ndarray, keys: np.ndarray, k: int, **layout: int
) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`CsimLibrary.dsa_indexer_topk` on the default build."""
    return load().dsa_indexer_topk(q, w, keys, k, **layout)


def bm25_topk(
    doc_ptr: np.ndarray,
    term_ids: np.ndarray,
    tfs: np.ndarray,
    query_terms: np.ndarray | Sequence[int],
    idf_q16: np.ndarray | None,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`CsimLibrary.bm25_topk` on the default build."""
    return load().bm25_topk(doc_ptr, term_ids, tfs, query_terms, idf_q16, k)


def bm25_load_idf(idf_q16: np.ndarray) -> None:
    """:meth:`CsimLibrary.bm25_load_idf` on the default build."""
    load().bm25_load_idf(idf_q16)
