// relevancy_topk: inner-product relevancy fused with top-k retrieval (SeerAttention-R token-budget mode;
// the block-relevancy kernel of paper.md section 7).
//
// For each row r (one (batch, KV head) pair) and each key i < n_keys:
//   score[i] = sum_d q[r][d] * key(r, i)[d]          (int16 inputs, 40-bit accumulation)
// then the k keys ranked highest by (score desc, index asc) go to out_index / out_score in top-k slot
// order (bench_topk.h); unfilled slots (n_keys < k) hold index -1 and score INT64_MIN.
//
// Keys are striped over keys0..keys7 (bench_layout.h: key i on port (i / 128) % 8) with row_stride keys
// per row of capacity, so the host appends a key by writing its 256 bytes on one port. Each port's first
// keys stay on chip (BRAM, then URAM) between calls; keys [sync_from, n_keys) of the on-chip tiers are
// copied from the ports first (0 after the host rewrote the ports; the old n_keys after an append).
//
// Per row: sync_row, then a dataflow region load_query -> 8 key PEs (bench_pe.h, one per port) ->
// collect_stripes -> topk_unit (BENCH_K_MAX registers).
//
// Arguments (pointer arrays row-major):
//   q          int16 [rows][BENCH_D]                                       m_axi gmem_q
//   keys<p>    int16 [rows][port_stride][BENCH_D], p = 0..7                 m_axi gmem_k<p>
//   out_index  int32 [rows][k]                                             m_axi gmem_out
//   out_score  int64 [rows][k]                                             m_axi gmem_out
//   rows <= BENCH_MAX_ROWS; n_keys <= row_stride <= BENCH_MAX_KEYS; 1 <= k <= BENCH_K_MAX;
//   bram_keys, uram_keys: keys per row the host asks to keep in BRAM / URAM (whole stripes are kept);
//   sync_from: first key index to copy into the on-chip tiers                s_axilite
#include <stdint.h>

#include "bench_layout.h"
#include "bench_params.h"
#include "bench_pe.h"
#include "bench_stream.h"
#include "bench_topk.h"
#include "bench_types.h"

namespace {

using namespace bench_hls;

void relevancy_row(const int16_t* q, const int16_t* keys0, const int16_t* keys1, const int16_t* keys2,
                   const int16_t* keys3, const int16_t* keys4, const int16_t* keys5, const int16_t* keys6,
                   const int16_t* keys7, const KeyVec bram[kPorts][kBramKeysPerPe],
                   const KeyVec uram[kPorts][kUramKeysPerPe], RowLayout lay, int32_t row, int32_t k,
                   int32_t* out_index, int64_t* out_score) {
#pragma HLS DATAFLOW
  int16_t q_local[BENCH_D];
#pragma HLS ARRAY_PARTITION variable = q_local complete
  bench::stream<ScorePacket> pe_scores[kPorts];
  bench::stream<ScorePacket> scores("relevancy_topk.scores");
#pragma HLS STREAM variable = pe_scores depth = 16
#pragma HLS STREAM variable = scores depth = 4

  load_query(q, q_local);
  key_pe_array(q_local, keys0, keys1, keys2, keys3, keys4, keys5, keys6, keys7, bram, uram, lay, row, pe_scores);
  collect_stripes(pe_scores, lay.n, lay.stripe, scores);
  topk_unit<BENCH_K_MAX, kMaxKeyPackets>(scores, packets_for(lay.n), k, out_index, out_score);
}

}  // namespace

extern "C" void relevancy_topk(const int16_t* q, const int16_t* keys0, const int16_t* keys1, const int16_t* keys2,
                               const int16_t* keys3, const int16_t* keys4, const int16_t* keys5, const int16_t* keys6,
                               const int16_t* keys7, int32_t* out_index, int64_t* out_score, int32_t rows,
                               int32_t n_keys, int32_t row_stride, int32_t k, int32_t bram_keys, int32_t uram_keys,
                               int32_t sync_from) {
#pragma HLS INTERFACE m_axi port = q offset = slave bundle = gmem_q
#pragma HLS INTERFACE m_axi port = keys0 offset = slave bundle = gmem_k0
#pragma HLS INTERFACE m_axi port = keys1 offset = slave bundle = gmem_k1
#pragma HLS INTERFACE m_axi port = keys2 offset = slave bundle = gmem_k2
#pragma HLS INTERFACE m_axi port = keys3 offset = slave bundle = gmem_k3
#pragma HLS INTERFACE m_axi port = keys4 offset = slave bundle = gmem_k4
#pragma HLS INTERFACE m_axi port = keys5 offset = slave bundle = gmem_k5
#pragma HLS INTERFACE m_axi port = keys6 offset = slave bundle = gmem_k6
#pragma HLS INTERFACE m_axi port = keys7 offset = slave bundle = gmem_k7
#pragma HLS INTERFACE m_axi port = out_index offset = slave bundle = gmem_out
#pragma HLS INTERFACE m_axi port = out_score offset = slave bundle = gmem_out
#pragma HLS INTERFACE s_axilite port = rows
#pragma HLS INTERFACE s_axilite port = n_keys
#pragma HLS INTERFACE s_axilite port = row_stride
#pragma HLS INTERFACE s_axilite port = k
#pragma HLS INTERFACE s_axilite port = bram_keys
#pragma HLS INTERFACE s_axilite port = uram_keys
#pragma HLS INTERFACE s_axilite port = sync_from
#pragma HLS INTERFACE s_axilite port = return
  // Resident on-chip tiers (persist across calls): PE p's BRAM and URAM keys.
  static KeyVec bram[kPorts][kBramKeysPerPe];
  static KeyVec uram[kPorts][kUramKeysPerPe];
#pragma HLS ARRAY_PARTITION variable = bram complete dim = 1
#pragma HLS ARRAY_PARTITION variable = bram cyclic factor = BENCH_PE_BLOCK dim = 2
#pragma HLS ARRAY_PARTITION variable = uram complete dim = 1
#pragma HLS ARRAY_PARTITION variable = uram cyclic factor = BENCH_URAM_BLOCK dim = 2
#pragma HLS BIND_STORAGE variable = bram type = ram_1p impl = bram
#pragma HLS BIND_STORAGE variable = uram type = ram_1p impl = uram
  const RowLayout lay = make_layout(rows, n_keys, row_stride, kKeyStripe, bram_keys, uram_keys, kBramKeysPerPe,
                                    kUramKeysPerPe);
row_loop:
  for (int32_t r = 0; r < BENCH_MAX_ROWS; ++r) {
    if (r >= rows) break;
    sync_row<BENCH_D, kBramKeysPerPe, kUramKeysPerPe>(keys0, keys1, keys2, keys3, keys4, keys5, keys6, keys7, bram,
                                                      uram, lay, r, sync_from);
    relevancy_row(q + (int64_t)r * BENCH_D, keys0, keys1, keys2, keys3, keys4, keys5, keys6, keys7, bram, uram, lay, r,
                  k, out_index + (int64_t)r * k, out_score + (int64_t)r * k);
  }
}
