// The top-k unit: K registers holding (score, index), fed by score packets.
//
// Ranking: a higher score ranks higher; among equal scores the LOWER index ranks higher. The order is
// strict and total (indices are unique), so the unit ends with exactly the k highest-ranked candidates
// whatever order they arrive in, ties included.
//
// Per packet (paper.md section 7): all BENCH_PACKET candidates are compared with the current minimum in
// parallel; only on a hit does a candidate replace the minimum, after which the new minimum is found by a
// log2(K)-level comparator tree. Hits enter one at a time and are re-checked against the minimum as it
// rises. While fewer than k registers are filled, hits fill the next empty register instead.
//
// Output: k (index, score) pairs in register (slot) order, NOT sorted, 16 slots per iteration (12 bytes a
// slot: 3 port beats); registers never filled (fewer than k candidates) hold index -1 and score INT64_MIN.
// kernels_fpga/csim.py sorts rows by (score desc, index asc).
#ifndef BENCH_TOPK_H
#define BENCH_TOPK_H

#include <stdint.h>

#include "bench_params.h"
#include "bench_stream.h"
#include "bench_types.h"

namespace bench_hls {

// Registers beyond the runtime k hold this score, which no candidate can reach (every kernel score is
// below 2^63 - 1 by the bounds in bench_params.h), so the tree never picks them as the minimum.
const acc_t kInactiveScore = INT64_MAX;

// True when candidate a ranks below candidate b.
inline bool ranks_below(acc_t score_a, int32_t index_a, acc_t score_b, int32_t index_b) {
  return score_a < score_b || (score_a == score_b && index_a > index_b);
}

// The register holding the lowest-ranked entry, by a log2(K)-level comparator tree.
template <int K>
int32_t lowest_slot(const acc_t score[K], const int32_t index[K]) {
  acc_t s[K];
  int32_t ix[K];
  int32_t slot[K];
#pragma HLS ARRAY_PARTITION variable = s complete
#pragma HLS ARRAY_PARTITION variable = ix complete
#pragma HLS ARRAY_PARTITION variable = slot complete
leaves:
  for (int j = 0; j < K; ++j) {
#pragma HLS UNROLL
    s[j] = score[j];
    ix[j] = index[j];
    slot[j] = j;
  }
levels:
  for (int width = K / 2; width >= 1; width /= 2) {
#pragma HLS UNROLL
  comparators:
    for (int j = 0; j < width; ++j) {
#pragma HLS UNROLL
      // In place is safe: pair j reads 2j, 2j+1 >= j, which later pairs have not yet overwritten.
      const int src = ranks_below(s[2 * j + 1], ix[2 * j + 1], s[2 * j], ix[2 * j]) ? 2 * j + 1 : 2 * j;
      s[j] = s[src];
      ix[j] = ix[src];
      slot[j] = slot[src];
    }
  }
  return slot[0];
}

// Consumes n_packets score packets and writes the k selected (index, score) pairs in slot order.
// K is the register count (compile time), k <= K the runtime top-k.
template <int K, int32_t MAX_PACKETS>
void topk_unit(bench::stream<ScorePacket>& in, int32_t n_packets, int32_t k, int32_t* out_index, acc_t* out_score) {
  if (k > K) k = K;  // the host validates k; this keeps a bad k from writing past the registers
  acc_t reg_score[K];
  int32_t reg_index[K];
#pragma HLS ARRAY_PARTITION variable = reg_score complete
#pragma HLS ARRAY_PARTITION variable = reg_index complete
init:
  for (int s = 0; s < K; ++s) {
#pragma HLS UNROLL
    reg_score[s] = s < k ? kEmptyScore : kInactiveScore;
    reg_index[s] = kEmptyIndex;
  }
  int32_t filled = 0;
  int32_t low = 0;  // slot of the lowest-ranked register; meaningful once filled == k

packets:
  for (int32_t p = 0; p < MAX_PACKETS; ++p) {
    if (p >= n_packets) break;
    const ScorePacket packet = in.read();
    bool hit[BENCH_PACKET];
#pragma HLS ARRAY_PARTITION variable = hit complete
    bool any_hit = false;
  check:
    for (int j = 0; j < BENCH_PACKET; ++j) {
#pragma HLS UNROLL
      hit[j] = j < packet.count &&
               (filled < k || !ranks_below(packet.score[j], packet.base + j, reg_score[low], reg_index[low]));
      any_hit = any_hit || hit[j];
    }
    if (!any_hit) continue;
  insert:
    for (int j = 0; j < BENCH_PACKET; ++j) {
      if (!hit[j]) continue;
      const acc_t score = packet.score[j];
      const int32_t index = packet.base + j;
      if (filled < k) {
        reg_score[filled] = score;
        reg_index[filled] = index;
        ++filled;
        if (filled == k) low = lowest_slot<K>(reg_score, reg_index);
      } else if (!ranks_below(score, index, reg_score[low], reg_index[low])) {
        reg_score[low] = score;
        reg_index[low] = index;
        low = lowest_slot<K>(reg_score, reg_index);
      }
    }
  }

write:
  for (int s0 = 0; s0 < K; s0 += BENCH_PACKET) {
#pragma HLS PIPELINE II = 1
    if (s0 >= k) break;
  slots:
    for (int j = 0; j < BENCH_PACKET; ++j) {
#pragma HLS UNROLL
      if (s0 + j < k) {
        out_index[s0 + j] = reg_index[s0 + j];
        out_score[s0 + j] = reg_score[s0 + j];
      }
    }
  }
}

}  // namespace bench_hls

#endif  // BENCH_TOPK_H
