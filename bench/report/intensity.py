"""Work and memory traffic of each pipeline step, per decode step: the x axis of the roofline.

For each method, a :class:`MethodCounts` entry in :data:`REGISTRY` gives, per timeline section (``prepare``,
``relevancy``, ``retrieval``, ``relevancy+retrieval`` when fused, ``apply``), a function of the case shape
and the cache length returning the FLOPs (or, for selection, comparison ops) and the **fewest bytes the
step must move** to or from device memory (the convention of ``kernels_gpu.benchmark``'s ``bytes_moved``:
inputs read once, outputs written once, intermediates of a fused kernel never stored). It may also give
the FPGA kernel call its offloaded steps make, which :mod:`bench.report.roofline` prices with the FPGA
model. Counts are analytic; a method without an entry has no roofline points, and says so.

Counts cover every layer and every sequence of the batch, for one decode step (one token per sequence),
averaged over the positions an iteration decodes (the cache grows by one token per step), so they match
the per-step times (``steps_ms``, ms per decode step) that runs record.

Adding a method: write its counters and call :func:`register` at import of this module (or of the
method's own module).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.pipeline import FUSED, Step

#: Bytes per element of the model's dtypes (``bench.model.decoder.DTYPES``), without importing torch.
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
_INT32 = 4
_FP32 = 4
#: A top-k result slot: int32 id and fp32 score (``kernels_gpu.relevancy_topk``'s output).
_SLOT = _INT32 + _FP32
#: FLOPs per element of RoPE: x * cos + rotate(x) * sin (two multiplies, one add).
_ROPE_FLOP = 3


@dataclass(frozen=True)
class CaseShape:
    """The shapes that set one case's work.

    Attributes:
        layers: Decoder layers run.
        heads: Query heads H_q.
        kv_heads: KV heads H_kv.
        head_dim: Head dimension d.
        batch: Sequences decoded together.
        context: Tokens in the cache before the first decoded token.
        decode_tokens: Tokens decoded per iteration (the positions averaged over).
        dtype_bytes: Bytes per element of the model's activations and caches.
        params: The method's parameters (suite defaults with the case's matrix values applied).
    """

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    batch: int
    context: int
    decode_tokens: int
    dtype_bytes: int = 2
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def group(self) -> int:
        """Query heads per KV head (GQA group size)."""
        return self.heads // self.kv_heads

    def lengths(self) -> range:
        """Cache lengths (tokens, the new one included) at each decode step of an iteration."""
        return range(self.context + 1, self.context + self.decode_tokens + 1)


@dataclass(frozen=True)
class StepCost:
    """Work and traffic of one step for one decode step.

    Attributes:
        flop: Floating-point (or comparison) operations, all layers and sequences.
        bytes: Fewest bytes moved to or from device memory.
    """

    flop: float
    bytes: float

    @property
    def intensity(self) -> float:
        """Arithmetic intensity in FLOP/B (0 when nothing moves)."""
        return self.flop / self.bytes if self.bytes else 0.0

    def __add__(self, other: StepCost) -> StepCost:
        return StepCost(self.flop + other.flop, self.bytes + other.bytes)

    def scaled(self, k: float) -> StepCost:
        """This cost times ``k``."""
        return StepCost(self.flop * k, self.bytes * k)


@dataclass(frozen=True)
class FpgaKernelCall:
    """The FPGA kernel call of a method's offloaded steps, per layer and decode step.

    Attributes:
        kernel: A kernel family of :class:`kernels_fpga.model.FpgaModel` (``relevancy_topk``).
        shape: Its keyword arguments (rows, n_keys, dim, k...).
        ops: Operations of one call (int16 multiply-accumulates count two, top-k compares one).
        calls: Calls per decode step (one per layer).
    """

    kernel: str
    shape: Mapping[str, int]
    ops: float
    calls: int


#: A step counter: (case shape, cache length) -> the step's cost at that length.
Counter = Callable[[CaseShape, int], StepCost]


@dataclass(frozen=True)
class MethodCounts:
    """What :mod:`bench.report.intensity` knows of one method.

    Attributes:
        steps: Counter per timeline section.
        fpga: (case shape, cache length) -> the FPGA call of the offloaded steps, or None.
        note: Conventions behind the counts (shown under the roofline).
    """

    steps: Mapping[str, Counter]
    fpga: Callable[[CaseShape, int], FpgaKernelCall] | None = None
    note: str = ""


REGISTRY: dict[str, MethodCounts] = {}


def register(method: str, counts: MethodCounts) -> None:
    """Register the counts of ``method`` (its suite name); a second registration replaces the first."""
    REGISTRY[method] = counts


def step_costs(method: str, shape: CaseShape) -> dict[str, StepCost]:
    """Cost of every counted section of ``method``, averaged over the decode positions; {} if not counted."""
    counts = REGISTRY.get(method)
    if counts is None:
        return {}
    n = len(shape.lengths())
    out = {}
    for section, counter in counts.steps.items():
        total = StepCost(0.0, 0.0)
        for length in shape.lengths():
            total = total + counter(shape, length)
        out[section] = total.scaled(1 / n)
    return out


def fpga_calls(method: str, shape: CaseShape) -> list[FpgaKernelCall]:
    """The FPGA call of ``method``'s offloaded steps at every decode position ([] if it has none)."""
    counts = REGISTRY.get(method)
    if counts is None or counts.fpga is None:
        return []
    return [counts.fpga(shape, length) for length in shape.lengths()]


# -- SeerAttention-R (bench/methods/seer_attention.py) -----------------------------------------------


def _seer(shape: CaseShape) -> tuple[int, int, int]:
    """(gate_dim, block_size, blocks selected) of a SeerAttention-R case."""
    p = shape.params
    block = int(p.get("block_size", 64))
    return int(p.get("gate_dim", 128)), block, int(p.get("token_budget", 4096)) // block


def _candidates(length: int, block: int) -> int:
    """Complete blocks before the current one: the candidates of selection."""
    return (length - 1) // block


def seer_prepare(shape: CaseShape, length: int) -> StepCost:
    """Prepare Memory of SeerAttention-R at one position.

    Per layer: the gate-query projection (GQA group g*d -> gate_dim per KV head, weights read once for the
    batch) and its RoPE; the new pre-RoPE key written into the partial block; and, when this token
    completes a block, the block's key: max/min/mean pooling over block x d (3 ops per element), the
    3d -> gate_dim projection and RoPE.
    """
    g_dim, block, _ = _seer(shape)
    e, b, hkv, d = shape.dtype_bytes, shape.batch, shape.kv_heads, shape.head_dim
    flop = b * hkv * (2 * shape.group * d * g_dim + _ROPE_FLOP * g_dim)
    weights = hkv * shape.group * d * g_dim * e
    traffic = weights + b * (shape.heads * d * e + hkv * g_dim * e + 2 * hkv * d * e)
    if (length - 1) % block == block - 1:
        flop += b * hkv * (3 * block * d + 2 * 3 * d * g_dim + _ROPE_FLOP * g_dim)
        traffic += hkv * 3 * d * g_dim * e + b * hkv * (block * d * e + g_dim * e)
    return StepCost(flop, traffic).scaled(shape.layers)


def seer_relevancy(shape: CaseShape, length: int) -> StepCost:
    """Compute Relevancy of SeerAttention-R: gate query . every candidate block key (2 FLOP per MAC).

    Reads the keys and the query, writes one fp32 score per candidate.
    """
    g_dim, block, _ = _seer(shape)
    n, e = _candidates(length, block), shape.dtype_bytes
    rows = shape.batch * shape.kv_heads
    return StepCost(rows * 2 * n * g_dim, rows * (n * g_dim * e + g_dim * e + n * _FP32)).scaled(shape.layers)


def seer_retrieval(shape: CaseShape, length: int) -> StepCost:
    """Retrieval of SeerAttention-R: top-k over the scores (one comparison per score), slots out."""
    _, block, k = _seer(shape)
    n = _candidates(length, block)
    rows = shape.batch * shape.kv_heads
    return StepCost(rows * n, rows * (n * _FP32 + k * _SLOT)).scaled(shape.layers)


def seer_fused(shape: CaseShape, length: int) -> StepCost:
    """Relevancy fused with retrieval: the scores never reach memory (keys and query in, top-k slots out)."""
    g_dim, block, k = _seer(shape)
    n, e = _candidates(length, block), shape.dtype_bytes
    rows = shape.batch * shape.kv_heads
    flop = rows * (2 * n * g_dim + n)
    return StepCost(flop, rows * (n * g_dim * e + g_dim * e + k * _SLOT)).scaled(shape.layers)


def seer_apply(shape: CaseShape, length: int) -> StepCost:
    """Apply to Inference of SeerAttention-R: block-sparse decode attention.

    Attends the selected blocks (``min(k, candidates)`` of ``block_size`` tokens) plus the current
    block's tokens; 4 FLOP per attended token and head dimension per query head (QK and PV; softmax not
    counted, the FlashAttention convention, Dao 2023, arXiv 2307.08691). Reads K and V of the attended
    tokens per KV head (shared by the GQA group), the queries and the ids; writes the output.
    """
    _, block, k = _seer(shape)
    n, e = _candidates(length, block), shape.dtype_bytes
    attended = min(k, n) * block + (length - n * block)
    b, d = shape.batch, shape.head_dim
    flop = b * shape.heads * 4 * attended * d
    traffic = b * (shape.kv_heads * (2 * attended * d * e + k * _INT32) + 2 * shape.heads * d * e)
    return StepCost(flop, traffic).scaled(shape.layers)


def seer_fpga_call(shape: CaseShape, length: int) -> FpgaKernelCall:
    """The fused relevancy + top-k call on the FPGA (int16 keys resident), as ``SeerAttentionR.fpga_call``."""
    g_dim, block, k = _seer(shape)
    n = _candidates(length, block)
    rows = shape.batch * shape.kv_heads
    return FpgaKernelCall("relevancy_topk", {"rows": rows, "n_keys": n, "dim": g_dim, "k": k},
                          ops=rows * (2 * n * g_dim + n), calls=shape.layers)


register("seer-attention-r", MethodCounts(
    steps={Step.PREPARE.value: seer_prepare, Step.RELEVANCY.value: seer_relevancy,
           Step.RETRIEVAL.value: seer_retrieval, FUSED: seer_fused, Step.APPLY.value: seer_apply},
    fpga=seer_fpga_call,
    note="SeerAttention-R: fewest bytes each step must move; selection counts one comparison per score; "
         "attention counts QK and PV (4 FLOP per token and dim per head), not softmax",
))
