// threshold_select: inner-product relevancy fused with threshold selection (SeerAttention-R threshold
// mode; paper.md section 7: "each PE emits a pass bitmap ... no top-k").
//
// For each row r and key i < n_keys, with score[i] = sum_d q[r][d] * keys[r][i][d] (as relevancy_topk):
//   key i is selected  <=>  score[i] >= threshold.
// The selection is a bitmap: bit b of word w (LSB = bit 0) of row r is key 64 * w + b; a row has
// ceil(n_keys / 64) words and bits past n_keys are 0. out_count[r] = number of selected keys.
// (The reference design emits a 128-bit bitmap per 128-key block per PE; this kernel packs the same bits
// in key order into 64-bit words.)
//
// Per row, a dataflow region: load_query -> load_tiers -> pe_array -> bitmap_unit.
//
// Arguments (arrays row-major and contiguous):
//   q           int16  [rows][BENCH_D]                   m_axi gmem0
//   keys        int16  [rows][n_keys][BENCH_D]           m_axi gmem1
//   out_bitmap  uint64 [rows][ceil(n_keys / 64)]         m_axi gmem2
//   out_count   int32  [rows]                            m_axi gmem2
//   rows, n_keys, threshold (int64, same fixed point as the scores), bram_keys, uram_keys   s_axilite
#include <stdint.h>

#include "bench_params.h"
#include "bench_pe.h"
#include "bench_stream.h"
#include "bench_tiers.h"
#include "bench_types.h"

namespace {

using namespace bench_hls;

// Packs the pass bits of n scores, arriving as packets in key order, into 64-bit words.
void bitmap_unit(bench::stream<ScorePacket>& in, int32_t n, int64_t threshold, uint64_t* out_words,
                 int32_t* out_count) {
  uint64_t word = 0;
  int32_t count = 0;
packets:
  for (int32_t p = 0; p < (BENCH_MAX_KEYS + BENCH_PACKET - 1) / BENCH_PACKET; ++p) {
    if (p >= packets_for(n)) break;
    const ScorePacket packet = in.read();
  bits:
    for (int j = 0; j < BENCH_PACKET; ++j) {
#pragma HLS PIPELINE II = 1
      if (j >= packet.count) break;
      const int32_t i = packet.base + j;
      const bool pass = packet.score[j] >= threshold;
      word |= (uint64_t)pass << (i % 64);
      count += pass ? 1 : 0;
      if (i % 64 == 63 || i == n - 1) {
        out_words[i / 64] = word;
        word = 0;
      }
    }
  }
  *out_count = count;
}

void threshold_row(const int16_t* q, const int16_t* keys, int32_t n, int64_t threshold, TierSplit split,
                   uint64_t* out_words, int32_t* out_count) {
#pragma HLS DATAFLOW
  int16_t q_local[BENCH_D];
#pragma HLS ARRAY_PARTITION variable = q_local complete
  bench::stream<KeyVec> key_stream[BENCH_N_PE];
  bench::stream<ScorePacket> score_stream("threshold_select.scores");
#pragma HLS STREAM variable = key_stream depth = 4
#pragma HLS STREAM variable = score_stream depth = 4

  load_query(q, q_local);
  load_tiers<BENCH_D, BENCH_N_PE>(keys, split, key_stream);
  pe_array(q_local, key_stream, n, score_stream);
  bitmap_unit(score_stream, n, threshold, out_words, out_count);
}

}  // namespace

extern "C" void threshold_select(const int16_t* q, const int16_t* keys, uint64_t* out_bitmap, int32_t* out_count,
                                 int32_t rows, int32_t n_keys, int64_t threshold, int32_t bram_keys,
                                 int32_t uram_keys) {
#pragma HLS INTERFACE m_axi port = q offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = keys offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = out_bitmap offset = slave bundle = gmem2
#pragma HLS INTERFACE m_axi port = out_count offset = slave bundle = gmem2
#pragma HLS INTERFACE s_axilite port = rows
#pragma HLS INTERFACE s_axilite port = n_keys
#pragma HLS INTERFACE s_axilite port = threshold
#pragma HLS INTERFACE s_axilite port = bram_keys
#pragma HLS INTERFACE s_axilite port = uram_keys
#pragma HLS INTERFACE s_axilite port = return
  const TierSplit split = split_tiers(n_keys, bram_keys, uram_keys);
  const int64_t words = ((int64_t)n_keys + 63) / 64;
row_loop:
  for (int32_t r = 0; r < BENCH_MAX_ROWS; ++r) {
    if (r >= rows) break;
    threshold_row(q + (int64_t)r * BENCH_D, keys + (int64_t)r * n_keys * BENCH_D, n_keys, threshold, split,
                  out_bitmap + r * words, out_count + r);
  }
}
