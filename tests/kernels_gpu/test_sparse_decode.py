"""Block-sparse and token-sparse decode attention: Triton (interpreter on CPU) and torch paths vs float64."""

from __future__ import annotations

import pytest
import torch

from bench.errors import DeviceUnavailableError, UsageError
from bench.model.decoder import dense_decode_attention
from kernels_gpu import sparse_decode as sd

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# bf16 keeps 8 mantissa bits and the kernel rounds P to bf16 before P@V (as flash attention does).
TOL = {torch.bfloat16: sd.BF16_REL_TOL, torch.float32: 1e-5}


def block_inputs(
    seed: int,
    batch: int,
    heads_q: int,
    heads_kv: int,
    dim: int,
    cap: int,
    dtype: torch.dtype = torch.bfloat16,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    q = torch.randn(batch, heads_q, dim, generator=gen, device=DEVICE).to(dtype)
    k = torch.randn(batch, heads_kv, cap, dim, generator=gen, device=DEVICE).to(dtype)
    v = torch.randn(batch, heads_kv, cap, dim, generator=gen, device=DEVICE).to(dtype)
    return q, k, v


def ids(rows: list[list[list[int]]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int32, device=DEVICE)


def run(impl: str, *args: object, **kwargs: object) -> torch.Tensor:
    fn = sd.triton_block_sparse_decode if impl == "triton" else sd.torch_block_sparse_decode
    return fn(*args, **kwargs)


@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("group", [1, 4])
@pytest.mark.parametrize("seq_len", [37, 128, 203])  # < one block, a multiple of 64, a partial last block
def test_all_blocks_selected_equals_dense(impl: str, group: int, seq_len: int) -> None:
    q, k, v = block_inputs(seq_len * 10 + group, 2, 2 * group, 2, 40, 211)  # odd head dim and cache
    cur = (seq_len - 1) // 64
    gen = torch.Generator().manual_seed(seq_len)
    every = torch.stack([torch.randperm(cur, generator=gen) for _ in range(4)]).view(2, 2, cur)
    block_idx = torch.cat([every, torch.full((2, 2, 2), -1)], dim=-1).int().to(DEVICE)  # plus padding
    out = run(impl, q, k, v, seq_len, block_idx)
    dense = dense_decode_attention(q.double(), k.double(), v.double(), seq_len)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert sd.relative_error(out, dense) < TOL[torch.bfloat16]


@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_random_selection_matches_reference(impl: str, dtype: torch.dtype) -> None:
    q, k, v = block_inputs(7, 3, 6, 2, 32, 700, dtype)
    seq_len, block_size = 613, 32  # current block 19, 5 of its 32 positions filled
    gen = torch.Generator().manual_seed(11)
    block_idx = torch.randint(-1, 23, (3, 2, 9), generator=gen, dtype=torch.int32).to(DEVICE)
    out = run(impl, q, k, v, seq_len, block_idx, block_size, 0.3)
    ref = sd.reference_block_sparse_decode(q, k, v, seq_len, block_idx, block_size, 0.3)
    assert sd.relative_error(out, ref) < TOL[dtype]


def test_reference_attends_to_exactly_the_selected_and_current_blocks() -> None:
    # An independent check of the reference itself: dense attention over the hand-listed positions.
    q, k, v = block_inputs(3, 1, 2, 1, 16, 100)
    seq_len = 90  # current block 5 of 16 tokens holds positions 80..89
    out = sd.reference_block_sparse_decode(q, k, v, seq_len, ids([[[3, -1, 0, 3, 7]]]), 16)
    keep = [*range(48, 64), *range(0, 16), *range(80, 90)]
    expect = dense_decode_attention(q.double(), k[:, :, keep].double(), v[:, :, keep].double(), len(keep))
    assert torch.allclose(out, expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_padding_only_attends_to_the_current_block(impl: str) -> None:
    q, k, v = block_inputs(5, 2, 4, 2, 32, 300)
    seq_len = 150  # current block 2 holds positions 128..149
    out = run(impl, q, k, v, seq_len, torch.full((2, 2, 3), -1, dtype=torch.int32, device=DEVICE))
    expect = dense_decode_attention(q.double(), k[:, :, 128:].double(), v[:, :, 128:].double(), seq_len - 128)
    assert sd.relative_error(out, expect) < TOL[torch.bfloat16]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """Float64 dense attention over the listed cache positions (repeats count as often as listed)."""
    return dense_decode_attention(
        q.double(), k[:, :, positions].double(), v[:, :, positions].double(), len(positions)
    )


@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_current_block_and_later_ids_are_not_counted_twice(impl: str) -> None:
    q, k, v = block_inputs(9, 1, 4, 1, 32, 400)
    seq_len = 300  # current block 4 holds positions 256..299
    expect = attend(q, k, v, [*range(0, 64), *range(128, 192), *range(256, 300)])
    doubled = attend(q, k, v, [*range(0, 64), *range(128, 192), *range(256, 300), *range(256, 300)])
    assert sd.relative_error(doubled, expect) > 10 * TOL[torch.bfloat16]  # what a double count would give
    for block_idx in ([[[0, 2, -1]]], [[[4, 0, 2]]], [[[0, 5, 2, 4, 9]]]):  # plain, current named, later ids
        out = run(impl, q, k, v, seq_len, ids(block_idx))
        assert sd.relative_error(out, expect) < TOL[torch.bfloat16]


@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_repeated_ids_count_once(impl: str) -> None:
    q, k, v = block_inputs(13, 1, 2, 1, 16, 260)
    seq_len = 250  # current block 3 holds positions 192..249
    expect = attend(q, k, v, [*range(64, 128), *range(0, 64), *range(192, 250)])
    doubled = attend(q, k, v, [*range(64, 128), *range(64, 128), *range(0, 64), *range(192, 250)])
    assert sd.relative_error(doubled, expect) > 10 * TOL[torch.bfloat16]
    out = run(impl, q, k, v, seq_len, ids([[[1, 0, 1, -1, 1, 0]]]))
    assert sd.relative_error(out, expect) < TOL[torch.bfloat16]


@pytest.mark.parametrize("num_splits", [1, 2, 5, 12])  # 12 > n_sel + 1: some splits get no block
def test_split_count_does_not_change_the_result(num_splits: int) -> None:
    q, k, v = block_inputs(21, 1, 8, 2, 64, 520)
    seq_len = 515
    block_idx = ids([[[6, 0, 3, 5, -1, 2], [1, 7, 4, 6, 3, 0]]])
    out = sd.triton_block_sparse_decode(q, k, v, seq_len, block_idx, num_splits=num_splits)
    ref = sd.reference_block_sparse_decode(q, k, v, seq_len, block_idx)
    assert sd.relative_error(out, ref) < TOL[torch.bfloat16]


def test_block_sparse_output_is_fully_written_into_a_poisoned_buffer() -> None:
    q, k, v = block_inputs(17, 2, 6, 3, 24, 200)  # group 2, odd head dim
    seq_len = 181
    block_idx = ids([[[0, 1], [2, -1], [1, 1]], [[-1, -1], [0, 2], [2, 0]]])
    out = torch.full_like(q, float("nan"))
    res = sd.triton_block_sparse_decode(q, k, v, seq_len, block_idx, out=out, num_splits=3)
    assert res is out and not out.isnan().any()
    ref = sd.reference_block_sparse_decode(q, k, v, seq_len, block_idx)
    assert sd.relative_error(out, ref) < TOL[torch.bfloat16]


def test_non_contiguous_cache_views_are_read_through_strides() -> None:
    q, k, v = block_inputs(23, 1, 4, 2, 32, 300)
    k_t = k.transpose(1, 2).contiguous().transpose(1, 2)  # [B, L, H, D] storage, [B, H, L, D] view
    block_idx = ids([[[0, 3, 1], [2, 1, -1]]])
    out = sd.triton_block_sparse_decode(q, k_t, v, 280, block_idx)
    ref = sd.reference_block_sparse_decode(q, k, v, 280, block_idx)
    assert sd.relative_error(out, ref) < TOL[torch.bfloat16]


def test_gather_blocks_returns_rows_and_positions() -> None:
    _, k, v = block_inputs(29, 1, 2, 2, 8, 70)  # 70 is not a multiple of the block size
    got = sd.gather_blocks(k, v, ids([[[2, -1], [4, 0]]]), 16, 70)
    assert got.k.shape == (1, 2, 32, 8)
    assert got.positions[0, 0].tolist() == [*range(32, 48), *[-1] * 16]
    assert got.positions[0, 1].tolist() == [*range(64, 70), *[-1] * 10, *range(0, 16)]
    assert torch.equal(got.k[0, 0, :16], k[0, 0, 32:48]) and torch.equal(got.v[0, 1, 16:], v[0, 1, :16])


@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_block_sparse_decode_ignores_uninitialized_cache_past_the_length(impl: str) -> None:
    # The cache past seq_len is torch.empty in the decoder; NaN there must not leak through a zero weight.
    q, k, v = block_inputs(31, 2, 4, 2, 16, 200, torch.float32)
    k[:, :, 150:], v[:, :, 150:] = float("nan"), float("inf")
    block_idx = ids([[[0, 2], [1, -1]], [[2, 0], [0, 1]]])  # block 2 holds the current position 149
    out = run(impl, q, k, v, 150, block_idx, 64)
    assert torch.isfinite(out).all()
    ref = sd.reference_block_sparse_decode(q, k, v, 150, block_idx, 64)
    assert sd.relative_error(out, ref) < TOL[torch.float32]


# ---------------------------------------------------------------------------------------------------------
# Token-sparse
# ---------------------------------------------------------------------------------------------------------


def token_inputs(
    seed: int, batch: int, heads: int, d_qk: int, cap: int, dtype: torch.dtype = torch.bfloat16
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    q = torch.randn(batch, heads, d_qk, generator=gen, device=DEVICE).to(dtype)
    kv = torch.randn(batch, cap, d_qk, generator=gen, device=DEVICE).to(dtype)
    return q, kv


def run_tokens(impl: str, *args: object, **kwargs: object) -> torch.Tensor:
    fn = sd.triton_token_sparse_decode if impl == "triton" else sd.torch_token_sparse_decode
    return fn(*args, **kwargs)


@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize(
    ("heads", "d_qk", "d_v", "dtype"),
    [(20, 72, 64, torch.bfloat16), (5, 40, 40, torch.bfloat16), (3, 48, 24, torch.float32)],
)
def test_token_sparse_matches_reference(
    impl: str, heads: int, d_qk: int, d_v: int, dtype: torch.dtype
) -> None:
    q, kv = token_inputs(heads, 2, heads, d_qk, 150, dtype)
    seq_len = 131
    gen = torch.Generator().manual_seed(heads)
    token_idx = torch.randint(-1, 150, (2, 45), generator=gen, dtype=torch.int32).to(
        DEVICE
    )  # pads, >= seq_len
    kwargs = {"num_splits": 2} if impl == "triton" else {}
    out = run_tokens(impl, q, kv, seq_len, token_idx, d_v, 0.2, **kwargs)
    ref = sd.reference_token_sparse_decode(q, kv, seq_len, token_idx, d_v, 0.2)
    assert out.shape == (2, heads, d_v) and out.dtype == dtype
    assert sd.relative_error(out, ref) < TOL[dtype]


def test_token_reference_weighs_a_repeated_position_per_listing() -> None:
    q, kv = token_inputs(31, 1, 2, 16, 10, torch.float32)
    out = sd.reference_token_sparse_decode(q, kv, 10, torch.tensor([[4, 4, 7]]), 8)
    s = torch.einsum("hd,nd->hn", q[0].double(), kv[0, [4, 7]].double()) * 16**-0.5
    w = torch.softmax(s + torch.tensor([2.0, 1.0], dtype=torch.float64).log(), dim=-1)  # 4 counted twice
    assert torch.allclose(out[0], w @ kv[0, [4, 7], :8].double(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_token_sparse_repeats_and_empty_rows(impl: str) -> None:
    q, kv = token_inputs(37, 2, 4, 32, 64)
    token_idx = ids([[9, 9, 3, -1, 60], [-1, 63, 62, -1, -1]])  # row 1: nothing below seq_len 50
    out = run_tokens(impl, q, kv, 50, token_idx, 16)
    ref = sd.reference_token_sparse_decode(q, kv, 50, token_idx, 16)
    assert sd.relative_error(out[0], ref[0]) < TOL[torch.bfloat16]
    assert torch.equal(out[1], torch.zeros_like(out[1]))


def test_token_sparse_output_is_fully_written_into_a_poisoned_buffer() -> None:
    q, kv = token_inputs(41, 1, 17, 80, 90)  # 17 heads: a second, mostly empty head block
    token_idx = ids([list(range(0, 90, 3))])
    out = torch.full((1, 17, 64), float("nan"), dtype=q.dtype, device=DEVICE)
    sd.triton_token_sparse_decode(q, kv, 88, token_idx, 64, out=out, num_splits=4, block_n=16)
    assert not out.isnan().any()
    assert sd.relative_error(out, sd.reference_token_sparse_decode(q, kv, 88, token_idx, 64)) < TOL[q.dtype]


# ---------------------------------------------------------------------------------------------------------
# Dispatch and argument errors
# ---------------------------------------------------------------------------------------------------------


def test_auto_dispatch_picks_torch_on_cpu_and_triton_on_cuda() -> None:
    q, k, v = block_inputs(43, 1, 2, 1, 16, 80)
    block_idx = ids([[[0]]])
    auto = sd.block_sparse_decode(q, k, v, 70, block_idx, 16)
    expect = (sd.triton_block_sparse_decode if DEVICE.type == "cuda" else sd.torch_block_sparse_decode)(
        q, k, v, 70, block_idx, 16
    )
    assert torch.equal(auto, expect)
    qt, kv = token_inputs(43, 1, 2, 16, 20)
    token_idx = ids([[1, 5]])
    expect = sd.triton_token_sparse_decode if DEVICE.type == "cuda" else sd.torch_token_sparse_decode
    assert torch.equal(sd.token_sparse_decode(qt, kv, 20, token_idx, 8), expect(qt, kv, 20, token_idx, 8))


def test_unknown_impl_is_a_usage_error() -> None:
    q, k, v = block_inputs(47, 1, 2, 1, 16, 80)
    with pytest.raises(UsageError, match="impl='cuda'"):
        sd.block_sparse_decode(q, k, v, 70, ids([[[0]]]), 16, impl="cuda")


def test_triton_on_cpu_without_the_interpreter_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sd, "_interpreting", lambda: False)
    q, kv = token_inputs(53, 1, 2, 16, 20)
    q, kv = q.cpu(), kv.cpu()
    with pytest.raises(DeviceUnavailableError, match="TRITON_INTERPRET=1"):
        sd.token_sparse_decode(q, kv, 20, torch.tensor([[1]], dtype=torch.int32), 8, impl="triton")


@pytest.mark.parametrize(
    ("heads_q", "seq_len", "idx_shape", "match"),
    [
        (3, 50, (1, 2, 1), "multiple of H_kv"),
        (4, 81, (1, 2, 1), "seq_len=81"),
        (4, 50, (1, 3, 1), "block_idx"),
    ],
)
def test_block_sparse_argument_errors(
    heads_q: int, seq_len: int, idx_shape: tuple[int, ...], match: str
) -> None:
    q, k, v = block_inputs(59, 1, heads_q, 2, 16, 80)
    with pytest.raises(UsageError, match=match):
        sd.block_sparse_decode(q, k, v, seq_len, torch.zeros(idx_shape, dtype=torch.int32, device=DEVICE), 16)


def test_token_sparse_argument_errors() -> None:
    q, kv = token_inputs(61, 1, 2, 16, 20)
    with pytest.raises(UsageError, match="d_v=17"):
        sd.token_sparse_decode(q, kv, 20, ids([[1]]), 17)
    with pytest.raises(UsageError, match="block_h=8"):
        sd.triton_token_sparse_decode(q, kv, 20, ids([[1]]), 8, block_h=8)


# ---------------------------------------------------------------------------------------------------------
# Benchmark cases
# ---------------------------------------------------------------------------------------------------------


def test_bench_cases_cover_both_families_with_consistent_bytes() -> None:
    cases = sd.bench_cases()
    assert {c.kernel for c in cases} == {"block_sparse_decode", "token_sparse_decode"}
    first = cases[0]  # B=8, 32/8 heads, d=128, budget 4096: 63 selected blocks + 43 current-block tokens
    assert first.bytes_moved == 2 * 8 * 8 * (63 * 64 + 43) * 128 * 2 + 2 * 8 * 32 * 128 * 2 + 8 * 8 * 63 * 4
    batch = {c.label: int(c.label.split()[0].removeprefix("B=")) for c in cases}
    assert all(c.targets == ({"bw_fraction": 0.6} if batch[c.label] >= 8 else {}) for c in cases)


def test_case_inputs_are_fresh_per_call_and_pass_the_check() -> None:
    case = sd.block_sparse_case(2, 4, 2, 32, 300, 128, block_size=32, seed=5)
    a, b = case.make_inputs(DEVICE), case.make_inputs(DEVICE)
    assert not torch.equal(a["k_cache"], b["k_cache"])
    assert a["block_idx"].shape == (2, 2, 3) and (a["block_idx"].sort(-1).values.diff(dim=-1) > 0).all()
    assert case.check is not None
    case.check(case.optimized(**a), case.torch_path(**a))
    with pytest.raises(AssertionError, match="relative error"):
        case.check(case.optimized(**a), case.torch_path(**b))


# ---------------------------------------------------------------------------------------------------------
# GPU, realistic sizes
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize(("batch", "context", "budget"), [(8, 32768, 4096), (1, 131072, 2048)])
def test_gpu_block_sparse_realistic(batch: int, context: int, budget: int) -> None:
    inputs = sd.block_sparse_case(batch, 32, 8, 128, context, budget, seed=batch).make_inputs(DEVICE)
    out = torch.full_like(inputs["q"], float("nan"))
    sd.triton_block_sparse_decode(**inputs, out=out)
    ref = sd.reference_block_sparse_decode(**inputs)
    assert not out.isnan().any() and sd.relative_error(out, ref) < TOL[torch.bfloat16]
    assert sd.relative_error(sd.torch_block_sparse_decode(**inputs), ref) < TOL[torch.bfloat16]


@pytest.mark.gpu
def test_gpu_block_sparse_all_blocks_equals_dense_sdpa() -> None:
    q, k, v = block_inputs(67, 4, 32, 8, 128, 8192)
    seq_len = 8000
    cur = (seq_len - 1) // 64
    block_idx = torch.arange(cur, dtype=torch.int32, device=DEVICE).flip(0).expand(4, 8, cur).contiguous()
    out = sd.triton_block_sparse_decode(q, k, v, seq_len, block_idx)
    dense = dense_decode_attention(q.double(), k.double(), v.double(), seq_len)
    assert sd.relative_error(out, dense) < TOL[torch.bfloat16]


@pytest.mark.gpu
def test_gpu_token_sparse_realistic() -> None:
    inputs = sd.token_sparse_case(4, 128, 576, 512, 32768, 2048, seed=3).make_inputs(DEVICE)
    out = torch.full((4, 128, 512), float("nan"), dtype=torch.bfloat16, device=DEVICE)
    sd.triton_token_sparse_decode(**inputs, out=out)
    ref = sd.reference_token_sparse_decode(**inputs)
    assert not out.isnan().any() and sd.relative_error(out, ref) < TOL[torch.bfloat16]
