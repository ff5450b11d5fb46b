// relevancy_topk: inner-product relevancy fused with top-k retrieval (SeerAttention-R token-budget mode;
// the block-relevancy kernel of paper.md section 7).
//
// For each row r (one (batch, KV head) pair) and each key i < n_keys:
//   score[i] = sum_d q[r][d] * keys[r][i][d]          (int16 inputs, 40-bit accumulation)
// then the k keys ranked highest by (score desc, index asc) go to out_index / out_score in top-k slot
// order (bench_topk.h); unfilled slots (n_keys < k) hold index -1 and score INT64_MIN.
//
// Per row, a dataflow region: load_query -> load_tiers (BRAM, URAM, HBM key tiers) -> pe_array
// (BENCH_N_PE PEs, 16-score packets) -> topk_unit (BENCH_K_MAX registers).
//
// Arguments (arrays row-major and contiguous):
//   q          int16 [rows][BENCH_D]              m_axi gmem0
//   keys       int16 [rows][n_keys][BENCH_D]      m_axi gmem1
//   out_index  int32 [rows][k]                    m_axi gmem2
//   out_score  int64 [rows][k]                    m_axi gmem2
//   rows <= BENCH_MAX_ROWS; n_keys <= BENCH_MAX_KEYS; 1 <= k <= BENCH_K_MAX;
//   bram_keys, uram_keys: keys per row held in the BRAM / URAM tier       s_axilite
#include <stdint.h>

#include "bench_params.h"
#include "bench_pe.h"
#include "bench_stream.h"
#include "bench_tiers.h"
#include "bench_topk.h"
#include "bench_types.h"

namespace {

using namespace bench_hls;

void relevancy_row(const int16_t* q, const int16_t* keys, int32_t n, int32_t k, TierSplit split,
                   int32_t* out_index, int64_t* out_score) {
#pragma HLS DATAFLOW
  int16_t q_local[BENCH_D];
#pragma HLS ARRAY_PARTITION variable = q_local complete
  bench::stream<KeyVec> key_stream[BENCH_N_PE];
  bench::stream<ScorePacket> score_stream("relevancy_topk.scores");
#pragma HLS STREAM variable = key_stream depth = 4
#pragma HLS STREAM variable = score_stream depth = 4

  load_query(q, q_local);
  load_tiers<BENCH_D, BENCH_N_PE>(keys, split, key_stream);
  pe_array(q_local, key_stream, n, score_stream);
  topk_unit<BENCH_K_MAX, (BENCH_MAX_KEYS + BENCH_PACKET - 1) / BENCH_PACKET>(score_stream, packets_for(n), k,
                                                                           out_index, out_score);
}

}  // namespace

extern "C" void relevancy_topk(const int16_t* q, const int16_t* keys, int32_t* out_index, int64_t* out_score,
                               int32_t rows, int32_t n_keys, int32_t k, int32_t bram_keys, int32_t uram_keys) {
#pragma HLS INTERFACE m_axi port = q offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = keys offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = out_index offset = slave bundle = gmem2
#pragma HLS INTERFACE m_axi port = out_score offset = slave bundle = gmem2
#pragma HLS INTERFACE s_axilite port = rows
#pragma HLS INTERFACE s_axilite port = n_keys
#pragma HLS INTERFACE s_axilite port = k
#pragma HLS INTERFACE s_axilite port = bram_keys
#pragma HLS INTERFACE s_axilite port = uram_keys
#pragma HLS INTERFACE s_axilite port = return
  const TierSplit split = split_tiers(n_keys, bram_keys, uram_keys);
row_loop:
  for (int32_t r = 0; r < BENCH_MAX_ROWS; ++r) {
    if (r >= rows) break;
    relevancy_row(q + (int64_t)r * BENCH_D, keys + (int64_t)r * n_keys * BENCH_D, n_keys, k, split,
                  out_index + (int64_t)r * k, out_score + (int64_t)r * k);
  }
}
