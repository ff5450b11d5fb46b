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
// makes ceil(heads / HEADS_PER_PASS) passes through it (DeepSeek-V3.2's 64 heads: 4 passes), one pass per
// cycle; the key stays in registers, so extra heads cost cycles, not memory traffic. In a pass, each
// head's q . k flows through a chain of BENCH_N_PE PEs: PE e adds dims [e * D / N_PE, (e + 1) * D / N_PE)
// to the partial sum it receives from PE e - 1. Keys are striped over keys0..keys7 with on-chip tiers and
// sync_from as relevancy_topk (bench_layout.h); one reader per port streams its keys (on-chip tiers at one
// key per cycle, HBM at one beat per cycle) and merge_stripes feeds the chain one key per cycle in order.
// Per row: sync_row, then a dataflow region load_heads -> 8 key readers -> merge_stripes -> indexer_chain
// -> topk_unit.
//
// Arguments (pointer arrays row-major):
//   q          int16 [rows][heads][BENCH_D]                   m_axi gmem_q
//   w          int16 [rows][heads]                            m_axi gmem_q
//   keys<p>    int16 [rows][port_stride][BENCH_D], p = 0..7    m_axi gmem_k<p>
//   out_index  int32 [rows][k]                                m_axi gmem_out
//   out_score  int64 [rows][k]                                m_axi gmem_out
//   rows; 1 <= heads <= BENCH_DSA_HEADS; n_keys <= row_stride <= BENCH_MAX_KEYS; 1 <= k <= BENCH_DSA_K_MAX;
//   bram_keys, uram_keys, sync_from as relevancy_topk                                  s_axilite
#include <stdint.h>

#include "bench_layout.h"
#include "bench_params.h"
#include "bench_pe.h"
#include "bench_stream.h"
#include "bench_topk.h"
#include "bench_types.h"

namespace {

using namespace bench_hls;

const int kPasses = (BENCH_DSA_HEADS + BENCH_DSA_HEADS_PER_PASS - 1) / BENCH_DSA_HEADS_PER_PASS;
const int kHeadSlots = kPasses * BENCH_DSA_HEADS_PER_PASS;
const int kSlice = BENCH_D / BENCH_N_PE;

// Loads the row's heads, one port beat per cycle; head slots past `heads` get q = 0 and w = 0, so a
// partial last pass adds 0.
void load_heads(const int16_t* q, const int16_t* w, int32_t heads, int16_t q_local[kHeadSlots][BENCH_D],
                int16_t w_local[kHeadSlots]) {
head_slots:
  for (int h = 0; h < kHeadSlots; ++h) {
    if (h < heads) {
      load_query(q + (int64_t)h * BENCH_D, q_local[h]);
    } else {
    zero:
      for (int d = 0; d < BENCH_D; ++d) {
#pragma HLS UNROLL
        q_local[h][d] = 0;
      }
    }
  }
weights:
  for (int h0 = 0; h0 < kHeadSlots; h0 += BENCH_PORT_WORDS) {
#pragma HLS PIPELINE II = 1
  words:
    for (int j = 0; j < BENCH_PORT_WORDS; ++j) {
#pragma HLS UNROLL
      if (h0 + j < kHeadSlots) w_local[h0 + j] = h0 + j < heads ? w[h0 + j] : (int16_t)0;
    }
  }
}

// Streams the row's keys on port p in its local order: BRAM tier, URAM tier (one key per cycle), then HBM.
void key_reader(const int16_t* port, const KeyVec bram[kBramKeysPerPe], const KeyVec uram[kUramKeysPerPe],
                RowLayout lay, int32_t row, int p, bench::stream<KeyVec>& out) {
  const int32_t n_bram = port_count(lay.bram_end, p, lay.stripe);
  const int32_t n_uram = port_count(lay.uram_end, p, lay.stripe);
  const int32_t n_all = port_count(lay.n, p, lay.stripe);
tier_bram:
  for (int32_t l = 0; l < n_bram; ++l) {
#pragma HLS PIPELINE II = 1
    out.write(bram[(int64_t)row * lay.bram_local + l]);
  }
tier_uram:
  for (int32_t l = n_bram; l < n_uram; ++l) {
#pragma HLS PIPELINE II = 1
    out.write(uram[(int64_t)row * lay.uram_local + l - lay.bram_local]);
  }
tier_hbm:
  for (int32_t l = n_uram; l < n_all; ++l) {
    KeyVec key;
    read_entry<BENCH_D>(port, port_offset<BENCH_D>(lay, row, l), key);
    out.write(key);
  }
}

// Forwards the readers' keys in row order: stripe s comes from port s % N_PE, one key per cycle.
void merge_stripes(bench::stream<KeyVec> in[kPorts], int32_t n, bench::stream<KeyVec>& out) {
keys:
  for (int32_t i = 0; i < BENCH_MAX_KEYS; ++i) {
#pragma HLS PIPELINE II = 1
    if (i >= n) break;
    out.write(in[(i / kKeyStripe) % kPorts].read());
  }
}

// One (key, pass) per cycle: a pass pushes the key through the PE chain for BENCH_DSA_HEADS_PER_PASS heads.
void indexer_chain(const int16_t q[kHeadSlots][BENCH_D], const int16_t w[kHeadSlots], int32_t heads,
                   bench::stream<KeyVec>& keys, int32_t n, bench::stream<ScorePacket>& out) {
  const int32_t passes = (heads + BENCH_DSA_HEADS_PER_PASS - 1) / BENCH_DSA_HEADS_PER_PASS;
  KeyVec key;
  acc_t index_score = 0;
  int32_t pass = 0;  // counters instead of t / passes and t % passes: no divider in the loop
  int32_t i = 0;
  ScorePacket packet;
  packet.base = 0;
  packet.count = 0;
steps:
  for (int64_t t = 0; t < (int64_t)BENCH_MAX_KEYS * kPasses; ++t) {
#pragma HLS PIPELINE II = 1
    if (i >= n) break;
    if (pass == 0) {
      key = keys.read();
      index_score = 0;
    }
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
    if (++pass == passes) {
      pass = 0;
      packet.score[packet.count++] = index_score;
      if (packet.count == BENCH_PACKET || i == n - 1) {
      pad:
        for (int j = packet.count; j < BENCH_PACKET; ++j) packet.score[j] = 0;
        out.write(packet);
        packet.base += packet.count;
        packet.count = 0;
      }
      ++i;
    }
  }
}

void dsa_row(const int16_t* q, const int16_t* w, int32_t heads, const int16_t* keys0, const int16_t* keys1,
             const int16_t* keys2, const int16_t* keys3, const int16_t* keys4, const int16_t* keys5,
             const int16_t* keys6, const int16_t* keys7, const KeyVec bram[kPorts][kBramKeysPerPe],
             const KeyVec uram[kPorts][kUramKeysPerPe], RowLayout lay, int32_t row, int32_t k, int32_t* out_index,
             int64_t* out_score) {
#pragma HLS DATAFLOW
  int16_t q_local[kHeadSlots][BENCH_D];
  int16_t w_local[kHeadSlots];
#pragma HLS ARRAY_PARTITION variable = q_local complete dim = 0
#pragma HLS ARRAY_PARTITION variable = w_local complete
  bench::stream<KeyVec> port_keys[kPorts];
  bench::stream<KeyVec> key_stream("dsa_indexer_topk.keys");
  bench::stream<ScorePacket> score_stream("dsa_indexer_topk.scores");
  // A reader runs ahead by up to one stripe while the merge drains the other ports.
#pragma HLS STREAM variable = port_keys depth = BENCH_PE_BLOCK
#pragma HLS STREAM variable = key_stream depth = 4
#pragma HLS STREAM variable = score_stream depth = 4

  load_heads(q, w, heads, q_local, w_local);
  key_reader(keys0, bram[0], uram[0], lay, row, 0, port_keys[0]);
  key_reader(keys1, bram[1], uram[1], lay, row, 1, port_keys[1]);
  key_reader(keys2, bram[2], uram[2], lay, row, 2, port_keys[2]);
  key_reader(keys3, bram[3], uram[3], lay, row, 3, port_keys[3]);
  key_reader(keys4, bram[4], uram[4], lay, row, 4, port_keys[4]);
  key_reader(keys5, bram[5], uram[5], lay, row, 5, port_keys[5]);
  key_reader(keys6, bram[6], uram[6], lay, row, 6, port_keys[6]);
  key_reader(keys7, bram[7], uram[7], lay, row, 7, port_keys[7]);
  merge_stripes(port_keys, lay.n, key_stream);
  indexer_chain(q_local, w_local, heads, key_stream, lay.n, score_stream);
  topk_unit<BENCH_DSA_K_MAX, kMaxKeyPackets>(score_stream, packets_for(lay.n), k, out_index, out_score);
}

}  // namespace

extern "C" void dsa_indexer_topk(const int16_t* q, const int16_t* w, const int16_t* keys0, const int16_t* keys1,
                                 const int16_t* keys2, const int16_t* keys3, const int16_t* keys4,
                                 const int16_t* keys5, const int16_t* keys6, const int16_t* keys7, int32_t* out_index,
                                 int64_t* out_score, int32_t rows, int32_t heads, int32_t n_keys, int32_t row_stride,
                                 int32_t k, int32_t bram_keys, int32_t uram_keys, int32_t sync_from) {
#pragma HLS INTERFACE m_axi port = q offset = slave bundle = gmem_q
#pragma HLS INTERFACE m_axi port = w offset = slave bundle = gmem_q
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
#pragma HLS INTERFACE s_axilite port = heads
#pragma HLS INTERFACE s_axilite port = n_keys
#pragma HLS INTERFACE s_axilite port = row_stride
#pragma HLS INTERFACE s_axilite port = k
#pragma HLS INTERFACE s_axilite port = bram_keys
#pragma HLS INTERFACE s_axilite port = uram_keys
#pragma HLS INTERFACE s_axilite port = sync_from
#pragma HLS INTERFACE s_axilite port = return
  static KeyVec bram[kPorts][kBramKeysPerPe];
  static KeyVec uram[kPorts][kUramKeysPerPe];
#pragma HLS ARRAY_PARTITION variable = bram complete dim = 1
#pragma HLS ARRAY_PARTITION variable = uram complete dim = 1
#pragma HLS BIND_STORAGE variable = bram type = ram_1p impl = bram
#pragma HLS BIND_STORAGE variable = uram type = ram_1p impl = uram
  const RowLayout lay = make_layout(rows, n_keys, row_stride, kKeyStripe, bram_keys, uram_keys, kBramKeysPerPe,
                                    kUramKeysPerPe);
row_loop:
  for (int32_t r = 0; r < BENCH_MAX_ROWS; ++r) {
    if (r >= rows) break;
    sync_row<BENCH_D, kBramKeysPerPe, kUramKeysPerPe>(keys0, keys1, keys2, keys3, keys4, keys5, keys6, keys7, bram,
                                                      uram, lay, r, sync_from);
    dsa_row(q + (int64_t)r * heads * BENCH_D, w + (int64_t)r * heads, heads, keys0, keys1, keys2, keys3, keys4, keys5,
            keys6, keys7, bram, uram, lay, r, k, out_index + (int64_t)r * k, out_score + (int64_t)r * k);
  }
}
