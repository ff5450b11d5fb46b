"""The top functions' argument lists, as declared in ``kernels_fpga/hls/<kernel>.cpp``.

The C-simulation binding (:mod:`kernels_fpga.csim`) sets its ctypes signatures from these lists, the
host code (:mod:`kernels_fpga.host`) numbers its ``run.set_arg`` calls and picks each buffer's memory
bank (``kernel.group_id``) from them, and ``tests/kernels_fpga/test_interface.py`` checks them, and
the connectivity file ``hls/connectivity_u55c.cfg``, against the C++ sources.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KEY_PORTS = 8
"""Key ports of the key and page kernels (``BENCH_N_PE``; the top functions name them keys0..keys7)."""
BM25_CHANNELS = 4
"""Posting ports of ``bm25_topk`` (``BENCH_BM25_CHANNELS``)."""


@dataclass(frozen=True)
class Arg:
    """One argument of a top function.

    Attributes:
        name: Parameter name in the C++ source (and in the .cfg ``sp=`` lines).
        dtype: Element type of a pointer, or the type of a scalar.
        bundle: m_axi bundle of a pointer (one AXI port, one memory bank); None for an s_axilite scalar.
    """

    name: str
    dtype: np.dtype
    bundle: str | None = None

    @property
    def is_pointer(self) -> bool:
        """Whether the argument is a buffer (m_axi) rather than a scalar (s_axilite)."""
        return self.bundle is not None


def _ptr(name: str, dtype: type, bundle: str) -> Arg:
    return Arg(name, np.dtype(dtype), bundle)


def _scalars(*names: str) -> tuple[Arg, ...]:
    return tuple(Arg(name, np.dtype(np.int32)) for name in names)


def _ports(prefix: str) -> tuple[Arg, ...]:
    return tuple(_ptr(f"{prefix}{p}", np.int16, f"gmem_k{p}") for p in range(KEY_PORTS))


_OUT_TOPK = (_ptr("out_index", np.int32, "gmem_out"), _ptr("out_score", np.int64, "gmem_out"))
_TIER_SCALARS = ("bram_keys", "uram_keys", "sync_from")

KERNELS: dict[str, tuple[Arg, ...]] = {
    "relevancy_topk": (
        _ptr("q", np.int16, "gmem_q"), *_ports("keys"), *_OUT_TOPK,
        *_scalars("rows", "n_keys", "row_stride", "k", *_TIER_SCALARS),
    ),
    "threshold_select": (
        _ptr("q", np.int16, "gmem_q"), _ptr("threshold", np.int64, "gmem_q"), *_ports("keys"),
        _ptr("out_bitmap", np.uint64, "gmem_out"), _ptr("out_count", np.int32, "gmem_out"),
        *_scalars("rows", "n_keys", "row_stride", *_TIER_SCALARS),
    ),
    "page_topk": (
        _ptr("q", np.int16, "gmem_q"), *_ports("bounds"), *_OUT_TOPK,
        *_scalars("rows", "group", "n_pages", "page_stride", "sub", "k", "bram_pages", "uram_pages", "sync_from"),
    ),
    "dsa_indexer_topk": (
        _ptr("q", np.int16, "gmem_q"), _ptr("w", np.int16, "gmem_q"), *_ports("keys"), *_OUT_TOPK,
        *_scalars("rows", "heads", "n_keys", "row_stride", "k", *_TIER_SCALARS),
    ),
    "bm25_topk": (
        *(_ptr(f"doc_ptr{c}", np.int64, f"gmem_p{c}") for c in range(BM25_CHANNELS)),
        *(_ptr(f"postings{c}", np.uint32, f"gmem_p{c}") for c in range(BM25_CHANNELS)),
        _ptr("query_bitmap", np.uint64, "gmem_q"), _ptr("idf_q16", np.int32, "gmem_q"), *_OUT_TOPK,
        *_scalars("n_docs", "k", "load_idf"),
    ),
}
"""Kernel name -> its arguments in declaration order."""


def arg_index(kernel: str, name: str) -> int:
    """Position of argument ``name`` of ``kernel`` (the index ``run.set_arg`` and ``group_id`` take).

    Raises:
        KeyError: Unknown kernel or argument.
    """
    for i, arg in enumerate(KERNELS[kernel]):
        if arg.name == name:
            return i
    raise KeyError(f"{kernel} has no argument {name!r}")
