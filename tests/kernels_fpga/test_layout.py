"""kernels_fpga.layout against brute force and against the kernels' own layout arithmetic (bench_layout.h)."""

from __future__ import annotations

import numpy as np
import pytest

from kernels_fpga import csim
from kernels_fpga.layout import (
    Stripes,
    bm25_channels,
    bm25_doc_ranges,
    bm25_expected_beats,
    pack_query_bitmap,
    port_count,
    tier_split,
)


@pytest.fixture(scope="module")
def lib() -> csim.CsimLibrary:
    return csim.load()


@pytest.mark.parametrize(("rows", "n", "capacity", "stripe"), [(1, 1, 1, 128), (3, 1300, 1500, 128), (2, 77, 2049, 64),
                                                                (4, 0, 5, 128)])
def test_split_puts_every_entry_where_location_says(rows, n, capacity, stripe):
    rng = np.random.default_rng(n + capacity)
    entries = rng.integers(-9, 9, size=(rows, n, 3), dtype=np.int16)
    stripes = Stripes(8, stripe, capacity)
    ports = stripes.split(entries)
    assert stripes.port_stride % stripe == 0 and stripes.port_stride * 8 >= capacity
    assert all(p.shape == (rows, stripes.port_stride, 3) and p.flags.c_contiguous for p in ports)
    flat = [p.reshape(-1, 3) for p in ports]
    seen = 0
    for r in range(rows):
        for i in range(n):
            port, entry = stripes.location(r, i)
            np.testing.assert_array_equal(flat[port][entry], entries[r, i])
            seen += 1
    assert seen == rows * n
    assert sum(np.count_nonzero(p) for p in flat) == np.count_nonzero(entries)  # padding stays zero


def test_split_refuses_rows_longer_than_the_capacity():
    with pytest.raises(ValueError, match="capacity"):
        Stripes(8, 128, 4).split(np.zeros((1, 5, 2), dtype=np.int16))


def test_port_count_and_indices_match_the_kernel(lib):
    rng = np.random.default_rng(3)
    for x in [0, 1, 127, 128, 1023, 1024, 1025, 5000, *rng.integers(0, 200_000, size=40)]:
        for stripe in (64, 128):
            counts = [port_count(int(x), p, stripe, 8) for p in range(8)]
            assert sum(counts) == x
            brute = np.bincount((np.arange(x) // stripe) % 8, minlength=8)
            assert counts == list(brute)
            assert counts == [lib.port_count(int(x), p, stripe) for p in range(8)]
    stripes = Stripes(8, 128, 10_000)
    for i in rng.integers(0, 10_000, size=50):
        port, local = stripes.location(0, int(i))
        assert lib.global_index(local, port, 128) == i


def test_tier_split_matches_the_kernel(lib):
    rng = np.random.default_rng(4)
    for _ in range(60):
        rows = int(rng.integers(1, 40))
        vectors = int(rng.integers(1, 3))
        n = int(rng.integers(0, 80_000))
        stride = n + int(rng.integers(0, 3000))
        bram, uram = (int(rng.integers(0, total // vectors + 1)) for total in (16384, 32768))
        got = lib.kernel_layout(rows, n, stride, vectors, bram, uram)
        split = tier_split(rows, n, 128 // vectors, 8, bram, uram, 2048 // vectors, 4096 // vectors)
        assert got == {"port_stride": Stripes(8, 128 // vectors, stride).port_stride, "bram_local": split.bram_local,
                       "uram_local": split.uram_local, "bram_end": split.bram_end, "uram_end": split.uram_end}
        assert split.bram_end <= split.uram_end <= n and rows * split.bram_local <= 2048 // vectors


def test_bm25_channels_place_postings_by_lane_and_keep_every_posting():
    rng = np.random.default_rng(5)
    lengths = rng.integers(0, 60, size=37)
    doc_ptr = np.concatenate(([0], np.cumsum(lengths)))
    term_ids = rng.integers(0, 65536, size=int(doc_ptr[-1]))
    term_ids[:10] = 16 * np.arange(10)  # ten postings of document 0 in lane 0: ten beats
    tfs = rng.integers(1, 65536, size=term_ids.size)
    channels = bm25_channels(doc_ptr, term_ids, tfs, 4, 16)
    assert [end - begin for begin, end in bm25_doc_ranges(37, 4)] == [10, 10, 10, 7]
    kept = []
    for (begin, _), (ptr, postings) in zip(bm25_doc_ranges(37, 4), channels, strict=True):
        assert ptr[0] == 0 and (np.diff(ptr) >= 0).all() and postings.dtype == np.uint32
        slots = postings.reshape(-1, 16)
        terms, freq = slots & 0xFFFF, slots >> 16
        used = freq > 0
        assert ((terms % 16)[used] == np.nonzero(used)[1]).all()  # slot s holds lane s
        for j in range(len(ptr) - 1):
            beats = slots[ptr[j]:ptr[j + 1]]
            d = begin + j
            mine = slice(doc_ptr[d], doc_ptr[d + 1])
            lanes = np.bincount(term_ids[mine] % 16, minlength=16)
            assert ptr[j + 1] - ptr[j] == lanes.max()
            kept += [(d, int(w & 0xFFFF), int(w >> 16)) for w in beats.ravel() if w >> 16]
    assert channels[0][0][1] >= 10
    doc_of = np.repeat(np.arange(37), lengths)
    assert sorted(kept) == sorted(zip(doc_of.tolist(), term_ids.tolist(), tfs.tolist(), strict=True))
    with pytest.raises(ValueError, match="term ids"):
        bm25_channels([0, 1], [70000], [1], 4, 16)
    with pytest.raises(ValueError, match="doc_ptr"):
        bm25_channels([0, 2], [1], [1], 4, 16)


@pytest.mark.parametrize("mean", [1.0, 6.0, 75.0])
def test_expected_beats_match_a_monte_carlo(mean):
    rng = np.random.default_rng(int(mean))
    lengths = rng.poisson(mean, size=20_000)
    beats = [max(1, np.bincount(rng.integers(0, 16, size=n), minlength=16).max()) for n in lengths]
    assert bm25_expected_beats(mean, 16) == pytest.approx(np.mean(beats), rel=0.02)
    assert bm25_expected_beats(0.0, 16) == 1.0


def test_query_bitmap_bits():
    mask = np.zeros(1024, dtype=bool)
    mask[[0, 63, 64, 1023]] = True
    words = pack_query_bitmap(mask)
    assert words.dtype == np.uint64 and words.shape == (16,)
    assert words[0] == (1 | 1 << 63) and words[1] == 1 and words[15] == 1 << 63
