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
// Per row, a dataflow region: load_group_query -> load_tiers (one entry = one page's min and max, so a
// page uses two key slots of a tier) -> page_pe_array -> max_reduce -> topk_unit (BENCH_K_MAX registers).
//
// Arguments (arrays row-major and contiguous):
//   q          int16 [rows][group][BENCH_D]                                   m_axi gmem0
//   bounds     int16 [rows][n_pages][2][BENCH_D]  (kmin, then kmax, per page)  m_axi gmem1
//   out_index  int32 [rows][k]                                                m_axi gmem2
//   out_score  int64 [rows][k]                                                m_axi gmem2
//   rows; 1 <= group <= BENCH_MAX_GROUP; n_pages <= BENCH_MAX_KEYS; sub >= 1; 1 <= k <= BENCH_K_MAX;
//   bram_pages, uram_pages: pages per row held in the BRAM / URAM tier                  s_axilite
#include <stdint.h>

#include "bench_params.h"
#include "bench_pe.h"
#include "bench_stream.h"
#include "bench_tiers.h"
#include "bench_topk.h"
#include "bench_types.h"

namespace {

using namespace bench_hls;

const int32_t kMaxPackets = (BENCH_MAX_KEYS + BENCH_PACKET - 1) / BENCH_PACKET;

// Quest bound over d in [first, first + LEN): LEN bound terms per cycle, one product pair each.
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

// Scores n pages (page i arrives on pages[i % N_PE]); each PE takes the group's heads one after another.
void page_pe_array(const int16_t q[BENCH_MAX_GROUP][BENCH_D], int32_t group, bench::stream<PageVec> pages[BENCH_N_PE],
                   int32_t n, bench::stream<ScorePacket>& out) {
packets:
  for (int32_t p = 0; p < kMaxPackets; ++p) {
    const int32_t base = p * BENCH_PACKET;
    if (base >= n) break;
    ScorePacket packet;
    packet.base = base;
    packet.count = n - base < BENCH_PACKET ? n - base : BENCH_PACKET;
  rounds:
    for (int r = 0; r < BENCH_PACKET / BENCH_N_PE; ++r) {
      PageVec page[BENCH_N_PE] = {};
      acc_t best[BENCH_N_PE] = {};
#pragma HLS ARRAY_PARTITION variable = page complete dim = 0
#pragma HLS ARRAY_PARTITION variable = best complete
    fetch:
      for (int pe = 0; pe < BENCH_N_PE; ++pe) {
#pragma HLS UNROLL
        if (r * BENCH_N_PE + pe < packet.count) page[pe] = pages[pe].read();
      }
    heads:
      for (int g = 0; g < BENCH_MAX_GROUP; ++g) {
        if (g >= group) break;
        acc_t bound[BENCH_N_PE] = {};
#pragma HLS ARRAY_PARTITION variable = bound complete
      chunks:
        for (int c = 0; c < BENCH_D / BENCH_PE_MACS; ++c) {
#pragma HLS PIPELINE II = 1
        pes:
          for (int pe = 0; pe < BENCH_N_PE; ++pe) {
#pragma HLS UNROLL
            bound[pe] += bound_slice<BENCH_PE_MACS>(q[g], page[pe], c * BENCH_PE_MACS);
          }
        }
      head_max:
        for (int pe = 0; pe < BENCH_N_PE; ++pe) {
#pragma HLS UNROLL
          if (g == 0 || bound[pe] > best[pe]) best[pe] = bound[pe];
        }
      }
    store:
      for (int pe = 0; pe < BENCH_N_PE; ++pe) {
#pragma HLS UNROLL
        const int j = r * BENCH_N_PE + pe;
        packet.score[j] = j < packet.count ? best[pe] : 0;
      }
    }
    out.write(packet);
  }
}

// Max over each run of `sub` consecutive page scores (the last run may be shorter), re-packetized.
void max_reduce(bench::stream<ScorePacket>& in, int32_t n_pages, int32_t sub, bench::stream<ScorePacket>& out) {
  ScorePacket group_packet;
  group_packet.base = 0;
  group_packet.count = 0;
  acc_t running = 0;
  int32_t in_group = 0;
packets:
  for (int32_t p = 0; p < kMaxPackets; ++p) {
    if (p >= packets_for(n_pages)) break;
    const ScorePacket packet = in.read();
  pages:
    for (int j = 0; j < BENCH_PACKET; ++j) {
#pragma HLS PIPELINE II = 1
      if (j >= packet.count) break;
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

void page_row(const int16_t* q, const int16_t* bounds, int32_t group, int32_t n_pages, int32_t sub, int32_t n_groups,
              int32_t k, TierSplit split, int32_t* out_index, int64_t* out_score) {
#pragma HLS DATAFLOW
  int16_t q_local[BENCH_MAX_GROUP][BENCH_D];
#pragma HLS ARRAY_PARTITION variable = q_local complete dim = 2
  bench::stream<PageVec> page_stream[BENCH_N_PE];
  bench::stream<ScorePacket> page_scores("page_topk.page_scores");
  bench::stream<ScorePacket> group_scores("page_topk.group_scores");
#pragma HLS STREAM variable = page_stream depth = 4
#pragma HLS STREAM variable = page_scores depth = 4
#pragma HLS STREAM variable = group_scores depth = 4

  load_group_query(q, group, q_local);
  load_tiers<2 * BENCH_D, BENCH_N_PE>(bounds, split, page_stream);
  page_pe_array(q_local, group, page_stream, n_pages, page_scores);
  max_reduce(page_scores, n_pages, sub, group_scores);
  topk_unit<BENCH_K_MAX, kMaxPackets>(group_scores, packets_for(n_groups), k, out_index, out_score);
}

}  // namespace

extern "C" void page_topk(const int16_t* q, const int16_t* bounds, int32_t* out_index, int64_t* out_score,
                          int32_t rows, int32_t group, int32_t n_pages, int32_t sub, int32_t k, int32_t bram_pages,
                          int32_t uram_pages) {
#pragma HLS INTERFACE m_axi port = q offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = bounds offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = out_index offset = slave bundle = gmem2
#pragma HLS INTERFACE m_axi port = out_score offset = slave bundle = gmem2
#pragma HLS INTERFACE s_axilite port = rows
#pragma HLS INTERFACE s_axilite port = group
#pragma HLS INTERFACE s_axilite port = n_pages
#pragma HLS INTERFACE s_axilite port = sub
#pragma HLS INTERFACE s_axilite port = k
#pragma HLS INTERFACE s_axilite port = bram_pages
#pragma HLS INTERFACE s_axilite port = uram_pages
#pragma HLS INTERFACE s_axilite port = return
  if (sub < 1) sub = 1;  // the host validates sub; this keeps a bad one from dividing by zero
  const TierSplit split = split_tiers(n_pages, bram_pages, uram_pages);
  const int32_t n_groups = (n_pages + sub - 1) / sub;
row_loop:
  for (int32_t r = 0; r < BENCH_MAX_ROWS; ++r) {
    if (r >= rows) break;
    page_row(q + (int64_t)r * group * BENCH_D, bounds + (int64_t)r * n_pages * 2 * BENCH_D, group, n_pages, sub, n_groups,
             k, split, out_index + (int64_t)r * k, out_score + (int64_t)r * k);
  }
}
