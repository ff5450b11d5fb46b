"""Dense retrieval + top-k: Triton (interpreter on CPU) and torch paths vs the float64 reference."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from bench.errors import UsageError
from kernels_gpu import dense_retrieval as dr
from kernels_gpu import topk as tk
from kernels_gpu.registry import BenchCase

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def int_inputs(seed: int, b: int, n: int, d: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(-4, 5, (b, d), generator=gen).to(dtype)
    corpus = torch.randint(-4, 5, (n, d), generator=gen).to(dtype)
    return q, corpus


def distinct_inputs(
    seed: int, b: int, n: int, d: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Small integers; query i reads corpus dim i with weight 1 (and no other query does), and that dim is
    set so each query's scores are distinct integers in [-n, n]. Every value stays within 256, exact in
    fp16 and bf16, so even the native path's 16-bit scores are exact and each top-k set is unique."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(-1, 2, (b, d), generator=gen).float()
    q[:, :b] = torch.eye(b)
    corpus = torch.randint(-3, 4, (n, d), generator=gen).float()
    target = torch.stack([torch.randperm(2 * n + 1, generator=gen)[:n] - n for _ in range(b)])  # [b, n]
    corpus[:, :b] = (target - q[:, b:] @ corpus[:, b:].T).T
    assert corpus.abs().max() <= 256
    return q.to(dtype), corpus.to(dtype)


@pytest.mark.parametrize(
    ("b", "n", "k", "dtype"),
    [(3, 100, 10, torch.float16), (2, 80, 1, torch.bfloat16), (1, 30, 40, torch.float16)],  # k > N: padding
)
def test_native_selects_the_reference_set(
    same_selection: Callable[..., None], b: int, n: int, k: int, dtype: torch.dtype
) -> None:
    q, corpus = distinct_inputs(n + k, b, n, 24, dtype)
    idx, val = dr.native_dense_retrieval(q.to(DEVICE), corpus.to(DEVICE), k)
    assert idx.shape == (b, k) and val.dtype == dtype
    same_selection(dr.reference_dense_retrieval(q, corpus, k), (idx, val))


@pytest.mark.parametrize(
    ("b", "n", "d", "k", "dtype"),
    [
        (3, 130, 48, 10, torch.float16),  # corpus not a multiple of the tile, D not a power of two
        (17, 40, 32, 5, torch.bfloat16),  # two query blocks
        (2, 7, 16, 10, torch.float16),  # k > N: padding
        (1, 64, 384, 1, torch.float16),  # k = 1, MiniLM width
    ],
)
def test_paths_agree_exactly(
    monkeypatch: pytest.MonkeyPatch, poison: None, b: int, n: int, d: int, k: int, dtype: torch.dtype
) -> None:
    monkeypatch.setattr(dr, "CORPUS_TILE", 64)  # several corpus tiles at test sizes
    q, corpus = int_inputs(n + k, b, n, d, dtype)
    ref = dr.reference_dense_retrieval(q, corpus, k)
    for fn in (dr.torch_dense_retrieval, dr.triton_dense_retrieval):
        idx, val = fn(q.to(DEVICE), corpus.to(DEVICE), k)
        assert torch.equal(idx.cpu(), ref[0]) and torch.equal(val.cpu(), ref[1]), fn.__name__


def test_radix_variant_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tk, "TILE_MAX_K", 8)  # k = 12 writes the scores and selects by radix
    q, corpus = int_inputs(1, 2, 200, 32, torch.float16)
    ref = dr.reference_dense_retrieval(q, corpus, 12)
    idx, val = dr.triton_dense_retrieval(q.to(DEVICE), corpus.to(DEVICE), 12)
    assert torch.equal(idx.cpu(), ref[0]) and torch.equal(val.cpu(), ref[1])


def test_argument_errors_are_usage_errors() -> None:
    q, corpus = int_inputs(0, 2, 10, 16, torch.float16)
    with pytest.raises(UsageError, match=r"corpus \[N, D\]"):
        dr.dense_retrieval(q, corpus[:, :8], 3)
    with pytest.raises(UsageError, match="fp16 or bf16"):
        dr.triton_dense_retrieval(q.float(), corpus.float(), 3)


def test_bench_cases_are_well_formed() -> None:
    cases = dr.bench_cases()
    assert len({c.label for c in cases}) == len(cases) == 4
    assert all(c.torch_path is dr.native_dense_retrieval for c in cases)
    assert all(c.targets == {"bw_fraction": 0.70} and c.bytes_moved >= 64 << 20 for c in cases)


@pytest.mark.gpu
@pytest.mark.parametrize("case", dr.bench_cases()[:2], ids=lambda c: c.label)
def test_gpu_bench_cases_paths_agree(case: BenchCase) -> None:
    inputs = case.make_inputs(torch.device("cuda"))
    case.check(case.torch_path(**inputs), case.optimized(**inputs))


@pytest.mark.gpu
def test_gpu_exact_on_integer_inputs() -> None:
    q, corpus = int_inputs(5, 8, 1_000_003, 384, torch.float16)
    expected = dr.reference_dense_retrieval(q, corpus, 10)
    for fn in (dr.torch_dense_retrieval, dr.triton_dense_retrieval):
        idx, val = fn(q.cuda(), corpus.cuda(), 10)
        assert torch.equal(idx.cpu(), expected[0]) and torch.equal(val.cpu(), expected[1]), fn.__name__
