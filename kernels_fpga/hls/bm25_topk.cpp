// bm25_topk: single-stage RAG retrieval: BM25 scoring of a whole corpus fused with top-k documents
// (paper.md section 7, BM25).
//
// Corpus, CSR over documents: document d owns postings [doc_ptr[d], doc_ptr[d + 1]) of term_ids / tfs; a
// posting is (term id t < BENCH_VOCAB, term frequency tf). Query: a BENCH_VOCAB-bit bitmap, term t at bit
// t % 64 of word t / 64. IDF: int32 Q16 per term, >= 0, computed on the host from document frequencies
// (kernels_fpga/reference.py bm25_idf_q16).
//
// Integer score of document d, all quantities non-negative (floor division throughout):
//   factor(tf)    = floor(tf * (K1 + 2^16) * 2^16 / (tf * 2^16 + K1))  = Q16 of tf * (k1 + 1) / (tf + k1)
//   weight(t, tf) = floor(idf[t] * factor(tf) / 2^16)
//   score[d]      = sum of weight(t, tf) over the postings (t, tf) of d whose term t is in the query
// with K1 = BENCH_BM25_K1_Q16 (k1 = 1.2). There is no document-length normalization: b = 0.75 is defined
// (BENCH_BM25_B_Q16) but not applied, as in the reference design. Every posting counts (a term listed
// twice in one document adds twice; hosts normally merge them). Documents without a query term score 0
// and compete like any other. Then the k documents ranked highest by (score desc, doc index asc) go to
// out_index / out_score in top-k slot order (bench_topk.h); unfilled slots hold index -1, INT64_MIN.
//
// Structure (paper.md section 7: "(token, tf) pairs stream from 4 HBM channels x 16 lanes ... A lane
// scores only tokens with id mod 16 = lane"): documents are split into BENCH_BM25_CHANNELS contiguous
// ranges, one per HBM channel. A channel reads a document's postings in beats of BENCH_BM25_LANES; a
// posting with term t goes to lane t % LANES, which holds the query bits and IDF of exactly those terms
// (entry t / LANES of its bank) and keeps its own partial score; at the end of the document an adder tree
// sums the lanes. Integer addition is associative, so neither split changes a score. The channels' score
// packets merge into one top-k unit, whose result does not depend on arrival order.
// On a board each channel's postings sit in its own HBM pseudo-channel and the query bitmap and IDF stay
// resident between queries ("df sits on chip"); C-simulation passes one array and loads both per call.
//
// Arguments:
//   doc_ptr       int64  [n_docs + 1], non-decreasing, doc_ptr[0] = 0   m_axi gmem0
//   term_ids      uint32 [doc_ptr[n_docs]]                              m_axi gmem1
//   tfs           uint16 [doc_ptr[n_docs]]                              m_axi gmem2
//   query_bitmap  uint64 [BENCH_VOCAB / 64]                             m_axi gmem3
//   idf_q16       int32  [BENCH_VOCAB], >= 0                            m_axi gmem3
//   out_index     int32  [k]                                            m_axi gmem4
//   out_score     int64  [k]                                            m_axi gmem4
//   n_docs <= BENCH_MAX_DOCS, each document <= BENCH_MAX_DOC_TERMS postings; 1 <= k <= BENCH_K_MAX   s_axilite
#include <stdint.h>

#include "bench_params.h"
#include "bench_stream.h"
#include "bench_topk.h"
#include "bench_types.h"

namespace {

using namespace bench_hls;

const int kChannels = BENCH_BM25_CHANNELS;
const int kLanes = BENCH_BM25_LANES;
const int kBankTerms = BENCH_VOCAB / kLanes;
const int32_t kMaxPackets = (BENCH_MAX_DOCS + BENCH_PACKET - 1) / BENCH_PACKET + kChannels;

// Q16 of tf * (k1 + 1) / (tf + k1), rounded down; 0 for tf = 0.
inline int64_t tf_factor_q16(uint16_t tf) {
  const int64_t t = tf;
  return t * (BENCH_BM25_K1_Q16 + BENCH_Q16_ONE) * BENCH_Q16_ONE / (t * BENCH_Q16_ONE + BENCH_BM25_K1_Q16);
}

// Scores documents [doc_begin, doc_end) and emits their scores as packets in document order.
void bm25_channel(const int64_t* doc_ptr, const uint32_t* term_ids, const uint16_t* tfs,
                  const bool hit[kLanes][kBankTerms], const int32_t idf[kLanes][kBankTerms], int32_t doc_begin,
                  int32_t doc_end, bench::stream<ScorePacket>& out) {
  ScorePacket packet;
  packet.base = doc_begin;
  packet.count = 0;
docs:
  for (int32_t i = 0; i < BENCH_MAX_DOCS; ++i) {
    const int32_t d = doc_begin + i;
    if (d >= doc_end) break;
    const int64_t first = doc_ptr[d];
    const int64_t last = doc_ptr[d + 1];
    acc_t lane_score[kLanes] = {};
#pragma HLS ARRAY_PARTITION variable = lane_score complete
  beats:
    for (int32_t b = 0; b < BENCH_MAX_DOC_TERMS / kLanes; ++b) {
#pragma HLS PIPELINE II = 1
      const int64_t beat = first + (int64_t)b * kLanes;
      if (beat >= last) break;
    postings:
      for (int s = 0; s < kLanes; ++s) {
#pragma HLS UNROLL
        const int64_t pos = beat + s;
        if (pos >= last) continue;
        const uint32_t term = term_ids[pos];
        if (term >= (uint32_t)BENCH_VOCAB) continue;  // the host validates ids; never index past a bank
        const int lane = term % kLanes;
        const uint32_t entry = term / kLanes;
        if (hit[lane][entry]) lane_score[lane] += ((acc_t)idf[lane][entry] * tf_factor_q16(tfs[pos])) >> 16;
      }
    }
    acc_t score = 0;
  lane_sum:
    for (int l = 0; l < kLanes; ++l) {
#pragma HLS UNROLL
      score += lane_score[l];
    }
    packet.score[packet.count++] = score;
    if (packet.count == BENCH_PACKET || d == doc_end - 1) {
      out.write(packet);
      packet.base += packet.count;
      packet.count = 0;
    }
  }
}

// Forwards every channel's packets, round robin, into one stream.
void merge_channels(bench::stream<ScorePacket> in[kChannels], const int32_t packets[kChannels],
                    bench::stream<ScorePacket>& out) {
  int32_t left[kChannels];
#pragma HLS ARRAY_PARTITION variable = left complete
init:
  for (int c = 0; c < kChannels; ++c) {
#pragma HLS UNROLL
    left[c] = packets[c];
  }
rounds:
  for (int32_t round = 0; round < kMaxPackets; ++round) {
    bool any = false;
  channels:
    for (int c = 0; c < kChannels; ++c) {
#pragma HLS PIPELINE II = 1
      if (left[c] > 0) {
        out.write(in[c].read());
        --left[c];
        any = true;
      }
    }
    if (!any) break;
  }
}

void bm25_dataflow(const int64_t* doc_ptr, const uint32_t* term_ids, const uint16_t* tfs,
                   const bool hit[kChannels][kLanes][kBankTerms], const int32_t idf[kChannels][kLanes][kBankTerms],
                   const int32_t doc_begin[kChannels], const int32_t doc_end[kChannels],
                   const int32_t packets[kChannels], int32_t total_packets, int32_t k, int32_t* out_index,
                   int64_t* out_score) {
#pragma HLS DATAFLOW
  bench::stream<ScorePacket> channel_scores[kChannels];
  bench::stream<ScorePacket> merged("bm25_topk.scores");
#pragma HLS STREAM variable = channel_scores depth = 4
#pragma HLS STREAM variable = merged depth = 4
channels:
  for (int c = 0; c < kChannels; ++c) {
#pragma HLS UNROLL
    bm25_channel(doc_ptr, term_ids, tfs, hit[c], idf[c], doc_begin[c], doc_end[c], channel_scores[c]);
  }
  merge_channels(channel_scores, packets, merged);
  topk_unit<BENCH_K_MAX, kMaxPackets>(merged, total_packets, k, out_index, out_score);
}

}  // namespace

extern "C" void bm25_topk(const int64_t* doc_ptr, const uint32_t* term_ids, const uint16_t* tfs,
                          const uint64_t* query_bitmap, const int32_t* idf_q16, int32_t* out_index,
                          int64_t* out_score, int32_t n_docs, int32_t k) {
#pragma HLS INTERFACE m_axi port = doc_ptr offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = term_ids offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = tfs offset = slave bundle = gmem2
#pragma HLS INTERFACE m_axi port = query_bitmap offset = slave bundle = gmem3
#pragma HLS INTERFACE m_axi port = idf_q16 offset = slave bundle = gmem3
#pragma HLS INTERFACE m_axi port = out_index offset = slave bundle = gmem4
#pragma HLS INTERFACE m_axi port = out_score offset = slave bundle = gmem4
#pragma HLS INTERFACE s_axilite port = n_docs
#pragma HLS INTERFACE s_axilite port = k
#pragma HLS INTERFACE s_axilite port = return
  // One query bitmap and IDF copy per channel, banked by lane; 1.3 MB in all, too big for a C-sim stack
  // frame, so C-simulation puts it on the heap (UG1399, "large arrays" in C simulation).
#ifndef __SYNTHESIS__
  bool(*hit)[kLanes][kBankTerms] = new bool[kChannels][kLanes][kBankTerms];
  int32_t(*idf)[kLanes][kBankTerms] = new int32_t[kChannels][kLanes][kBankTerms];
#else
  bool hit[kChannels][kLanes][kBankTerms];
  int32_t idf[kChannels][kLanes][kBankTerms];
#pragma HLS ARRAY_PARTITION variable = hit complete dim = 1
#pragma HLS ARRAY_PARTITION variable = hit complete dim = 2
#pragma HLS ARRAY_PARTITION variable = idf complete dim = 1
#pragma HLS ARRAY_PARTITION variable = idf complete dim = 2
#endif
load_terms:
  for (int32_t t = 0; t < BENCH_VOCAB; ++t) {
#pragma HLS PIPELINE II = 1
    const bool in_query = (query_bitmap[t / 64] >> (t % 64)) & 1;
    const int32_t weight = idf_q16[t];
  replicate:
    for (int c = 0; c < kChannels; ++c) {
#pragma HLS UNROLL
      hit[c][t % kLanes][t / kLanes] = in_query;
      idf[c][t % kLanes][t / kLanes] = weight;
    }
  }
  // Contiguous document ranges, one per channel.
  const int32_t chunk = (n_docs + kChannels - 1) / kChannels;
  int32_t doc_begin[kChannels];
  int32_t doc_end[kChannels];
  int32_t packets[kChannels];
  int32_t total_packets = 0;
split_docs:
  for (int c = 0; c < kChannels; ++c) {
#pragma HLS UNROLL
    doc_begin[c] = c * chunk < n_docs ? c * chunk : n_docs;
    doc_end[c] = doc_begin[c] + chunk < n_docs ? doc_begin[c] + chunk : n_docs;
    packets[c] = packets_for(doc_end[c] - doc_begin[c]);
    total_packets += packets[c];
  }
  bm25_dataflow(doc_ptr, term_ids, tfs, hit, idf, doc_begin, doc_end, packets, total_packets, k, out_index,
                out_score);
#ifndef __SYNTHESIS__
  delete[] hit;
  delete[] idf;
#endif
}
