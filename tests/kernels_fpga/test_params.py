"""kernels_fpga.params: the header parse is what g++ compiles, and every side reads the same values."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernels_fpga import csim
from kernels_fpga.model import FpgaModel
from kernels_fpga.params import HEADER, kernel_params, parse_header


def test_the_parse_matches_the_compiled_library():
    parsed = kernel_params()
    assert dict(parsed.values) == csim.load().params
    assert tuple(parsed.values) == csim.PARAMETERS


def test_overrides_match_an_override_build():
    overrides = {"BENCH_D": 32, "BENCH_K_MAX": 16, "BENCH_PE_MACS": 256}
    parsed = kernel_params(overrides)
    assert dict(parsed.values) == csim.load(overrides=overrides).params
    assert parsed.pe_dims == 2 and parsed.overrides == tuple(sorted(overrides.items()))
    assert "BENCH_PE_MACS=256" in parsed.describe()
    with pytest.raises(ValueError, match="unknown kernel parameter"):
        kernel_params({"BENCH_PEMACS": 1})


def test_the_reference_design_values():
    p = kernel_params()
    assert (p.n_pe, p.pe_macs, p.pe_block, p.pe_dims) == (8, 512, 128, 4)  # 512 MAC per PE, 32 cycles a block
    assert (p.uram_block, p.port_bits, p.port_words) == (32, 512, 32)
    assert (p.bram_keys, p.uram_keys, p.bm25_channels, p.bm25_lanes) == (16384, 32768, 4, 16)
    assert p.d // p.pe_dims == 32
    assert FpgaModel("u55c").params.values == p.values  # the model reads the same header


def test_parse_handles_expressions_and_rejects_anything_else(tmp_path: Path):
    text = ("#ifndef BENCH_A\n#define BENCH_A (1 << 4)  // sixteen\n#endif\n"
            "#ifndef BENCH_B\n#define BENCH_B 6 / 4\n#endif\n")
    assert parse_header(text) == {"BENCH_A": 16, "BENCH_B": 1}
    with pytest.raises(ValueError, match="BENCH_C"):
        parse_header("#ifndef BENCH_C\n#define BENCH_C foo(3)\n#endif\n")
    assert "BENCH_Q16_ONE" not in parse_header(HEADER.read_text())  # derived constants are not parameters
