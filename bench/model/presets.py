"""Model shapes: presets from published ``config.json`` files and inline shapes from a suite.

Shapes follow ``../shared/reference/workloads.md`` section 4 (read from each model's Hugging Face
``config.json``). Weights are always synthetic; only the shapes are real.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class ModelShape:
    """The shape of a decoder-only transformer with grouped-query attention.

    Attributes:
        name: Preset name, or ``"inline"`` for a shape written in the suite.
        layers: Decoder layers.
        hidden: Hidden size.
        heads: Query heads.
        kv_heads: Key/value heads (GQA groups).
        head_dim: Dimension per head.
        ffn: SwiGLU intermediate size.
        vocab: Vocabulary size.
        max_context: Native maximum context in tokens (informational).
        rope_theta: RoPE base.
        qk_norm: Whether q and k get a per-head RMSNorm (Qwen3).
        source: Where the shape comes from.
    """

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    max_context: int
    rope_theta: float = 500000.0
    qk_norm: bool = False
    source: str = ""

    @property
    def group(self) -> int:
        """Query heads per KV head."""
        return self.heads // self.kv_heads

    def kv_bytes_per_token(self, dtype_bytes: int = 2, layers: int | None = None) -> int:
        """KV-cache bytes per token over ``layers`` layers (all by default)."""
        n = self.layers if layers is None else layers
        return 2 * n * self.kv_heads * self.head_dim * dtype_bytes

    def weight_params(self, layers: int | None = None) -> int:
        """Parameter count of the dense part for ``layers`` layers, plus embedding and LM head."""
        n = self.layers if layers is None else layers
        qkv = self.hidden * (self.heads + 2 * self.kv_heads) * self.head_dim
        o = self.heads * self.head_dim * self.hidden
        mlp = 3 * self.hidden * self.ffn
        return n * (qkv + o + mlp + 2 * self.hidden) + 2 * self.vocab * self.hidden + self.hidden

    def with_layers(self, layers: int) -> ModelShape:
        """The same shape with fewer layers (the record keeps the preset's count too)."""
        return replace(self, layers=layers)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


_HF = "https://huggingface.co/{}/blob/main/config.json"

PRESETS: dict[str, ModelShape] = {
    "llama-3.1-8b": ModelShape(
        "llama-3.1-8b", 32, 4096, 32, 8, 128, 14336, 128256, 131072, 500000.0, False,
        _HF.format("meta-llama/Llama-3.1-8B"),
    ),
    "llama-2-7b": ModelShape(
        "llama-2-7b", 32, 4096, 32, 32, 128, 11008, 32000, 4096, 10000.0, False,
        _HF.format("meta-llama/Llama-2-7b-hf"),
    ),
    "qwen3-4b": ModelShape(
        "qwen3-4b", 36, 2560, 32, 8, 128, 9728, 151936, 40960, 1000000.0, True, _HF.format("Qwen/Qwen3-4B"),
    ),
    "qwen3-8b": ModelShape(
        "qwen3-8b", 36, 4096, 32, 8, 128, 12288, 151936, 40960, 1000000.0, True, _HF.format("Qwen/Qwen3-8B"),
    ),
    "qwen3-14b": ModelShape(
        "qwen3-14b", 40, 5120, 40, 8, 128, 17408, 151936, 40960, 1000000.0, True,
        _HF.format("Qwen/Qwen3-14B"),
    ),
    "qwen2.5-7b": ModelShape(
        "qwen2.5-7b", 28, 3584, 28, 4, 128, 18944, 152064, 32768, 1000000.0, False,
        _HF.format("Qwen/Qwen2.5-7B-Instruct"),
    ),
    "tiny": ModelShape(
        "tiny", 2, 256, 8, 2, 32, 512, 1024, 1 << 20, 10000.0, True, "bench: a small shape for CPU tests",
    ),
}

#: Keys an inline model shape in a suite must give.
INLINE_FIELDS = ("hidden", "heads", "kv_heads", "head_dim", "ffn", "vocab", "layers")
