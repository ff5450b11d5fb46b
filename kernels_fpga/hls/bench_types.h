// Data types that flow between the dataflow stages of the bench kernels.
#ifndef BENCH_TYPES_H
#define BENCH_TYPES_H

#include <stdint.h>

#include "bench_params.h"

namespace bench_hls {

// Accumulator of an inner product: a 40-bit value on hardware (bound in bench_params.h), int64 in C.
typedef int64_t acc_t;

// Sentinels of an unfilled top-k output slot (fewer than k candidates).
const int32_t kEmptyIndex = -1;
const acc_t kEmptyScore = INT64_MIN;

// One stored entry of W int16 words: a key (W = D) or a page's min/max bounds (W = 2 * D).
template <int W>
struct Vec {
  int16_t v[W];
};
typedef Vec<BENCH_D> KeyVec;
typedef Vec<2 * BENCH_D> PageVec;

// Up to BENCH_PACKET consecutive candidates: candidate j has index base + j and score score[j];
// entries j >= count are padding (a PE's, channel's or stream's last packet may be partial).
struct ScorePacket {
  acc_t score[BENCH_PACKET];
  int32_t base;
  int32_t count;
};

// Number of packets that carry n candidates.
inline int32_t packets_for(int32_t n) { return (n + BENCH_PACKET - 1) / BENCH_PACKET; }

}  // namespace bench_hls

#endif  // BENCH_TYPES_H
