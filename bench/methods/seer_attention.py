"""SeerAttention-R (arXiv 2506.08889, microsoft/SeerAttention), top-k mode, decode.

The four steps, per layer and KV head (paper.md section 2; workloads.md, SeerAttention-R):

- **Prepare Memory**: the gate key of every complete 64-token block is the max, min and mean of the
  block's pre-RoPE keys (3d) through a per-KV-head linear map to 128 dims, then RoPE at the block's first
  position; a block's key is made when its last token is generated (incremental). The gate query is the
  GQA group's pre-RoPE queries (g*d) through a per-KV-head linear map to 128, then RoPE.
- **Compute Relevancy**: gate query . block keys (softmax skipped in budget mode).
- **Retrieval**: the top ``token_budget / block_size`` blocks among the complete blocks before the
  current one (-1 padded when there are fewer).
- **Apply to Inference**: block-sparse decode attention over the selected blocks plus the current block.

The hetero placement runs Relevancy + Retrieval on the FPGA as one fused kernel (paper Fig. 6): the gate
keys stay resident there (each new block key is appended), only the gate query goes in and the indices
come back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from bench.devices.fpga import FpgaCall
from bench.methods.attention import AttentionQuery, KVMemory, SparseAttentionMethod, SparseAttentionWorkload
from bench.model.decoder import Decoder, KVCache, Rope
from bench.model.presets import ModelShape
from bench.pipeline import Index, Scores, Selection, Step
from bench.schema import param
from kernels_fpga.model import entries_to_sync
from kernels_gpu.relevancy_topk import relevancy_topk
from kernels_gpu.sparse_decode import block_sparse_decode


@dataclass(frozen=True)
class SeerAttentionParams:
    """Parameters of SeerAttention-R; defaults are the reference implementation's."""

    block_size: int = param(64, help="tokens per block of the gate", min=8,
                            source="microsoft/SeerAttention: seerattn_gate_block_size = 64")
    token_budget: int = param(4096, help="tokens attended per KV head besides the current block (top-k mode)",
                              min=1, source="microsoft/SeerAttention: seerattn_token_budget = 4096")
    gate_dim: int = param(128, help="hidden size of the gate's query and key projections", min=8,
                          source="microsoft/SeerAttention: seerattn_gate_hidden_size = 128")
    mode: Literal["topk"] = param("topk", help="selection mode (top-k within the token budget)",
                                  source="SeerAttention-R budget mode")

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) for values that are valid alone but impossible together."""
        if self.token_budget % self.block_size:
            return [("token_budget", f"must be a multiple of block_size ({self.block_size}), "
                                     f"got {self.token_budget}")]
        return []

    @property
    def k_blocks(self) -> int:
        """Blocks selected per KV head."""
        return self.token_budget // self.block_size


@dataclass
class GateIndex(Index):
    """Gate keys of one layer [B, H_kv, capacity_blocks, gate_dim], and the step's gate query.

    Attributes:
        keys: Block keys; the first ``n_candidates`` are the blocks selection may choose from.
        n_candidates: Complete blocks before the current block.
        query_key: The gate query [B, H_kv, gate_dim] (Prepare projects the input as well as the memory).
        new_block: Index of the block whose key this step created, if any (it is appended on the FPGA).
    """

    keys: torch.Tensor
    n_candidates: int
    query_key: torch.Tensor
    new_block: int | None


@dataclass
class BlockScores(Scores):
    """Relevancy of each candidate block [B, H_kv, n_candidates] (float32)."""

    scores: torch.Tensor


@dataclass
class BlockSelection(Selection):
    """Selected block ids [B, H_kv, k_blocks], -1 padded; order is not significant."""

    blocks: torch.Tensor


class SeerAttentionR(SparseAttentionMethod):
    """SeerAttention-R in top-k (token budget) mode.

    Args:
        params: Method parameters.
        kernels: ``optimized`` (fused kernels where available) or ``torch`` (framework-native ops).
        state: Per-case state shared by the placements of a case (gate weights and keys); a new one is
            made when None, and :meth:`attach` fills it.
    """

    name = "seer-attention-r"
    offloadable = frozenset({Step.RELEVANCY, Step.RETRIEVAL})
    Params = SeerAttentionParams

    def __init__(self, params: SeerAttentionParams, kernels: str = "optimized",
                 state: _GateState | None = None) -> None:
        self.params = params
        self.kernels = kernels
        self.state = state if state is not None else _GateState()

    @classmethod
    def memory_bytes(cls, params: SeerAttentionParams, shape: ModelShape, batch: int, capacity: int,
                     dtype_bytes: int) -> int:
        """Gate keys (and their int16 FPGA copy), the partial block, and the torch path's gathered KV."""
        blocks = -(-capacity // params.block_size)
        keys = shape.layers * batch * shape.kv_heads * blocks * params.gate_dim * (dtype_bytes + 2)
        pending = 2 * shape.layers * batch * shape.kv_heads * params.block_size * shape.head_dim * dtype_bytes
        gathered = 2 * batch * shape.kv_heads * (params.token_budget + params.block_size) * shape.head_dim * dtype_bytes
        scores = batch * shape.kv_heads * blocks * 8
        return keys + pending + gathered + scores

    # -- per-case state -------------------------------------------------------------------------------

    def attach(self, model: Decoder, cache: KVCache, seed: int) -> None:
        """Make seeded gate weights and empty gate-key storage for ``cache``."""
        s, p, st = model.shape, self.params, self.state
        b = cache.k[0].shape[0]
        gen = torch.Generator(device=model.device).manual_seed(seed + 7919)
        n_blocks = -(-cache.capacity // p.block_size)

        def w(*size: int) -> torch.Tensor:
            x = torch.randn(size, generator=gen, device=model.device, dtype=torch.float32) / size[-2] ** 0.5
            return x.to(model.dtype)

        st.wq = [w(s.kv_heads, s.group * s.head_dim, p.gate_dim) for _ in range(s.layers)]
        st.wk = [w(s.kv_heads, 3 * s.head_dim, p.gate_dim) for _ in range(s.layers)]
        st.keys = [torch.zeros(b, s.kv_heads, n_blocks, p.gate_dim, dtype=model.dtype, device=model.device)
                   for _ in range(s.layers)]
        st.pending = [torch.zeros(b, s.kv_heads, p.block_size, s.head_dim, dtype=model.dtype, device=model.device)
                      for _ in range(s.layers)]
        st.rope = Rope(p.gate_dim, s.rope_theta, model.device)
        st.rope.reserve(cache.capacity)
        st.keys_q, st.key_scale, st.pending_at_fill = [], [], []

    def observe_fill(self, layer: int, start: int, k_pre: torch.Tensor) -> None:
        """Build the gate keys of the complete blocks in a fill chunk; keep a trailing partial block."""
        bs, st = self.params.block_size, self.state
        if start % bs:
            raise ValueError(f"fill chunks must start on a block boundary ({bs}); got {start}")
        t = k_pre.shape[2]
        full = t // bs
        if full:
            blocks = k_pre[:, :, : full * bs].unflatten(2, (full, bs))
            first = start // bs
            st.keys[layer][:, :, first : first + full] = self._block_keys(layer, blocks, first)
        rest = t - full * bs
        st.pending[layer][:, :, :rest] = k_pre[:, :, full * bs :]

    def fill_done(self, length: int) -> None:
        """Snapshot the partial block and load the FPGA's int16 copy of the gate keys (once per case)."""
        st = self.state
        st.pending_at_fill = [p.clone() for p in st.pending]
        st.keys_q = [self._quantize_keys(k, length) for k in st.keys]
        st.blocks_at_fill = length // self.params.block_size
        st.board_token = object()  # new keys: a board loads them again (FpgaBoard.key_set_source)

    def rewind(self, length: int) -> None:
        """Restore the partial block's keys as the fill left them (decode steps overwrite its slots)."""
        for p, p0 in zip(self.state.pending, self.state.pending_at_fill, strict=True):
            p.copy_(p0)

    def _block_keys(self, layer: int, blocks: torch.Tensor, first: int) -> torch.Tensor:
        """Gate keys [B, H_kv, n, gate_dim] of pre-RoPE key blocks [B, H_kv, n, block, D]."""
        st = self.state
        pooled = torch.cat((blocks.amax(dim=3), blocks.amin(dim=3), blocks.mean(dim=3)), dim=-1)
        keys = torch.einsum("bhnx,hxo->bhno", pooled, st.wk[layer])
        positions = (first + torch.arange(keys.shape[2], device=keys.device)) * self.params.block_size
        cos, sin = st.rope.cos_sin(positions)
        return Rope.rotate(keys, cos, sin)

    # -- the four steps ----------------------------------------------------------------------------------

    def prepare(self, memory: KVMemory, query: AttentionQuery) -> GateIndex:
        """Project the gate query; append the new key to the partial block and close the block if full."""
        st, bs = self.state, self.params.block_size
        layer, pos = memory.layer, memory.length - 1
        b, hkv = query.k_pre.shape[:2]
        qg = query.q_pre.reshape(b, hkv, -1)
        cos, sin = st.rope.at(pos)
        q_key = Rope.rotate(torch.einsum("bhx,hxo->bho", qg, st.wq[layer]).unsqueeze(2), cos, sin).squeeze(2)
        slot = pos % bs
        st.pending[layer][:, :, slot] = query.k_pre
        new_block = None
        if slot == bs - 1:
            new_block = pos // bs
            st.keys[layer][:, :, new_block : new_block + 1] = self._block_keys(
                layer, st.pending[layer].unsqueeze(2), new_block)
        return GateIndex(st.keys[layer], pos // bs, q_key, new_block)

    def relevancy(self, index: GateIndex, query: AttentionQuery) -> BlockScores:
        """Gate query . candidate block keys, [B, H_kv, n_candidates] (bf16 matmul, as framework ops do)."""
        keys = index.keys[:, :, : index.n_candidates]
        return BlockScores(torch.matmul(keys, index.query_key.unsqueeze(-1)).squeeze(-1).float())

    def retrieve(self, memory: KVMemory, scores: BlockScores) -> BlockSelection:
        """Top ``token_budget / block_size`` blocks by score with torch.topk, -1 padded."""
        k = self.params.k_blocks
        s = scores.scores
        take = min(k, s.shape[-1])
        idx = torch.topk(s, take, dim=-1, sorted=False).indices if take else s.new_empty(*s.shape[:2], 0,
                                                                                          dtype=torch.long)
        return BlockSelection(_pad(idx, k))

    def relevancy_retrieve(self, memory: KVMemory, index: GateIndex, query: AttentionQuery) -> BlockSelection:
        """Fused gate scoring + exact top-k (kernels_gpu.relevancy_topk: Triton on CUDA, torch elsewhere)."""
        k, n = self.params.k_blocks, index.n_candidates
        if n == 0:
            return BlockSelection(index.query_key.new_full((*index.query_key.shape[:2], k), -1, dtype=torch.int32))
        idx, _ = relevancy_topk(index.query_key, index.keys, n, k, impl=self.impl)
        return BlockSelection(idx)

    def apply(self, memory: KVMemory, selection: BlockSelection, query: AttentionQuery) -> torch.Tensor:
        """Block-sparse decode attention over the selected blocks plus the current block."""
        return block_sparse_decode(query.q, memory.k, memory.v, memory.length, selection.blocks,
                                   self.params.block_size, impl=self.impl)

    # -- the FPGA side ------------------------------------------------------------------------------------

    def fpga_call(self, memory: KVMemory, index: GateIndex, query: AttentionQuery) -> FpgaCall:
        """Fused relevancy + top-k on the FPGA: keys resident (int16), gate query in, block ids out."""
        st, k = self.state, self.params.k_blocks
        b, hkv, d = index.query_key.shape
        rows = b * hkv
        keys_q = st.keys_q[memory.layer]
        if index.new_block is not None:
            keys_q[:, :, index.new_block] = _to_int16(index.keys[:, :, index.new_block], st.key_scale[memory.layer])
        n = index.n_candidates
        q_q = _to_int16(index.query_key, None)
        empty = BlockSelection(index.query_key.new_full((b, hkv, k), -1, dtype=torch.long))

        def reference() -> BlockSelection:
            if n == 0:
                return empty
            scores = torch.matmul(keys_q[:, :, :n].double(), q_q.double().unsqueeze(-1)).squeeze(-1)
            return BlockSelection(_pad(exact_topk(scores, min(k, n)), k))

        def csim() -> BlockSelection:
            from kernels_fpga import csim as fpga_csim

            if n == 0:
                return empty
            qn = q_q.reshape(rows, d).contiguous().cpu().numpy()
            kn = keys_q[:, :, :n].reshape(rows, n, d).contiguous().cpu().numpy()
            idx, _ = fpga_csim.relevancy_topk(qn, kn, min(k, n))
            blocks = torch.from_numpy(idx).to(index.keys.device).long().view(b, hkv, -1)
            return BlockSelection(_pad(blocks[..., : min(k, n)], k))

        def hardware(board: Any) -> BlockSelection:
            self.sync_board_keys(board, memory.layer, keys_q, index.new_block)
            if n == 0:
                return empty
            idx, _ = board.run_relevancy_topk(q_q.reshape(rows, d).contiguous().cpu().numpy(), n, min(k, n),
                                              key_set=memory.layer)
            blocks = torch.from_numpy(idx).to(index.keys.device).long().view(b, hkv, -1)
            return BlockSelection(_pad(blocks, k))

        appended = int(index.new_block is not None)
        return FpgaCall("relevancy_topk", {"rows": rows, "n_keys": n, "dim": d, "k": k,
                                           "new_keys": entries_to_sync(n, appended, len(st.keys_q))},
                        bytes_in=rows * d * 2, bytes_out=rows * k * 4,
                        bytes_append=rows * d * 2 if index.new_block is not None else 0,
                        reference=reference, csim=csim, hardware=hardware)

    def sync_board_keys(self, board: Any, layer: int, keys_q: torch.Tensor, new_block: int | None) -> None:
        """Keep a real board's key set ``layer`` equal to that layer's int16 gate keys ``keys_q`` [B, H_kv, blocks, D].

        The first call per layer loads the keys the fill left into the layer's key set; later calls append only
        the block a decode step closed, after truncating to it, since a replayed iteration closes the same
        block again.
        """
        st = self.state
        b, hkv, _, d = keys_q.shape
        rows = b * hkv
        if board.key_set_source(layer) is not st.board_token:
            filled = st.blocks_at_fill
            board.load_keys(rows, keys_q[:, :, :filled].reshape(rows, filled, d).contiguous().cpu().numpy(),
                            capacity=keys_q.shape[2], key_set=layer, source=st.board_token)
        if new_block is not None:
            board.truncate_keys(new_block, key_set=layer)
            new = keys_q[:, :, new_block].reshape(rows, d).cpu().numpy()
            for r in range(rows):
                board.append_key(r, new[r], key_set=layer)

    def recall(self, fpga: Selection, gpu: Selection) -> float:
        """Mean over (batch, head) rows of |FPGA ∩ GPU| / |GPU| over valid block ids."""
        assert isinstance(fpga, BlockSelection) and isinstance(gpu, BlockSelection)
        return selection_recall(fpga.blocks, gpu.blocks)

    def _quantize_keys(self, keys: torch.Tensor, length: int) -> torch.Tensor:
        """The FPGA-resident int16 copy of one layer's gate keys (one scale per layer, fixed at fill time)."""
        n = max(length // self.params.block_size, 1)
        scale = float(keys[:, :, :n].abs().amax().float().clamp_min(1e-12)) / 32767.0
        self.state.key_scale.append(scale)
        return _to_int16(keys, scale)


class SeerAttentionWorkload(SparseAttentionWorkload):
    """SeerAttention-R decode, as the runner measures it."""

    method_cls = SeerAttentionR


class _GateState:
    """Per-case gate weights and keys, shared by every placement of a case."""

    def __init__(self) -> None:
        self.wq: list[torch.Tensor] = []
        self.wk: list[torch.Tensor] = []
        self.keys: list[torch.Tensor] = []
        self.pending: list[torch.Tensor] = []
        self.pending_at_fill: list[torch.Tensor] = []
        self.keys_q: list[torch.Tensor] = []
        self.key_scale: list[float] = []
        self.rope = Rope(2, 1.0, torch.device("cpu"))
        self.blocks_at_fill = 0
        self.board_token: object = object()


def _pad(idx: torch.Tensor, k: int) -> torch.Tensor:
    """Pad the last dimension of ``idx`` to ``k`` entries with -1."""
    if idx.shape[-1] == k:
        return idx
    pad = idx.new_full((*idx.shape[:-1], k - idx.shape[-1]), -1)
    return torch.cat((idx, pad), dim=-1)


def _to_int16(x: torch.Tensor, scale: float | None) -> torch.Tensor:
    """Symmetric int16 quantization (round half to even, saturating); per-row scale when ``scale`` is None.

    Only the order of scores matters for top-k, so a per-row query scale is exact for ranking.
    """
    xf = x.float()
    if scale is None:
        s = xf.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / 32767.0
    else:
        s = torch.tensor(scale, device=x.device)
    return torch.round(xf / s).clamp(-32768, 32767).to(torch.int16)


def exact_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest scores along the last dim, ties to the lower index (a stable descending sort)."""
    if k == 0:
        return scores.new_empty(*scores.shape[:-1], 0, dtype=torch.long)
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]


def selection_recall(fpga: torch.Tensor, gpu: torch.Tensor) -> float:
    """Mean over rows of the fraction of the GPU's valid ids (>= 0) that the FPGA also selected."""
    f = fpga.reshape(-1, fpga.shape[-1]).long()
    g = gpu.reshape(-1, gpu.shape[-1]).long()
    valid = g >= 0
    hit = (g.unsqueeze(-1) == f.unsqueeze(-2)).any(-1) & valid
    per_row = hit.sum(-1).float() / valid.sum(-1).clamp_min(1).float()
    rows = valid.any(-1)
    return float(per_row[rows].mean()) if bool(rows.any()) else 1.0
