"""Kernel state between calls, through the raw top functions: on-chip key tiers (sync_from), resident BM25 IDF."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from kernels_fpga import csim
from kernels_fpga import reference as ref
from kernels_fpga.host import sort_topk
from kernels_fpga.layout import Stripes

D = 128


@pytest.fixture(scope="module")
def lib() -> csim.CsimLibrary:
    return csim.load()


def int16(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(-32768, 32767, size=shape, endpoint=True, dtype=np.int16)


def relevancy(lib: csim.CsimLibrary, q: np.ndarray, ports: list[np.ndarray], n: int, stride: int,
              sync_from: int) -> tuple[np.ndarray, np.ndarray]:
    rows = q.shape[0]
    index, score = np.empty((rows, 8), np.int32), np.empty((rows, 8), np.int64)
    lib.call("relevancy_topk", q, *ports, index, score, rows, n, stride, 8, 1024, 1024, sync_from)
    return sort_topk(index, score)


def dsa(lib: csim.CsimLibrary, q: np.ndarray, ports: list[np.ndarray], n: int, stride: int,
        sync_from: int) -> tuple[np.ndarray, np.ndarray]:
    rows = q.shape[0]
    w = np.ones((rows, 1), np.int16)
    index, score = np.empty((rows, 8), np.int32), np.empty((rows, 8), np.int64)
    lib.call("dsa_indexer_topk", q[:, None], w, *ports, index, score, rows, 1, n, stride, 8, 1024, 1024, sync_from)
    return sort_topk(index, score)


def dsa_reference(q: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return ref.dsa_indexer_topk(q[:, None], np.ones((q.shape[0], 1), np.int16), keys, 8)


@pytest.mark.parametrize(("run", "reference"), [(relevancy, lambda q, k: ref.relevancy_topk(q, k, 8)),
                                                (dsa, dsa_reference)])
def test_on_chip_tiers_hold_keys_until_synced(lib: csim.CsimLibrary, run: Callable, reference: Callable) -> None:
    rng = np.random.default_rng(81)
    rows, n, stride = 2, 2600, 3000  # per row: 1024 BRAM, 1024 URAM, the rest HBM
    q, keys = int16(rng, rows, D), int16(rng, rows, n, D)
    stripes = Stripes(8, 128, stride)
    ports = stripes.split(keys)
    assert_equal(run(lib, q, ports, n, stride, 0), reference(q, keys))
    changed = keys.copy()
    for i in (5, 1500, 2400):  # a BRAM key, a URAM key, an HBM key
        changed[1, i] = int16(rng, D)
        port, entry = stripes.location(1, i)
        ports[port].reshape(-1, D)[entry] = changed[1, i]
    stale = changed.copy()
    stale[1, [5, 1500]] = keys[1, [5, 1500]]  # on-chip copies keep the old keys; HBM is read every call
    assert_equal(run(lib, q, ports, n, stride, n), reference(q, stale))
    partly = stale.copy()
    partly[1, 1500] = changed[1, 1500]  # sync_from = 1500 refreshes on-chip keys 1500.. only
    assert_equal(run(lib, q, ports, n, stride, 1500), reference(q, partly))
    assert_equal(run(lib, q, ports, n, stride, 0), reference(q, changed))


def assert_equal(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_bm25_idf_stays_resident_between_queries(lib: csim.CsimLibrary) -> None:
    rng = np.random.default_rng(82)
    lengths = rng.integers(0, 30, size=150)
    doc_ptr = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    term_ids = rng.integers(0, 400, size=int(doc_ptr[-1])).astype(np.uint32)
    tfs = rng.integers(1, 9, size=term_ids.size).astype(np.uint16)
    first = rng.integers(0, 5000, size=65536).astype(np.int32)
    second = rng.integers(0, 5000, size=65536).astype(np.int32)
    query = rng.integers(0, 400, size=8)
    lib.bm25_load_idf(first)
    assert_equal(lib.bm25_topk(doc_ptr, term_ids, tfs, query, None, 20),
                 ref.bm25_topk(doc_ptr, term_ids, tfs, query, first, 20))
    assert_equal(lib.bm25_topk(doc_ptr, term_ids, tfs, query, second, 20),  # passing a table loads it
                 ref.bm25_topk(doc_ptr, term_ids, tfs, query, second, 20))
    assert_equal(lib.bm25_topk(doc_ptr, term_ids, tfs, query[:3], None, 20),
                 ref.bm25_topk(doc_ptr, term_ids, tfs, query[:3], second, 20))
    fresh = csim.CsimLibrary(lib.info)  # knows of no table it loaded itself
    with pytest.raises(ValueError, match="bm25_load_idf"):
        fresh.bm25_topk(doc_ptr, term_ids, tfs, query, None, 20)


def test_call_checks_the_kernel_and_argument_count(lib: csim.CsimLibrary) -> None:
    with pytest.raises(ValueError, match="unknown kernel"):
        lib.call("relevancy", 1)
    with pytest.raises(ValueError, match="takes 18 arguments"):
        lib.call("relevancy_topk", 1, 2)
