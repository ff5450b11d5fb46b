// Inner-product processing elements (PEs) shared by the relevancy kernels.
//
// A PE multiplies int16 query and key words, BENCH_PE_MACS per cycle, and sums the products into a 40-bit
// accumulator (acc_t; overflow bound in bench_params.h), so one D-dim key takes D / PE_MACS cycles. The PE
// array has BENCH_N_PE PEs; key i is scored by PE i % N_PE, so a BENCH_PACKET-key packet takes
// PACKET / N_PE rounds of the array (paper.md section 7: 8 PEs, 512 MAC/cycle, 16-score packets).
#ifndef BENCH_PE_H
#define BENCH_PE_H

#include <stdint.h>

#include "bench_params.h"
#include "bench_stream.h"
#include "bench_types.h"

namespace bench_hls {

// sum of q[d] * k[d] for d in [first, first + LEN): LEN MACs into one adder tree.
template <int LEN>
inline acc_t dot_slice(const int16_t* q, const int16_t* k, int first) {
  acc_t acc = 0;
macs:
  for (int m = 0; m < LEN; ++m) {
#pragma HLS UNROLL
    acc += (int32_t)q[first + m] * (int32_t)k[first + m];  // |product| <= 2^30 fits int32
  }
  return acc;
}

// Reads one query vector (BENCH_D int16 words) into registers.
inline void load_query(const int16_t* q, int16_t q_local[BENCH_D]) {
load_q:
  for (int d = 0; d < BENCH_D; ++d) {
#pragma HLS PIPELINE II = 1
    q_local[d] = q[d];
  }
}

// Scores n keys (key i arrives on keys[i % N_PE]) against q and emits the scores as packets in key order.
inline void pe_array(const int16_t q[BENCH_D], bench::stream<KeyVec> keys[BENCH_N_PE], int32_t n,
                     bench::stream<ScorePacket>& out) {
packets:
  for (int32_t p = 0; p < (BENCH_MAX_KEYS + BENCH_PACKET - 1) / BENCH_PACKET; ++p) {
    const int32_t base = p * BENCH_PACKET;
    if (base >= n) break;
    ScorePacket packet;
    packet.base = base;
    packet.count = n - base < BENCH_PACKET ? n - base : BENCH_PACKET;
  rounds:
    for (int r = 0; r < BENCH_PACKET / BENCH_N_PE; ++r) {
      KeyVec key[BENCH_N_PE] = {};
      acc_t acc[BENCH_N_PE];
#pragma HLS ARRAY_PARTITION variable = key complete dim = 0
#pragma HLS ARRAY_PARTITION variable = acc complete
    fetch:
      for (int pe = 0; pe < BENCH_N_PE; ++pe) {
#pragma HLS UNROLL
        acc[pe] = 0;
        if (r * BENCH_N_PE + pe < packet.count) key[pe] = keys[pe].read();
      }
    chunks:
      for (int c = 0; c < BENCH_D / BENCH_PE_MACS; ++c) {
#pragma HLS PIPELINE II = 1
      pes:
        for (int pe = 0; pe < BENCH_N_PE; ++pe) {
#pragma HLS UNROLL
          acc[pe] += dot_slice<BENCH_PE_MACS>(q, key[pe].v, c * BENCH_PE_MACS);
        }
      }
    store:
      for (int pe = 0; pe < BENCH_N_PE; ++pe) {
#pragma HLS UNROLL
        const int j = r * BENCH_N_PE + pe;
        packet.score[j] = j < packet.count ? acc[pe] : 0;
      }
    }
    out.write(packet);
  }
}

}  // namespace bench_hls

#endif  // BENCH_PE_H
