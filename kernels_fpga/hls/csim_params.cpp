// C-simulation only (not part of an HLS project): reports the compile-time parameters this library was
// built with, so kernels_fpga/csim.py can validate shapes and record them for provenance, and exposes the
// kernels' own layout arithmetic (bench_layout.h) so tests can hold kernels_fpga/layout.py to it.
#ifndef __SYNTHESIS__

#include "bench_layout.h"
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
    {"BENCH_PE_BLOCK", BENCH_PE_BLOCK},
    {"BENCH_URAM_BLOCK", BENCH_URAM_BLOCK},
    {"BENCH_PORT_BITS", BENCH_PORT_BITS},
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
    {"BENCH_MAX_BEATS", BENCH_MAX_BEATS},
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

#ifndef __SYNTHESIS__

// make_layout for one call: out = {port_stride, bram_local, uram_local, bram_end, uram_end}.
extern "C" void bench_layout_probe(int32_t rows, int32_t n, int32_t row_stride, int32_t stripe, int32_t bram_request,
                                   int32_t uram_request, int32_t per_pe_bram, int32_t per_pe_uram, int32_t* out) {
  const bench_hls::RowLayout lay = bench_hls::make_layout(rows, n, row_stride, stripe, bram_request, uram_request,
                                                          per_pe_bram, per_pe_uram);
  out[0] = lay.port_stride;
  out[1] = lay.bram_local;
  out[2] = lay.uram_local;
  out[3] = lay.bram_end;
  out[4] = lay.uram_end;
}

// port_count and global_index of bench_layout.h.
extern "C" int32_t bench_port_count(int32_t x, int32_t p, int32_t stripe) { return bench_hls::port_count(x, p, stripe); }
extern "C" int32_t bench_global_index(int32_t l, int32_t p, int32_t stripe) {
  return bench_hls::global_index(l, p, stripe);
}

#endif  // __SYNTHESIS__
