"""A real decoder-only transformer in PyTorch with a KV cache, synthetic weights and a synthetic fill.

The dense part of every decode step lives here: embedding, RMSNorm, fused QKV projection, optional
per-head q/k norm (Qwen3), RoPE, output projection, SwiGLU MLP, final norm, LM head and greedy sampling.
Attention is delegated to an :class:`AttentionBackend` so that a memory-processing method (sparse
attention, ...) can run its four steps where dense attention would be.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from bench.model.presets import ModelShape
from bench.pipeline import DENSE
from bench.timeline import Timeline

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class KVCache:
    """Preallocated per-layer K/V caches of shape [B, H_kv, capacity, D], keys stored after RoPE.

    ``length`` is the number of valid positions, shared by every sequence of the batch.
    """

    def __init__(self, shape: ModelShape, batch: int, capacity: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        size = (batch, shape.kv_heads, capacity, shape.head_dim)
        self.k = [torch.empty(size, dtype=dtype, device=device) for _ in range(shape.layers)]
        self.v = [torch.empty(size, dtype=dtype, device=device) for _ in range(shape.layers)]
        self.capacity = capacity
        self.length = 0

    def nbytes(self) -> int:
        """Bytes held by all layers' K and V."""
        return sum(t.numel() * t.element_size() for t in self.k + self.v)


class Rope:
    """Rotary position embedding (rotate-half form, as Llama and Qwen use)."""

    def __init__(self, dim: int, theta: float, device: torch.device) -> None:
        self.inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))
        self._cos = self._sin = torch.empty(0, dim, device=device)

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cos and sin tables [len(positions), dim] in float32."""
        freqs = torch.outer(positions.to(torch.float32), self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    def reserve(self, positions: int) -> None:
        """Precompute the tables for positions [0, positions), so decode steps copy nothing to the device."""
        if self._cos.shape[0] < positions:
            self._cos, self._sin = self.cos_sin(torch.arange(positions, device=self.inv_freq.device))

    def at(self, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tables [1, dim] for one reserved position (a slice: no copy, so CUDA graphs can capture it)."""
        if pos >= self._cos.shape[0]:
            raise ValueError(f"RoPE tables reserved for {self._cos.shape[0]} positions, asked for position {pos}")
        return self._cos[pos : pos + 1], self._sin[pos : pos + 1]

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Apply RoPE to ``x`` [..., T, dim] with tables [T, dim]; computed in float32, returned in x's dtype."""
        xf = x.float()
        half = xf.shape[-1] // 2
        rotated = torch.cat((-xf[..., half:], xf[..., :half]), dim=-1)
        return (xf * cos + rotated * sin).to(x.dtype)


@dataclass
class AttentionInput:
    """What the decoder hands attention for one layer of one decode step.

    Attributes:
        layer: Layer index.
        q: Queries after RoPE, [B, H_q, D].
        q_pre: Queries before RoPE, [B, H_q, D] (gates such as SeerAttention-R's read these).
        k_pre: The new token's keys before RoPE, [B, H_kv, D].
        pos: Position of the new token; the cache already holds it, so ``cache.length == pos + 1``.
        cache: The KV cache.
    """

    layer: int
    q: torch.Tensor
    q_pre: torch.Tensor
    k_pre: torch.Tensor
    pos: int
    cache: KVCache


class AttentionBackend(Protocol):
    """Computes one layer's decode attention; a memory-processing method runs its steps here."""

    def decode(self, inp: AttentionInput, timeline: Timeline) -> torch.Tensor:
        """Return the attention output [B, H_q, D] for the new token."""
        ...


class DenseAttention:
    """Dense decode attention over the whole cache (PyTorch SDPA with GQA)."""

    def decode(self, inp: AttentionInput, timeline: Timeline) -> torch.Tensor:
        """SDPA of the new token's queries over every cached position."""
        with timeline.section(DENSE):
            return dense_decode_attention(inp.q, inp.cache.k[inp.layer], inp.cache.v[inp.layer], inp.cache.length)


def dense_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           length: int) -> torch.Tensor:
    """Dense decode attention: q [B, H_q, D] over the first ``length`` positions of [B, H_kv, L, D] caches."""
    b, hq, d = q.shape
    hkv = k_cache.shape[1]
    qg = q.view(b, hkv, hq // hkv, d)
    out = F.scaled_dot_product_attention(qg, k_cache[:, :, :length], v_cache[:, :, :length])
    return out.reshape(b, hq, d)


class DecoderLayer(nn.Module):
    """One pre-norm decoder layer with GQA attention and a SwiGLU MLP; projections are fused."""

    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        s = shape
        self.shape = s
        self.input_norm = nn.Parameter(torch.ones(s.hidden))
        self.qkv = nn.Parameter(torch.empty((s.heads + 2 * s.kv_heads) * s.head_dim, s.hidden))
        self.o = nn.Parameter(torch.empty(s.hidden, s.heads * s.head_dim))
        self.q_norm = nn.Parameter(torch.ones(s.head_dim)) if s.qk_norm else None
        self.k_norm = nn.Parameter(torch.ones(s.head_dim)) if s.qk_norm else None
        self.post_norm = nn.Parameter(torch.ones(s.hidden))
        self.gate_up = nn.Parameter(torch.empty(2 * s.ffn, s.hidden))
        self.down = nn.Parameter(torch.empty(s.hidden, s.ffn))

    def project_qkv(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pre-RoPE q [B, T, H_q, D], k and v [B, T, H_kv, D] for hidden states h [B, T, hidden]."""
        s = self.shape
        x = F.rms_norm(h, (s.hidden,), self.input_norm, eps=1e-6)
        qkv = F.linear(x, self.qkv)
        b, t = h.shape[:2]
        q, k, v = qkv.split([s.heads * s.head_dim, s.kv_heads * s.head_dim, s.kv_heads * s.head_dim], dim=-1)
        q = q.view(b, t, s.heads, s.head_dim)
        k = k.view(b, t, s.kv_heads, s.head_dim)
        v = v.view(b, t, s.kv_heads, s.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            q = F.rms_norm(q, (s.head_dim,), self.q_norm, eps=1e-6)
            k = F.rms_norm(k, (s.head_dim,), self.k_norm, eps=1e-6)
        return q, k, v

    def finish(self, h: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Output projection, residual, and the MLP block; attn is [B, T, H_q * D]."""
        s = self.shape
        h = h + F.linear(attn, self.o)
        x = F.rms_norm(h, (s.hidden,), self.post_norm, eps=1e-6)
        gate, up = F.linear(x, self.gate_up).chunk(2, dim=-1)
        return h + F.linear(F.silu(gate) * up, self.down)


def init_synthetic_weights(module: nn.Module, seed: int) -> None:
    """Seeded normal weights, std 1/sqrt(fan_in) (embeddings std 1), so activations stay O(1) at any depth.

    Norm scales are 1 and biases 0. Draws are fp32, one matrix at a time (so a stack of experts needs no
    fp32 copy of the whole stack), in ``named_parameters`` order, then rounded to the module's dtype.

    Args:
        module: A module with ``dtype`` and ``device`` attributes whose parameters are allocated.
        seed: The weight seed.
    """
    dtype, device = module.dtype, module.device
    gen = torch.Generator(device=device).manual_seed(seed)
    for name, p in module.named_parameters():
        if "bias" in name or "norm" in name:
            p.data = torch.full(p.shape, 0.0 if "bias" in name else 1.0, dtype=dtype, device=device)
            continue
        std = 1.0 if name == "embed" else 1.0 / math.sqrt(p.shape[-1])
        data = torch.empty(p.shape, dtype=dtype, device=device)
        for part in data.view(-1, *p.shape[-2:]):
            part.copy_(torch.randn(part.shape, generator=gen, device=device, dtype=torch.float32) * std)
        p.data = data


class SyntheticDecoder(nn.Module):
    """A decoder stack at a real shape with seeded synthetic weights: embedding, layers, final norm, LM head.

    Args:
        shape: The model shape (possibly with fewer layers than its preset).
        dtype: Weight and activation dtype.
        device: Torch device.
        seed: Seed for the synthetic weights.
        layer: Builds one layer (called on the meta device, once per layer).
        rope_dim: Width of the rotary tables.
    """

    def __init__(self, shape: Any, dtype: torch.dtype, device: torch.device, seed: int,
                 layer: Callable[[], nn.Module], rope_dim: int) -> None:
        super().__init__()
        self.shape = shape
        self.dtype = dtype
        self.device = device
        with torch.device("meta"):  # no host copy of the weights: they are drawn on the device
            self.embed = nn.Parameter(torch.empty(shape.vocab, shape.hidden))
            self.layers = nn.ModuleList(layer() for _ in range(shape.layers))
            self.final_norm = nn.Parameter(torch.ones(shape.hidden))
            self.lm_head = nn.Parameter(torch.empty(shape.vocab, shape.hidden))
        self.to_empty(device=device)
        init_synthetic_weights(self, seed)
        self.requires_grad_(False)
        self.rope = Rope(rope_dim, shape.rope_theta, device)


class Decoder(SyntheticDecoder):
    """A GQA decoder-only transformer (Llama / Qwen family) at a real shape with seeded synthetic weights.

    Args:
        shape: The model shape (possibly with fewer layers than its preset).
        dtype: Weight and activation dtype.
        device: Torch device.
        seed: Seed for the synthetic weights.
    """

    def __init__(self, shape: ModelShape, dtype: torch.dtype, device: torch.device, seed: int = 0) -> None:
        super().__init__(shape, dtype, device, seed, lambda: DecoderLayer(shape), shape.head_dim)

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        """An empty KV cache for ``batch`` sequences of up to ``capacity`` tokens."""
        self.rope.reserve(capacity)
        return KVCache(self.shape, batch, capacity, self.dtype, self.device)

    def decode_step(self, tokens: torch.Tensor, cache: KVCache, attention: AttentionBackend,
                    timeline: Timeline) -> torch.Tensor:
        """Run one decode step for ``tokens`` [B] at position ``cache.length``; returns the next tokens [B].

        The new keys and values are written into the cache before attention, so attention sees
        ``cache.length`` positions including the new one. Sampling is greedy (argmax), so a run is
        deterministic for a given seed.
        """
        pos = cache.length
        if pos >= cache.capacity:
            raise ValueError(f"the KV cache is full ({cache.capacity} positions)")
        cos, sin = self.rope.at(pos)
        with timeline.section(DENSE):
            h = F.embedding(tokens, self.embed).unsqueeze(1)  # [B, 1, hidden]
        cache.length = pos + 1
        for i, layer in enumerate(self.layers):
            with timeline.section(DENSE):
                q_pre, k_pre, v = layer.project_qkv(h)
                q = Rope.rotate(q_pre.transpose(1, 2), cos, sin)  # [B, H_q, 1, D]
                k = Rope.rotate(k_pre.transpose(1, 2), cos, sin)
                cache.k[i][:, :, pos : pos + 1] = k
                cache.v[i][:, :, pos : pos + 1] = v.transpose(1, 2)
            inp = AttentionInput(i, q.squeeze(2), q_pre.squeeze(1), k_pre.squeeze(1), pos, cache)
            out = attention.decode(inp, timeline)
            with timeline.section(DENSE):
                h = layer.finish(h, out.reshape(h.shape[0], 1, -1))
        with timeline.section(DENSE):
            x = F.rms_norm(h[:, 0], (self.shape.hidden,), self.final_norm, eps=1e-6)
            return F.linear(x, self.lm_head).argmax(dim=-1)

    def prefill(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Run a real causal prefill of ``tokens`` [B, T] appended at ``cache.length``; returns next tokens [B].

        Used where a method appends real tokens to the context (retrieved passages) and by tests.
        """
        b, t = tokens.shape
        start = cache.length
        positions = torch.arange(start, start + t, device=self.device)
        cos, sin = self.rope.cos_sin(positions)
        h = F.embedding(tokens, self.embed)
        end = start + t
        for i, layer in enumerate(self.layers):
            q_pre, k_pre, v = layer.project_qkv(h)
            q = Rope.rotate(q_pre.transpose(1, 2), cos, sin)
            cache.k[i][:, :, start:end] = Rope.rotate(k_pre.transpose(1, 2), cos, sin)
            cache.v[i][:, :, start:end] = v.transpose(1, 2)
            s = self.shape
            qg = q.reshape(b, s.kv_heads, s.group * t, s.head_dim)
            # Causal mask for the new rows against all cached positions, repeated over the GQA group.
            mask = positions[:, None] >= torch.arange(end, device=self.device)[None, :]
            mask = mask.repeat(s.group, 1)
            out = F.scaled_dot_product_attention(qg, cache.k[i][:, :, :end], cache.v[i][:, :, :end], attn_mask=mask)
            out = out.view(b, s.heads, t, s.head_dim).transpose(1, 2).reshape(b, t, -1)
            h = layer.finish(h, out)
        cache.length = end
        x = F.rms_norm(h[:, -1], (self.shape.hidden,), self.final_norm, eps=1e-6)
        return F.linear(x, self.lm_head).argmax(dim=-1)

    def synthetic_pre_rope_keys(self, layer: int, batch: int, start: int, end: int,
                                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Seeded synthetic pre-RoPE keys and values [B, H_kv, end - start, D] for one layer's fill."""
        size = (batch, self.shape.kv_heads, end - start, self.shape.head_dim)
        k = torch.randn(size, generator=gen, device=self.device, dtype=self.dtype)
        v = torch.randn(size, generator=gen, device=self.device, dtype=self.dtype)
        return k, v

    def fill_cache(self, cache: KVCache, length: int, seed: int, chunk: int = 8192,
                   on_chunk: FillHook | None = None) -> None:
        """Fill the first ``length`` cache positions with seeded synthetic keys and values.

        Keys are drawn before RoPE and stored after it, as a real prefill would leave them; ``on_chunk``
        sees each chunk's pre-RoPE keys so a method can build its index (Prepare Memory over the context).
        """
        gen = torch.Generator(device=self.device).manual_seed(seed)
        for i in range(self.shape.layers):
            for start in range(0, length, chunk):
                end = min(length, start + chunk)
                k_pre, v = self.synthetic_pre_rope_keys(i, cache.k[i].shape[0], start, end, gen)
                cos, sin = self.rope.cos_sin(torch.arange(start, end, device=self.device))
                cache.k[i][:, :, start:end] = Rope.rotate(k_pre, cos, sin)
                cache.v[i][:, :, start:end] = v
                if on_chunk is not None:
                    on_chunk(i, start, k_pre)
        cache.length = length


class FillHook(Protocol):
    """Called with (layer, start position, pre-RoPE keys [B, H_kv, T, D]) for each chunk of a fill."""

    def __call__(self, layer: int, start: int, k_pre: torch.Tensor) -> None:
        """Observe one chunk of synthetic keys."""
        ...
