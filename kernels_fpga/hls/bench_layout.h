// Where a row's entries (keys, or pages = min and max vectors) live: striped key ports and on-chip tiers.
//
// Ports. Entries are striped over the BENCH_N_PE key ports in stripes of S entries (S = BENCH_PE_BLOCK
// keys, or BENCH_PE_BLOCK / 2 pages): entry i of a row is on port p = (i / S) % N_PE at local index
// l = (i / (S * N_PE)) * S + i % S, so PE p reads only its own port (paper.md section 7: 8 HBM channels,
// one per PE, 128-key blocks). Each port holds `port_stride` entries per row, rounded up from the row
// stride (capacity) to whole stripes, so a row grows in place: appending entry i writes only its bytes
// on port p. kernels_fpga/layout.py computes the same layout on the host.
//
// Tiers. Each PE keeps the first entries of its port on chip, earliest first (paper.md section 7: BRAM,
// then URAM, then HBM, in token-id order): local [0, bram_local) in BRAM, [bram_local, bram_local +
// uram_local) in URAM, the rest read from its port (HBM). A row gets whole stripes of every PE's BRAM and
// URAM, so the tiers are global prefixes: entries [0, bram_end) in BRAM, [bram_end, uram_end) in URAM.
// The on-chip copies persist between calls (static arrays, as the reference keeps keys on chip);
// sync_row copies entries [sync_from, uram_end) of a row from the ports, so a decode step that appended
// one key per row copies just that key. A host passes sync_from = 0 after (re)writing the ports.
#ifndef BENCH_LAYOUT_H
#define BENCH_LAYOUT_H

#include <stdint.h>

#include "bench_params.h"
#include "bench_types.h"

namespace bench_hls {

const int kPorts = BENCH_N_PE;

// Entries of port p among a row's entries [0, x), for stripes of `stripe` entries.
inline int32_t port_count(int32_t x, int p, int32_t stripe) {
  const int32_t round = stripe * kPorts;
  const int32_t rest = x % round - p * stripe;
  return (x / round) * stripe + (rest < 0 ? 0 : (rest > stripe ? stripe : rest));
}

// Row index of local entry l of port p.
inline int32_t global_index(int32_t l, int p, int32_t stripe) {
  return (l / stripe) * stripe * kPorts + p * stripe + l % stripe;
}

// One call's layout, the same for every row.
struct RowLayout {
  int32_t n;            // entries scored per row
  int32_t stripe;       // entries per stripe
  int32_t port_stride;  // entries per row on each port
  int32_t bram_local;   // BRAM entries per row on each PE (whole stripes)
  int32_t uram_local;   // URAM entries per row on each PE (whole stripes)
  int32_t bram_end;     // entries [0, bram_end) of a row are in BRAM
  int32_t uram_end;     // entries [bram_end, uram_end) are in URAM, the rest in HBM
};

// Per-row share of one PE's tier: the host's per-row request (entries, all PEs together) in whole
// stripes, cut so that `rows` rows fit the PE's `per_pe` entries.
inline int32_t tier_share(int32_t request, int32_t rows, int32_t stripe, int32_t per_pe) {
  int32_t local = request < 0 ? 0 : request / (stripe * kPorts) * stripe;
  const int32_t fit = rows > 0 ? per_pe / rows / stripe * stripe : per_pe;
  return local < fit ? local : fit;
}

// n: entries per row; row_stride: the rows' capacity (>= n); bram_request / uram_request: entries per
// row the host asks to keep on chip; per_pe_bram / per_pe_uram: each PE's tier size in entries.
inline RowLayout make_layout(int32_t rows, int32_t n, int32_t row_stride, int32_t stripe, int32_t bram_request,
                             int32_t uram_request, int32_t per_pe_bram, int32_t per_pe_uram) {
  RowLayout lay;
  lay.n = n;
  lay.stripe = stripe;
  const int32_t capacity = row_stride > n ? row_stride : n;
  lay.port_stride = (capacity + stripe * kPorts - 1) / (stripe * kPorts) * stripe;
  lay.bram_local = tier_share(bram_request, rows, stripe, per_pe_bram);
  lay.uram_local = tier_share(uram_request, rows, stripe, per_pe_uram);
  const int32_t bram = kPorts * lay.bram_local;
  const int32_t onchip = bram + kPorts * lay.uram_local;
  lay.bram_end = n < bram ? n : bram;
  lay.uram_end = n < onchip ? n : onchip;
  return lay;
}

// First int16 word of local entry l of `row` on a port, entries of W words.
template <int W>
inline int64_t port_offset(const RowLayout& lay, int32_t row, int32_t l) {
  return ((int64_t)row * lay.port_stride + l) * W;
}

// Reads one entry of W words from a port, one beat (BENCH_PORT_WORDS words) per cycle.
template <int W>
void read_entry(const int16_t* port, int64_t offset, Vec<W>& entry) {
beats:
  for (int b = 0; b < W / BENCH_PORT_WORDS; ++b) {
#pragma HLS PIPELINE II = 1
  words:
    for (int w = 0; w < BENCH_PORT_WORDS; ++w) {
#pragma HLS UNROLL
      entry.v[b * BENCH_PORT_WORDS + w] = port[offset + b * BENCH_PORT_WORDS + w];
    }
  }
}

// Copies local entries of one port that belong to the on-chip tiers and have row index >= sync_from
// into the PE's BRAM / URAM arrays (row r owns [r * bram_local, (r + 1) * bram_local) of `bram`, etc.).
template <int W, int BRAM_PER_PE, int URAM_PER_PE>
void sync_port(const int16_t* port, Vec<W> bram[BRAM_PER_PE], Vec<W> uram[URAM_PER_PE], RowLayout lay, int32_t row,
               int p, int32_t sync_from) {
  const int32_t first = port_count(sync_from < 0 ? 0 : sync_from, p, lay.stripe);
  const int32_t last = port_count(lay.uram_end, p, lay.stripe);
copy:
  for (int32_t l = first; l < last; ++l) {
    Vec<W> entry;
    read_entry<W>(port, port_offset<W>(lay, row, l), entry);
    if (l < lay.bram_local) {
      bram[(int64_t)row * lay.bram_local + l] = entry;
    } else {
      uram[(int64_t)row * lay.uram_local + l - lay.bram_local] = entry;
    }
  }
}

// One row's sync on all ports; the ports are independent, so the copies overlap.
template <int W, int BRAM_PER_PE, int URAM_PER_PE>
void sync_row(const int16_t* port0, const int16_t* port1, const int16_t* port2, const int16_t* port3,
              const int16_t* port4, const int16_t* port5, const int16_t* port6, const int16_t* port7,
              Vec<W> bram[kPorts][BRAM_PER_PE], Vec<W> uram[kPorts][URAM_PER_PE], RowLayout lay, int32_t row,
              int32_t sync_from) {
#pragma HLS DATAFLOW
  sync_port<W, BRAM_PER_PE, URAM_PER_PE>(port0, bram[0], uram[0], lay, row, 0, sync_from);
  sync_port<W, BRAM_PER_PE, URAM_PER_PE>(port1, bram[1], uram[1], lay, row, 1, sync_from);
  sync_port<W, BRAM_PER_PE, URAM_PER_PE>(port2, bram[2], uram[2], lay, row, 2, sync_from);
  sync_port<W, BRAM_PER_PE, URAM_PER_PE>(port3, bram[3], uram[3], lay, row, 3, sync_from);
  sync_port<W, BRAM_PER_PE, URAM_PER_PE>(port4, bram[4], uram[4], lay, row, 4, sync_from);
  sync_port<W, BRAM_PER_PE, URAM_PER_PE>(port5, bram[5], uram[5], lay, row, 5, sync_from);
  sync_port<W, BRAM_PER_PE, URAM_PER_PE>(port6, bram[6], uram[6], lay, row, 6, sync_from);
  sync_port<W, BRAM_PER_PE, URAM_PER_PE>(port7, bram[7], uram[7], lay, row, 7, sync_from);
}

}  // namespace bench_hls

#endif  // BENCH_LAYOUT_H
