"""The HLS kernels' compile-time parameters, read from ``hls/bench_params.h``: one source for every side.

The kernels (``kernels_fpga/hls``), the C-simulation wrapper (:mod:`kernels_fpga.csim`), the buffer
layouts (:mod:`kernels_fpga.layout`), the host code (:mod:`kernels_fpga.host`) and the analytic model
(:mod:`kernels_fpga.model`) all take the kernel structure (PEs, PE width, ports, stripes, tiers, packet,
top-k registers, BM25 channels and lanes) from the header's ``#ifndef NAME / #define NAME value``
defaults, with the same ``-D`` overrides a build uses. :func:`kernel_params` parses them without a
compiler; ``tests/kernels_fpga/test_params.py`` checks the parse against what g++ compiles.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

HEADER = Path(__file__).resolve().parent / "hls" / "bench_params.h"
"""The header holding the parameters and their sources (paper.md section 7)."""

_DEFINE = re.compile(r"^#ifndef (BENCH_\w+)\n#define \1 (.+)$", re.MULTILINE)
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
              ast.LShift: operator.lshift}


@dataclass(frozen=True)
class KernelParams:
    """Compile-time parameters of one kernel build.

    Attributes:
        values: Every overridable ``BENCH_*`` parameter by name, in header order.
        overrides: The ``-D`` overrides applied to the header defaults, sorted by name.
    """

    values: Mapping[str, int]
    overrides: tuple[tuple[str, int], ...] = ()

    def __getitem__(self, name: str) -> int:
        return self.values[name]

    @property
    def d(self) -> int:
        """Head dimension ``BENCH_D`` (int16 words per key)."""
        return self.values["BENCH_D"]

    @property
    def n_pe(self) -> int:
        """PEs, which is also the number of key ports (``BENCH_N_PE``)."""
        return self.values["BENCH_N_PE"]

    @property
    def pe_macs(self) -> int:
        """int16 MACs per cycle of ONE PE (``BENCH_PE_MACS``; 512 as the reference PE)."""
        return self.values["BENCH_PE_MACS"]

    @property
    def pe_block(self) -> int:
        """Keys a PE scores in parallel from BRAM, and the key stripe width (``BENCH_PE_BLOCK``)."""
        return self.values["BENCH_PE_BLOCK"]

    @property
    def pe_dims(self) -> int:
        """Dims each PE lane multiplies per cycle: ``BENCH_PE_MACS / BENCH_PE_BLOCK``."""
        return self.pe_macs // self.pe_block

    @property
    def uram_block(self) -> int:
        """Keys a PE scores in parallel from URAM (``BENCH_URAM_BLOCK``)."""
        return self.values["BENCH_URAM_BLOCK"]

    @property
    def port_bits(self) -> int:
        """Data width of every m_axi port in bits (``BENCH_PORT_BITS``)."""
        return self.values["BENCH_PORT_BITS"]

    @property
    def port_words(self) -> int:
        """int16 words in one port beat."""
        return self.port_bits // 16

    @property
    def packet(self) -> int:
        """Scores per packet into the top-k / bitmap / reduce units (``BENCH_PACKET``)."""
        return self.values["BENCH_PACKET"]

    @property
    def k_max(self) -> int:
        """Top-k registers of the key, page and BM25 kernels (``BENCH_K_MAX``)."""
        return self.values["BENCH_K_MAX"]

    @property
    def dsa_k_max(self) -> int:
        """Top-k registers of the DSA indexer (``BENCH_DSA_K_MAX``)."""
        return self.values["BENCH_DSA_K_MAX"]

    @property
    def bram_keys(self) -> int:
        """BRAM tier, chip total in ``BENCH_D``-dim keys (``BENCH_BRAM_KEYS``)."""
        return self.values["BENCH_BRAM_KEYS"]

    @property
    def uram_keys(self) -> int:
        """URAM tier, chip total in ``BENCH_D``-dim keys (``BENCH_URAM_KEYS``)."""
        return self.values["BENCH_URAM_KEYS"]

    @property
    def dsa_heads_per_pass(self) -> int:
        """Indexer heads the DSA head array holds (``BENCH_DSA_HEADS_PER_PASS``)."""
        return self.values["BENCH_DSA_HEADS_PER_PASS"]

    @property
    def vocab(self) -> int:
        """BM25 vocabulary (``BENCH_VOCAB``)."""
        return self.values["BENCH_VOCAB"]

    @property
    def bm25_channels(self) -> int:
        """BM25 posting ports (``BENCH_BM25_CHANNELS``)."""
        return self.values["BENCH_BM25_CHANNELS"]

    @property
    def bm25_lanes(self) -> int:
        """Postings per BM25 beat, one per lane (``BENCH_BM25_LANES``)."""
        return self.values["BENCH_BM25_LANES"]

    def stripe(self, vectors: int = 1) -> int:
        """Entries per port stripe for entries of ``vectors`` D-dim vectors (keys 1, pages 2)."""
        return self.pe_block // vectors

    def describe(self) -> str:
        """Where these values come from, for provenance notes."""
        extra = ", ".join(f"{name}={value}" for name, value in self.overrides)
        return "kernels_fpga/hls/bench_params.h" + (f" with {extra}" if extra else "")


def parse_header(text: str) -> dict[str, int]:
    """The ``#ifndef NAME / #define NAME value`` defaults of a parameter header, in order.

    Args:
        text: The header's text.

    Raises:
        ValueError: A default is not an integer expression of literals, + - * / << and parentheses.
    """
    return {name: _evaluate(name, expr.split("//")[0].strip()) for name, expr in _DEFINE.findall(text)}


def kernel_params(overrides: Mapping[str, int] | None = None, header: Path = HEADER) -> KernelParams:
    """The parameters of a build: the header defaults with ``overrides`` applied.

    Args:
        overrides: ``-D`` overrides, as :func:`kernels_fpga.csim.load` takes them.
        header: The parameter header.

    Raises:
        ValueError: An override names no parameter of the header.
    """
    values = parse_header(header.read_text(encoding="utf-8"))
    pairs = tuple(sorted((overrides or {}).items()))
    for name, value in pairs:
        if name not in values:
            raise ValueError(f"unknown kernel parameter {name!r}; {header.name} defines {', '.join(values)}")
        values[name] = int(value)
    return KernelParams(values, pairs)


def _evaluate(name: str, expression: str) -> int:
    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError(f"{name}: cannot evaluate {expression!r} (integer literals, + - * / << only)")

    return walk(ast.parse(expression.replace("/", "//"), mode="eval"))
