"""SeerAttention-R (arXiv 2506.08889, microsoft/SeerAttention) in threshold mode, decode.

The gate is top-k mode's (:mod:`bench.methods.seer_attention`): pooled pre-RoPE block keys and the GQA
group's query, each projected to 128 dims with RoPE re-applied. Relevancy is the gate logit
``q . k / sqrt(gate_dim)`` of every complete block before the current one; Retrieval keeps every block
whose logit is at least the layer's threshold; Apply is block-sparse decode over those blocks plus the
current block.

Synthetic weights make any fixed threshold meaningless (workloads.md, "Synthetic weights"), so each
layer's threshold is calibrated at set-up to select ``target_ratio`` of the candidate blocks: right after
the fill, one decode iteration runs the method and pools each layer's gate logits over its steps, batch
rows and KV heads; the threshold selecting that fraction of them is kept, and a second iteration records
how many blocks each step then selects. The thresholds are fixed from then on, so every measured
iteration repeats the same decisions.

Selections vary in size, but CUDA graphs need fixed shapes: each head's block list has a fixed width,
ascending ids first, padded with -1. The width is the second calibration pass's largest count per head
plus a margin (a quarter, at least 16, in multiples of 16), within a cap fixed by the parameters
(``list_slack`` times the target count plus 16, at most every block) that bounds the memory a case
needs. A step that selects more blocks than the width keeps the lowest ids;
:meth:`SeerThresholdWorkload.describe` reports the largest counts seen, so a truncated run is visible.

The hetero placement runs Relevancy + Retrieval on the FPGA as one fused ``threshold_select`` kernel
(paper.md section 7: a pass bitmap per block of keys, no top-k): gate keys resident (int16), the gate query
and an integer threshold in, a bitmap and counts out. Apply reads the selection as an index list; turning
the bitmap into that list on the GPU is not modelled (a block-sparse kernel can read a bitmap directly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bench.devices.fpga import FpgaCall
from bench.methods.attention import AttentionQuery, KVMemory, SparseAttentionWorkload
from bench.methods.seer_attention import (
    BlockScores,
    BlockSelection,
    GateIndex,
    SeerAttentionR,
    _GateState,
    _to_int16,
)
from bench.model.decoder import AttentionInput, Decoder, KVCache
from bench.model.presets import ModelShape
from bench.schema import param
from bench.timeline import NullTimeline, Timeline
from kernels_fpga.model import entries_to_sync
from kernels_fpga.params import kernel_params
from kernels_gpu.threshold import calibrate_threshold, threshold
from kernels_gpu.topk import bmm_fp32

_INT64_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class SeerThresholdParams:
    """Parameters of SeerAttention-R in threshold mode; gate defaults are the reference implementation's."""

    block_size: int = param(64, help="tokens per block of the gate", min=8,
                            source="microsoft/SeerAttention: seerattn_gate_block_size = 64")
    gate_dim: int = param(128, help="hidden size of the gate's query and key projections", min=8,
                          source="microsoft/SeerAttention: seerattn_gate_hidden_size = 128")
    target_ratio: float = param(0.1, help="fraction of candidate blocks the calibrated threshold selects",
                                min=1e-4, max=1.0,
                                source="arXiv 2506.08889: speed-ups reported at 90% block sparsity")
    list_slack: float = param(4.0, help="cap on the block-list width, as a multiple of the target selected "
                                        "count (plus 16 entries, at most every block)", min=1.0,
                              source="bench: a pooled threshold selects far more than the target in some heads")

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) for values that are valid alone but impossible together (none)."""
        return []

    def width_cap(self, blocks: int) -> int:
        """Most entries of a head's block list for a cache of ``blocks`` blocks (a multiple of 16, or ``blocks``)."""
        return max(1, min(blocks, _round16(math.ceil(self.list_slack * self.target_ratio * blocks) + 16)))


@dataclass
class _LayerStats:
    """Blocks selected over the calibration iteration, one layer."""

    selected: int = 0
    candidates: int = 0
    peak: int = 0


@dataclass
class _Calibration:
    """Per-case thresholds and list width, shared by every placement of a case."""

    thresholds: list[float] = field(default_factory=list)
    cap: int = 1
    width: int = 1
    stats: list[_LayerStats] = field(default_factory=list)
    fpga_peak: int = 0


def gate_logits(q: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Gate logits fp32(q . k) * fp32(1 / sqrt(D)) with framework ops (the threshold kernel's definition).

    Args:
        q: [B, H, D] gate queries.
        keys: [B, H, n, D] block keys (a prefix of the key storage: no copy is made).

    Returns:
        fp32 [B, H, n].
    """
    b, h, n, d = keys.shape
    dots = bmm_fp32(keys.reshape(b * h, n, d), q.reshape(b * h, d, 1)).view(b, h, n)
    # A Python float keeps the step free of host-to-device copies (CUDA-graph capturable).
    return dots * (1.0 / math.sqrt(d))


def _round16(n: int) -> int:
    """``n`` rounded up to a multiple of 16 (fewer distinct list widths, fewer kernel compilations)."""
    return -(-n // 16) * 16


def ascending_lists(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Selected column ids of a bool mask [B, H, n], ascending, in lists of ``width`` entries, -1 padded.

    Args:
        mask: [B, H, n] selection mask.
        width: List width; selections longer than this keep their lowest ids.

    Returns:
        int32 [B, H, width].
    """
    b, h, n = mask.shape
    counts = mask.sum(-1, keepdim=True)
    # A stable sort of "not selected" puts the selected columns first, in ascending order.
    order = torch.sort((~mask).to(torch.uint8), dim=-1, stable=True).indices
    col = torch.arange(n, device=mask.device)
    lists = torch.where(col < counts, order, -1).to(torch.int32)
    if n >= width:
        return lists[..., :width]
    return torch.cat((lists, lists.new_full((b, h, width - n), -1)), dim=-1)


def integer_threshold(logit_threshold: float, q_scale: float, key_scale: float, dim: int) -> int:
    """The FPGA's int64 score threshold equivalent to a logit threshold.

    A logit is about ``q_scale * key_scale * s / sqrt(dim)`` for the integer score ``s`` of the int16
    query and keys, so ``logit >= t`` becomes ``s >= ceil(t * sqrt(dim) / (q_scale * key_scale))``.

    Args:
        logit_threshold: Threshold on q.k / sqrt(dim); +inf selects nothing.
        q_scale: int16 scale of the query.
        key_scale: int16 scale of the keys.
        dim: Gate dimension.

    Returns:
        The threshold, clamped to the int64 range.
    """
    if math.isinf(logit_threshold):
        return _INT64_MAX if logit_threshold > 0 else -_INT64_MAX
    value = math.ceil(logit_threshold * math.sqrt(dim) / (q_scale * key_scale))
    return max(-_INT64_MAX, min(_INT64_MAX, value))


class SeerAttentionRThreshold(SeerAttentionR):
    """SeerAttention-R in threshold mode, the gate shared with top-k mode.

    Args:
        params: Method parameters.
        kernels: ``optimized`` (fused kernels where available) or ``torch`` (framework-native ops).
        state: Per-case gate weights and keys; a new one when None.
        calibration: Per-case thresholds and list width; a new one when None.
    """

    name = "seer-attention-r-threshold"
    Params = SeerThresholdParams
    params: SeerThresholdParams  # type: ignore[assignment]

    def __init__(self, params: SeerThresholdParams, kernels: str = "optimized", state: _GateState | None = None,
                 calibration: _Calibration | None = None) -> None:
        super().__init__(params, kernels, state)  # type: ignore[arg-type]
        self.calibration = calibration if calibration is not None else _Calibration()

    @classmethod
    def memory_bytes(cls, params: SeerThresholdParams, shape: ModelShape, batch: int,  # type: ignore[override]
                     capacity: int, dtype_bytes: int) -> int:
        """Gate keys (and their int16 FPGA copy), the partial block, selection workspaces, gathered KV."""
        blocks = -(-capacity // params.block_size)
        rows, layers = batch * shape.kv_heads, shape.layers
        keys = layers * rows * blocks * params.gate_dim * (dtype_bytes + 2)
        pending = 2 * layers * rows * params.block_size * shape.head_dim * dtype_bytes
        # Logits, lists and tile counts of the fused kernel; mask, sort and where of the torch path.
        select = rows * blocks * (12 + 40)
        gathered = rows * (params.width_cap(blocks) + 1) * params.block_size * (2 * shape.head_dim * dtype_bytes + 24)
        reference = rows * blocks * params.gate_dim * 8
        return keys + pending + select + gathered + reference

    def attach(self, model: Decoder, cache: KVCache, seed: int) -> None:
        """The gate's weights and key storage; no thresholds yet; the block-list width at its cap."""
        super().attach(model, cache, seed)
        cal = self.calibration
        cal.thresholds = [math.nan] * model.shape.layers
        cal.stats = [_LayerStats() for _ in range(model.shape.layers)]
        blocks = -(-cache.capacity // self.params.block_size)
        cal.cap = cal.width = self.params.width_cap(blocks)

    # -- calibration ------------------------------------------------------------------------------------

    def calibrate(self, model: Decoder, cache: KVCache, tokens: torch.Tensor, steps: int) -> None:
        """Fix each layer's threshold from two set-up passes of ``steps`` decode steps from the filled cache.

        The first pass selects with each layer's first-step threshold and pools the layer's logits over every
        step; the threshold that selects ``target_ratio`` of the pooled logits is kept. The second pass counts
        what it selects, which sets the list width. Each pass starts from the filled state; the caller rewinds
        after the second.
        """
        start = cache.length
        pooled: list[list[torch.Tensor]] = [[] for _ in self.calibration.thresholds]
        self._calibration_pass(model, cache, tokens, steps, pooled)
        cache.length = start
        self.rewind(start)
        ratio = self.params.target_ratio
        self.calibration.thresholds = [calibrate_threshold(torch.cat(p), ratio) if p else math.inf for p in pooled]
        self._calibration_pass(model, cache, tokens, steps, None)
        cal = self.calibration
        peak = max((s.peak for s in cal.stats), default=0)
        cal.width = min(cal.cap, max(1, _round16(peak + max(16, -(-peak // 4)))))

    def _calibration_pass(self, model: Decoder, cache: KVCache, tokens: torch.Tensor, steps: int,
                          pooled: list[list[torch.Tensor]] | None) -> None:
        backend = _CalibratingAttention(self, pooled)
        tok = tokens
        for _ in range(steps):
            tok = model.decode_step(tok, cache, backend, NullTimeline())

    def observe_logits(self, layer: int, index: GateIndex, pooled: list[torch.Tensor] | None) -> None:
        """One calibration step of ``layer``: pool its logits (first pass) or count what it selects (second).

        In the first pass, the layer's first step with candidates sets a provisional threshold.
        """
        n = index.n_candidates
        if not n:
            return
        cal = self.calibration
        logits = gate_logits(index.query_key, index.keys[:, :, :n])
        if pooled is not None:
            if math.isnan(cal.thresholds[layer]):
                cal.thresholds[layer] = calibrate_threshold(logits, self.params.target_ratio)
            pooled.append(logits.flatten().cpu())
            return
        counts = (logits >= cal.thresholds[layer]).sum(-1)
        s = cal.stats[layer]
        s.selected += int(counts.sum())
        s.candidates += counts.numel() * n
        s.peak = max(s.peak, int(counts.max()))

    # -- the four steps ----------------------------------------------------------------------------------

    def _threshold(self, layer: int) -> float:
        t = self.calibration.thresholds[layer]
        return math.inf if math.isnan(t) else t

    def relevancy(self, index: GateIndex, query: AttentionQuery) -> BlockScores:
        """Gate logits q . k / sqrt(gate_dim) of the candidate blocks, [B, H_kv, n] (fp32 matmul)."""
        return BlockScores(gate_logits(index.query_key, index.keys[:, :, : index.n_candidates]))

    def retrieve(self, memory: KVMemory, scores: BlockScores) -> BlockSelection:
        """Blocks whose logit clears the layer's threshold, as ascending lists of the fixed width."""
        mask = scores.scores >= self._threshold(memory.layer)
        return BlockSelection(ascending_lists(mask, self.calibration.width))

    def relevancy_retrieve(self, memory: KVMemory, index: GateIndex, query: AttentionQuery) -> BlockSelection:
        """Logits, threshold and ordered lists in the fused kernel (``kernels_gpu.threshold``)."""
        blocks, _ = threshold(index.query_key, index.keys, index.n_candidates, self._threshold(memory.layer),
                              impl=self.impl)
        return BlockSelection(blocks[..., : self.calibration.width])

    # -- the FPGA side ------------------------------------------------------------------------------------

    def fpga_call(self, memory: KVMemory, index: GateIndex, query: AttentionQuery) -> FpgaCall:
        """Fused gate scores + threshold on the FPGA: keys resident (int16), query and threshold in, bitmap out."""
        st, cal, layer = self.state, self.calibration, memory.layer
        b, hkv, d = index.query_key.shape
        rows, n, width = b * hkv, index.n_candidates, cal.width
        keys_q = st.keys_q[layer]
        if index.new_block is not None:
            keys_q[:, :, index.new_block] = _to_int16(index.keys[:, :, index.new_block], st.key_scale[layer])
        thr = self._threshold(layer)

        def quantized() -> tuple[torch.Tensor, int]:
            # One query scale per call: the kernel compares every row with one integer threshold.
            q_scale = float(index.query_key.float().abs().amax().clamp_min(1e-12)) / 32767.0
            return _to_int16(index.query_key, q_scale), integer_threshold(thr, q_scale, st.key_scale[layer], d)

        def lists(mask: torch.Tensor) -> BlockSelection:
            cal.fpga_peak = max(cal.fpga_peak, int(mask.sum(-1).max()) if mask.numel() else 0)
            return BlockSelection(ascending_lists(mask, width))

        def reference() -> BlockSelection:
            q_q, limit = quantized()
            scores = torch.matmul(keys_q[:, :, :n].double(), q_q.double().unsqueeze(-1)).squeeze(-1)
            return lists(scores >= limit)

        def from_bitmap(bitmap: np.ndarray, device: torch.device) -> BlockSelection:
            # Bit j of word w is key 64 w + j (the kernel's little-endian bitmap).
            bits = np.unpackbits(bitmap.view(np.uint8), axis=1, bitorder="little")[:, :n].astype(bool)
            return lists(torch.from_numpy(bits).to(device).view(b, hkv, n))

        def csim() -> BlockSelection:
            from kernels_fpga import csim as fpga_csim

            q_q, limit = quantized()
            if n == 0:
                return lists(torch.zeros(b, hkv, 0, dtype=torch.bool, device=q_q.device))
            lib = fpga_csim.load({"BENCH_D": d} if d != kernel_params().d else None)
            bitmap, _ = lib.threshold_select(q_q.reshape(rows, d).cpu().numpy(),
                                             keys_q[:, :, :n].reshape(rows, n, d).contiguous().cpu().numpy(), limit)
            return from_bitmap(bitmap, q_q.device)

        def hardware(board: Any) -> BlockSelection:
            self.sync_board_keys(board, layer, keys_q, index.new_block)
            q_q, limit = quantized()
            if n == 0:
                return lists(torch.zeros(b, hkv, 0, dtype=torch.bool, device=q_q.device))
            bitmap, _ = board.run_threshold_select(q_q.reshape(rows, d).contiguous().cpu().numpy(), n, limit,
                                                   key_set=layer)
            return from_bitmap(bitmap, q_q.device)

        bitmap_bytes = -(-n // 64) * 8
        return FpgaCall("threshold_select",
                        {"rows": rows, "n_keys": n, "dim": d,
                         "new_keys": entries_to_sync(n, int(index.new_block is not None), len(st.keys_q))},
                        bytes_in=rows * d * 2 + 8, bytes_out=rows * (bitmap_bytes + 4),
                        bytes_append=rows * d * 2 if index.new_block is not None else 0,
                        reference=reference, csim=csim, hardware=hardware)


class _CalibratingAttention:
    """Attention backend of a calibration pass: the method's steps, plus pooling or counting of gate logits."""

    def __init__(self, method: SeerAttentionRThreshold, pooled: list[list[torch.Tensor]] | None) -> None:
        self.method = method
        self.pooled = pooled

    def decode(self, inp: AttentionInput, timeline: Timeline) -> torch.Tensor:
        """Prepare, calibrate/count, fused selection, apply (untimed)."""
        m = self.method
        memory = KVMemory(inp.cache.k[inp.layer], inp.cache.v[inp.layer], inp.cache.length, inp.layer)
        query = AttentionQuery(inp.q, inp.q_pre, inp.k_pre)
        index = m.prepare(memory, query)
        m.observe_logits(inp.layer, index, self.pooled[inp.layer] if self.pooled is not None else None)
        return m.apply(memory, m.relevancy_retrieve(memory, index, query), query)


class SeerThresholdWorkload(SparseAttentionWorkload):
    """SeerAttention-R threshold-mode decode, as the runner measures it (calibrated at set-up)."""

    method_cls = SeerAttentionRThreshold

    def __init__(self, params: Any, model: Decoder, case: Any, decode_tokens: int, seed: int) -> None:
        super().__init__(params, model, case, decode_tokens, seed)
        method = self.method
        assert isinstance(method, SeerAttentionRThreshold)
        method.calibrate(model, self.cache, self.start_tokens, decode_tokens)
        self.rewind()

    def describe(self) -> dict[str, Any]:
        """Method facts for the records: the calibrated thresholds (None: selects nothing), what they select."""
        method = self.method
        assert isinstance(method, SeerAttentionRThreshold)
        cal = method.calibration
        peak = max((s.peak for s in cal.stats), default=0)
        return {
            "thresholds": [t if math.isfinite(t) else None for t in cal.thresholds],
            "target_ratio": self.params.target_ratio,
            "selected_ratio": [s.selected / s.candidates if s.candidates else None for s in cal.stats],
            "peak_selected_blocks": peak,
            "fpga_peak_selected_blocks": cal.fpga_peak,
            "list_width": cal.width,
            "list_width_cap": cal.cap,
            "truncated": max(peak, cal.fpga_peak) > cal.width,
            "calibration": "per layer, the threshold selecting target_ratio of the gate logits pooled over one "
                           "set-up decode iteration; selected_ratio counted over a second one",
        }
