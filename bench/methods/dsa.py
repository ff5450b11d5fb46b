"""DeepSeek Sparse Attention (DSA; DeepSeek-V3.2-Exp), decode, in DeepSeek-V3.2's MLA model.

The four steps, per layer and decode step (paper.md section 2; workloads.md, DSA):

- **Prepare Memory**: the lightning indexer's key of the new token, k^I = LayerNorm(W_k x), one 128-d head
  shared by the 64 query heads, RoPE (rotate-half) on its first 64 dims, Hadamard rotation, stored FP8 e4m3
  with one fp32 scale per token (132 B) or bf16 (256 B) and appended to the layer's index; the indexer query
  q^I [B, 64, 128] from the 1536-d compressed query (same RoPE and rotation) and the head weights
  w = W_w x * 64^-0.5 * 128^-0.5. (The new latent KV row is appended by the model's projections, as every
  attention method's new K/V are.)
- **Compute Relevancy**: I[s] = sum_j w_j ReLU(q^I_j . k^I_s) in fp32 over every cached token.
- **Retrieval**: the exact top-min(2048, L) tokens (ties to the lower position), -1 padded.
- **Apply to Inference**: absorbed MLA (MQA over the 576-d latent rows, 128 heads) over the selected tokens.

Optimized GPU placements run Relevancy + Retrieval as one fused kernel (:func:`kernels_gpu.dsa_indexer.
dsa_indexer`); framework-native placements materialize the [B, 64, L] logits, then ``torch.topk``. The hetero
placement runs them on the FPGA's DSA indexer kernel (paper Fig. 6 and section 7): the indexer keys stay
resident there in int16 (each new key is appended), q^I and w go in as int16, 2048 indices come back.

DeepSeek's reference quantizes q^I to FP8 too and folds its scale into w; the GPU kernels here take bf16
queries, so w carries only the two constant factors.

Synthetic weights make the selection itself meaningless, but nothing DSA does depends on the values for its
cost: it always scores every cached token and selects min(topk, L) of them (workloads.md, "Synthetic weights
and data-dependent decisions"), so no suite setting stands in for a decision here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from bench.devices.fpga import FpgaCall, FpgaDevice
from bench.errors import UsageError
from bench.methods.attention import PipelineAttention
from bench.methods.seer_attention import exact_topk, selection_recall
from bench.model.decoder import DTYPES, Rope
from bench.model.mla import MLA_PRESETS, Indexer, LatentCache, MlaAttentionInput, MlaDecoder, MlaShape
from bench.pipeline import Index, Memory, MemoryMethod, Placement, Query, Scores, Selection, Step
from bench.schema import param
from bench.timeline import Timeline
from bench.workload import Iteration, Workload
from kernels_fpga.model import entries_to_sync
from kernels_gpu.dsa_indexer import dsa_indexer
from kernels_gpu.sparse_decode import DSA_SCALE, token_sparse_decode
from kernels_gpu.topk import bmm_fp32, rows_n_valid, torch_topk

_FP8 = getattr(torch, "float8_e4m3fn", None)
#: Largest finite float8 e4m3fn value: per-token key scales map each key's amax onto it.
_FP8_MAX = 448.0
_INT16_MAX = 32767.0
#: Tokens per chunk of the FPGA reference's exact integer scoring (bounds its float64 workspace).
_REFERENCE_CHUNK = 16384
#: Tokens per chunk when quantizing the context's keys for the FPGA.
_QUANT_CHUNK = 16384


@dataclass(frozen=True)
class DsaParams:
    """Parameters of DeepSeek Sparse Attention; defaults are DeepSeek-V3.2's."""

    topk: int = param(2048, min=1, max=2048, help="tokens each query attends to (top-k of the index scores)",
                      source="config_671B_v3.2.json index_topk = 2048; the FPGA kernel holds 2048 top-k "
                             "registers (BENCH_DSA_K_MAX)")
    index_keys: Literal["auto", "fp8", "bf16"] = param(
        "auto", help="indexer key storage: fp8 (e4m3 + one fp32 scale per token, 132 B), bf16 (256 B), "
                     "or auto (fp8 on CUDA where torch has float8_e4m3fn, else bf16)",
        source="workloads.md, DSA: FP8 e4m3 + one fp32 scale per 128 -> 132 B/token/layer")

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) for values that are valid alone but impossible together (none here)."""
        return []


@dataclass
class LatentMemory(Memory):
    """One layer's latent cache as raw memory: rows [B, capacity, d_qk], the first ``d_v`` dims the value."""

    latent: torch.Tensor
    length: int
    layer: int
    d_v: int


@dataclass
class IndexerQuery(Query):
    """The new token as DSA sees it.

    Attributes:
        x: Attention input (the RMS-normed hidden state) [B, hidden].
        q_c: Compressed query after its RMSNorm [B, q_lora].
        q: Absorbed MLA query [B, heads, d_qk].
        pos: Position of the new token.
    """

    x: torch.Tensor
    q_c: torch.Tensor
    q: torch.Tensor
    pos: int


@dataclass
class IndexerIndex(Index):
    """One layer's indexer keys and this step's indexer query.

    Attributes:
        keys: Keys [B, capacity, index_dim], fp8 e4m3 or bf16; the first ``n_valid`` are cached tokens.
        scale: fp32 per-token key scales [B, capacity] (fp8 keys), or None.
        q: Indexer query [B, index_heads, index_dim], bf16.
        w: Head weights [B, index_heads], fp32.
        n_valid: Tokens cached, the new one included.
    """

    keys: torch.Tensor
    scale: torch.Tensor | None
    q: torch.Tensor
    w: torch.Tensor
    n_valid: int


@dataclass
class IndexScores(Scores):
    """Index score of every cached token [B, n_valid] (fp32)."""

    scores: torch.Tensor


@dataclass
class TokenSelection(Selection):
    """Selected token positions [B, topk] (int32), -1 padded; order is not significant."""

    tokens: torch.Tensor


class DeepSeekSparseAttention(
        MemoryMethod[LatentMemory, IndexerIndex, IndexerQuery, IndexScores, TokenSelection]):
    """DeepSeek Sparse Attention at decode: the lightning indexer, exact top-k, sparse absorbed MLA.

    Args:
        params: Method parameters.
        kernels: ``optimized`` (fused kernels where available) or ``torch`` (framework-native ops).
        state: Per-case state shared by the placements of a case (the index); a new one is made when None,
            and :meth:`attach` fills it.
    """

    name = "dsa"
    offloadable = frozenset({Step.RELEVANCY, Step.RETRIEVAL})
    Params = DsaParams

    def __init__(self, params: DsaParams, kernels: str = "optimized",
                 state: _IndexState | None = None) -> None:
        self.params = params
        self.kernels = kernels
        self.state = state if state is not None else _IndexState()

    # -- per-case state -------------------------------------------------------------------------------

    def attach(self, model: MlaDecoder, cache: LatentCache) -> None:
        """Empty indexer-key storage for ``cache`` (in the configured format) and the Hadamard rotation."""
        st, s = self.state, model.shape
        b = cache.latent[0].shape[0]
        st.model = model
        st.fp8 = key_format(self.params.index_keys, model.device) == "fp8"
        dtype = _FP8 if st.fp8 else torch.bfloat16
        st.keys = [torch.zeros(b, cache.capacity, s.index_dim, dtype=dtype, device=model.device)
                   for _ in range(s.layers)]
        st.scales = [torch.ones(b, cache.capacity, dtype=torch.float32, device=model.device)
                     if st.fp8 else None for _ in range(s.layers)]
        st.hadamard = hadamard(s.index_dim, model.device)

    def observe_fill(self, layer: int, start: int, x: torch.Tensor) -> None:
        """Prepare Memory over the context: index keys of one fill chunk's attention inputs [B, T, hidden]."""
        rope = self.state.model.rope
        cos, sin = rope.cos_sin(torch.arange(start, start + x.shape[1], device=x.device))
        self._store(layer, start, self._keys(self._indexer(layer), x, cos, sin))

    def fill_done(self, length: int) -> None:
        """Load the FPGA's resident int16 copy of every layer's keys (one fixed-point scale per layer)."""
        st = self.state
        st.keys_q, st.key_scale = [], []
        for layer, keys in enumerate(st.keys):
            amax = max((float(self._dequant(layer, s, min(length, s + _QUANT_CHUNK)).abs().amax())
                        for s in range(0, length, _QUANT_CHUNK)), default=0.0)
            scale = max(amax, 1e-12) / _INT16_MAX
            copy = torch.zeros(keys.shape, dtype=torch.int16, device=keys.device)
            for s in range(0, length, _QUANT_CHUNK):
                e = min(length, s + _QUANT_CHUNK)
                copy[:, s:e] = to_fixed(self._dequant(layer, s, e), scale)
            st.keys_q.append(copy)
            st.key_scale.append(scale)

    def _indexer(self, layer: int) -> Indexer:
        return self.state.model.layers[layer].indexer  # type: ignore[return-value]

    def _rotate(self, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """RoPE (rotate-half) on the first qk_rope dims, then the Hadamard rotation; fp32 [..., index_dim]."""
        r = cos.shape[-1]
        vf = v.float()
        return torch.cat((Rope.rotate(vf[..., :r], cos, sin), vf[..., r:]), dim=-1) @ self.state.hadamard

    def _keys(self, ix: Indexer, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Indexer keys fp32 [B, T, index_dim] of attention inputs x [B, T, hidden]; RoPE tables [T, r]."""
        k = F.linear(x, ix.wk)
        k = F.layer_norm(k, (k.shape[-1],), ix.k_norm, ix.k_norm_bias, eps=1e-6)
        return self._rotate(k, cos, sin)

    def _store(self, layer: int, start: int, k: torch.Tensor) -> None:
        """Write keys fp32 [B, T, D] at positions [start, start + T): fp8 with a per-token scale, or bf16."""
        st = self.state
        end = start + k.shape[1]
        if st.fp8:
            scale = k.abs().amax(dim=-1).clamp_min(1e-12) / _FP8_MAX
            st.keys[layer][:, start:end] = (k / scale[..., None]).to(_FP8)
            st.scales[layer][:, start:end] = scale  # type: ignore[index]
        else:
            st.keys[layer][:, start:end] = k.to(torch.bfloat16)

    def _dequant(self, layer: int, start: int, end: int) -> torch.Tensor:
        """Stored keys at positions [start, end) as fp32 [B, end - start, D]."""
        st = self.state
        k = st.keys[layer][:, start:end].float()
        scale = st.scales[layer]
        return k * scale[:, start:end, None] if scale is not None else k

    # -- the four steps ----------------------------------------------------------------------------------

    def prepare(self, memory: LatentMemory, query: IndexerQuery) -> IndexerIndex:
        """Append the new token's indexer key; project the indexer query and head weights."""
        st, layer = self.state, memory.layer
        ix = self._indexer(layer)
        cos, sin = st.model.rope.at(query.pos)
        self._store(layer, query.pos, self._keys(ix, query.x[:, None], cos, sin))
        heads, dim = ix.weights_proj.shape[0], ix.wk.shape[0]
        q = self._rotate(F.linear(query.q_c, ix.wq).view(query.x.shape[0], heads, dim), cos, sin)
        w = F.linear(query.x, ix.weights_proj).float() * (heads**-0.5 * dim**-0.5)
        return IndexerIndex(st.keys[layer], st.scales[layer], q.to(torch.bfloat16), w, memory.length)

    def relevancy(self, index: IndexerIndex, query: IndexerQuery) -> IndexScores:
        """I[s] = sum_j w_j ReLU(q_j . k_s) with framework ops: the [B, H, L] fp32 logits are materialized."""
        n = index.n_valid
        keys = index.keys[:, :n].to(index.q.dtype)
        logits = bmm_fp32(index.q, keys.transpose(1, 2))
        if index.scale is not None:
            logits = logits * index.scale[:, None, :n]
        return IndexScores((logits.relu() * index.w[:, :, None]).sum(1))

    def retrieve(self, memory: LatentMemory, scores: IndexScores) -> TokenSelection:
        """The top ``topk`` tokens by ``torch.topk`` (over packed keys: the exact tie rule), -1 padded."""
        s = scores.scores
        valid = rows_n_valid(s.shape[1], (s.shape[0],), s.shape[1], s.device)
        tokens, _ = torch_topk(s, valid, self.params.topk)
        return TokenSelection(tokens)

    def relevancy_retrieve(self, memory: LatentMemory, index: IndexerIndex,
                           query: IndexerQuery) -> TokenSelection:
        """Fused index scoring and exact top-k (Triton on CUDA: the logits never reach memory)."""
        tokens, _ = dsa_indexer(index.q, index.w, index.keys, index.scale, index.n_valid, self.params.topk,
                                impl=self.impl)
        return TokenSelection(tokens)

    def apply(self, memory: LatentMemory, selection: TokenSelection, query: IndexerQuery) -> torch.Tensor:
        """Absorbed MLA, every head over the selected latent rows (MQA), [B, heads, d_v]."""
        return token_sparse_decode(query.q, memory.latent, memory.length, selection.tokens, memory.d_v,
                                   scale=DSA_SCALE, impl=self.impl)

    # -- the FPGA side ------------------------------------------------------------------------------------

    def fpga_call(self, memory: LatentMemory, index: IndexerIndex, query: IndexerQuery) -> FpgaCall:
        """Fused indexer + top-k on the FPGA: keys resident (int16), q^I and w in (int16), token ids out."""
        st, k, layer, n = self.state, self.params.topk, memory.layer, memory.length
        b, heads, dim = index.q.shape
        resident = st.keys_q[layer]
        new_key = self._dequant(layer, query.pos, query.pos + 1)[:, 0]
        resident[:, query.pos] = to_fixed(new_key, st.key_scale[layer])
        q16, w16 = fpga_query(index.q, index.w)
        keys = resident[:, :n]

        def reference() -> TokenSelection:
            top = exact_topk(fpga_index_scores(q16, w16, keys), min(k, n)).to(torch.int32)
            return TokenSelection(torch.cat((top, top.new_full((b, k - top.shape[1]), -1)), dim=1))

        def csim() -> TokenSelection:
            from kernels_fpga import csim as fpga_csim

            idx, _ = fpga_csim.dsa_indexer_topk(q16.cpu().numpy(), w16.cpu().numpy(),
                                                keys.contiguous().cpu().numpy(), k)
            return TokenSelection(torch.from_numpy(idx).to(index.q.device))

        return FpgaCall("dsa_indexer_topk",
                        {"rows": b, "n_keys": n, "heads": heads, "dim": dim, "k": k,
                         "new_keys": entries_to_sync(n, 1, len(st.keys_q))},
                        bytes_in=b * heads * (dim + 1) * 2, bytes_out=b * k * 4, bytes_append=b * dim * 2,
                        reference=reference, csim=csim)

    def recall(self, fpga: Selection, gpu: Selection) -> float:
        """Mean over batch rows of |FPGA ∩ GPU| / |GPU| over valid token ids."""
        assert isinstance(fpga, TokenSelection) and isinstance(gpu, TokenSelection)
        return selection_recall(fpga.tokens, gpu.tokens)


class _IndexState:
    """Per-case indexer keys, their FPGA copy and the rotation, shared by every placement of a case."""

    def __init__(self) -> None:
        self.model: Any = None
        self.fp8 = False
        self.keys: list[torch.Tensor] = []
        self.scales: list[torch.Tensor | None] = []
        self.keys_q: list[torch.Tensor] = []
        self.key_scale: list[float] = []
        self.hadamard = torch.empty(0)


def key_format(choice: str, device: torch.device) -> str:
    """``fp8`` or ``bf16`` for an ``index_keys`` choice on ``device`` (auto: fp8 on CUDA if supported)."""
    if choice == "auto":
        return "fp8" if device.type == "cuda" and _FP8 is not None else "bf16"
    if choice == "fp8" and _FP8 is None:
        raise UsageError("index_keys: fp8 needs torch.float8_e4m3fn (torch >= 2.1); use index_keys: bf16")
    return choice


def hadamard(n: int, device: torch.device) -> torch.Tensor:
    """The orthonormal Sylvester-Hadamard matrix [n, n] (fp32, symmetric), n a power of two.

    DeepSeek-V3.2 rotates indexer queries and keys by it before FP8 quantization (it spreads outliers over
    the dims); being orthonormal, it leaves every q . k unchanged.
    """
    h = torch.ones(1, 1, device=device)
    while h.shape[0] < n:
        h = torch.cat((torch.cat((h, h), 1), torch.cat((h, -h), 1)), 0)
    return h / n**0.5


def to_fixed(x: torch.Tensor, scale: float) -> torch.Tensor:
    """int16 fixed point round(x / scale), round half to even, saturating."""
    return torch.round(x.float() / scale).clamp(-32768, 32767).to(torch.int16)


def fpga_query(q: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The FPGA's int16 indexer query [B, H, D] and head weights [B, H].

    Each head's query gets its own scale, folded into its weight (ReLU commutes with a positive scale);
    the weights then share one scale per row, which multiplies every index score of the row alike and so
    leaves the row's ranking unchanged.
    """
    qf = q.float()
    q_scale = qf.abs().amax(dim=-1).clamp_min(1e-30) / _INT16_MAX
    wf = w.float() * q_scale
    w_scale = wf.abs().amax(dim=-1, keepdim=True).clamp_min(1e-30) / _INT16_MAX
    q16 = torch.round(qf / q_scale[..., None]).clamp(-32768, 32767).to(torch.int16)
    return q16, torch.round(wf / w_scale).clamp(-32768, 32767).to(torch.int16)


def fpga_index_scores(q16: torch.Tensor, w16: torch.Tensor, keys16: torch.Tensor) -> torch.Tensor:
    """Exact integer index scores int64 [B, N] of int16 q [B, H, D], w [B, H], keys [B, N, D].

    Float64 products of int16 values summed over D <= 128 stay below 2^53, so the dot products are exact;
    the weighted sum over heads (up to 2^58) runs in int64, as the kernel's accumulators do.
    """
    w = w16.long()[:, :, None]
    q = q16.double()
    parts = []
    for s in range(0, keys16.shape[1], _REFERENCE_CHUNK):
        dots = torch.einsum("bhd,bnd->bhn", q, keys16[:, s : s + _REFERENCE_CHUNK].double()).long()
        parts.append((dots.clamp_min(0) * w).sum(1))
    return torch.cat(parts, dim=1)


class DsaAttention(PipelineAttention):
    """The MLA decoder's attention backend running DSA's steps for one placement, each timed in its section.

    Args:
        method: The method, configured with the placement's GPU kernel flavour.
        placement: Where each step runs.
        fpga: The FPGA device the placement offloads to, if any.
    """

    method: DeepSeekSparseAttention  # type: ignore[assignment]

    def inputs(self, inp: MlaAttentionInput) -> tuple[LatentMemory, IndexerQuery]:  # type: ignore[override]
        """The latent cache and the indexer's query for one layer's decode."""
        return (LatentMemory(inp.cache.latent[inp.layer], inp.cache.length, inp.layer, inp.cache.d_v),
                IndexerQuery(inp.x, inp.q_c, inp.q, inp.pos))


class DsaWorkload(Workload):
    """DeepSeek-V3.2 decode with DSA: ``decode_tokens`` tokens from a synthetically filled context."""

    name = "dsa"
    Params = DsaParams
    offloadable = DeepSeekSparseAttention.offloadable
    kind = "sparse-attention"

    def __init__(self, params: DsaParams, model: MlaDecoder, case: Any, decode_tokens: int,
                 seed: int) -> None:
        super().__init__(params, model, case, decode_tokens, seed)  # type: ignore[arg-type]
        self.cache = model.new_cache(case.batch, case.context + decode_tokens)
        self.method = DeepSeekSparseAttention(params)
        self.method.attach(model, self.cache)
        model.fill_cache(self.cache, case.context, seed=seed + case.context,
                         on_chunk=self.method.observe_fill)
        self.method.fill_done(case.context)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        self.start_tokens = torch.randint(0, model.shape.vocab, (case.batch,), generator=gen).to(model.device)

    @classmethod
    def presets(cls) -> dict[str, Any]:
        """DeepSeek-V3.2's MLA presets (``deepseek-v3.2``, ``deepseek-tiny``)."""
        return MLA_PRESETS

    @classmethod
    def model_shape(cls, config: Any) -> MlaShape:
        """The configured preset, with fewer layers if the suite asks."""
        if config.preset is None:
            raise UsageError(f"method dsa runs DeepSeek-V3.2's MLA model: give model.preset (one of "
                             f"{', '.join(MLA_PRESETS)}), not an inline shape")
        base = MLA_PRESETS[config.preset]
        return base.with_layers(config.layers) if config.layers else base

    @classmethod
    def build_model(cls, config: Any, device: torch.device) -> MlaDecoder:
        """The MLA decoder at the configured shape, with seeded synthetic weights."""
        return MlaDecoder(cls.model_shape(config), DTYPES[config.dtype], device, seed=config.seed)

    @classmethod
    def weight_bytes(cls, config: Any) -> int:
        """Device bytes of the model's weights."""
        return cls.model_shape(config).weight_params() * DTYPES[config.dtype].itemsize

    @classmethod
    def memory_bytes(cls, params: DsaParams, shape: MlaShape, case: Any, decode_tokens: int,
                     dtype_bytes: int) -> dict[str, int]:
        """The latent cache, the indexer keys, their FPGA copy, and the largest transient workspace.

        ``auto`` keys count as bf16 (an upper bound: fp8 is chosen only on CUDA). The workspace is the
        largest of the torch path's materialized logits, the FPGA reference's chunked integer scoring, and
        a fill chunk, doubled for the CUDA-graph pools that keep an iteration's intermediates.
        """
        b, cap, layers = case.batch, case.context + decode_tokens, shape.layers
        d, heads = shape.index_dim, shape.index_heads
        key_bytes = d + 4 if params.index_keys == "fp8" else 2 * d
        torch_path = 3 * b * heads * cap * 4 + b * cap * (2 * d + 4 + 8 + 8)
        chunk = min(cap, _REFERENCE_CHUNK)
        reference = b * chunk * (d * 8 + 4 * heads * 8) + 4 * b * cap * 8
        fill = 2 * b * 2048 * shape.hidden * dtype_bytes + b * min(cap, _QUANT_CHUNK) * d * 8
        return {"kv_cache": b * cap * shape.kv_bytes_per_token(dtype_bytes),
                "index": layers * b * cap * key_bytes,
                "fpga_copy": layers * b * cap * d * 2,
                "method_workspace": 2 * max(torch_path, reference, fill)}

    def bind(self, placement: Placement, fpga: FpgaDevice | None) -> Iteration:
        """Decode with DSA as the attention of every layer, on the placement's devices."""
        attention = DsaAttention(self.method.with_kernels(placement.kernels), placement, fpga)

        def iteration(timeline: Timeline) -> None:
            tok = self.start_tokens
            for _ in range(self.decode_tokens):
                tok = self.model.decode_step(tok, self.cache, attention, timeline)

        return iteration

    def rewind(self) -> None:
        """Back to the filled context; keys past it are rewritten by each step before they are read."""
        self.cache.length = self.case.context
