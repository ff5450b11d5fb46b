// Key tiers: the load stage that streams a row's stored entries (keys or page bounds) to the PEs.
//
// The reference designs keep keys on chip in token-id order, earliest first: BRAM, then URAM, then HBM
// (paper.md section 7; BRAM 21.8 TB/s, URAM 10.4 TB/s, HBM 460 GB/s; 128 / 32 / 8 keys per cycle-block).
// load_tiers reads entries [0, bram_end) as the BRAM tier, [bram_end, uram_end) as the URAM tier and
// [uram_end, n) as the HBM tier, three loops in that order, so the analytic model (kernels_fpga/model.py)
// can charge each loop its tier's rate. On a board the first two tiers are resident on chip (written at
// Prepare, appended per decode step); in C-simulation all three read the host-written array, so the
// split changes timing only, never a result.
#ifndef BENCH_TIERS_H
#define BENCH_TIERS_H

#include <stdint.h>

#include "bench_params.h"
#include "bench_stream.h"
#include "bench_types.h"

namespace bench_hls {

// Where a row's n entries live: [0, bram_end) BRAM, [bram_end, uram_end) URAM, [uram_end, n) HBM.
struct TierSplit {
  int32_t bram_end;
  int32_t uram_end;
  int32_t n;
};

// Splits n entries given the per-row tier capacities (in entries) the host assigned; capacities are
// clamped to the compile-time tier sizes that bound the load loops.
inline TierSplit split_tiers(int32_t n, int32_t bram_cap, int32_t uram_cap) {
  int32_t bram = bram_cap < 0 ? 0 : (bram_cap > BENCH_BRAM_KEYS ? BENCH_BRAM_KEYS : bram_cap);
  if (bram > n) bram = n;
  int32_t uram = uram_cap < 0 ? 0 : (uram_cap > BENCH_URAM_KEYS ? BENCH_URAM_KEYS : uram_cap);
  if (uram > n - bram) uram = n - bram;
  TierSplit split;
  split.bram_end = bram;
  split.uram_end = bram + uram;
  split.n = n;
  return split;
}

template <int W>
inline void read_entry(const int16_t* src, int32_t i, Vec<W>& entry) {
  const int16_t* p = src + (int64_t)i * W;
read_words:
  for (int w = 0; w < W; ++w) {
#pragma HLS UNROLL
    entry.v[w] = p[w];
  }
}

// Streams entry i of a row (W int16 words each, row-major at src) to out[i % LANES], tier by tier.
template <int W, int LANES>
void load_tiers(const int16_t* src, TierSplit split, bench::stream<Vec<W> > out[LANES]) {
tier_bram:
  for (int32_t i = 0; i < BENCH_BRAM_KEYS; ++i) {
#pragma HLS PIPELINE II = 1
    if (i >= split.bram_end) break;
    Vec<W> entry;
    read_entry<W>(src, i, entry);
    out[i % LANES].write(entry);
  }
tier_uram:
  for (int32_t i = 0; i < BENCH_URAM_KEYS; ++i) {
#pragma HLS PIPELINE II = 1
    const int32_t e = split.bram_end + i;
    if (e >= split.uram_end) break;
    Vec<W> entry;
    read_entry<W>(src, e, entry);
    out[e % LANES].write(entry);
  }
tier_hbm:
  for (int32_t i = 0; i < BENCH_MAX_KEYS; ++i) {
#pragma HLS PIPELINE II = 1
    const int32_t e = split.uram_end + i;
    if (e >= split.n) break;
    Vec<W> entry;
    read_entry<W>(src, e, entry);
    out[e % LANES].write(entry);
  }
}

}  // namespace bench_hls

#endif  // BENCH_TIERS_H
