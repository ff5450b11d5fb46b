// Compile-time parameters of the bench FPGA kernels and the overflow bounds they imply.
//
// Every parameter can be overridden at build time with -DNAME=value (kernels_fpga/csim.py passes
// `overrides` this way). Defaults follow the published reference designs (HeteroLLM, He et al.,
// arXiv 2603.29002; /work/shared/reference/paper.md section 7). Loop bounds in the kernels are these
// compile-time maxima; runtime trip counts exit early, as Vitis HLS needs fixed bounds.
#ifndef BENCH_PARAMS_H
#define BENCH_PARAMS_H

#include <stdint.h>

// Head dimension of queries and keys (paper.md section 7: "d 128").
#ifndef BENCH_D
#define BENCH_D 128
#endif

// Inner-product PEs working in parallel, each with its own key port (paper.md section 7: "8 HBM read
// channels x 512 bit; 8 inner-product PEs"). The top functions have exactly this many key ports
// (keys0..keys7), so it is fixed; see the static_assert below.
#ifndef BENCH_N_PE
#define BENCH_N_PE 8
#endif

// int16 MACs ONE PE performs per cycle (paper.md section 7: "a 128-key block takes 32 cycles per PE
// (512 MAC/cycle)"; HeteroLLM indexer_seer_token_budget.h scores 128 keys x 4 int16 dims per cycle).
#ifndef BENCH_PE_MACS
#define BENCH_PE_MACS 512
#endif

// Keys a PE scores in parallel from its BRAM tier, and the stripe width of the key ports: keys
// [128 s, 128 s + 128) live on port s % N_PE (paper.md section 7: 128-key blocks, 2048 keys per PE in BRAM).
#ifndef BENCH_PE_BLOCK
#define BENCH_PE_BLOCK 128
#endif

// Keys a PE scores in parallel from its URAM tier (paper.md section 7, LServe long variant: "read at
// 128 / 32 / 8 keys per cycle-block" for BRAM / URAM / HBM).
#ifndef BENCH_URAM_BLOCK
#define BENCH_URAM_BLOCK 32
#endif

// Data width of every m_axi port in bits (paper.md section 7: "8 HBM read channels x 512 bit").
#ifndef BENCH_PORT_BITS
#define BENCH_PORT_BITS 512
#endif

// Scores per packet entering the top-k unit (paper.md section 7: "each 16-score packet").
#ifndef BENCH_PACKET
#define BENCH_PACKET 16
#endif

// Top-k registers of the block/page/BM25 top-k unit (paper.md section 7: top-64).
#ifndef BENCH_K_MAX
#define BENCH_K_MAX 64
#endif

// Top-k registers of the DSA indexer (paper.md section 7: top-2048, the V3.2 default).
#ifndef BENCH_DSA_K_MAX
#define BENCH_DSA_K_MAX 2048
#endif

// On-chip key tiers, chip totals in D-dimensional int16 vectors, split evenly over the PEs (paper.md
// section 7, LServe long variant: 16,384 keys in BRAM (2,048 per PE) + 32,768 in URAM; the rest stream
// from HBM). A page (min and max vector) takes two. Rows get whole stripes of every PE (bench_layout.h).
#ifndef BENCH_BRAM_KEYS
#define BENCH_BRAM_KEYS 16384
#endif
#ifndef BENCH_URAM_KEYS
#define BENCH_URAM_KEYS 32768
#endif

// Most keys (or pages) one row may hold, and the largest row stride; bounds the loops. Large for C-sim.
#ifndef BENCH_MAX_KEYS
#define BENCH_MAX_KEYS (1 << 20)
#endif

// Most rows (batch x KV heads, or batch for DSA) per call; bounds the row loop.
#ifndef BENCH_MAX_ROWS
#define BENCH_MAX_ROWS (1 << 16)
#endif

// Most query heads in one GQA group for page_topk (Llama-3.1-8B and Qwen3-8B use 4).
#ifndef BENCH_MAX_GROUP
#define BENCH_MAX_GROUP 16
#endif

// Most DSA indexer heads (DeepSeek-V3.2 index_n_heads = 64, workloads.md section 2). The reference
// design holds 16 heads (paper.md section 7); dsa_indexer_topk.cpp runs ceil(H / 16) head passes per key.
#ifndef BENCH_DSA_HEADS
#define BENCH_DSA_HEADS 64
#endif
#ifndef BENCH_DSA_HEADS_PER_PASS
#define BENCH_DSA_HEADS_PER_PASS 16
#endif

// BM25: vocabulary size (the query is a VOCAB-bit bitmap; a posting packs a 16-bit term id), HBM channels x
// lanes, most documents, most postings per document (paper.md section 7: vocab 65,536; 4 HBM channels x
// 16 lanes; <= 20M docs).
#ifndef BENCH_VOCAB
#define BENCH_VOCAB 65536
#endif
#ifndef BENCH_BM25_CHANNELS
#define BENCH_BM25_CHANNELS 4
#endif
#ifndef BENCH_BM25_LANES
#define BENCH_BM25_LANES 16
#endif
#ifndef BENCH_MAX_DOCS
#define BENCH_MAX_DOCS (1 << 25)
#endif
#ifndef BENCH_MAX_DOC_TERMS
#define BENCH_MAX_DOC_TERMS (1 << 16)
#endif
// Most posting beats (16 postings each, documents padded to whole beats) one BM25 channel may hold.
#ifndef BENCH_MAX_BEATS
#define BENCH_MAX_BEATS (1 << 30)
#endif

// BM25 constants in Q16 fixed point (value x 65536): k1 = 1.2 -> round(78643.2) = 78643; b = 0.75 is
// defined as in the reference design but, like it, never applied (no document-length normalization).
#ifndef BENCH_BM25_K1_Q16
#define BENCH_BM25_K1_Q16 78643
#endif
#ifndef BENCH_BM25_B_Q16
#define BENCH_BM25_B_Q16 49152
#endif
#define BENCH_Q16_ONE 65536

// Derived, not overridable. Dims each PE lane multiplies per cycle (4 with the defaults: int16 packed two
// per 32-bit word, two words per cycle, as the reference PE).
#define BENCH_PE_DIMS (BENCH_PE_MACS / BENCH_PE_BLOCK)
// int16 words in one port beat (32 with the defaults): the HBM tier reads a key at one beat per cycle.
#define BENCH_PORT_WORDS (BENCH_PORT_BITS / 16)

// ---------------------------------------------------------------------------------------------------
// Structure constraints.
static_assert(BENCH_N_PE == 8, "the top functions have 8 key ports (keys0..keys7), one per PE");
static_assert(BENCH_D > 0 && BENCH_D % BENCH_N_PE == 0,
              "BENCH_D must be a positive multiple of BENCH_N_PE (DSA splits D across the PE chain)");
static_assert(BENCH_PE_MACS > 0 && BENCH_PE_MACS % BENCH_PE_BLOCK == 0 && BENCH_D % BENCH_PE_DIMS == 0,
              "BENCH_PE_MACS must be BENCH_PE_BLOCK lanes x a number of dims that divides BENCH_D");
static_assert(BENCH_PE_BLOCK % BENCH_URAM_BLOCK == 0 && BENCH_URAM_BLOCK % 2 == 0,
              "BENCH_URAM_BLOCK must be even and divide BENCH_PE_BLOCK (a stripe is whole URAM blocks)");
static_assert(BENCH_PE_BLOCK % (2 * BENCH_PACKET) == 0,
              "a stripe of keys (BENCH_PE_BLOCK) or of pages (half as many) must be whole packets");
static_assert(BENCH_PORT_BITS % 32 == 0 && BENCH_D % BENCH_PORT_WORDS == 0,
              "a key must be a whole number of port beats");
static_assert(BENCH_BRAM_KEYS % (BENCH_N_PE * BENCH_PE_BLOCK) == 0 && BENCH_URAM_KEYS % (BENCH_N_PE * BENCH_PE_BLOCK) == 0,
              "the on-chip tiers must hold whole stripes on every PE");
static_assert(BENCH_K_MAX > 0 && (BENCH_K_MAX & (BENCH_K_MAX - 1)) == 0,
              "BENCH_K_MAX must be a power of two (log2 K comparator tree)");
static_assert(BENCH_DSA_K_MAX > 0 && (BENCH_DSA_K_MAX & (BENCH_DSA_K_MAX - 1)) == 0,
              "BENCH_DSA_K_MAX must be a power of two (log2 K comparator tree)");
static_assert(BENCH_MAX_KEYS >= 1 && BENCH_MAX_KEYS <= (1 << 30), "BENCH_MAX_KEYS must fit int32 indices");
static_assert(BENCH_MAX_DOCS >= 1 && BENCH_MAX_DOCS <= (1 << 30), "BENCH_MAX_DOCS must fit int32 indices");
static_assert(BENCH_DSA_HEADS_PER_PASS > 0 && BENCH_DSA_HEADS >= BENCH_DSA_HEADS_PER_PASS,
              "BENCH_DSA_HEADS must be at least one pass of BENCH_DSA_HEADS_PER_PASS");
static_assert(BENCH_VOCAB <= 65536 && BENCH_VOCAB % BENCH_PORT_BITS == 0,
              "BENCH_VOCAB must fit the 16-bit term id of a posting and be whole bitmap beats");
static_assert(BENCH_BM25_CHANNELS == 4, "bm25_topk has 4 posting ports (postings0..postings3)");
static_assert(BENCH_BM25_LANES * 32 == BENCH_PORT_BITS, "a port beat carries one 32-bit posting per lane");

// ---------------------------------------------------------------------------------------------------
// Accumulator widths (why no sum can overflow).
//
// Inner products (relevancy_topk, threshold_select, page_topk, DSA per head): every int16 x int16
// product p satisfies -2^30 < p <= 2^30 (2^30 only for (-32768)^2), so a D-term sum lies in
// (-D * 2^30, D * 2^30]. The hardware accumulates in 40 bits (paper.md section 4: "int16 q/k with
// 40-bit accumulators"), exact for |value| < 2^39, i.e. for D < 512. C code holds it in an int64_t.
// The page bound sums max(q*lo, q*hi), one product per term, so the same bound holds.
static_assert((int64_t)BENCH_D * ((int64_t)1 << 30) < ((int64_t)1 << 39),
              "an inner product over BENCH_D int16 terms could exceed the 40-bit accumulator");

// DSA index score I = sum_j w_j * max(0, q_j . k): |w_j| <= 2^15 and 0 <= max(0, q_j . k) <= D * 2^30,
// so |I| <= H * D * 2^45, which is < 2^63 (int64) when H * D < 2^18 (64 heads x 128 dims = 2^13).
static_assert((int64_t)BENCH_DSA_HEADS * BENCH_D < ((int64_t)1 << 18), "the DSA index score could overflow int64");

// BM25 (formula in bm25_topk.cpp), all operands non-negative: the tf-factor numerator
// tf * (K1 + 2^16) * 2^16 < 2^16 * 2^31 * 2^16 = 2^63 since tf < 2^16 and K1 < 2^30; a term weight is
// (idf * factor) >> 16 with idf < 2^31 and factor < K1 + 2^16; a document sums at most
// BENCH_MAX_DOC_TERMS weights, so its score is < 2^15 * (K1 + 2^16) * MAX_DOC_TERMS < 2^63.
static_assert(BENCH_BM25_K1_Q16 > 0 && BENCH_BM25_K1_Q16 < (1 << 30), "BENCH_BM25_K1_Q16 must be in (0, 2^30)");
static_assert((int64_t)(BENCH_BM25_K1_Q16 + BENCH_Q16_ONE) * BENCH_MAX_DOC_TERMS < ((int64_t)1 << 48),
              "a BM25 document score could overflow int64");

#endif  // BENCH_PARAMS_H
