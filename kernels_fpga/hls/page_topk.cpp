// page_topk: Quest / LServe page relevancy fused with top-k page retrieval (paper.md section 7, LServe).
//
// A page stores the element-wise minimum and maximum of its keys. For each row r (one (batch, KV head)
// pair), its GQA group of query heads g < group, and each page p < n_pages:
//   bound[g][p] = sum_d max(q[g][d] * kmin[p][d], q[g][d] * kmax[p][d])   (Quest's upper bound of q . k)
//   page[p]     = max_g bound[g][p]
//   score[j]    = max { page[p] : j * sub <= p < min((j + 1) * sub, n_pages) },   j < ceil(n_pages / sub)
// (LServe: sub = 4 sixteen-token sub-pages per 64-token page; Quest: sub = 1; the last group may be
// partial), then the k groups ranked highest by (score desc, group index asc) go to out_index / out_score
// in top-k slot order (bench_topk.h); unfilled slots hold index -1 and score INT64_MIN.
//
// A page is one entry of 2 * BENCH_D words (kmin, then kmax), so it takes two key slots: pages are striped
// over bounds0..bounds7 in stripes of BENCH_PE_BLOCK / 2 pages, and the on-chip tiers hold half as many
// pages as keys (bench_layout.h). Page PE p (same MAC array as the key PE, bench_pe.h) scores its pages:
//   BRAM: BENCH_PE_BLOCK / 2 pages in parallel, URAM: BENCH_URAM_BLOCK / 2, each pass taking
//         group x D / BENCH_PE_DIMS cycles (the heads one after another, 2 products per dim);
//   HBM:  one page at a time: 2 D / BENCH_PORT_WORDS beats to read it, then group x D / (PORT_WORDS / 2)
//         cycles (a beat's width of products per cycle).
// Per row: sync_row, then a dataflow region load_group_query -> 8 page PEs -> collect_stripes ->
// max_reduce (one packet of pages per cycle) -> topk_unit (BENCH_K_MAX registers).
//
// Arguments (pointer arrays row-major):
//   q          int16 [rows][group][BENCH_D]                                       m_axi gmem_q
//   bounds<p>  int16 [rows][port_stride][2][BENCH_D], p = 0..7 (kmin, then kmax)   m_axi gmem_k<p>
//   out_index  int32 [rows][k]                                                    m_axi gmem_out
//   out_score  int64 [rows][k]                                                    m_axi gmem_out
//   rows; 1 <= group <= BENCH_MAX_GROUP; n_pages <= page_stride <= BENCH_MAX_KEYS; sub >= 1;
//   1 <= k <= BENCH_K_MAX; bram_pages, uram_pages, sync_from as relevancy_topk, counted in pages  s_axilite
#include <stdint.h>

#include "bench_layout.h"
#include "bench_params.h"
#include "bench_pe.h"
#include "bench_stream.h"
#include "bench_topk.h"
#include "bench_types.h"

namespace {

using namespace bench_hls;

const int kPageStripe = BENCH_PE_BLOCK / 2;
const int kBramPagesPerPe = BENCH_BRAM_KEYS / BENCH_N_PE / 2;
const int kUramPagesPerPe = BENCH_URAM_KEYS / BENCH_N_PE / 2;
const int kUramPageLanes = BENCH_URAM_BLOCK / 2;
const int kHbmDims = BENCH_PORT_WORDS / 2;

// Quest bound over d in [first, first + LEN): LEN bound terms, one product pair each.
template <int LEN>
acc_t bound_slice(const int16_t* q, const PageVec& page, int first) {
  acc_t acc = 0;
terms:
  for (int m = 0; m < LEN; ++m) {
#pragma HLS UNROLL
    const int d = first + m;
    const int32_t lo = (int32_t)q[d] * (int32_t)page.v[d];
    const int32_t hi = (int32_t)q[d] * (int32_t)page.v[BENCH_D + d];
    acc += lo > hi ? lo : hi;
  }
  return acc;
}

void load_group_query(const int16_t* q, int32_t group, int16_t q_local[BENCH_MAX_GROUP][BENCH_D]) {
heads:
  for (int g = 0; g < BENCH_MAX_GROUP; ++g) {
    if (g >= group) break;
    load_query(q + (int64_t)g * BENCH_D, q_local[g]);
  }
}

// Scores `count` (<= LANES) on-chip pages starting at `first` in parallel: one pass per head.
template <int LANES>
void score_page_block(const int16_t q[BENCH_MAX_GROUP][BENCH_D], int32_t group, const PageVec* tier, int64_t first,
                      int32_t count, int32_t l0, Packer& packer) {
  acc_t best[LANES];
#pragma HLS ARRAY_PARTITION variable = best complete
heads:
  for (int g = 0; g < BENCH_MAX_GROUP; ++g) {
    if (g >= group) break;
    acc_t bound[LANES];
#pragma HLS ARRAY_PARTITION variable = bound complete
  init:
    for (int j = 0; j < LANES; ++j) {
#pragma HLS UNROLL
      bound[j] = 0;
    }
  chunks:
    for (int c = 0; c < BENCH_D / BENCH_PE_DIMS; ++c) {
#pragma HLS PIPELINE II = 1
    lanes:
      for (int j = 0; j < LANES; ++j) {
#pragma HLS UNROLL
        if (j < count) bound[j] += bound_slice<BENCH_PE_DIMS>(q[g], tier[first + j], c * BENCH_PE_DIMS);
      }
    }
  head_max:
    for (int j = 0; j < LANES; ++j) {
#pragma HLS UNROLL
      if (g == 0 || bound[j] > best[j]) best[j] = bound[j];
    }
  }
emit:
  for (int j = 0; j < LANES; ++j) {
    if (j < count) packer.push(best[j], l0 + j);
  }
}

// Page PE p: scores the row's pages on port p, BRAM tier, then URAM, then HBM.
void page_pe(const int16_t q[BENCH_MAX_GROUP][BENCH_D], int32_t group, const int16_t* port,
             const PageVec bram[kBramPagesPerPe], const PageVec uram[kUramPagesPerPe], RowLayout lay, int32_t row,
             int p, bench::stream<ScorePacket>& out) {
  const int32_t n_bram = port_count(lay.bram_end, p, lay.stripe);
  const int32_t n_uram = port_count(lay.uram_end, p, lay.stripe);
  const int32_t n_all = port_count(lay.n, p, lay.stripe);
  Packer packer(out, p, lay.stripe);
tier_bram:
  for (int32_t l = 0; l < n_bram; l += kPageStripe) {
    const int32_t count = n_bram - l < kPageStripe ? n_bram - l : kPageStripe;
    score_page_block<kPageStripe>(q, group, bram, (int64_t)row * lay.bram_local + l, count, l, packer);
  }
tier_uram:
  for (int32_t l = n_bram; l < n_uram; l += kUramPageLanes) {
    const int32_t count = n_uram - l < kUramPageLanes ? n_uram - l : kUramPageLanes;
    score_page_block<kUramPageLanes>(q, group, uram, (int64_t)row * lay.uram_local + l - lay.bram_local, count, l,
                                     packer);
  }
tier_hbm:
  for (int32_t l = n_uram; l < n_all; ++l) {
    PageVec page;
    read_entry<2 * BENCH_D>(port, port_offset<2 * BENCH_D>(lay, row, l), page);
    acc_t best = 0;
  heads:
    for (int g = 0; g < BENCH_MAX_GROUP; ++g) {
      if (g >= group) break;
      acc_t bound = 0;
    chunks:
      for (int c = 0; c < BENCH_D / kHbmDims; ++c) {
#pragma HLS PIPELINE II = 1
        bound += bound_slice<kHbmDims>(q[g], page, c * kHbmDims);
      }
      if (g == 0 || bound > best) best = bound;
    }
    packer.push(best, l);
  }
  packer.flush();
}

// Max over each run of `sub` consecutive page scores (the last run may be shorter), re-packetized; one
// packet of pages per cycle (the 16 pages of a packet are folded by an unrolled chain).
void max_reduce(bench::stream<ScorePacket>& in, int32_t n_pages, int32_t sub, bench::stream<ScorePacket>& out) {
  ScorePacket group_packet;
  group_packet.base = 0;
  group_packet.count = 0;
  acc_t running = 0;
  int32_t in_group = 0;
packets:
  for (int32_t p = 0; p < kMaxKeyPackets; ++p) {
#pragma HLS PIPELINE II = 1
    if (p >= packets_for(n_pages)) break;
    const ScorePacket packet = in.read();
  pages:
    for (int j = 0; j < BENCH_PACKET; ++j) {
#pragma HLS UNROLL
      if (j < packet.count) {
        const acc_t score = packet.score[j];
        running = (in_group == 0 || score > running) ? score : running;
        ++in_group;
        const bool last_page = packet.base + j == n_pages - 1;
        if (in_group == sub || last_page) {
          group_packet.score[group_packet.count++] = running;
          in_group = 0;
          if (group_packet.count == BENCH_PACKET || last_page) {
            out.write(group_packet);
            group_packet.base += group_packet.count;
            group_packet.count = 0;
          }
        }
      }
    }
  }
}

void page_row(const int16_t* q, int32_t group, const int16_t* bounds0, const int16_t* bounds1, const int16_t* bounds2,
              const int16_t* bounds3, const int16_t* bounds4, const int16_t* bounds5, const int16_t* bounds6,
              const int16_t* bounds7, const PageVec bram[kPorts][kBramPagesPerPe],
              const PageVec uram[kPorts][kUramPagesPerPe], RowLayout lay, int32_t row, int32_t sub, int32_t n_groups,
              int32_t k, int32_t* out_index, int64_t* out_score) {
#pragma HLS DATAFLOW
  int16_t q_local[BENCH_MAX_GROUP][BENCH_D];
#pragma HLS ARRAY_PARTITION variable = q_local complete dim = 2
  bench::stream<ScorePacket> pe_scores[kPorts];
  bench::stream<ScorePacket> page_scores("page_topk.page_scores");
  bench::stream<ScorePacket> group_scores("page_topk.group_scores");
#pragma HLS STREAM variable = pe_scores depth = 16
#pragma HLS STREAM variable = page_scores depth = 4
#pragma HLS STREAM variable = group_scores depth = 4

  load_group_query(q, group, q_local);
  page_pe(q_local, group, bounds0, bram[0], uram[0], lay, row, 0, pe_scores[0]);
  page_pe(q_local, group, bounds1, bram[1], uram[1], lay, row, 1, pe_scores[1]);
  page_pe(q_local, group, bounds2, bram[2], uram[2], lay, row, 2, pe_scores[2]);
  page_pe(q_local, group, bounds3, bram[3], uram[3], lay, row, 3, pe_scores[3]);
  page_pe(q_local, group, bounds4, bram[4], uram[4], lay, row, 4, pe_scores[4]);
  page_pe(q_local, group, bounds5, bram[5], uram[5], lay, row, 5, pe_scores[5]);
  page_pe(q_local, group, bounds6, bram[6], uram[6], lay, row, 6, pe_scores[6]);
  page_pe(q_local, group, bounds7, bram[7], uram[7], lay, row, 7, pe_scores[7]);
  collect_stripes(pe_scores, lay.n, lay.stripe, page_scores);
  max_reduce(page_scores, lay.n, sub, group_scores);
  topk_unit<BENCH_K_MAX, kMaxKeyPackets>(group_scores, packets_for(n_groups), k, out_index, out_score);
}

}  // namespace

extern "C" void page_topk(const int16_t* q, const int16_t* bounds0, const int16_t* bounds1, const int16_t* bounds2,
                          const int16_t* bounds3, const int16_t* bounds4, const int16_t* bounds5,
                          const int16_t* bounds6, const int16_t* bounds7, int32_t* out_index, int64_t* out_score,
                          int32_t rows, int32_t group, int32_t n_pages, int32_t page_stride, int32_t sub, int32_t k,
                          int32_t bram_pages, int32_t uram_pages, int32_t sync_from) {
#pragma HLS INTERFACE m_axi port = q offset = slave bundle = gmem_q
#pragma HLS INTERFACE m_axi port = bounds0 offset = slave bundle = gmem_k0
#pragma HLS INTERFACE m_axi port = bounds1 offset = slave bundle = gmem_k1
#pragma HLS INTERFACE m_axi port = bounds2 offset = slave bundle = gmem_k2
#pragma HLS INTERFACE m_axi port = bounds3 offset = slave bundle = gmem_k3
#pragma HLS INTERFACE m_axi port = bounds4 offset = slave bundle = gmem_k4
#pragma HLS INTERFACE m_axi port = bounds5 offset = slave bundle = gmem_k5
#pragma HLS INTERFACE m_axi port = bounds6 offset = slave bundle = gmem_k6
#pragma HLS INTERFACE m_axi port = bounds7 offset = slave bundle = gmem_k7
#pragma HLS INTERFACE m_axi port = out_index offset = slave bundle = gmem_out
#pragma HLS INTERFACE m_axi port = out_score offset = slave bundle = gmem_out
#pragma HLS INTERFACE s_axilite port = rows
#pragma HLS INTERFACE s_axilite port = group
#pragma HLS INTERFACE s_axilite port = n_pages
#pragma HLS INTERFACE s_axilite port = page_stride
#pragma HLS INTERFACE s_axilite port = sub
#pragma HLS INTERFACE s_axilite port = k
#pragma HLS INTERFACE s_axilite port = bram_pages
#pragma HLS INTERFACE s_axilite port = uram_pages
#pragma HLS INTERFACE s_axilite port = sync_from
#pragma HLS INTERFACE s_axilite port = return
  static PageVec bram[kPorts][kBramPagesPerPe];
  static PageVec uram[kPorts][kUramPagesPerPe];
#pragma HLS ARRAY_PARTITION variable = bram complete dim = 1
#pragma HLS ARRAY_PARTITION variable = bram cyclic factor = kPageStripe dim = 2
#pragma HLS ARRAY_PARTITION variable = uram complete dim = 1
#pragma HLS ARRAY_PARTITION variable = uram cyclic factor = kUramPageLanes dim = 2
#pragma HLS BIND_STORAGE variable = bram type = ram_1p impl = bram
#pragma HLS BIND_STORAGE variable = uram type = ram_1p impl = uram
  if (sub < 1) sub = 1;  // the host validates sub; this keeps a bad one from dividing by zero
  const RowLayout lay = make_layout(rows, n_pages, page_stride, kPageStripe, bram_pages, uram_pages, kBramPagesPerPe,
                                    kUramPagesPerPe);
  const int32_t n_groups = (n_pages + sub - 1) / sub;
row_loop:
  for (int32_t r = 0; r < BENCH_MAX_ROWS; ++r) {
    if (r >= rows) break;
    sync_row<2 * BENCH_D, kBramPagesPerPe, kUramPagesPerPe>(bounds0, bounds1, bounds2, bounds3, bounds4, bounds5,
                                                            bounds6, bounds7, bram, uram, lay, r, sync_from);
    page_row(q + (int64_t)r * group * BENCH_D, group, bounds0, bounds1, bounds2, bounds3, bounds4, bounds5, bounds6,
             bounds7, bram, uram, lay, r, sub, n_groups, k, out_index + (int64_t)r * k, out_score + (int64_t)r * k);
  }
}
