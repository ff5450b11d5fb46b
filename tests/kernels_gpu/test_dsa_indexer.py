"""DSA lightning indexer + top-k: Triton (interpreter on CPU) and torch paths vs the float64 reference."""

from __future__ import annotations

import pytest
import torch

from bench.errors import UsageError
from kernels_gpu import dsa_indexer as di

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
POISON = -(2**31) + 7


@pytest.fixture
def poison(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes torch.empty return sentinel-filled tensors, so an output slot no kernel wrote is visible."""
    real = torch.empty

    def empty(*args: object, **kwargs: object) -> torch.Tensor:
        t = real(*args, **kwargs)
        if t.dtype != torch.bool:
            t.fill_(float("nan") if t.is_floating_point() else POISON)
        return t

    monkeypatch.setattr(torch, "empty", empty)


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


def test_relu_and_head_weights() -> None:
    # Token 0: head 0 logit -8 (ReLU'd away), head 1 logit +2; token 1: logits +1, +1.
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]).to(torch.bfloat16)
    w = torch.tensor([[1.0, 3.0]])
    keys = torch.tensor([[[-8.0, 2.0], [1.0, 1.0]]]).to(torch.bfloat16)
    for fn in (di.reference_dsa_indexer, di.torch_dsa_indexer, di.triton_dsa_indexer):
        idx, val = fn(q, w, keys, None, 2, 2)
        assert idx.tolist() == [[0, 1]] and val.tolist() == [[6.0, 4.0]], fn.__name__


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
    assert all(c.targets.get("bw_fraction") == 0.70 for c in cases if c.bytes_moved >= 64 << 20)


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
