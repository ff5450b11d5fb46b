"""Fused relevancy scoring + top-k: Triton (interpreter on CPU) and torch paths vs the float64 reference."""

from __future__ import annotations

import pytest
import torch

from bench.errors import UsageError
from kernels_gpu import relevancy_topk as rt
from kernels_gpu import topk as tk

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


def int_inputs(seed: int, b: int, h: int, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """bf16 values in {-4..4}: every fp32 dot product is exact, and ties are plentiful."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(-4, 5, (b, h, d), generator=gen).to(torch.bfloat16)
    keys = torch.randint(-4, 5, (b, h, n, d), generator=gen).to(torch.bfloat16)
    return q, keys


def check_all_paths(q: torch.Tensor, keys: torch.Tensor, n_valid: int | torch.Tensor, k: int) -> None:
    ref = rt.reference_relevancy_topk(q, keys, n_valid, k)
    nv = n_valid.to(DEVICE) if isinstance(n_valid, torch.Tensor) else n_valid
    for fn in (rt.torch_relevancy_topk, rt.triton_relevancy_topk):
        idx, val = fn(q.to(DEVICE), keys.to(DEVICE), nv, k)
        assert torch.equal(idx.cpu(), ref[0]), fn.__name__
        assert torch.equal(val.cpu(), ref[1]), fn.__name__


@pytest.mark.parametrize(
    ("b", "h", "n", "d", "k", "n_valid"),
    [
        (2, 3, 300, 128, 8, [[300, 129, 7], [1, 0, 255]]),  # per-row counts, an empty row
        (1, 1, 150, 72, 1, 150),  # k = 1, D not a power of two
        (2, 1, 40, 16, 64, [40, 33]),  # k > n_valid: padding
    ],
)
def test_paths_agree_exactly(poison: None, b: int, h: int, n: int, d: int, k: int, n_valid: object) -> None:
    q, keys = int_inputs(n + k, b, h, n, d)
    nv = torch.tensor(n_valid) if isinstance(n_valid, list) else n_valid
    check_all_paths(q, keys, nv, k)


def test_radix_variant_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tk, "TILE_MAX_K", 8)  # k = 12 writes scores and takes the radix path
    q, keys = int_inputs(3, 2, 1, 260, 32)
    check_all_paths(q, keys, torch.tensor([260, 77]), 12)


def test_random_floats_select_the_best_scores() -> None:
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(1, 2, 64, generator=gen).to(torch.bfloat16)
    keys = torch.randn(1, 2, 200, 64, generator=gen).to(torch.bfloat16)
    expected = rt.reference_relevancy_topk(q, keys, 200, 16)
    tk.check_topk(expected, rt.relevancy_topk(q.to(DEVICE), keys.to(DEVICE), 200, 16, impl="triton"), 1e-5)


def test_shape_errors_are_usage_errors() -> None:
    q, keys = int_inputs(0, 1, 2, 10, 16)
    with pytest.raises(UsageError, match=r"q \[B, H, D\]"):
        rt.relevancy_topk(q[:, :1], keys, 10, 2)
    with pytest.raises(UsageError, match="positive"):
        rt.relevancy_topk(q, keys, 10, 0, impl="torch")


def test_bench_cases_carry_the_brief_targets() -> None:
    cases = rt.bench_cases()
    assert len({c.label for c in cases}) == len(cases)
    row128k = [c for c in cases if c.label.startswith("row B=1 H=1 N=131072")]
    assert len(row128k) == 1 and row128k[0].targets["speedup_vs_torch"] == 2.0
    for c in cases:
        assert (c.targets.get("bw_fraction") == 0.70) == (c.bytes_moved >= 64 << 20)
        # 2 bytes and 2 FLOPs per key element, plus the query and outputs in bytes.
        assert c.bytes_moved > c.flops >= 0.95 * c.bytes_moved


@pytest.mark.gpu
@pytest.mark.parametrize(("b", "h", "n", "k"), [(1, 1, 131072, 64), (16, 8, 2048, 64), (4, 8, 16384, 512)])
def test_gpu_realistic_sizes(b: int, h: int, n: int, k: int) -> None:
    q, keys = (t.cuda() for t in int_inputs(b + n, b, h, n, 128))
    nv = torch.randint(n // 2, n + 1, (b,), device="cuda")
    expected = rt.reference_relevancy_topk(q.cpu(), keys.cpu(), nv.cpu(), k)
    for fn in (rt.torch_relevancy_topk, rt.triton_relevancy_topk):
        idx, val = fn(q, keys, nv, k)
        assert torch.equal(idx.cpu(), expected[0]) and torch.equal(val.cpu(), expected[1]), fn.__name__
