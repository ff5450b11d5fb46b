"""DeepSeek-V3.2's decoder in PyTorch: MLA over a compressed latent cache, DeepSeekMoE, synthetic weights.

Shapes are those of ``config_671B_v3.2.json`` (deepseek-ai/DeepSeek-V3.2-Exp; workloads.md section 2): hidden
7168, 128 heads, MLA with q_lora 1536, kv_lora 512, qk 128 nope + 64 rope, v 128; DeepSeekMoE with routed
top-8 of 256 experts (sigmoid scores, 8 groups of which 4 are kept, weights normalized and scaled by 2.5) plus
1 shared expert, FFN 2048; vocabulary 129,280; the lightning indexer's weights (64 heads x 128, one shared key
head) live in each layer, as in the reference model, and the DSA method (:mod:`bench.methods.dsa`) runs them.

Decode runs MLA in its absorbed form, as FlashMLA does: the no-RoPE query is multiplied into the key
up-projection, so attention is MQA over one latent head per token of d_qk = 512 + 64 = 576 dims whose first
512 dims are also the value; the attention output is multiplied by the value up-projection afterwards. The
latent cache holds, per token and layer, the RMS-normed 512-d compressed KV and the 64-d RoPE key.

Deliberate differences from the released model, each recorded in the preset's ``notes``:

- **bf16 weights**; the release stores FP8 e4m3 weights with 128 x 128 block scales, so weight traffic here
  is twice the release's.
- **bf16 latent cache** (1152 B per token and layer); FlashMLA's FP8 cache with scales is 656 B, so sparse
  MLA here gathers 1.76x the bytes.
- **Fewer routed experts** (32 of 256 by default): 256 experts x 3 x 7168 x 2048 bf16 weights are 22.5 GB per
  layer and cannot fit one GPU. Routing is unchanged (top-8, group-limited) and, on CUDA, each (token,
  expert) pair reads its own expert's weights, so a decode step reads 8 x batch routed experts per layer:
  what the full model reads while 8 x batch is small against 256. Memory and the router's GEMV shrink.
- **Every layer is MoE**: the release's first 3 of 61 layers use a dense FFN (18432); a reduced stack stands
  for the 58 MoE layers.
- **Plain RoPE** (theta 10000) without the YaRN extension (factor 40) and its softmax-scale correction: the
  cost is identical and synthetic weights make the values meaningless anyway.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from bench.model.decoder import SyntheticDecoder
from bench.pipeline import DENSE
from bench.timeline import Timeline
from kernels_gpu.sparse_decode import DSA_SCALE
from kernels_gpu.topk import cdiv, jit, resolve_impl, tl

_CONFIG = "https://huggingface.co/deepseek-ai/DeepSeek-V3.2-Exp/blob/main/config.json"


@dataclass(frozen=True)
class MlaShape:
    """The shape of a DeepSeek-V3.2-style decoder (MLA attention, lightning indexer, DeepSeekMoE).

    Attributes:
        name: Preset name.
        layers: Decoder layers.
        hidden: Hidden size.
        heads: Attention heads.
        q_lora: Rank of the compressed query.
        kv_lora: Rank of the compressed KV (the latent cache's value width).
        qk_nope: Query/key dims without RoPE, per head.
        qk_rope: Query/key dims with RoPE (one shared key head), per head.
        v_head: Value dims per head.
        index_heads: Lightning-indexer query heads.
        index_dim: Lightning-indexer head dimension (its key is one shared head of this width).
        experts: Routed experts per layer held here (reduced from ``experts_full``).
        experts_full: Routed experts per layer of the released model.
        experts_per_token: Routed experts each token uses.
        shared_experts: Shared experts every token uses.
        moe_ffn: Intermediate size of one expert.
        expert_groups: Groups the router splits the experts into.
        groups_per_token: Groups a token's experts may come from.
        route_scale: Factor on the normalized routing weights.
        vocab: Vocabulary size.
        max_context: Native maximum context in tokens (informational).
        rope_theta: RoPE base.
        source: Where the shape comes from.
        notes: How this shape differs from the released model, and why.
    """

    name: str
    layers: int
    hidden: int
    heads: int
    q_lora: int
    kv_lora: int
    qk_nope: int
    qk_rope: int
    v_head: int
    index_heads: int
    index_dim: int
    experts: int
    experts_full: int
    experts_per_token: int
    shared_experts: int
    moe_ffn: int
    expert_groups: int
    groups_per_token: int
    route_scale: float
    vocab: int
    max_context: int
    rope_theta: float = 10000.0
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.experts % self.expert_groups or self.experts_per_token > self.experts:
            raise ValueError(f"{self.name}: {self.experts} experts must split into {self.expert_groups} "
                             f"groups and hold the {self.experts_per_token} a token uses")
        if self.expert_groups > 1 and (self.experts // self.expert_groups < 2
                                       or self.groups_per_token * self.experts // self.expert_groups
                                       < self.experts_per_token):
            raise ValueError(f"{self.name}: groups of {self.experts // self.expert_groups} experts cannot "
                             f"rank by their top two or hold {self.experts_per_token} experts in "
                             f"{self.groups_per_token} groups")
        if self.qk_rope % 2 or self.qk_rope > self.index_dim:
            raise ValueError(f"{self.name}: qk_rope must be even and at most index_dim")
        if self.index_dim & (self.index_dim - 1):
            raise ValueError(f"{self.name}: index_dim must be a power of two (Hadamard rotation)")

    @property
    def d_qk(self) -> int:
        """Width of a latent cache row: compressed KV then RoPE key (DeepSeek-V3.2: 576)."""
        return self.kv_lora + self.qk_rope

    @property
    def d_v(self) -> int:
        """Value width of the absorbed attention: the compressed KV (DeepSeek-V3.2: 512)."""
        return self.kv_lora

    def kv_bytes_per_token(self, dtype_bytes: int = 2, layers: int | None = None) -> int:
        """Latent-cache bytes per token over ``layers`` layers (all by default)."""
        return (self.layers if layers is None else layers) * self.d_qk * dtype_bytes

    def layer_params(self) -> int:
        """Parameters of one layer: MLA, the indexer, the router and the experts held here."""
        h, heads = self.hidden, self.heads
        attn = (h + h * self.q_lora + self.q_lora + self.q_lora * heads * (self.qk_nope + self.qk_rope)
                + h * self.d_qk + self.kv_lora + self.kv_lora * heads * (self.qk_nope + self.v_head)
                + heads * self.v_head * h)
        indexer = self.q_lora * self.index_heads * self.index_dim + h * self.index_dim + 2 * self.index_dim \
            + h * self.index_heads
        moe = h + self.experts * (h + 1) + (self.experts + self.shared_experts) * 3 * h * self.moe_ffn
        return attn + indexer + moe

    def weight_params(self) -> int:
        """Parameters of the whole model as built: every layer, embedding, final norm and LM head."""
        return self.layers * self.layer_params() + 2 * self.vocab * self.hidden + self.hidden

    def with_layers(self, layers: int) -> MlaShape:
        """The same shape with fewer layers."""
        return replace(self, layers=layers)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d


_REDUCTIONS = (
    "weights bf16; the released model stores FP8 e4m3 weights (128x128 block scales): twice its weight bytes",
    "latent cache bf16, 1152 B/token/layer; FlashMLA's FP8 cache with scales is 656 B",
    "32 of 256 routed experts held (256 x 3 x 7168 x 2048 bf16 = 22.5 GB per layer cannot fit one GPU); "
    "routing unchanged, and on CUDA each (token, expert) pair reads its expert's weights, so a decode step "
    "reads 8 x batch routed experts per layer, as the full model does while 8 x batch << 256",
    "every layer MoE; the released model's first 3 of 61 layers have a dense FFN (18432)",
    "plain RoPE (theta 10000) without YaRN (factor 40) and its softmax-scale correction",
)

MLA_PRESETS: dict[str, MlaShape] = {
    "deepseek-v3.2": MlaShape(
        "deepseek-v3.2", layers=61, hidden=7168, heads=128, q_lora=1536, kv_lora=512, qk_nope=128, qk_rope=64,
        v_head=128, index_heads=64, index_dim=128, experts=32, experts_full=256, experts_per_token=8,
        shared_experts=1, moe_ffn=2048, expert_groups=8, groups_per_token=4, route_scale=2.5, vocab=129280,
        max_context=131072, rope_theta=10000.0, source=_CONFIG + " (config_671B_v3.2.json; workloads.md)",
        notes=_REDUCTIONS,
    ),
    "deepseek-tiny": MlaShape(
        "deepseek-tiny", layers=2, hidden=64, heads=4, q_lora=32, kv_lora=32, qk_nope=16, qk_rope=16,
        v_head=16, index_heads=4, index_dim=128, experts=4, experts_full=4, experts_per_token=2,
        shared_experts=1, moe_ffn=32, expert_groups=2, groups_per_token=1, route_scale=2.5, vocab=256,
        max_context=1 << 20, rope_theta=10000.0,
        source="bench: a small DeepSeek-V3.2-shaped model for CPU tests (indexer dim 128: the FPGA kernel's)",
        notes=("tiny shapes: timings say nothing about real hardware",),
    ),
}


class LatentCache:
    """Per-layer latent caches [B, capacity, d_qk]: compressed KV (RMS-normed) then the RoPE key.

    ``length`` is the number of valid positions, shared by every sequence of the batch; ``d_v`` is the
    value width (the first ``d_v`` dims of a row).
    """

    def __init__(self, shape: MlaShape, batch: int, capacity: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.latent = [torch.zeros(batch, capacity, shape.d_qk, dtype=dtype, device=device)
                       for _ in range(shape.layers)]
        self.d_v = shape.d_v
        self.capacity = capacity
        self.length = 0

    def nbytes(self) -> int:
        """Bytes held by every layer's latent cache."""
        return sum(t.numel() * t.element_size() for t in self.latent)


@dataclass
class MlaAttentionInput:
    """What the decoder hands attention for one layer of one decode step.

    Attributes:
        layer: Layer index.
        x: The attention input (the RMS-normed hidden state) [B, hidden]; the indexer reads it.
        q_c: The compressed query after its RMSNorm [B, q_lora]; the indexer's query comes from it.
        q: The absorbed MLA query [B, heads, d_qk]: no-RoPE part times the key up-projection, then RoPE part.
        pos: Position of the new token; the cache already holds it, so ``cache.length == pos + 1``.
        cache: The latent cache.
    """

    layer: int
    x: torch.Tensor
    q_c: torch.Tensor
    q: torch.Tensor
    pos: int
    cache: LatentCache


class MlaAttentionBackend(Protocol):
    """Computes one layer's decode attention over the latent cache."""

    def decode(self, inp: MlaAttentionInput, timeline: Timeline) -> torch.Tensor:
        """Return the latent attention output [B, heads, d_v] for the new token."""
        ...


class DenseMlaAttention:
    """Dense absorbed-MLA decode over every cached position (PyTorch SDPA, MQA)."""

    def decode(self, inp: MlaAttentionInput, timeline: Timeline) -> torch.Tensor:
        """SDPA of every head over the whole latent cache."""
        with timeline.section(DENSE):
            return dense_mla_decode(inp.q, inp.cache.latent[inp.layer], inp.cache.length, inp.cache.d_v)


def dense_mla_decode(q: torch.Tensor, latent: torch.Tensor, length: int, d_v: int) -> torch.Tensor:
    """Absorbed-MLA decode: q [B, H, d_qk] over the first ``length`` rows of ``latent`` [B, cap, d_qk].

    Returns:
        [B, H, d_v] in q's dtype; keys are whole rows, values their first ``d_v`` dims, scale
        :data:`~kernels_gpu.sparse_decode.DSA_SCALE`.
    """
    kv = latent[:, None, :length]
    # The heads become SDPA's query-length axis of one shared KV head (MQA).
    return F.scaled_dot_product_attention(q[:, None], kv, kv[..., :d_v], scale=DSA_SCALE)[:, 0]


def rotate_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """MLA's RoPE: rotate dim pairs (2i, 2i + 1) of ``x`` [..., d]; cos/sin broadcast to [..., d / 2].

    Computed in float32, returned in x's dtype. (The indexer's RoPE is the rotate-half form instead:
    workloads.md notes that early demo code mixed the two up.)
    """
    xf = x.float().unflatten(-1, (-1, 2))
    x0, x1 = xf[..., 0], xf[..., 1]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2).to(x.dtype)


class Indexer(nn.Module):
    """The lightning indexer's weights of one layer (DeepSeek-V3.2); :mod:`bench.methods.dsa` runs them.

    Attributes:
        wq: Query projection from the compressed query, [index_heads * index_dim, q_lora].
        wk: Key projection from the attention input, [index_dim, hidden].
        k_norm, k_norm_bias: LayerNorm of the key, [index_dim] each.
        weights_proj: Per-head weights from the attention input, [index_heads, hidden].
    """

    def __init__(self, shape: MlaShape) -> None:
        super().__init__()
        s = shape
        self.wq = nn.Parameter(torch.empty(s.index_heads * s.index_dim, s.q_lora))
        self.wk = nn.Parameter(torch.empty(s.index_dim, s.hidden))
        self.k_norm = nn.Parameter(torch.ones(s.index_dim))
        self.k_norm_bias = nn.Parameter(torch.zeros(s.index_dim))
        self.weights_proj = nn.Parameter(torch.empty(s.index_heads, s.hidden))


class MlaLayer(nn.Module):
    """One pre-norm DeepSeek-V3.2 layer: absorbed MLA projections, the indexer's weights, DeepSeekMoE."""

    def __init__(self, shape: MlaShape) -> None:
        super().__init__()
        s = shape
        self.shape = s
        self.attn_norm = nn.Parameter(torch.ones(s.hidden))
        self.wq_a = nn.Parameter(torch.empty(s.q_lora, s.hidden))
        self.q_norm = nn.Parameter(torch.ones(s.q_lora))
        self.wq_b = nn.Parameter(torch.empty(s.heads * (s.qk_nope + s.qk_rope), s.q_lora))
        self.wkv_a = nn.Parameter(torch.empty(s.d_qk, s.hidden))
        self.kv_norm = nn.Parameter(torch.ones(s.kv_lora))
        # The KV up-projection, split for the absorbed form: keys (no-RoPE part) and values per head.
        self.w_uk = nn.Parameter(torch.empty(s.heads, s.qk_nope, s.kv_lora))
        self.w_uv = nn.Parameter(torch.empty(s.heads, s.v_head, s.kv_lora))
        self.wo = nn.Parameter(torch.empty(s.hidden, s.heads * s.v_head))
        self.indexer = Indexer(s)
        self.ffn_norm = nn.Parameter(torch.ones(s.hidden))
        self.gate = nn.Parameter(torch.empty(s.experts, s.hidden))
        # DeepSeek-V3's load-balancing correction bias: it steers selection only (zero here).
        self.gate_bias = nn.Parameter(torch.zeros(s.experts))
        self.w_gate_up = nn.Parameter(torch.empty(s.experts, 2 * s.moe_ffn, s.hidden))
        self.w_down = nn.Parameter(torch.empty(s.experts, s.hidden, s.moe_ffn))
        self.shared_gate_up = nn.Parameter(torch.empty(2 * s.shared_experts * s.moe_ffn, s.hidden))
        self.shared_down = nn.Parameter(torch.empty(s.hidden, s.shared_experts * s.moe_ffn))

    def latent(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Latent cache rows [..., d_qk] of attention inputs x [..., hidden]; cos/sin [..., qk_rope / 2]."""
        s = self.shape
        c, k_pe = F.linear(x, self.wkv_a).split([s.kv_lora, s.qk_rope], dim=-1)
        return torch.cat((F.rms_norm(c, (s.kv_lora,), self.kv_norm, eps=1e-6),
                          rotate_interleaved(k_pe, cos, sin)), dim=-1)

    def project(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attention input x, compressed query q_c, absorbed query q [B, H, d_qk], latent row [B, d_qk].

        Args:
            h: Hidden states [B, hidden].
            cos: RoPE cos [1, qk_rope / 2] at the new position.
            sin: RoPE sin, likewise.
        """
        s = self.shape
        x = F.rms_norm(h, (s.hidden,), self.attn_norm, eps=1e-6)
        q_c = F.rms_norm(F.linear(x, self.wq_a), (s.q_lora,), self.q_norm, eps=1e-6)
        q = F.linear(q_c, self.wq_b).view(h.shape[0], s.heads, -1)
        q_nope, q_pe = q.split([s.qk_nope, s.qk_rope], dim=-1)
        q_lat = torch.einsum("bhd,hdc->bhc", q_nope, self.w_uk)
        q = torch.cat((q_lat, rotate_interleaved(q_pe, cos, sin)), dim=-1)
        return x, q_c, q, self.latent(x, cos, sin)

    def finish(self, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Value up-projection, output projection, residual, then the MoE block; out is [B, H, d_v]."""
        s = self.shape
        o = torch.einsum("bhc,hdc->bhd", out, self.w_uv).reshape(h.shape[0], -1)
        h = h + F.linear(o, self.wo)
        y = F.rms_norm(h, (s.hidden,), self.ffn_norm, eps=1e-6)
        experts, weights = self.route(y)
        routed = routed_experts(y, experts, weights, self.w_gate_up, self.w_down)
        gate, up = F.linear(y, self.shared_gate_up).chunk(2, dim=-1)
        return h + routed + F.linear(F.silu(gate) * up, self.shared_down)

    def route(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """DeepSeek-V3 routing: expert ids [B, k] and weights [B, k] (fp32) for MoE inputs y [B, hidden].

        Sigmoid scores; selection on scores plus the correction bias, limited to the ``groups_per_token``
        groups whose two best experts score highest; weights are the selected scores, normalized, times
        ``route_scale``.
        """
        s = self.shape
        scores = F.linear(y, self.gate).float().sigmoid()
        biased = scores + self.gate_bias.float()
        if s.expert_groups > 1:
            grouped = biased.unflatten(-1, (s.expert_groups, -1))
            best = grouped.topk(2, dim=-1).values.sum(-1).topk(s.groups_per_token, dim=-1).indices
            keep = torch.zeros_like(grouped[..., 0], dtype=torch.bool).scatter_(-1, best, True)
            biased = grouped.masked_fill(~keep[..., None], float("-inf")).flatten(-2)
        experts = biased.topk(s.experts_per_token, dim=-1).indices
        weights = scores.gather(-1, experts)
        return experts, weights / weights.sum(-1, keepdim=True) * s.route_scale


def routed_experts(y: torch.Tensor, experts: torch.Tensor, weights: torch.Tensor, w_gate_up: torch.Tensor,
                   w_down: torch.Tensor, impl: str = "auto") -> torch.Tensor:
    """Weighted sum of each token's routed SwiGLU experts.

    Args:
        y: MoE inputs [B, hidden].
        experts: Expert ids [B, k].
        weights: Routing weights [B, k] (fp32).
        w_gate_up: Gate and up projections of every expert [E, 2 * ffn, hidden] (gate rows first).
        w_down: Down projections [E, hidden, ffn].
        impl: ``"auto"`` (Triton on CUDA, torch elsewhere), ``"triton"`` or ``"torch"``.

    Returns:
        [B, hidden] in y's dtype.
    """
    if resolve_impl(impl, y, w_gate_up) == "triton":
        return _triton_routed_experts(y, experts, weights, w_gate_up, w_down)
    # Gathers a copy of each (token, expert) pair's weights: fine on the CPU and at test sizes only.
    flat = experts.reshape(-1)
    ys = y.repeat_interleave(experts.shape[1], dim=0)
    gate, up = torch.bmm(w_gate_up[flat].float(), ys.float()[:, :, None])[..., 0].chunk(2, dim=-1)
    out = torch.bmm(w_down[flat].float(), (F.silu(gate) * up)[:, :, None])[..., 0] * weights.reshape(-1, 1)
    return out.view(*experts.shape, -1).sum(1).to(y.dtype)


def _triton_routed_experts(y: torch.Tensor, experts: torch.Tensor, weights: torch.Tensor,
                           w_gate_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """Two GEMV kernels over (token, expert) slots that read only the selected experts' weights."""
    b, k = experts.shape
    two_f, hidden = w_gate_up.shape[1:]
    ffn = two_f // 2
    slots = b * k
    y, w_gate_up, w_down = y.contiguous(), w_gate_up.contiguous(), w_down.contiguous()
    ids = experts.reshape(-1).to(torch.int32).contiguous()
    act = torch.empty(slots, ffn, dtype=torch.float32, device=y.device)
    _expert_up_kernel[(slots, cdiv(ffn, _UP_F))](
        y, w_gate_up, ids, act, k, HIDDEN=hidden, FFN=ffn, BLOCK_F=_UP_F, BLOCK_K=_UP_K, num_warps=4)
    out = torch.empty(slots, hidden, dtype=torch.float32, device=y.device)
    _expert_down_kernel[(slots, cdiv(hidden, _DOWN_H))](
        act, w_down, ids, weights.float().reshape(-1).contiguous(), out, HIDDEN=hidden, FFN=ffn,
        BLOCK_H=_DOWN_H, BLOCK_F=_DOWN_F, num_warps=4)
    return out.view(b, k, hidden).sum(1).to(y.dtype)


# Tile sizes: a 16 x 512 (up) or 32 x 256 (down) bf16 weight tile per loop step keeps 16 KB of loads in
# flight per program, and the grids (8 x batch slots x 128 or 224 tiles) fill an H100 even at batch 1.
_UP_F, _UP_K = 16, 512
_DOWN_H, _DOWN_F = 32, 256


@jit
def _expert_up_kernel(y_ptr, w_ptr, ids_ptr, act_ptr, top_k, HIDDEN: tl.constexpr, FFN: tl.constexpr,
                      BLOCK_F: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    # Program (slot, ffn tile): silu(gate) * up for BLOCK_F rows of the slot's expert, fp32.
    slot = tl.program_id(0)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    f_ok = f < FFN
    expert = tl.load(ids_ptr + slot).to(tl.int64)
    token = (slot // top_k).to(tl.int64)
    rows = w_ptr + expert * 2 * FFN * HIDDEN + f.to(tl.int64)[:, None] * HIDDEN
    acc_g = tl.zeros([BLOCK_F], tl.float32)
    acc_u = tl.zeros([BLOCK_F], tl.float32)
    for k0 in range(0, HIDDEN, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        k_ok = kk < HIDDEN
        x = tl.load(y_ptr + token * HIDDEN + kk, mask=k_ok, other=0.0).to(tl.float32)
        m = f_ok[:, None] & k_ok[None, :]
        g = tl.load(rows + kk[None, :], mask=m, other=0.0).to(tl.float32)
        u = tl.load(rows + FFN * HIDDEN + kk[None, :], mask=m, other=0.0).to(tl.float32)
        acc_g += tl.sum(g * x[None, :], axis=1)
        acc_u += tl.sum(u * x[None, :], axis=1)
    act = acc_g / (1.0 + tl.exp(-acc_g)) * acc_u
    tl.store(act_ptr + slot.to(tl.int64) * FFN + f, act, mask=f_ok)


@jit
def _expert_down_kernel(act_ptr, w_ptr, ids_ptr, gate_ptr, out_ptr, HIDDEN: tl.constexpr, FFN: tl.constexpr,
                        BLOCK_H: tl.constexpr, BLOCK_F: tl.constexpr):  # fmt: skip
    # Program (slot, hidden tile): routing weight x (down projection of the slot's activation), fp32.
    slot = tl.program_id(0)
    hh = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    h_ok = hh < HIDDEN
    expert = tl.load(ids_ptr + slot).to(tl.int64)
    rows = w_ptr + expert * HIDDEN * FFN + hh.to(tl.int64)[:, None] * FFN
    acc = tl.zeros([BLOCK_H], tl.float32)
    for f0 in range(0, FFN, BLOCK_F):
        ff = f0 + tl.arange(0, BLOCK_F)
        f_ok = ff < FFN
        a = tl.load(act_ptr + slot.to(tl.int64) * FFN + ff, mask=f_ok, other=0.0)
        w = tl.load(rows + ff[None, :], mask=h_ok[:, None] & f_ok[None, :], other=0.0).to(tl.float32)
        acc += tl.sum(w * a[None, :], axis=1)
    tl.store(out_ptr + slot.to(tl.int64) * HIDDEN + hh, acc * tl.load(gate_ptr + slot), mask=h_ok)


class MlaDecoder(SyntheticDecoder):
    """DeepSeek-V3.2's decoder at a real shape with seeded synthetic weights.

    Args:
        shape: The model shape (possibly with fewer layers than its preset).
        dtype: Weight, activation and latent-cache dtype.
        device: Torch device.
        seed: Seed for the synthetic weights.
    """

    shape: MlaShape

    def __init__(self, shape: MlaShape, dtype: torch.dtype, device: torch.device, seed: int = 0) -> None:
        # One RoPE table serves both forms: MLA's interleaved form reads its first qk_rope / 2 columns.
        super().__init__(shape, dtype, device, seed, lambda: MlaLayer(shape), shape.qk_rope)

    def new_cache(self, batch: int, capacity: int) -> LatentCache:
        """An empty latent cache for ``batch`` sequences of up to ``capacity`` tokens."""
        self.rope.reserve(capacity)
        return LatentCache(self.shape, batch, capacity, self.dtype, self.device)

    def rope_at(self, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        """MLA's interleaved RoPE tables [1, qk_rope / 2] at a reserved position (views: no copy)."""
        cos, sin = self.rope.at(pos)
        half = self.shape.qk_rope // 2
        return cos[:, :half], sin[:, :half]

    def decode_step(self, tokens: torch.Tensor, cache: LatentCache, attention: MlaAttentionBackend,
                    timeline: Timeline) -> torch.Tensor:
        """Run one decode step for ``tokens`` [B] at position ``cache.length``; returns the next tokens [B].

        The new latent row is written into the cache before attention, so attention sees ``cache.length``
        positions including the new one. Sampling is greedy (argmax).
        """
        pos = cache.length
        if pos >= cache.capacity:
            raise ValueError(f"the latent cache is full ({cache.capacity} positions)")
        cos, sin = self.rope_at(pos)
        with timeline.section(DENSE):
            h = F.embedding(tokens, self.embed)
        cache.length = pos + 1
        for i, layer in enumerate(self.layers):
            with timeline.section(DENSE):
                x, q_c, q, row = layer.project(h, cos, sin)
                cache.latent[i][:, pos] = row
            out = attention.decode(MlaAttentionInput(i, x, q_c, q, pos, cache), timeline)
            with timeline.section(DENSE):
                h = layer.finish(h, out)
        with timeline.section(DENSE):
            x = F.rms_norm(h, (self.shape.hidden,), self.final_norm, eps=1e-6)
            return F.linear(x, self.lm_head).argmax(dim=-1)

    def fill_cache(self, cache: LatentCache, length: int, seed: int, chunk: int = 2048,
                   on_chunk: MlaFillHook | None = None) -> None:
        """Fill the first ``length`` positions from seeded synthetic attention inputs.

        Each chunk draws attention inputs x ~ N(0, 1) (an RMS-normed hidden state has unit RMS) and stores
        their latent rows, as a prefill would leave them; ``on_chunk`` sees x so a method can build its index
        from the same inputs (Prepare Memory over the context).
        """
        gen = torch.Generator(device=self.device).manual_seed(seed)
        b = cache.latent[0].shape[0]
        half = self.shape.qk_rope // 2
        for i, layer in enumerate(self.layers):
            for start in range(0, length, chunk):
                end = min(length, start + chunk)
                x = torch.randn(b, end - start, self.shape.hidden, generator=gen, device=self.device,
                                dtype=self.dtype)
                cos, sin = self.rope.cos_sin(torch.arange(start, end, device=self.device))
                cache.latent[i][:, start:end] = layer.latent(x, cos[:, :half], sin[:, :half])
                if on_chunk is not None:
                    on_chunk(i, start, x)
        cache.length = length


class MlaFillHook(Protocol):
    """Called with (layer, start position, attention inputs [B, T, hidden]) for each chunk of a fill."""

    def __call__(self, layer: int, start: int, x: torch.Tensor) -> None:
        """Observe one chunk of synthetic attention inputs."""
        ...
