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
from kernels_fpga.reference import bm25_query_mask

SOURCE_DIR = Path(__file__).resolve().parent / "hls"
"""The HLS C++ sources (``*.h``, ``*.cpp``)."""
BUILD_ROOT = Path(__file__).resolve().parent / ".build"
"""Where built libraries are cached, one folder per digest."""
LIBRARY_NAME = "libbench_hls.so"
CXX_FLAGS = ("-O2", "-std=c++17", "-fPIC", "-shared", "-fno-gnu-unique")
"""g++ flags; -fno-gnu-unique lets a rebuilt library load beside an older one in the same process."""
DEFAULT_COMPILER = "g++"

PARAMETERS = (
    "BENCH_D",
    "BENCH_N_PE",
    "BENCH_PE_MACS",
    "BENCH_PACKET",
    "BENCH_K_MAX",
    "BENCH_DSA_K_MAX",
    "BENCH_BRAM_KEYS",
    "BENCH_URAM_KEYS",
    "BENCH_MAX_KEYS",
    "BENCH_MAX_ROWS",
    "BENCH_MAX_GROUP",
    "BENCH_DSA_HEADS",
    "BENCH_DSA_HEADS_PER_PASS",
    "BENCH_VOCAB",
    "BENCH_BM25_CHANNELS",
    "BENCH_BM25_LANES",
    "BENCH_MAX_DOCS",
    "BENCH_MAX_DOC_TERMS",
    "BENCH_BM25_K1_Q16",
    "BENCH_BM25_B_Q16",
)
"""Compile-time parameters of ``hls/bench_params.h`` that ``overrides`` may set."""

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


_I32 = ctypes.c_int32
_SIGNATURES = {
    "relevancy_topk": (_ptr(np.int16), _ptr(np.int16), _ptr(np.int32), _ptr(np.int64), *[_I32] * 5),
    "threshold_select": (
        *(_ptr(np.int16), _ptr(np.int16), _ptr(np.uint64), _ptr(np.int32)),
        *(_I32, _I32, ctypes.c_int64, _I32, _I32),
    ),
    "page_topk": (_ptr(np.int16), _ptr(np.int16), _ptr(np.int32), _ptr(np.int64), *[_I32] * 7),
    "dsa_indexer_topk": (*[_ptr(np.int16)] * 3, _ptr(np.int32), _ptr(np.int64), *[_I32] * 6),
    "bm25_topk": (
        *(_ptr(np.int64), _ptr(np.uint32), _ptr(np.uint16), _ptr(np.uint64), _ptr(np.int32)),
        *(_ptr(np.int32), _ptr(np.int64), _I32, _I32),
    ),
}


def _sort_selection(index: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorts each row's top-k slots by (score desc, index asc), unfilled slots (index -1) last."""
    valid = index >= 0
    negated = np.where(valid, -score, 0)  # unfilled slots hold INT64_MIN, which must not be negated
    order = np.lexsort((index, negated, ~valid), axis=-1)
    return np.take_along_axis(index, order, axis=-1), np.take_along_axis(score, order, axis=-1)


class CsimLibrary:
    """One loaded C-simulation library: the five kernels as numpy functions.

    Attributes:
        info: how the library was built (:class:`BuildInfo`).
        params: compile-time parameters reported by the library itself, e.g. ``params["BENCH_D"]``.
    """

    def __init__(self, info: BuildInfo) -> None:
        self.info = info
        self._lib = ctypes.CDLL(str(info.library))
        for name, argtypes in _SIGNATURES.items():
            function = getattr(self._lib, name)
            function.argtypes = list(argtypes)
            function.restype = None
        self._lib.bench_param_count.restype = ctypes.c_int
        self._lib.bench_param_name.restype = ctypes.c_char_p
        self._lib.bench_param_name.argtypes = [ctypes.c_int]
        self._lib.bench_param_value.restype = ctypes.c_longlong
        self._lib.bench_param_value.argtypes = [ctypes.c_int]
        self.params: dict[str, int] = {
            self._lib.bench_param_name(i).decode(): int(self._lib.bench_param_value(i))
            for i in range(self._lib.bench_param_count())
        }

    def provenance(self) -> dict[str, Any]:
        """Build provenance plus the compiled parameters, as plain values for a result record."""
        return {**self.info.as_dict(), "params": dict(self.params)}

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

    def _tiers(self, rows: int, bram: int | None, uram: int | None, vectors_per_entry: int) -> tuple[int, int]:
        """Per-row tier capacities in entries: by default the on-chip tiers are shared evenly by the rows."""
        share = vectors_per_entry * max(rows, 1)
        caps = []
        for name, given, param in (("bram", bram, "BENCH_BRAM_KEYS"), ("uram", uram, "BENCH_URAM_KEYS")):
            most = self.params[param] // vectors_per_entry
            if given is None:
                caps.append(self.params[param] // share)
            elif isinstance(given, bool) or not isinstance(given, int | np.integer) or not 0 <= given <= most:
                raise KernelInputError(f"{name} tier capacity must be an integer in [0, {most}], got {given!r}")
            else:
                caps.append(int(given))
        return caps[0], caps[1]

    # ----------------------------------------------------------------------------------------------
    # kernels

    def relevancy_topk(
        self, q: np.ndarray, keys: np.ndarray, k: int, *, bram_keys: int | None = None, uram_keys: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Inner-product scores of every key, then the top k per row (``hls/relevancy_topk.cpp``).

        Args:
            q: int16 [R, D] one query per row (a row is a (batch, KV head) pair).
            keys: int16 [R, N, D] keys per row.
            k: keys to select per row, in [1, BENCH_K_MAX]; k > N pads with -1.
            bram_keys: keys per row in the BRAM tier; default BENCH_BRAM_KEYS // R. Never changes results.
            uram_keys: keys per row in the URAM tier; default BENCH_URAM_KEYS // R. Never changes results.

        Returns:
            (index int32 [R, k], score int64 [R, k]) per row sorted by (score desc, index asc); unfilled
            slots hold -1 and INT64_MIN.

        Raises:
            KernelInputError: on a wrong dtype, shape, contiguity, head dimension or k.
        """
        q = self._array("q", q, np.int16, 2, _INT16_HINT)
        keys = self._array("keys", keys, np.int16, 3, _INT16_HINT)
        rows, n, dim = keys.shape
        self._check_dim("keys", dim)
        if q.shape != (rows, dim):
            raise KernelInputError(f"q must have shape (R, D) = {(rows, dim)} to match keys, got {q.shape}")
        self._check_count("rows", rows, 0, "BENCH_MAX_ROWS")
        self._check_count("keys per row", n, 0, "BENCH_MAX_KEYS")
        k = self._check_k(k)
        bram, uram = self._tiers(rows, bram_keys, uram_keys, 1)
        index = np.empty((rows, k), dtype=np.int32)
        score = np.empty((rows, k), dtype=np.int64)
        self._lib.relevancy_topk(q, keys, index, score, rows, n, k, bram, uram)
        return _sort_selection(index, score)

    def threshold_select(
        self,
        q: np.ndarray,
        keys: np.ndarray,
        threshold: int,
        *,
        bram_keys: int | None = None,
        uram_keys: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Selects the keys whose inner-product score is >= threshold (``hls/threshold_select.cpp``).

        Args:
            q: int16 [R, D] one query per row.
            keys: int16 [R, N, D] keys per row.
            threshold: int64 threshold in the integer score's fixed point (for float scores s and int16
                scales a, b from :func:`kernels_fpga.quantize.to_int16`: about s / (a * b)).
            bram_keys: keys per row in the BRAM tier; default BENCH_BRAM_KEYS // R. Never changes results.
            uram_keys: keys per row in the URAM tier; default BENCH_URAM_KEYS // R. Never changes results.

        Returns:
            (bitmap uint64 [R, ceil(N / 64)], where bit b of word w is key 64 * w + b;
            count int32 [R] of selected keys).

        Raises:
            KernelInputError: on a wrong dtype, shape, contiguity, head dimension or threshold.
        """
        q = self._array("q", q, np.int16, 2, _INT16_HINT)
        keys = self._array("keys", keys, np.int16, 3, _INT16_HINT)
        rows, n, dim = keys.shape
        self._check_dim("keys", dim)
        if q.shape != (rows, dim):
            raise KernelInputError(f"q must have shape (R, D) = {(rows, dim)} to match keys, got {q.shape}")
        self._check_count("rows", rows, 0, "BENCH_MAX_ROWS")
        self._check_count("keys per row", n, 0, "BENCH_MAX_KEYS")
        info = np.iinfo(np.int64)
        if isinstance(threshold, bool) or not isinstance(threshold, int | np.integer):
            raise KernelInputError(f"threshold must be an integer, got {threshold!r}")
        if not info.min <= threshold <= info.max:
            raise KernelInputError(f"threshold must fit int64, got {threshold}")
        bram, uram = self._tiers(rows, bram_keys, uram_keys, 1)
        bitmap = np.zeros((rows, -(-n // 64)), dtype=np.uint64)
        count = np.zeros(rows, dtype=np.int32)
        self._lib.threshold_select(q, keys, bitmap, count, rows, n, int(threshold), bram, uram)
        return bitmap, count

    def page_topk(
        self,
        q: np.ndarray,
        kmin: np.ndarray,
        kmax: np.ndarray,
        k: int,
        sub: int = 1,
        *,
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
            bram_pages: pages per row in the BRAM tier (a page stores 2 vectors); default
                BENCH_BRAM_KEYS // (2 R). Never changes results.
            uram_pages: pages per row in the URAM tier; default BENCH_URAM_KEYS // (2 R).

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
        bram, uram = self._tiers(rows, bram_pages, uram_pages, 2)
        # One burst per page on the board: each page's min and max vectors are stored side by side.
        bounds = np.ascontiguousarray(np.stack((kmin, kmax), axis=2))
        index = np.empty((rows, k), dtype=np.int32)
        score = np.empty((rows, k), dtype=np.int64)
        self._lib.page_topk(q, bounds, index, score, rows, group, n_pages, int(sub), k, bram, uram)
        return _sort_selection(index, score)

    def dsa_indexer_topk(
        self,
        q: np.ndarray,
        w: np.ndarray,
        keys: np.ndarray,
        k: int,
        *,
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
            bram_keys: keys per row in the BRAM tier; default BENCH_BRAM_KEYS // R. Never changes results.
            uram_keys: keys per row in the URAM tier; default BENCH_URAM_KEYS // R. Never changes results.

        Returns:
            (token index int32 [R, k], score int64 [R, k]) sorted by (score desc, index asc); unfilled
            slots hold -1 and INT64_MIN.

        Raises:
            KernelInputError: on a wrong dtype, shape, contiguity, head dimension, head count or k.
        """
        q = self._array("q", q, np.int16, 3, _INT16_HINT)
        w = self._array("w", w, np.int16, 2, _INT16_HINT)
        keys = self._array("keys", keys, np.int16, 3, _INT16_HINT)
        rows, n, dim = keys.shape
        self._check_dim("keys", dim)
        heads = q.shape[1]
        if q.shape != (rows, heads, dim) or w.shape != (rows, heads):
            raise KernelInputError(
                f"q must have shape (R, H, D) and w (R, H) with R={rows}, D={dim}; got {q.shape} and {w.shape}"
            )
        self._check_count("rows", rows, 0, "BENCH_MAX_ROWS")
        self._check_count("indexer heads", heads, 1, "BENCH_DSA_HEADS")
        self._check_count("keys per row", n, 0, "BENCH_MAX_KEYS")
        k = self._check_k(k, "BENCH_DSA_K_MAX")
        bram, uram = self._tiers(rows, bram_keys, uram_keys, 1)
        index = np.empty((rows, k), dtype=np.int32)
        score = np.empty((rows, k), dtype=np.int64)
        self._lib.dsa_indexer_topk(q, w, keys, index, score, rows, heads, n, k, bram, uram)
        return _sort_selection(index, score)

    def bm25_topk(
        self,
        doc_ptr: np.ndarray,
        term_ids: np.ndarray,
        tfs: np.ndarray,
        query_terms: np.ndarray | Sequence[int],
        idf_q16: np.ndarray,
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
                (:func:`kernels_fpga.reference.bm25_idf_q16`).
            k: documents to select, in [1, BENCH_K_MAX].

        Returns:
            (document index int32 [k], score int64 [k]) sorted by (score desc, index asc); unfilled slots
            hold -1 and INT64_MIN. Scores are Q16 (divide by 65536 for the real BM25 value).

        Raises:
            KernelInputError: on a malformed corpus, query, IDF table or k.
        """
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
        idf_q16 = self._array("idf_q16", idf_q16, np.int32, 1, "compute it with kernels_fpga.reference.bm25_idf_q16")
        if idf_q16.shape != (vocab,) or (idf_q16.size and idf_q16.min() < 0):
            raise KernelInputError(f"idf_q16 must hold {vocab} non-negative Q16 values, got shape {idf_q16.shape}")
        try:
            mask = bm25_query_mask(query_terms, vocab)
        except ValueError as error:
            raise KernelInputError(str(error)) from error
        bitmap = np.packbits(mask, bitorder="little").view("<u8").astype(np.uint64)
        k = self._check_k(k)
        index = np.empty(k, dtype=np.int32)
        score = np.empty(k, dtype=np.int64)
        self._lib.bm25_topk(doc_ptr, term_ids, tfs, bitmap, idf_q16, index, score, n_docs, k)
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


def relevancy_topk(q: np.ndarray, keys: np.ndarray, k: int, **tiers: int) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`CsimLibrary.relevancy_topk` on the default build."""
    return load().relevancy_topk(q, keys, k, **tiers)


def threshold_select(q: np.ndarray, keys: np.ndarray, threshold: int, **tiers: int) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`CsimLibrary.threshold_select` on the default build."""
    return load().threshold_select(q, keys, threshold, **tiers)


def page_topk(
    q: np.ndarray, kmin: np.ndarray, kmax: np.ndarray, k: int, sub: int = 1, **tiers: int
) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`CsimLibrary.page_topk` on the default build."""
    return load().page_topk(q, kmin, kmax, k, sub, **tiers)


def dsa_indexer_topk(
    q: np.ndarray, w: np.ndarray, keys: np.ndarray, k: int, **tiers: int
) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`CsimLibrary.dsa_indexer_topk` on the default build."""
    return load().dsa_indexer_topk(q, w, keys, k, **tiers)


def bm25_topk(
    doc_ptr: np.ndarray,
    term_ids: np.ndarray,
    tfs: np.ndarray,
    query_terms: np.ndarray | Sequence[int],
    idf_q16: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`CsimLibrary.bm25_topk` on the default build."""
    return load().bm25_topk(doc_ptr, term_ids, tfs, query_terms, idf_q16, k)
