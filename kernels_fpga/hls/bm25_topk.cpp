// bm25_topk: single-stage RAG retrieval: BM25 scoring of a whole corpus fused with top-k documents
// (paper.md section 7, BM25).
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
// IDF: int32 Q16 per term, >= 0, computed on the host from document frequencies
// (kernels_fpga/reference.py bm25_idf_q16).
//
// Structure (paper.md section 7: "(token, tf) pairs stream from 4 HBM channels x 16 lanes ... The query is
// a 64K-bit bitmap and df sits on chip ... A lane scores only tokens with id mod 16 = lane"):
//  * Documents are split into BENCH_BM25_CHANNELS contiguous ranges of ceil(n_docs / 4) documents; channel
//    c reads its own port (doc_ptr<c>, postings<c>), one 512-bit beat of 16 postings per cycle.
//  * A posting is one uint32: term id (bits 0-15) and tf (bits 16-31). The host places each document's
//    postings in lanes by term id (slot s of a beat holds a term t with t % 16 == s, or an empty slot 0)
//    and pads the document to whole beats, so lane s reads only its own IDF bank: no crossbar.
//    kernels_fpga/layout.py bm25_channels builds this layout; doc_ptr<c> holds beat offsets.
//  * One flat pipelined loop per channel takes one beat per cycle; a document's last beat (or an empty
//    document) also sums the 16 lane scores and emits the document's score: max(1, beats) cycles a document.
//  * The IDF table stays on chip between calls, banked by lane and copied per channel; a call with
//    load_idf != 0 first loads it (VOCAB / 16 cycles, 16 int32 per beat). Every call refreshes the query
//    bitmap, one 512-bit beat per cycle (VOCAB / 512 cycles), copied to every lane of every channel.
//  * The channels' score packets merge round robin into one top-k unit, whose result does not depend on
//    arrival order. Integer addition is associative, so neither split changes a score.
//
// Arguments:
//   doc_ptr<c>    int64  [docs_c + 1], beat offsets into postings<c>, non-decreasing, doc_ptr<c>[0] = 0
//   postings<c>   uint32 [doc_ptr<c>[docs_c] * 16]              (c = 0..3; both m_axi gmem_p<c>)
//   query_bitmap  uint64 [BENCH_VOCAB / 64], term t at bit t % 64 of word t / 64          m_axi gmem_q
//   idf_q16       int32  [BENCH_VOCAB], >= 0 (read only when load_idf != 0)               m_axi gmem_q
//   out_index     int32  [k]                                                              m_axi gmem_out
//   out_score     int64  [k]                                                              m_axi gmem_out
//   n_docs <= BENCH_MAX_DOCS, each document <= BENCH_MAX_DOC_TERMS postings; 1 <= k <= BENCH_K_MAX;
//   load_idf: nonzero to (re)load the IDF table first                                    s_axilite
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
const int kBitmapWords = BENCH_VOCAB / 64;
const int kBeatWords = BENCH_PORT_BITS / 64;
const int32_t kMaxPackets = (BENCH_MAX_DOCS + BENCH_PACKET - 1) / BENCH_PACKET + kChannels;

// Q16 of tf * (k1 + 1) / (tf + k1), rounded down; 0 for tf = 0.
inline int64_t tf_factor_q16(uint32_t tf) {
  const int64_t t = tf;
  return t * (BENCH_BM25_K1_Q16 + BENCH_Q16_ONE) * BENCH_Q16_ONE / (t * BENCH_Q16_ONE + BENCH_BM25_K1_Q16);
}

// Copies the IDF table into every channel's lane banks: term t goes to lane t % 16, entry t / 16.
void load_idf_banks(const int32_t* idf_q16, int32_t idf[kChannels][kLanes][kBankTerms]) {
beats:
  for (int32_t e = 0; e < kBankTerms; ++e) {
#pragma HLS PIPELINE II = 1
  lanes:
    for (int s = 0; s < kLanes; ++s) {
#pragma HLS UNROLL
      const int32_t weight = idf_q16[e * kLanes + s];
    channels:
      for (int c = 0; c < kChannels; ++c) {
#pragma HLS UNROLL
        idf[c][s][e] = weight;
      }
    }
  }
}

// Copies the query bitmap to every lane of every channel, one beat per cycle.
void load_query_banks(const uint64_t* query_bitmap, uint64_t hit[kChannels][kLanes][kBitmapWords]) {
beats:
  for (int b = 0; b < kBitmapWords / kBeatWords; ++b) {
#pragma HLS PIPELINE II = 1
  words:
    for (int w = 0; w < kBeatWords; ++w) {
#pragma HLS UNROLL
      const uint64_t word = query_bitmap[b * kBeatWords + w];
    copies:
      for (int c = 0; c < kChannels; ++c) {
#pragma HLS UNROLL
        for (int s = 0; s < kLanes; ++s) {
#pragma HLS UNROLL
          hit[c][s][b * kBeatWords + w] = word;
        }
      }
    }
  }
}

// Scores documents doc_base .. doc_base + docs - 1 of one channel; emits their scores as packets in order.
void bm25_channel(const int64_t* doc_ptr, const uint32_t* postings, const uint64_t hit[kLanes][kBitmapWords],
                  const int32_t idf[kLanes][kBankTerms], int32_t doc_base, int32_t docs,
                  bench::stream<ScorePacket>& out) {
  if (docs <= 0) return;
  ScorePacket packet;
  packet.base = doc_base;
  packet.count = 0;
  acc_t lane_score[kLanes];
#pragma HLS ARRAY_PARTITION variable = lane_score complete
init:
  for (int s = 0; s < kLanes; ++s) {
#pragma HLS UNROLL
    lane_score[s] = 0;
  }
  int32_t doc = 0;
  int64_t beat = doc_ptr[0];
  int64_t end = doc_ptr[1];
steps:
  for (int64_t t = 0; t < (int64_t)BENCH_MAX_BEATS + BENCH_MAX_DOCS; ++t) {
#pragma HLS PIPELINE II = 1
    if (doc >= docs) break;
    if (beat < end) {
    slots:
      for (int s = 0; s < kLanes; ++s) {
#pragma HLS UNROLL
        const uint32_t posting = postings[beat * kLanes + s];
        const uint32_t term = posting & 0xFFFFu;
        const uint32_t tf = posting >> 16;
        // Slot s is lane s: the host put only terms with t % 16 == s here (empty slots hold 0, tf 0).
        if (term % kLanes == (uint32_t)s && term < (uint32_t)BENCH_VOCAB && ((hit[s][term / 64] >> (term % 64)) & 1)) {
          lane_score[s] += ((acc_t)idf[s][term / kLanes] * tf_factor_q16(tf)) >> 16;
        }
      }
      ++beat;
    }
    if (beat >= end) {
      acc_t score = 0;
    lane_sum:
      for (int s = 0; s < kLanes; ++s) {
#pragma HLS UNROLL
        score += lane_score[s];
        lane_score[s] = 0;
      }
      packet.score[packet.count++] = score;
      ++doc;
      if (packet.count == BENCH_PACKET || doc == docs) {
      pad:
        for (int j = packet.count; j < BENCH_PACKET; ++j) packet.score[j] = 0;
        out.write(packet);
        packet.base += packet.count;
        packet.count = 0;
      }
      if (doc < docs) end = doc_ptr[doc + 1];
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

void bm25_dataflow(const int64_t* doc_ptr0, const int64_t* doc_ptr1, const int64_t* doc_ptr2, const int64_t* doc_ptr3,
                   const uint32_t* postings0, const uint32_t* postings1, const uint32_t* postings2,
                   const uint32_t* postings3, const uint64_t hit[kChannels][kLanes][kBitmapWords],
                   const int32_t idf[kChannels][kLanes][kBankTerms], const int32_t doc_begin[kChannels],
                   const int32_t docs[kChannels], const int32_t packets[kChannels], int32_t total_packets, int32_t k,
                   int32_t* out_index, int64_t* out_score) {
#pragma HLS DATAFLOW
  bench::stream<ScorePacket> channel_scores[kChannels];
  bench::stream<ScorePacket> merged("bm25_topk.scores");
#pragma HLS STREAM variable = channel_scores depth = 4
#pragma HLS STREAM variable = merged depth = 4
  bm25_channel(doc_ptr0, postings0, hit[0], idf[0], doc_begin[0], docs[0], channel_scores[0]);
  bm25_channel(doc_ptr1, postings1, hit[1], idf[1], doc_begin[1], docs[1], channel_scores[1]);
  bm25_channel(doc_ptr2, postings2, hit[2], idf[2], doc_begin[2], docs[2], channel_scores[2]);
  bm25_channel(doc_ptr3, postings3, hit[3], idf[3], doc_begin[3], docs[3], channel_scores[3]);
  merge_channels(channel_scores, packets, merged);
  topk_unit<BENCH_K_MAX, kMaxPackets>(merged, total_packets, k, out_index, out_score);
}

}  // namespace

extern "C" void bm25_topk(const int64_t* doc_ptr0, const int64_t* doc_ptr1, const int64_t* doc_ptr2,
                          const int64_t* doc_ptr3, const uint32_t* postings0, const uint32_t* postings1,
                          const uint32_t* postings2, const uint32_t* postings3, const uint64_t* query_bitmap,
                          const int32_t* idf_q16, int32_t* out_index, int64_t* out_score, int32_t n_docs, int32_t k,
                          int32_t load_idf) {
#pragma HLS INTERFACE m_axi port = doc_ptr0 offset = slave bundle = gmem_p0
#pragma HLS INTERFACE m_axi port = doc_ptr1 offset = slave bundle = gmem_p1
#pragma HLS INTERFACE m_axi port = doc_ptr2 offset = slave bundle = gmem_p2
#pragma HLS INTERFACE m_axi port = doc_ptr3 offset = slave bundle = gmem_p3
#pragma HLS INTERFACE m_axi port = postings0 offset = slave bundle = gmem_p0
#pragma HLS INTERFACE m_axi port = postings1 offset = slave bundle = gmem_p1
#pragma HLS INTERFACE m_axi port = postings2 offset = slave bundle = gmem_p2
#pragma HLS INTERFACE m_axi port = postings3 offset = slave bundle = gmem_p3
#pragma HLS INTERFACE m_axi port = query_bitmap offset = slave bundle = gmem_q
#pragma HLS INTERFACE m_axi port = idf_q16 offset = slave bundle = gmem_q
#pragma HLS INTERFACE m_axi port = out_index offset = slave bundle = gmem_out
#pragma HLS INTERFACE m_axi port = out_score offset = slave bundle = gmem_out
#pragma HLS INTERFACE s_axilite port = n_docs
#pragma HLS INTERFACE s_axilite port = k
#pragma HLS INTERFACE s_axilite port = load_idf
#pragma HLS INTERFACE s_axilite port = return
  // Resident between calls (the reference design keeps df on chip): per channel, per lane, the IDF of the
  // lane's terms and a copy of the query bitmap.
  static int32_t idf[kChannels][kLanes][kBankTerms];
  static uint64_t hit[kChannels][kLanes][kBitmapWords];
#pragma HLS ARRAY_PARTITION variable = idf complete dim = 1
#pragma HLS ARRAY_PARTITION variable = idf complete dim = 2
#pragma HLS ARRAY_PARTITION variable = hit complete dim = 1
#pragma HLS ARRAY_PARTITION variable = hit complete dim = 2
  if (load_idf != 0) load_idf_banks(idf_q16, idf);
  load_query_banks(query_bitmap, hit);
  const int32_t chunk = (n_docs + kChannels - 1) / kChannels;
  int32_t doc_begin[kChannels];
  int32_t docs[kChannels];
  int32_t packets[kChannels];
  int32_t total_packets = 0;
split_docs:
  for (int c = 0; c < kChannels; ++c) {
#pragma HLS UNROLL
    const int32_t begin = c * chunk < n_docs ? c * chunk : n_docs;
    const int32_t end = begin + chunk < n_docs ? begin + chunk : n_docs;
    doc_begin[c] = begin;
    docs[c] = end - begin;
    packets[c] = packets_for(end - begin);
    total_packets += packets[c];
  }
  bm25_dataflow(doc_ptr0, doc_ptr1, doc_ptr2, doc_ptr3, postings0, postings1, postings2, postings3, hit, idf, doc_begin,
                docs, packets, total_packets, k, out_index, out_score);
}
