// threshold_select: inner-product relevancy fused with threshold selection (SeerAttention-R threshold
// mode; paper.md section 7: "each PE emits a pass bitmap ... no top-k").
//
// For each row r and key i < n_keys, with score[i] = sum_d q[r][d] * key(r, i)[d] (as relevancy_topk):
//   key i is selected  <=>  score[i] >= threshold[0].
// The selection is a bitmap: bit b of word w (LSB = bit 0) of row r is key 64 * w + b; a row has
// ceil(n_keys / 64) words and bits past n_keys are 0. out_count[r] = number of selected keys.
// The int64 threshold comes through a one-element buffer: XRT's Python binding cannot pass a scalar that
// does not fit a C int (measurement.md section 10).
//
// Keys, ports, on-chip tiers and sync_from as relevancy_topk (bench_layout.h). Per row: sync_row, then a
// dataflow region load_query -> 8 key PEs (bench_pe.h) -> collect_stripes -> bitmap_unit, which takes
// one 16-score packet per cycle (16 compares in parallel) and writes each 64-bit word once complete.
//
// Arguments (pointer arrays row-major):
//   q           int16  [rows][BENCH_D]                          m_axi gmem_q
//   threshold   int64  [1], the scores' fixed point             m_axi gmem_q
//   keys<p>     int16  [rows][port_stride][BENCH_D]             m_axi gmem_k<p>
//   out_bitmap  uint64 [rows][ceil(n_keys / 64)]                m_axi gmem_out
//   out_count   int32  [rows]                                   m_axi gmem_out
//   rows, n_keys, row_stride, bram_keys, uram_keys, sync_from as relevancy_topk      s_axilite
#include <stdint.h>

#include "bench_layout.h"
#include "bench_params.h"
#include "bench_pe.h"
#include "bench_stream.h"
#include "bench_types.h"

namespace {

using namespace bench_hls;

// Packs the pass bits of n scores, arriving as packets in key order (bases are multiples of 16), into
// 64-bit words.
void bitmap_unit(bench::stream<ScorePacket>& in, int32_t n, int64_t threshold, uint64_t* out_words,
                 int32_t* out_count) {
  uint64_t word = 0;
  int32_t count = 0;
packets:
  for (int32_t p = 0; p < kMaxKeyPackets; ++p) {
#pragma HLS PIPELINE II = 1
    if (p >= packets_for(n)) break;
    const ScorePacket packet = in.read();
    uint64_t bits = 0;
    int32_t passed = 0;
  compare:
    for (int j = 0; j < BENCH_PACKET; ++j) {
#pragma HLS UNROLL
      const bool pass = j < packet.count && packet.score[j] >= threshold;
      bits |= (uint64_t)pass << j;
      passed += pass ? 1 : 0;
    }
    word |= bits << (packet.base % 64);
    count += passed;
    const int32_t end = packet.base + packet.count;
    if (end % 64 == 0 || end == n) {
      out_words[(end - 1) / 64] = word;
      word = 0;
    }
  }
  *out_count = count;
}

void threshold_row(const int16_t* q, const int16_t* keys0, const int16_t* keys1, const int16_t* keys2,
                   const int16_t* keys3, const int16_t* keys4, const int16_t* keys5, const int16_t* keys6,
                   const int16_t* keys7, const KeyVec bram[kPorts][kBramKeysPerPe],
                   const KeyVec uram[kPorts][kUramKeysPerPe], RowLayout lay, int32_t row, int64_t threshold,
                   uint64_t* out_words, int32_t* out_count) {
#pragma HLS DATAFLOW
  int16_t q_local[BENCH_D];
#pragma HLS ARRAY_PARTITION variable = q_local complete
  bench::stream<ScorePacket> pe_scores[kPorts];
  bench::stream<ScorePacket> scores("threshold_select.scores");
#pragma HLS STREAM variable = pe_scores depth = 16
#pragma HLS STREAM variable = scores depth = 4

  load_query(q, q_local);
  key_pe_array(q_local, keys0, keys1, keys2, keys3, keys4, keys5, keys6, keys7, bram, uram, lay, row, pe_scores);
  collect_stripes(pe_scores, lay.n, lay.stripe, scores);
  bitmap_unit(scores, lay.n, threshold, out_words, out_count);
}

}  // namespace

extern "C" void threshold_select(const int16_t* q, const int64_t* threshold, const int16_t* keys0,
                                 const int16_t* keys1, const int16_t* keys2, const int16_t* keys3,
                                 const int16_t* keys4, const int16_t* keys5, const int16_t* keys6,
                                 const int16_t* keys7, uint64_t* out_bitmap, int32_t* out_count, int32_t rows,
                                 int32_t n_keys, int32_t row_stride, int32_t bram_keys, int32_t uram_keys,
                                 int32_t sync_from) {
#pragma HLS INTERFACE m_axi port = q offset = slave bundle = gmem_q
#pragma HLS INTERFACE m_axi port = threshold offset = slave bundle = gmem_q
#pragma HLS INTERFACE m_axi port = keys0 offset = slave bundle = gmem_k0
#pragma HLS INTERFACE m_axi port = keys1 offset = slave bundle = gmem_k1
#pragma HLS INTERFACE m_axi port = keys2 offset = slave bundle = gmem_k2
#pragma HLS INTERFACE m_axi port = keys3 offset = slave bundle = gmem_k3
#pragma HLS INTERFACE m_axi port = keys4 offset = slave bundle = gmem_k4
#pragma HLS INTERFACE m_axi port = keys5 offset = slave bundle = gmem_k5
#pragma HLS INTERFACE m_axi port = keys6 offset = slave bundle = gmem_k6
#pragma HLS INTERFACE m_axi port = keys7 offset = slave bundle = gmem_k7
#pragma HLS INTERFACE m_axi port = out_bitmap offset = slave bundle = gmem_out
#pragma HLS INTERFACE m_axi port = out_count offset = slave bundle = gmem_out
#pragma HLS INTERFACE s_axilite port = rows
#pragma HLS INTERFACE s_axilite port = n_keys
#pragma HLS INTERFACE s_axilite port = row_stride
#pragma HLS INTERFACE s_axilite port = bram_keys
#pragma HLS INTERFACE s_axilite port = uram_keys
#pragma HLS INTERFACE s_axilite port = sync_from
#pragma HLS INTERFACE s_axilite port = return
  static KeyVec bram[kPorts][kBramKeysPerPe];
  static KeyVec uram[kPorts][kUramKeysPerPe];
#pragma HLS ARRAY_PARTITION variable = bram complete dim = 1
#pragma HLS ARRAY_PARTITION variable = bram cyclic factor = BENCH_PE_BLOCK dim = 2
#pragma HLS ARRAY_PARTITION variable = uram complete dim = 1
#pragma HLS ARRAY_PARTITION variable = uram cyclic factor = BENCH_URAM_BLOCK dim = 2
#pragma HLS BIND_STORAGE variable = bram type = ram_1p impl = bram
#pragma HLS BIND_STORAGE variable = uram type = ram_1p impl = uram
  const int64_t limit = threshold[0];
  const RowLayout lay = make_layout(rows, n_keys, row_stride, kKeyStripe, bram_keys, uram_keys, kBramKeysPerPe,
                                    kUramKeysPerPe);
  const int64_t words = ((int64_t)n_keys + 63) / 64;
row_loop:
  for (int32_t r = 0; r < BENCH_MAX_ROWS; ++r) {
    if (r >= rows) break;
    sync_row<BENCH_D, kBramKeysPerPe, kUramKeysPerPe>(keys0, keys1, keys2, keys3, keys4, keys5, keys6, keys7, bram,
                                                      uram, lay, r, sync_from);
    threshold_row(q + (int64_t)r * BENCH_D, keys0, keys1, keys2, keys3, keys4, keys5, keys6, keys7, bram, uram, lay,
                  r, limit, out_bitmap + r * words, out_count + r);
  }
}
