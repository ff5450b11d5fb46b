// C-simulation only (not part of an HLS project): reports the compile-time parameters this library was
// built with, so kernels_fpga/csim.py can validate shapes and record them for provenance.
#ifndef __SYNTHESIS__

#include "bench_params.h"

namespace {

struct Param {
  const char* name;
  long long value;
};

const Param kParams[] = {
    {"BENCH_D", BENCH_D},
    {"BENCH_N_PE", BENCH_N_PE},
    {"BENCH_PE_MACS", BENCH_PE_MACS},
    {"BENCH_PACKET", BENCH_PACKET},
    {"BENCH_K_MAX", BENCH_K_MAX},
    {"BENCH_DSA_K_MAX", BENCH_DSA_K_MAX},
    {"BENCH_BRAM_KEYS", BENCH_BRAM_KEYS},
    {"BENCH_URAM_KEYS", BENCH_URAM_KEYS},
    {"BENCH_MAX_KEYS", BENCH_MAX_KEYS},
    {"BENCH_MAX_ROWS", BENCH_MAX_ROWS},
    {"BENCH_MAX_GROUP", BENCH_MAX_GROUP},
    {"BENCH_DSA_HEADS", BENCH_DSA_HEADS},
    {"BENCH_DSA_HEADS_PER_PASS", BENCH_DSA_HEADS_PER_PASS},
    {"BENCH_VOCAB", BENCH_VOCAB},
    {"BENCH_BM25_CHANNELS", BENCH_BM25_CHANNELS},
    {"BENCH_BM25_LANES", BENCH_BM25_LANES},
    {"BENCH_MAX_DOCS", BENCH_MAX_DOCS},
    {"BENCH_MAX_DOC_TERMS", BENCH_MAX_DOC_TERMS},
    {"BENCH_BM25_K1_Q16", BENCH_BM25_K1_Q16},
    {"BENCH_BM25_B_Q16", BENCH_BM25_B_Q16},
};

}  // namespace

extern "C" int bench_param_count(void) { return (int)(sizeof(kParams) / sizeof(kParams[0])); }

extern "C" const char* bench_param_name(int i) {
  return i >= 0 && i < bench_param_count() ? kParams[i].name : nullptr;
}

extern "C" long long bench_param_value(int i) { return i >= 0 && i < bench_param_count() ? kParams[i].value : 0; }

#endif  // __SYNTHESIS__
