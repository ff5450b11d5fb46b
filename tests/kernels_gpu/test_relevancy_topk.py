"""Fused relevancy scoring + top-k: Triton (interpreter on CPU) and torch paths vs the float64 reference."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from bench.errors import UsageError
from kernels_gpu import relevancy_topk as rt
from kernels_gpu import topk as tk

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def int_inputs(seed: int, b: int, h: int, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """bf16 values in {-4..4}: every fp32 dot product is exact, and ties are plentiful."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(-4, 5, (b, h, d), generator=gen).to(torch.bfloat16)
    keys = torch.randint(-4, 5, (b, h, n, d), generator=gen).to(torch.bfloat16)
    return q, keys


def distinct_inputs(seed: int, b: int, h: int, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random small integers, with key dim 0 set so each row's scores are distinct integers in [-n, n].

    Every key element is at most n + 3 (d - 1) <= 256 in magnitude and every score at most n, so bf16 holds
    them exactly: even the native path's bf16 scores are exact, and each top-k set is unique.
    """
    gen = torch.Generator().manual_seed(seed)
    q = (torch.randint(0, 2, (b, h, d), generator=gen) * 2 - 1).float()
    keys = torch.randint(-3, 4, (b, h, n, d), generator=gen).float()
    target = torch.stack([torch.randperm(2 * n + 1, generator=gen)[:n] - n for _ in range(b * h)]).view(
        b, h, n
    )
    rest = (keys[..., 1:] * q[:, :, None, 1:]).sum(-1)
    keys[..., 0] = q[:, :, None, 0] * (target - rest)  # q[0] = +-1, so q[0] * keys[0] = target - rest
    return q.to(torch.bfloat16), keys.to(torch.bfloat16)


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


@pytest.mark.parametrize(
    ("b", "h", "n", "d", "k", "n_valid"),
    [
        (2, 3, 100, 16, 8, [[100, 57, 5], [1, 0, 99]]),  # per-row counts, an empty row, k > n_valid
        (1, 2, 90, 24, 30, 90),  # an int count covering the rows
        (2, 1, 70, 8, 10, [70, 44]),
    ],
)
def test_native_selects_the_reference_set(
    same_selection: Callable[..., None], b: int, h: int, n: int, d: int, k: int, n_valid: int | list[int]
) -> None:
    q, keys = distinct_inputs(n * d + k, b, h, n, d)
    nv = torch.tensor(n_valid) if isinstance(n_valid, list) else n_valid
    ref = rt.reference_relevancy_topk(q, keys, nv, k)
    nv_dev = nv.to(DEVICE) if isinstance(nv, torch.Tensor) else nv
    idx, val = rt.native_relevancy_topk(q.to(DEVICE), keys.to(DEVICE), nv_dev, k)
    assert idx.shape == (b, h, k) and val.dtype == torch.bfloat16  # matmul's dtype, as a user gets it
    same_selection(ref, (idx, val))


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
    assert all(c.torch_path is rt.native_relevancy_topk for c in cases)
    row128k = [c for c in cases if c.label.startswith("row B=1 H=1 N=131072")]
    assert len(row128k) == 1 and row128k[0].targets["speedup_vs_torch"] == 2.0
    for c in cases:
        assert (c.targets.get("bw_fraction") == 0.70) == (c.bytes_moved >= 64 << 20)
        # 2 bytes and 2 FLOPs per key element, plus the query and outputs in bytes.
        assert c.bytes_moved > c.flops >= 0.95 * c.bytes_moved


def test_bench_check_accepts_the_native_path_on_case_inputs() -> None:
    # The smallest case's own random inputs on the CPU; the exact torch path stands in for Triton's.
    case = rt.bench_cases()[0]
    inputs = case.make_inputs(torch.device("cpu"))
    assert case.check is not None
    case.check(rt.torch_relevancy_topk(**inputs), case.torch_path(**inputs))


@pytest.mark.gpu
@pytest.mark.parametrize(("b", "h", "n", "k"), [(1, 1, 131072, 64), (16, 8, 2048, 64), (4, 8, 16384, 512)])
def test_gpu_realistic_sizes(b: int, h: int, n: int, k: int) -> None:
    q, keys = (t.cuda() for t in int_inputs(b + n, b, h, n, 128))
    nv = torch.randint(n // 2, n + 1, (b,), device="cuda")
    expected = rt.reference_relevancy_topk(q.cpu(), keys.cpu(), nv.cpu(), k)
    for fn in (rt.torch_relevancy_topk, rt.triton_relevancy_topk):
        idx, val = fn(q, keys, nv, k)
        assert torch.equal(idx.cpu(), expected[0]) and torch.equal(val.cpu(), expected[1]), fn.__name__


@pytest.mark.gpu
@pytest.mark.parametrize("label", ["row B=1 H=1 N=131072 k=64", "seer B=16 H=8 N=16384 k=64"])
def test_gpu_bench_case_check_passes(label: str) -> None:
    (case,) = [c for c in rt.bench_cases() if c.label == label]
    inputs = case.make_inputs(torch.device("cuda"))
    case.check(case.optimized(**inputs), case.torch_path(**inputs))
