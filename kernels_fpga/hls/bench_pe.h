// Inner-product processing elements (PEs) shared by relevancy_topk and threshold_select.
//
// PE p owns key port p and the keys striped onto it (bench_layout.h). It scores its keys tier by tier,
// every pass taking D / BENCH_PE_DIMS cycles (32 with the defaults), as the reference PE
// (paper.md section 7; HeteroLLM indexer_seer_token_budget.h and indexer_lserve_long.h):
//   BRAM: BENCH_PE_BLOCK keys (128) in parallel, BENCH_PE_DIMS dims each per cycle = BENCH_PE_MACS MACs;
//   URAM: BENCH_URAM_BLOCK keys (32) in parallel, the URAM read width;
//   HBM:  one key at one port beat (BENCH_PORT_WORDS dims) per cycle, so 8 keys per 32 cycles.
// Partial blocks cost a full pass. Products are int16 x int16 summed into a 40-bit accumulator (acc_t;
// bound in bench_params.h). Each PE emits its scores as 16-score packets in its own key order; a packet
// never spans a stripe, so it holds consecutive row indices. collect_stripes restores row order.
#ifndef BENCH_PE_H
#define BENCH_PE_H

#include <stdint.h>

#include "bench_layout.h"
#include "bench_params.h"
#include "bench_stream.h"
#include "bench_types.h"

namespace bench_hls {

const int kKeyStripe = BENCH_PE_BLOCK;
const int kBramKeysPerPe = BENCH_BRAM_KEYS / BENCH_N_PE;
const int kUramKeysPerPe = BENCH_URAM_KEYS / BENCH_N_PE;
const int32_t kMaxKeyPackets = (BENCH_MAX_KEYS + BENCH_PACKET - 1) / BENCH_PACKET;

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

// Reads one query vector (BENCH_D int16 words) into registers, one port beat per cycle.
inline void load_query(const int16_t* q, int16_t q_local[BENCH_D]) {
beats:
  for (int b = 0; b < BENCH_D / BENCH_PORT_WORDS; ++b) {
#pragma HLS PIPELINE II = 1
  words:
    for (int w = 0; w < BENCH_PORT_WORDS; ++w) {
#pragma HLS UNROLL
      q_local[b * BENCH_PORT_WORDS + w] = q[b * BENCH_PORT_WORDS + w];
    }
  }
}

// Gathers one PE's scores, in its local order, into 16-score packets of consecutive row indices.
class Packer {
 public:
  Packer(bench::stream<ScorePacket>& out, int p, int32_t stripe) : out_(out), p_(p), stripe_(stripe) {
    packet_.base = 0;
    packet_.count = 0;
  }
  // Adds the score of local entry l.
  void push(acc_t score, int32_t l) {
    if (packet_.count == 0) packet_.base = global_index(l, p_, stripe_);
    packet_.score[packet_.count++] = score;
    if (packet_.count == BENCH_PACKET) flush();
  }
  // Writes a partial last packet (padding slots hold 0 and are ignored by the consumers).
  void flush() {
    if (packet_.count == 0) return;
  pad:
    for (int j = packet_.count; j < BENCH_PACKET; ++j) packet_.score[j] = 0;
    out_.write(packet_);
    packet_.count = 0;
  }

 private:
  bench::stream<ScorePacket>& out_;
  int p_;
  int32_t stripe_;
  ScorePacket packet_;
};

// Scores `count` (<= LANES) on-chip keys starting at `first` in parallel, one pass of D / PE_DIMS cycles.
template <int LANES>
void score_block(const int16_t q[BENCH_D], const KeyVec* tier, int64_t first, int32_t count, int32_t l0,
                 Packer& packer) {
  acc_t acc[LANES];
#pragma HLS ARRAY_PARTITION variable = acc complete
init:
  for (int j = 0; j < LANES; ++j) {
#pragma HLS UNROLL
    acc[j] = 0;
  }
chunks:
  for (int c = 0; c < BENCH_D / BENCH_PE_DIMS; ++c) {
#pragma HLS PIPELINE II = 1
  lanes:
    for (int j = 0; j < LANES; ++j) {
#pragma HLS UNROLL
      if (j < count) acc[j] += dot_slice<BENCH_PE_DIMS>(q, tier[first + j].v, c * BENCH_PE_DIMS);
    }
  }
emit:
  for (int j = 0; j < LANES; ++j) {
    if (j < count) packer.push(acc[j], l0 + j);
  }
}

// PE p: scores the row's keys on port p, BRAM tier, then URAM, then HBM, and emits their packets.
inline void key_pe(const int16_t q[BENCH_D], const int16_t* port, const KeyVec bram[kBramKeysPerPe],
                   const KeyVec uram[kUramKeysPerPe], RowLayout lay, int32_t row, int p,
                   bench::stream<ScorePacket>& out) {
  const int32_t n_bram = port_count(lay.bram_end, p, lay.stripe);
  const int32_t n_uram = port_count(lay.uram_end, p, lay.stripe);
  const int32_t n_all = port_count(lay.n, p, lay.stripe);
  Packer packer(out, p, lay.stripe);
tier_bram:
  for (int32_t l = 0; l < n_bram; l += BENCH_PE_BLOCK) {
    const int32_t count = n_bram - l < BENCH_PE_BLOCK ? n_bram - l : BENCH_PE_BLOCK;
    score_block<BENCH_PE_BLOCK>(q, bram, (int64_t)row * lay.bram_local + l, count, l, packer);
  }
tier_uram:
  for (int32_t l = n_bram; l < n_uram; l += BENCH_URAM_BLOCK) {
    const int32_t count = n_uram - l < BENCH_URAM_BLOCK ? n_uram - l : BENCH_URAM_BLOCK;
    score_block<BENCH_URAM_BLOCK>(q, uram, (int64_t)row * lay.uram_local + l - lay.bram_local, count, l, packer);
  }
tier_hbm:
  for (int32_t l = n_uram; l < n_all; ++l) {
    const int64_t offset = port_offset<BENCH_D>(lay, row, l);
    acc_t acc = 0;
  beats:
    for (int b = 0; b < BENCH_D / BENCH_PORT_WORDS; ++b) {
#pragma HLS PIPELINE II = 1
      acc += dot_slice<BENCH_PORT_WORDS>(q, port + offset, b * BENCH_PORT_WORDS);
    }
    packer.push(acc, l);
  }
  packer.flush();
}

// Forwards the PEs' packets in row order: stripe s comes from PE s % N_PE, one packet per cycle.
inline void collect_stripes(bench::stream<ScorePacket> in[kPorts], int32_t n, int32_t stripe,
                            bench::stream<ScorePacket>& out) {
  const int32_t stripes = (n + stripe - 1) / stripe;
stripes_loop:
  for (int32_t s = 0; s < BENCH_MAX_KEYS; ++s) {
    if (s >= stripes) break;
    const int32_t count = n - s * stripe < stripe ? n - s * stripe : stripe;
  packets:
    for (int32_t j = 0; j < (count + BENCH_PACKET - 1) / BENCH_PACKET; ++j) {
#pragma HLS PIPELINE II = 1
      out.write(in[s % kPorts].read());
    }
  }
}

// The eight key PEs of one row, each on its own port, running in parallel.
inline void key_pe_array(const int16_t q[BENCH_D], const int16_t* keys0, const int16_t* keys1, const int16_t* keys2,
                         const int16_t* keys3, const int16_t* keys4, const int16_t* keys5, const int16_t* keys6,
                         const int16_t* keys7, const KeyVec bram[kPorts][kBramKeysPerPe],
                         const KeyVec uram[kPorts][kUramKeysPerPe], RowLayout lay, int32_t row,
                         bench::stream<ScorePacket> out[kPorts]) {
#pragma HLS INLINE
  key_pe(q, keys0, bram[0], uram[0], lay, row, 0, out[0]);
  key_pe(q, keys1, bram[1], uram[1], lay, row, 1, out[1]);
  key_pe(q, keys2, bram[2], uram[2], lay, row, 2, out[2]);
  key_pe(q, keys3, bram[3], uram[3], lay, row, 3, out[3]);
  key_pe(q, keys4, bram[4], uram[4], lay, row, 4, out[4]);
  key_pe(q, keys5, bram[5], uram[5], lay, row, 5, out[5]);
  key_pe(q, keys6, bram[6], uram[6], lay, row, 6, out[6]);
  key_pe(q, keys7, bram[7], uram[7], lay, row, 7, out[7]);
}

}  // namespace bench_hls

#endif  // BENCH_PE_H
