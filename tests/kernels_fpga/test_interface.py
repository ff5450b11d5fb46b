"""kernels_fpga.interface and hls/connectivity_u55c.cfg against the kernels' C++ sources."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from kernels_fpga.interface import KERNELS, arg_index

HLS = Path(__file__).resolve().parents[2] / "kernels_fpga" / "hls"
C_TYPES = {"int16_t": np.int16, "int32_t": np.int32, "int64_t": np.int64, "uint32_t": np.uint32,
           "uint64_t": np.uint64}


def declared(kernel: str) -> list[tuple[str, np.dtype, bool]]:
    """(name, type, is pointer) of each parameter of the extern "C" top function."""
    source = (HLS / f"{kernel}.cpp").read_text()
    params = re.search(rf'extern "C" void {kernel}\((.*?)\)\s*\{{', source, re.DOTALL).group(1)
    out = []
    for param in params.split(","):
        match = re.fullmatch(r"\s*(?:const\s+)?(\w+)\s*(\*?)\s*(\w+)\s*", param)
        out.append((match.group(3), np.dtype(C_TYPES[match.group(1)]), match.group(2) == "*"))
    return out


def pragmas(kernel: str) -> dict[str, str | None]:
    """Argument -> m_axi bundle, or None for s_axilite."""
    source = (HLS / f"{kernel}.cpp").read_text()
    out: dict[str, str | None] = {}
    for port, bundle in re.findall(r"#pragma HLS INTERFACE m_axi port = (\w+) offset = slave bundle = (\w+)", source):
        out[port] = bundle
    for port in re.findall(r"#pragma HLS INTERFACE s_axilite port = (\w+)", source):
        out[port] = None
    return out


def connectivity() -> dict[tuple[str, str], str]:
    text = (HLS / "connectivity_u55c.cfg").read_text()
    return {(kernel, arg): bank for kernel, arg, bank in re.findall(r"^sp=(\w+)_1\.(\w+):(HBM\[[\d:]+\])$", text,
                                                                    re.MULTILINE)}


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_interface_lists_the_top_function_arguments(kernel):
    args = KERNELS[kernel]
    assert [(a.name, a.dtype, a.is_pointer) for a in args] == declared(kernel)
    bundles = pragmas(kernel)
    assert bundles.pop("return", "missing") is None
    assert {a.name: a.bundle for a in args} == bundles
    assert all(a.dtype == np.int32 for a in args if not a.is_pointer)  # scalars fit a C int (pyxrt)


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_cfg_maps_every_buffer_and_keeps_bundles_together(kernel):
    sp = connectivity()
    by_bundle: dict[str, set[str]] = {}
    for arg in KERNELS[kernel]:
        if arg.is_pointer:
            assert (kernel, arg.name) in sp, f"{kernel}.{arg.name} has no sp= line"
            by_bundle.setdefault(arg.bundle, set()).add(sp[kernel, arg.name])
        else:
            assert (kernel, arg.name) not in sp
    assert all(len(banks) == 1 for banks in by_bundle.values()), by_bundle  # one AXI port, one memory


def test_cfg_gives_every_key_port_its_own_channel_and_shares_keys_between_key_kernels():
    sp = connectivity()
    for kernel, prefix in [("relevancy_topk", "keys"), ("page_topk", "bounds"), ("dsa_indexer_topk", "keys")]:
        banks = [sp[kernel, f"{prefix}{p}"] for p in range(8)]
        assert len(set(banks)) == 8 and all(":" not in bank for bank in banks)
    for p in range(8):
        assert sp["relevancy_topk", f"keys{p}"] == sp["threshold_select", f"keys{p}"]
    assert len({sp["bm25_topk", f"postings{c}"] for c in range(4)}) == 4
    assert set(re.findall(r"^nk=(\w+):", (HLS / "connectivity_u55c.cfg").read_text(), re.MULTILINE)) == set(KERNELS)


def test_arg_index():
    assert arg_index("relevancy_topk", "keys0") == 1 and arg_index("threshold_select", "threshold") == 1
    assert arg_index("bm25_topk", "load_idf") == len(KERNELS["bm25_topk"]) - 1
    with pytest.raises(KeyError, match="no argument"):
        arg_index("relevancy_topk", "key_stride")
