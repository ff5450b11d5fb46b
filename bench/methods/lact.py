"""LaCT: large-chunk test-time training (arXiv 2505.23884, a1600012888/LaCT), profiled on the GPU only.

Every layer pairs sliding-window attention with per-head fast weights f(x) = W1 (silu(W0 x) * (W2 x)),
updated once per chunk of ``chunk`` tokens: the chunk is first read through the current fast weights,
then the weights take one gradient step on that chunk (the reference's "apply then update", so no chunk
sees its own update; the last chunk is not trained on). The four steps per chunk and layer (paper.md
section 2: Prepare is a backward pass, Relevancy the loss, Retrieval N/A, Apply a forward pass):

- **Apply to Inference**: o = f(q) for the chunk's fast queries, RMS-normed per head, scaled and added
  to the attention output.
- **Compute Relevancy**: the loss L = -sum_t f(k_t) . v_t over the chunk (negative dot product), through
  the forward pass on the keys.
- **Prepare Memory**: the backward pass (hand-written gradients, with per-token learning rates) and the
  update W <- W - lr dL/dW, each row then renormalized to its initial norm.
- **Retrieval**: none (the whole fast weights are used).

The dense part: embedding, QKV, RoPE, sliding-window attention (window <= chunk: the previous chunk's keys
and the chunk's own, band-masked), the fast inputs (silu, per-head L2 norm, learning rates), output
projection and SwiGLU MLP. Sequences are read like a prefill and no logits are computed. The fast
queries and keys get no RoPE (the reference's ``ttt_nope`` option) and no momentum or Muon (its options,
off here). Both GPU kernel flavours run the same PyTorch ops: no fused LaCT kernel exists here.

**Why it stays on the GPU.** :func:`arithmetic_intensity` gives each step's FLOPs per byte of its
minimal traffic: at the 760M shape (4 fast-weight heads of 384, chunk 2048) Apply is ~370 FLOP/B, and the
update is ~540 when Relevancy and Prepare are fused (~190 and ~160 apart, with the activations the
backward needs between them), against an H100 ridge of ~295 (989 TFLOPS bf16 / 3.35 TB/s, hardware.md
section 3). The U55C's peak (its DSPs at one 16-bit MAC per cycle) is ~220x lower than the H100's, so
every placement keeps LaCT on the GPU (``offloadable`` is empty; :meth:`Workload.check_placement`
refuses an FPGA). Latency is reported per chunk (:attr:`LactWorkload.latency_unit`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from bench.devices.fpga import FpgaDevice
from bench.errors import UsageError
from bench.model.decoder import Decoder, Rope
from bench.model.presets import ModelShape
from bench.pipeline import DENSE, Index, Memory, MemoryMethod, Placement, Query, Scores, Selection, Step
from bench.schema import param
from bench.timeline import Timeline
from bench.workload import Iteration, Workload

#: H100 SXM5 dense bf16 peak and HBM bandwidth (hardware.md section 3, NVIDIA figures).
H100_BF16_FLOPS = 989e12
H100_HBM_BYTES_PER_S = 3.35e12
_BASE_LR = 1e-3  # LaCT: base_lr 0.001 under the "mamba" (softplus) learning-rate parameterization
_FAST_WEIGHT_BYTES = 4  # the fast weights are float32 (LaCT: fp32 states)
_LR_BYTES = 4


@dataclass(frozen=True)
class LactParams:
    """Parameters of LaCT; defaults are the reference LaCT-SWIGLU configuration's."""

    chunk: int = param(2048, min=1, help="tokens per test-time-training chunk",
                       source="LaCT configuration_lact_swiglu.py: lact_chunk_size = 2048")
    window: int = param(2048, min=1, help="sliding-window attention span in tokens (at most chunk)",
                        source="LaCT configuration_lact_swiglu.py: window_size = 2048")
    fw_heads: int = param(4, min=1, help="fast-weight heads (the attention width is split among them)",
                          source="LaCT configuration_lact_swiglu.py: num_lact_heads = 4")
    inter_multi: int = param(1, min=1, help="fast-weight hidden size as a multiple of its head width",
                             source="LaCT configuration_lact_swiglu.py: inter_multi = 1")

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) for values that are valid alone but impossible together."""
        if self.window > self.chunk:
            return [("window", f"must be at most chunk ({self.chunk}): attention reaches one chunk back, "
                               f"got {self.window}")]
        return []


@dataclass
class FastWeights(Memory, Index):
    """One layer's fast weights for every sequence and head; the raw memory is its own index.

    Attributes:
        w0: [B x F, d_h, d_in] float32.
        w1: [B x F, d_out, d_h] float32.
        w2: [B x F, d_h, d_in] float32.
        norms: Each matrix's row norms at the start of the sequence, restored after every update.
    """

    w0: torch.Tensor
    w1: torch.Tensor
    w2: torch.Tensor
    norms: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class ChunkInputs(Query):
    """A chunk's fast-weight inputs, heads folded into the batch.

    Attributes:
        q: Fast queries [B x F, n, d_in] (silu, L2-normed).
        k: Fast keys [B x F, n, d_in] (silu, L2-normed).
        v: Fast values [B x F, n, d_out] (silu).
        lr: Per-token learning rates of W0, W1, W2 [B x F, n, 3] (float32).
        loss: Relevancy's loss with the activations the backward needs (None before Relevancy).
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    lr: torch.Tensor
    loss: ChunkLoss | None = None


@dataclass
class ChunkLoss(Scores):
    """L = -sum_t f(k_t) . v_t per row [B x F] (float32), and the forward activations [B x F, n, d_h].

    Attributes:
        loss: The loss per (sequence, head).
        gate: W0 k, before the silu.
        up: W2 k.
        hidden: silu(W0 k) * (W2 k).
        grad_hidden: -dL/dhidden = W1^T v.
    """

    loss: torch.Tensor
    gate: torch.Tensor
    up: torch.Tensor
    hidden: torch.Tensor
    grad_hidden: torch.Tensor


@dataclass
class WholeMemory(Selection):
    """Retrieval is N/A: Apply uses the whole fast weights."""

    weights: FastWeights


class LactMethod(MemoryMethod[FastWeights, FastWeights, ChunkInputs, ChunkLoss, WholeMemory]):
    """LaCT's fast-weight steps for one layer (the same ops on every placement)."""

    name = "lact"

    def apply(self, memory: FastWeights, selection: WholeMemory, query: ChunkInputs) -> torch.Tensor:
        """f(q) = W1 (silu(W0 q) * (W2 q)), [B x F, n, d_out] in the activation dtype."""
        w, x = selection.weights, query.q
        gate = F.silu(torch.bmm(x, w.w0.to(x.dtype).transpose(1, 2)))
        up = torch.bmm(x, w.w2.to(x.dtype).transpose(1, 2))
        return torch.bmm(gate * up, w.w1.to(x.dtype).transpose(1, 2))

    def relevancy(self, index: FastWeights, query: ChunkInputs) -> ChunkLoss:
        """The chunk's negative dot-product loss, keeping the activations the backward reads."""
        k, v = query.k, query.v
        gate = torch.bmm(k, index.w0.to(k.dtype).transpose(1, 2))
        up = torch.bmm(k, index.w2.to(k.dtype).transpose(1, 2))
        hidden = F.silu(gate) * up
        grad_hidden = torch.bmm(v, index.w1.to(v.dtype))  # W1^T v, token-major
        loss = -(hidden.float() * grad_hidden.float()).sum(dim=(1, 2))
        return ChunkLoss(loss, gate, up, hidden, grad_hidden)

    def retrieve(self, memory: FastWeights, scores: ChunkLoss) -> WholeMemory:
        """N/A: the whole fast weights."""
        return WholeMemory(memory)

    def prepare(self, memory: FastWeights, query: ChunkInputs) -> FastWeights:
        """One update from the chunk's loss: hand-written gradients, per-token learning rates, row renorm."""
        saved = query.loss
        if saved is None:
            raise RuntimeError("prepare needs Relevancy's loss first (the backward reads its activations)")
        k, v = query.k, query.v
        lr0, lr1, lr2 = (query.lr[..., i : i + 1].to(k.dtype) for i in range(3))
        sig = torch.sigmoid(saved.gate)
        d_up = saved.grad_hidden * saved.gate * sig  # silu(gate) * -dL/dhidden
        d_gate = saved.grad_hidden * saved.up * sig * (1 + saved.gate * (1 - sig))  # through silu'
        # -dL/dW, each token weighted by its learning rate: the descent step itself.
        step1 = torch.bmm(v.transpose(1, 2), saved.hidden * lr1)
        step0 = torch.bmm(d_gate.transpose(1, 2), k * lr0)
        step2 = torch.bmm(d_up.transpose(1, 2), k * lr2)
        for w, step, norm in zip((memory.w0, memory.w1, memory.w2), (step0, step1, step2), memory.norms,
                                 strict=True):
            w.add_(step.float())
            w.mul_(norm / (w.norm(dim=2, keepdim=True) + 1e-5))
        return memory


@dataclass
class _LayerTtt:
    """One layer's test-time-training weights (synthetic, seeded) besides the backbone's."""

    lr_proj: torch.Tensor  # [3F, hidden]
    lr_bias: torch.Tensor  # [3F]
    qk_scale: torch.Tensor  # [width, 2]
    qk_offset: torch.Tensor  # [width, 2]
    out_norm: torch.Tensor  # [d]
    scale_proj: torch.Tensor  # [F, hidden]
    init: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # W0, W1, W2 at the sequence start [F, ., .]


class LactWorkload(Workload):
    """Read a ``context``-token sequence chunk by chunk through a LaCT model (inline LaCT-760M shape)."""

    name = "lact"
    Params = LactParams
    kind = "ttt"
    #: The unit the runner's per-step latency is in for this method.
    latency_unit: ClassVar[str] = "chunk"

    def __init__(self, params: LactParams, model: Decoder, case: Any, decode_tokens: int, seed: int) -> None:
        super().__init__(params, model, case, decode_tokens, seed)
        s, p, b = model.shape, params, case.batch
        width = s.heads * s.head_dim
        if s.kv_heads != s.heads or width % p.fw_heads:
            raise UsageError(f"lact needs kv_heads == heads and heads x head_dim ({width}) divisible by "
                             f"fw_heads ({p.fw_heads}); got heads {s.heads}, kv_heads {s.kv_heads}: use the "
                             "LaCT-760M inline shape (suites/methods/lact.yaml)")
        self.d = width // p.fw_heads
        self.d_h = self.d * p.inter_multi
        dev, dt = model.device, model.dtype
        gen = torch.Generator(device=dev).manual_seed(seed + 7919)

        def randn(*size: int, std: float) -> torch.Tensor:
            return torch.randn(size, generator=gen, device=dev, dtype=torch.float32) * std

        def full(value: float, *size: int) -> torch.Tensor:
            return torch.full(size, value, device=dev, dtype=dt)

        f, hid, d, dh = p.fw_heads, s.hidden, self.d, self.d_h

        def layer_ttt() -> _LayerTtt:
            init = (randn(f, dh, d, std=d**-0.5), randn(f, d, dh, std=dh**-0.5), randn(f, dh, d, std=d**-0.5))
            return _LayerTtt(randn(3 * f, hid, std=hid**-0.5).to(dt), full(0.0, 3 * f), full(1.0, width, 2),
                             full(0.0, width, 2), full(1.0, d), randn(f, hid, std=hid**-0.5).to(dt), init)

        self.ttt = [layer_ttt() for _ in range(s.layers)]
        self.weights = [self._fresh(t.init) for t in self.ttt]
        self.tokens = torch.randint(0, s.vocab, (b, case.context), generator=gen, device=dev)
        self.chunks = [(i, min(p.chunk, case.context - i)) for i in range(0, case.context, p.chunk)]
        self._rope = model.rope.cos_sin(torch.arange(case.context, device=dev))
        kv = (b, s.heads, p.chunk, s.head_dim)
        self._prev = [(torch.zeros(kv, device=dev, dtype=dt), torch.zeros(kv, device=dev, dtype=dt))
                      for _ in range(s.layers)]
        i = torch.arange(p.chunk, device=dev)[:, None]
        j = torch.arange(2 * p.chunk, device=dev)[None, :]
        # Row i (position start + i) sees the previous chunk's and its own keys within the window.
        self._band = (j <= i + p.chunk) & (j > i + p.chunk - p.window)
        self._method = LactMethod()

    def _fresh(self, init: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> FastWeights:
        """Per-sequence copies of a layer's initial fast weights, with their row norms."""
        w0, w1, w2 = (x.repeat(self.case.batch, 1, 1) for x in init)
        norms = (w0.norm(dim=2, keepdim=True), w1.norm(dim=2, keepdim=True), w2.norm(dim=2, keepdim=True))
        return FastWeights(w0, w1, w2, norms)

    @classmethod
    def memory_bytes(cls, params: LactParams, shape: ModelShape, case: Any, decode_tokens: int,
                     dtype_bytes: int) -> dict[str, int]:
        """Fast weights (state and initial copy), the window's keys and values, a chunk's activations."""
        p, b, width = params, case.batch, shape.heads * shape.head_dim
        d = width // p.fw_heads
        fast = shape.layers * 3 * d * d * p.inter_multi * _FAST_WEIGHT_BYTES * (b + 1) * p.fw_heads
        window = shape.layers * 2 * b * width * p.chunk * dtype_bytes
        # A layer's live activations per token: input, residual and norm, q/k/v with RoPE's float32 copies,
        # the fast q/k/v, the attention and fast outputs, the MLP's gate/up pair and product, and the
        # loss's four [d_h] activations per head.
        per_token = ((3 * shape.hidden + 8 * width + 3 * shape.ffn + 4 * p.fw_heads * d * p.inter_multi)
                     * dtype_bytes + 4 * width * 4 + 3 * p.fw_heads * _LR_BYTES)
        band = 2 * p.chunk * p.chunk * (1 + dtype_bytes)
        weights = shape.layers * (4 * p.fw_heads * shape.hidden + 4 * width + d) * dtype_bytes
        return {"fast_weights": fast, "attention_window": window,
                "activations": b * min(p.chunk, case.context) * per_token + band,
                "method_weights": weights, "tokens": b * case.context * 8}

    def bind(self, placement: Placement, fpga: FpgaDevice | None) -> Iteration:
        """Every chunk through every layer; the same ops on every placement (there is no FPGA one)."""
        if fpga is not None:
            raise UsageError(f"placement '{placement.name}': lact keeps every step on the GPU")

        def iteration(timeline: Timeline) -> None:
            for c in range(len(self.chunks)):
                self.read_chunk(c, timeline)

        return iteration

    def read_chunk(self, c: int, timeline: Timeline) -> torch.Tensor:
        """Chunk ``c`` through every layer (chunks in order, after :meth:`rewind`); the last layer's output.

        Returns:
            Hidden states [B, n, hidden] before the final norm (no logits are computed).
        """
        start, n = self.chunks[c]
        with timeline.section(DENSE):
            h = F.embedding(self.tokens[:, start : start + n], self.model.embed)
        for i, layer in enumerate(self.model.layers):
            h = self._layer(i, layer, h, c, start, n, timeline)
        return h

    def _layer(self, i: int, layer: Any, h: torch.Tensor, c: int, start: int, n: int,
               timeline: Timeline) -> torch.Tensor:
        """One layer on one chunk: attention and fast inputs (dense), Apply, the update, the MLP (dense)."""
        s, p, m = self.model.shape, self.params, self._method
        b, width = h.shape[0], s.heads * s.head_dim
        t = self.ttt[i]
        with timeline.section(DENSE):
            x = F.rms_norm(h, (s.hidden,), layer.input_norm, eps=1e-6)
            q_pre, k_pre, v = layer.project_qkv(h)
            cos, sin = self._rope[0][start : start + n], self._rope[1][start : start + n]
            q = Rope.rotate(q_pre.transpose(1, 2), cos, sin)
            k = Rope.rotate(k_pre.transpose(1, 2), cos, sin)
            vt = v.transpose(1, 2)
            prev_k, prev_v = self._prev[i]
            if c == 0:
                own = self._band[:n, p.chunk : p.chunk + n]
                att = F.scaled_dot_product_attention(q, k, vt, attn_mask=own)
            else:
                keys, values = torch.cat((prev_k, k), dim=2), torch.cat((prev_v, vt), dim=2)
                att = F.scaled_dot_product_attention(q, keys, values, attn_mask=self._band[:n, : p.chunk + n])
            if n == p.chunk:
                prev_k.copy_(k)
                prev_v.copy_(vt)
            inputs = self._fast_inputs(t, x, q_pre.reshape(b, n, width), k_pre.reshape(b, n, width),
                                       v.reshape(b, n, width))
        with timeline.section(Step.APPLY.value):
            fast = m.apply(self.weights[i], WholeMemory(self.weights[i]), inputs)  # Retrieval is N/A
        if c < len(self.chunks) - 1:  # the reference does not train on the last chunk
            with timeline.section(Step.RELEVANCY.value):
                loss = m.relevancy(self.weights[i], inputs)
            with timeline.section(Step.PREPARE.value):
                m.prepare(self.weights[i], replace(inputs, loss=loss))
        with timeline.section(DENSE):
            f = p.fw_heads
            fast = F.rms_norm(fast, (self.d,), t.out_norm, eps=1e-6).view(b, f, n, self.d)
            gain = F.silu(F.linear(x, t.scale_proj)).transpose(1, 2).unsqueeze(-1)  # [B, F, n, 1]
            fast = (fast * gain).transpose(1, 2).reshape(b, n, width)
            return layer.finish(h, att.transpose(1, 2).reshape(b, n, width) + fast)

    def _fast_inputs(self, t: _LayerTtt, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                     v: torch.Tensor) -> ChunkInputs:
        """Scale and shift of q and k, silu, per-head L2 norm; per-token softplus learning rates."""
        f, d = self.params.fw_heads, self.d
        b, n, _ = q.shape

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, n, f, d).transpose(1, 2).reshape(b * f, n, d)

        fq = F.normalize(heads(F.silu(q * t.qk_scale[:, 0] + t.qk_offset[:, 0])), dim=-1, eps=1e-5)
        fk = F.normalize(heads(F.silu(k * t.qk_scale[:, 1] + t.qk_offset[:, 1])), dim=-1, eps=1e-5)
        lr = F.softplus(F.linear(x, t.lr_proj, t.lr_bias).float() + _inv_softplus(_BASE_LR))
        lr = lr.view(b, n, f, 3).transpose(1, 2).reshape(b * f, n, 3)
        return ChunkInputs(fq, fk, heads(F.silu(v)), lr)

    def rewind(self) -> None:
        """Back to the initial fast weights (the attention window is masked out in the first chunk)."""
        for w, t in zip(self.weights, self.ttt, strict=True):
            for dst, src in zip((w.w0, w.w1, w.w2), t.init, strict=True):
                dst.view(self.case.batch, *src.shape).copy_(src)

    @property
    def steps_per_iteration(self) -> int:
        """Chunks per iteration: latency is per chunk."""
        return len(self.chunks)

    @property
    def tokens_per_iteration(self) -> int:
        """Tokens read per iteration over the batch."""
        return self.case.context * self.case.batch

    def describe(self) -> dict[str, Any]:
        """Method facts for the records: the latency unit, each step's arithmetic intensity, the ridges."""
        dtype_bytes = self.model.dtype.itemsize
        return {"latency_unit": self.latency_unit, "chunks": len(self.chunks),
                "arithmetic_intensity": arithmetic_intensity(self.params, self.model.shape, dtype_bytes),
                "h100_ridge_flop_per_byte": H100_BF16_FLOPS / H100_HBM_BYTES_PER_S,
                "fpga_peak": fpga_peak_flops(),
                "decode_tokens": "not used: the sequence is read like a prefill"}


def arithmetic_intensity(params: LactParams, shape: ModelShape,
                         dtype_bytes: int = 2) -> dict[str, dict[str, float]]:
    """FLOPs, minimal bytes and FLOP/B of each fast-weight step for one full chunk of one layer (analytic).

    Per (sequence, fast-weight head), with d = d_in = d_out, d_h the fast hidden size and C the chunk:
    each step is three GEMMs, 6 C d d_h FLOPs (the reference's count, ttt_operation.py); elementwise work
    is not counted. Bytes are each step's inputs read once and outputs written once: the fast weights
    (float32), the chunk's activations (``dtype_bytes``), the learning rates (float32), and for Relevancy
    -> Prepare the three [C, d_h] activations the backward reads. ``update`` fuses Relevancy and Prepare
    (those activations stay on chip).

    Args:
        params: Method parameters.
        shape: Model shape (attention width = heads x head_dim, split among the fast-weight heads).
        dtype_bytes: Bytes per activation element.

    Returns:
        ``{step: {"flops", "bytes", "flop_per_byte", "provenance"}}`` for apply, relevancy, prepare, update.
    """
    d = shape.heads * shape.head_dim // params.fw_heads
    dh, c, a = d * params.inter_multi, params.chunk, dtype_bytes
    gemms = 6 * c * d * dh
    weights = 3 * d * dh * _FAST_WEIGHT_BYTES
    saved = 3 * c * dh * a
    kv = 2 * c * d * a
    lr = 3 * c * _LR_BYTES
    steps = {
        "apply": (gemms, weights + 2 * c * d * a),
        "relevancy": (gemms, weights + kv + saved),
        "prepare": (gemms, saved + kv + lr + 2 * weights),
        "update": (2 * gemms, 2 * weights + kv + lr),
    }
    return {k: {"flops": float(f), "bytes": float(b), "flop_per_byte": f / b, "provenance": "analytic"}
            for k, (f, b) in steps.items()}


def fpga_peak_flops(spec_name: str = "u55c") -> dict[str, Any]:
    """A shipped FPGA spec's roofline: its DSPs at one 16-bit MAC per cycle, its HBM (analytic)."""
    from kernels_fpga.spec import builtin_spec_path, load_spec

    spec = load_spec(builtin_spec_path(spec_name))
    flops = 2.0 * float(spec.value("resources.dsps")) * float(spec.value("clock.kernel_default"))
    bw = float(spec.value("hbm.bw_total_measured"))
    return {"spec": spec_name, "peak_flops": flops, "hbm_bytes_per_s": bw, "ridge_flop_per_byte": flops / bw,
            "h100_peak_ratio": H100_BF16_FLOPS / flops, "provenance": "analytic"}


def _inv_softplus(y: float) -> float:
    """The x with softplus(x) = y."""
    return y + math.log(-math.expm1(-y))
