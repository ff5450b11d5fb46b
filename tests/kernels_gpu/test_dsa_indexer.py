"""DSA lightning indexer + top-k: Triton (interpreter on CPU) and torch paths vs the float64 reference."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from bench.errors import UsageError
from kernels_gpu import dsa_indexer as di
from kernels_gpu import topk as tk

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def int_inputs(seed: int, b: int, h: int, n: int, d: int, fp8: bool) -> tuple[torch.Tensor | None, ...]:
    """Small integers and power-of-two scales: every product and fp32 sum is exact, with many ties."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(-4, 5, (b, h, d), generator=gen).to(torch.bfloat16)
    w = torch.randint(-2, 3, (b, h), generator=gen).float()
    keys = torch.randint(-4, 5, (b, n, d), generator=gen).float()
    if not fp8:
        return q, w, keys.to(torch.bfloat16), None
    scale = 2.0 ** torch.randint(-2, 3, (b, n), generator=gen).float()
    return q, w, keys.to(torch.float8_e4m3fn), scale


def distinct_inputs(seed: int, b: int, h: int, n: int, d: int) -> tuple[torch.Tensor | None, ...]:
    """bf16 small integers with distinct index scores: head 0 (weight 1) reads only key dim 0, which is set
    so that each token's score is a distinct integer above every other head's contribution (keeping head 0's
    logit positive). Logits, keys and scores stay within 256 in magnitude, so the native path's bf16 logits
    are exact and each top-k set is unique."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(-1, 2, (b, h, d), generator=gen).float()
    q[:, 0], q[:, 1:, 0] = 0.0, 0.0
    q[:, 0, 0] = 1.0
    w = torch.randint(-1, 2, (b, h), generator=gen).float()
    w[:, 0] = 1.0
    keys = torch.randint(-2, 3, (b, n, d), generator=gen).float()
    rest = (torch.einsum("bhd,bnd->bhn", q[:, 1:], keys).clamp(min=0) * w[:, 1:, None]).sum(1)
    bound = 2 * (d - 1) * (h - 1)  # |rest| <= bound
    target = torch.stack([torch.randperm(n, generator=gen) for _ in range(b)]) + bound + 1
    keys[..., 0] = target - rest
    assert keys.abs().max() <= 256
    return q.to(torch.bfloat16), w, keys.to(torch.bfloat16), None


def check_all_paths(inputs: tuple[torch.Tensor | None, ...], n_valid: object, k: int) -> None:
    ref = di.reference_dsa_indexer(*inputs, n_valid, k)
    on_device = tuple(t.to(DEVICE) if t is not None else None for t in inputs)
    nv = n_valid.to(DEVICE) if isinstance(n_valid, torch.Tensor) else n_valid
    for fn in (di.torch_dsa_indexer, di.triton_dsa_indexer):
        idx, val = fn(*on_device, nv, k)
        assert torch.equal(idx.cpu(), ref[0]), fn.__name__
        assert torch.equal(val.cpu(), ref[1]), fn.__name__


@pytest.mark.parametrize(
    ("b", "h", "n", "d", "k", "fp8", "n_valid"),
    [
        (2, 64, 300, 128, 40, True, [300, 171]),  # DeepSeek head shape, fp8 keys, per-row counts
        (1, 8, 333, 32, 300, False, 333),  # bf16 keys, n not a multiple of the key tile
        (2, 4, 50, 16, 64, True, [50, 9]),  # k > n_valid: padding
        (1, 16, 100, 64, 1, False, 100),  # k = 1
    ],
)
def test_paths_agree_exactly(
    poison: None, b: int, h: int, n: int, d: int, k: int, fp8: bool, n_valid: object
) -> None:
    nv = torch.tensor(n_valid) if isinstance(n_valid, list) else n_valid
    check_all_paths(int_inputs(n + k, b, h, n, d, fp8), nv, k)


@pytest.mark.parametrize(
    ("b", "h", "n", "d", "k", "n_valid"),
    [
        (2, 4, 120, 8, 16, [120, 9]),  # per-row counts, k > n_valid
        (1, 8, 100, 4, 37, 100),  # an int count covering the row
        (1, 3, 50, 8, 60, 50),  # k > N: padding
    ],
)
def test_native_selects_the_reference_set(
    same_selection: Callable[..., None], b: int, h: int, n: int, d: int, k: int, n_valid: int | list[int]
) -> None:
    inputs = distinct_inputs(n + k, b, h, n, d)
    nv = torch.tensor(n_valid) if isinstance(n_valid, list) else n_valid
    ref = di.reference_dsa_indexer(*inputs, nv, k)
    on_device = tuple(t.to(DEVICE) if t is not None else None for t in inputs)
    idx, val = di.native_dsa_indexer(*on_device, nv.to(DEVICE) if isinstance(nv, torch.Tensor) else nv, k)
    assert idx.shape == (b, k) and val.dtype == torch.float32  # fp32 head weights promote the head sum
    same_selection(ref, (idx, val))


def test_native_fp8_keys_agree_up_to_ties() -> None:
    # Integer fp8 keys, power-of-two token scales: every path's arithmetic is exact; ties are plentiful.
    inputs = int_inputs(5, 2, 8, 150, 16, fp8=True)
    nv = torch.tensor([150, 61])
    ref = di.reference_dsa_indexer(*inputs, nv, 24)
    on_device = tuple(t.to(DEVICE) if t is not None else None for t in inputs)
    tk.check_native(ref, di.native_dsa_indexer(*on_device, nv.to(DEVICE), 24))


def test_relu_and_head_weights() -> None:
    # Token 0: head 0 logit -8 (ReLU'd away), head 1 logit +2; token 1: logits +1, +1.
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]).to(torch.bfloat16)
    w = torch.tensor([[1.0, 3.0]])
    keys = torch.tensor([[[-8.0, 2.0], [1.0, 1.0]]]).to(torch.bfloat16)
    for fn in (di.reference_dsa_indexer, di.torch_dsa_indexer, di.triton_dsa_indexer):
        idx, val = fn(q, w, keys, None, 2, 2)
        assert idx.tolist() == [[0, 1]] and val.tolist() == [[6.0, 4.0]], fn.__name__
    idx, val = di.native_dsa_indexer(q, w, keys, None, 2, 2)
    assert sorted(zip(idx[0].tolist(), val[0].tolist(), strict=True)) == [(0, 6.0), (1, 4.0)]


def test_argument_errors_are_usage_errors() -> None:
    q, w, keys, scale = int_inputs(0, 1, 4, 10, 16, True)
    with pytest.raises(UsageError, match="key_scale"):
        di.dsa_indexer(q, w, keys, None, 10)
    with pytest.raises(UsageError, match="head weights"):
        di.dsa_indexer(q, w[:, :2], keys, scale, 10)
    with pytest.raises(UsageError, match="bf16 or fp16"):
        di.triton_dsa_indexer(q.float(), w, keys.float(), scale, 10)


def test_bench_cases_carry_the_brief_targets() -> None:
    cases = di.bench_cases()
    assert len({c.label for c in cases}) == len(cases)
    at128k = [c for c in cases if c.label.startswith("B=1 N=131072")]
    assert len(at128k) == 2 and all(c.targets["speedup_vs_torch"] == 5.0 for c in at128k)
    assert all(c.torch_path is di.native_dsa_indexer for c in cases)
    assert all(c.targets.get("bw_fraction") == 0.70 for c in cases if c.bytes_moved >= 64 << 20)


def test_bench_check_accepts_the_native_path_on_case_inputs() -> None:
    # The smallest case's own random inputs on the CPU; the exact torch path stands in for Triton's.
    case = di.bench_cases()[0]
    inputs = case.make_inputs(torch.device("cpu"))
    assert case.check is not None
    case.check(di.torch_dsa_indexer(**inputs), case.torch_path(**inputs))


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("b", "n", "fp8"), [(1, 131072, True), (8, 131072, True), (1, 131072, False), (1, 1 << 20, True)]
)
def test_gpu_realistic_sizes(b: int, n: int, fp8: bool) -> None:
    inputs = int_inputs(b + n, b, 64, n, 128, fp8)
    nv = torch.randint(n // 2, n + 1, (b,))
    expected = di.reference_dsa_indexer(*inputs, nv, di.TOPK)
    on_gpu = tuple(t.cuda() if t is not None else None for t in inputs)
    for fn in (di.torch_dsa_indexer, di.triton_dsa_indexer):
        idx, val = fn(*on_gpu, nv.cuda(), di.TOPK)
        assert torch.equal(idx.cpu(), expected[0]) and torch.equal(val.cpu(), expected[1]), fn.__name__


@pytest.mark.gpu
@pytest.mark.parametrize(
    "label", ["B=1 N=131072 fp8 k=2048", "B=1 N=131072 bf16 k=2048", "B=8 N=1048576 fp8 k=2048"]
)
def test_gpu_bench_case_check_passes(label: str) -> None:
    (case,) = [c for c in di.bench_cases() if c.label == label]
    inputs = case.make_inputs(torch.device("cuda"))
    case.check(case.optimized(**inputs), case.torch_path(**inputs))
