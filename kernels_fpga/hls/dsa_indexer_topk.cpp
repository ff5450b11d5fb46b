// dsa_indexer_topk: the DeepSeek Sparse Attention lightning indexer fused with top-k token selection
// (paper.md section 7, DSA; DeepSeek-V3.2 in workloads.md section 2).
//
// For each row r (one batch element's query token), its heads j < heads and each cached token s < n_keys
// (one indexer key per token, shared by all heads):
//   I[s] = sum_j w[j] * max(0, q[j] . k[s])          (int64; no overflow, bench_params.h)
// then the k tokens ranked highest by (I desc, index asc) go to out_index / out_score in top-k slot order
// (bench_topk.h; BENCH_DSA_K_MAX = 2048 registers); unfilled slots hold index -1 and score INT64_MIN.
// The head weights w are int16 fixed point (the reference design uses per-head floats; one common scale
// across heads multiplies every I alike and so leaves the selection unchanged).
//
// Structure (paper.md section 7: "16 heads x 128, int16. 8 chained PEs of 16 dims each (systolic partial
// sums), ReLU, per-head float weights"): the head array holds BENCH_DSA_HEADS_PER_PASS heads, and each key
// makes ceil(heads / HEADS_PER_PASS) passes through it (DeepSeek-V3.2's 64 heads: 4 passes); the key stays
// in registers, so extra heads cost cycles, not memory traffic. In a pass, each head's q . k flows through
// a chain of BENCH_N_PE PEs: PE e adds dims [e * D / N_PE, (e + 1) * D / N_PE) to the partial sum it
// receives from PE e - 1. Per row, a dataflow region: load_heads -> load_tiers -> indexer_pes -> topk_unit.
//
// Arguments (arrays row-major and contiguous):
//   q          int16 [rows][heads][BENCH_D]       m_axi gmem0
//   w          int16 [rows][heads]                m_axi gmem0
//   keys       int16 [rows][n_keys][BENCH_D]      m_axi gmem1
//   out_index  int32 [rows][k]                    m_axi gmem2
//   out_score  int64 [rows][k]                    m_axi gmem2
//   rows; 1 <= heads <= BENCH_DSA_HEADS; n_keys <= BENCH_MAX_KEYS; 1 <= k <= BENCH_DSA_K_MAX;
//   bram_keys, uram_keys: keys per row held in the BRAM / URAM tier                    s_axilite
#include <stdint.h>

#include "bench_params.h"
#include "bench_pe.h"
#include "bench_stream.h"
#include "bench_tiers.h"
#include "bench_topk.h"
#include "bench_types.h"

namespace {

using namespace bench_hls;

const int kPasses = (BENCH_DSA_HEADS + BENCH_DSA_HEADS_PER_PASS - 1) / BENCH_DSA_HEADS_PER_PASS;
const int kHeadSlots = kPasses * BENCH_DSA_HEADS_PER_PASS;
const int kSlice = BENCH_D / BENCH_N_PE;
const int32_t kMaxPackets = (BENCH_MAX_KEYS + BENCH_PACKET - 1) / BENCH_PACKET;

// Loads the row's heads; head slots past `heads` get q = 0 and w = 0, so a partial last pass adds 0.
void load_heads(const int16_t* q, const int16_t* w, int32_t heads, int16_t q_local[kHeadSlots][BENCH_D],
                int16_t w_local[kHeadSlots]) {
head_slots:
  for (int h = 0; h < kHeadSlots; ++h) {
    const bool used = h < heads;
    w_local[h] = used ? w[h] : (int16_t)0;
  dims:
    for (int d = 0; d < BENCH_D; ++d) {
#pragma HLS PIPELINE II = 1
      q_local[h][d] = used ? q[(int64_t)h * BENCH_D + d] : (int16_t)0;
    }
  }
}

void indexer_pes(const int16_t q[kHeadSlots][BENCH_D], const int16_t w[kHeadSlots], int32_t heads,
                 bench::stream<KeyVec>& keys, int32_t n, bench::stream<ScorePacket>& out) {
  const int32_t passes = (heads + BENCH_DSA_HEADS_PER_PASS - 1) / BENCH_DSA_HEADS_PER_PASS;
packets:
  for (int32_t p = 0; p < kMaxPackets; ++p) {
    const int32_t base = p * BENCH_PACKET;
    if (base >= n) break;
    ScorePacket packet;
    packet.base = base;
    packet.count = n - base < BENCH_PACKET ? n - base : BENCH_PACKET;
  tokens:
    for (int j = 0; j < BENCH_PACKET; ++j) {
      packet.score[j] = 0;
      if (j >= packet.count) continue;
      const KeyVec key = keys.read();
      acc_t index_score = 0;
    passes_loop:
      for (int pass = 0; pass < kPasses; ++pass) {
#pragma HLS PIPELINE II = 1
        if (pass >= passes) break;
      head_array:
        for (int h = 0; h < BENCH_DSA_HEADS_PER_PASS; ++h) {
#pragma HLS UNROLL
          const int head = pass * BENCH_DSA_HEADS_PER_PASS + h;
          acc_t partial = 0;
        pe_chain:
          for (int e = 0; e < BENCH_N_PE; ++e) {
#pragma HLS UNROLL
            partial += dot_slice<kSlice>(q[head], key.v, e * kSlice);
          }
          const acc_t relu = partial > 0 ? partial : 0;
          index_score += (acc_t)w[head] * relu;
        }
      }
      packet.score[j] = index_score;
    }
    out.write(packet);
  }
}

void dsa_row(const int16_t* q, const int16_t* w, const int16_t* keys, int32_t heads, int32_t n, int32_t k,
             TierSplit split, int32_t* out_index, int64_t* out_score) {
#pragma HLS DATAFLOW
  int16_t q_local[kHeadSlots][BENCH_D];
  int16_t w_local[kHeadSlots];
#pragma HLS ARRAY_PARTITION variable = q_local complete dim = 0
#pragma HLS ARRAY_PARTITION variable = w_local complete
  bench::stream<KeyVec> key_stream[1];
  bench::stream<ScorePacket> score_stream("dsa_indexer_topk.scores");
#pragma HLS STREAM variable = key_stream depth = 4
#pragma HLS STREAM variable = score_stream depth = 4

  load_heads(q, w, heads, q_local, w_local);
  load_tiers<BENCH_D, 1>(keys, split, key_stream);
  indexer_pes(q_local, w_local, heads, key_stream[0], n, score_stream);
  topk_unit<BENCH_DSA_K_MAX, kMaxPackets>(score_stream, packets_for(n), k, out_index, out_score);
}

}  // namespace

extern "C" void dsa_indexer_topk(const int16_t* q, const int16_t* w, const int16_t* keys, int32_t* out_index,
                                 int64_t* out_score, int32_t rows, int32_t heads, int32_t n_keys, int32_t k,
                                 int32_t bram_keys, int32_t uram_keys) {
#pragma HLS INTERFACE m_axi port = q offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = w offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = keys offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = out_index offset = slave bundle = gmem2
#pragma HLS INTERFACE m_axi port = out_score offset = slave bundle = gmem2
#pragma HLS INTERFACE s_axilite port = rows
#pragma HLS INTERFACE s_axilite port = heads
#pragma HLS INTERFACE s_axilite port = n_keys
#pragma HLS INTERFACE s_axilite port = k
#pragma HLS INTERFACE s_axilite port = bram_keys
#pragma HLS INTERFACE s_axilite port = uram_keys
#pragma HLS INTERFACE s_axilite port = return
  const TierSplit split = split_tiers(n_keys, bram_keys, uram_keys);
row_loop:
  for (int32_t r = 0; r < BENCH_MAX_ROWS; ++r) {
    if (r >= rows) break;
    dsa_row(q + (int64_t)r * heads * BENCH_D, w + (int64_t)r * heads, keys + (int64_t)r * n_keys * BENCH_D, heads,
            n_keys, k, split, out_index + (int64_t)r * k, out_score + (int64_t)r * k);
  }
}
