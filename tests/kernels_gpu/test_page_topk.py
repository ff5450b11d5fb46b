"""Quest/LServe page scoring + top-k: Triton (interpreter on CPU) and torch paths vs the float64 reference."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from bench.errors import UsageError
from kernels_gpu import page_topk as pt
from kernels_gpu import topk as tk

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def int_inputs(seed: int, b: int, h: int, g: int, p: int, d: int) -> tuple[torch.Tensor, ...]:
    """bf16 values in {-4..4} (exact fp32 sums, many ties); kmin <= kmax as a page's min and max are."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(-4, 5, (b, h, g, d), generator=gen).to(torch.bfloat16)
    x = torch.randint(-4, 5, (2, b, h, p, d), generator=gen).to(torch.bfloat16)
    return q, x.amin(0), x.amax(0)


def distinct_inputs(seed: int, b: int, h: int, g: int, p: int, d: int) -> tuple[torch.Tensor, ...]:
    """Small integers; page dim 0 (kmin = kmax, every query 1 there) is set so each row's page bounds are
    distinct integers in [-p, p], and so are the units' maxima. Every product, per-query sum and bound stays
    within 256 in magnitude, so even the native path's bf16 arithmetic is exact."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(-2, 3, (b, h, g, d), generator=gen).float()
    q[..., 0] = 1
    x = torch.randint(-3, 4, (2, b, h, p, d), generator=gen).float()
    kmin, kmax = x.amin(0), x.amax(0)
    qe = q[:, :, :, None, 1:]
    rest = torch.maximum(qe * kmin[:, :, None, :, 1:], qe * kmax[:, :, None, :, 1:]).sum(-1).amax(2)
    target = torch.stack([torch.randperm(2 * p + 1, generator=gen)[:p] - p for _ in range(b * h)]).view(
        b, h, p
    )
    kmin[..., 0] = kmax[..., 0] = target - rest
    return tuple(t.to(torch.bfloat16) for t in (q, kmin, kmax))


def check_all_paths(inputs: tuple[torch.Tensor, ...], n_pages: object, k: int, sub: int) -> None:
    ref = pt.reference_page_topk(*inputs, n_pages, k, sub)
    nv = n_pages.to(DEVICE) if isinstance(n_pages, torch.Tensor) else n_pages
    for fn in (pt.torch_page_topk, pt.triton_page_topk):
        idx, val = fn(*(t.to(DEVICE) for t in inputs), nv, k, sub)
        assert torch.equal(idx.cpu(), ref[0]), fn.__name__
        assert torch.equal(val.cpu(), ref[1]), fn.__name__


@pytest.mark.parametrize(
    ("b", "h", "g", "p", "d", "k", "sub", "n_pages"),
    [
        (2, 2, 4, 203, 32, 8, 1, [203, 150]),  # Quest-like, per-batch page counts
        (1, 2, 3, 250, 40, 16, 4, 249),  # LServe-like: odd group, last unit partly valid
        (1, 1, 1, 30, 16, 1, 3, 30),  # k = 1, no GQA group
        (2, 1, 2, 20, 16, 32, 1, [20, 5]),  # k > valid units: padding
    ],
)
def test_paths_agree_exactly(
    poison: None, b: int, h: int, g: int, p: int, d: int, k: int, sub: int, n_pages: object
) -> None:
    nv = torch.tensor(n_pages) if isinstance(n_pages, list) else n_pages
    check_all_paths(int_inputs(p + k + sub, b, h, g, p, d), nv, k, sub)


@pytest.mark.parametrize(
    ("b", "h", "g", "p", "d", "k", "sub", "n_pages"),
    [
        (2, 2, 4, 90, 12, 8, 1, [[90, 41], [3, 0]]),  # Quest-like, per-row counts, an empty row, k > valid
        (1, 2, 3, 87, 8, 6, 4, 85),  # LServe-like: the last unit partly valid and partly past the capacity
        (2, 1, 2, 40, 8, 5, 3, [40, 13]),  # units over per-batch page counts
        (1, 1, 1, 30, 8, 40, 1, 30),  # k > P: padding
    ],
)
def test_native_selects_the_reference_set(
    same_selection: Callable[..., None],
    b: int,
    h: int,
    g: int,
    p: int,
    d: int,
    k: int,
    sub: int,
    n_pages: int | list[int],
) -> None:
    inputs = distinct_inputs(p * sub + k, b, h, g, p, d)
    nv = torch.tensor(n_pages) if isinstance(n_pages, list) else n_pages
    ref = pt.reference_page_topk(*inputs, nv, k, sub)
    nv_dev = nv.to(DEVICE) if isinstance(nv, torch.Tensor) else nv
    idx, val = pt.native_page_topk(*(t.to(DEVICE) for t in inputs), nv_dev, k, sub)
    assert idx.shape == (b, h, k) and val.dtype == torch.bfloat16
    same_selection(ref, (idx, val))


def test_radix_variant_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tk, "TILE_MAX_K", 8)
    check_all_paths(int_inputs(9, 1, 2, 4, 180, 16), torch.tensor([170]), 12, 2)


def test_triton_bound_holds_for_unordered_bounds() -> None:
    # The kernel orders each (kmin, kmax) pair itself, so it matches the literal bound even if kmin > kmax.
    gen = torch.Generator().manual_seed(21)
    q = torch.randint(-4, 5, (1, 2, 4, 32), generator=gen).to(torch.bfloat16)
    kmin, kmax = torch.randint(-4, 5, (2, 1, 2, 90, 32), generator=gen).to(torch.bfloat16)
    ref = pt.reference_page_topk(q, kmin, kmax, 90, 8)
    idx, val = pt.triton_page_topk(q.to(DEVICE), kmin.to(DEVICE), kmax.to(DEVICE), 90, 8)
    assert torch.equal(idx.cpu(), ref[0]) and torch.equal(val.cpu(), ref[1])


def test_group_max_and_sub_page_max() -> None:
    # Two queries in the group, one page each wins for a different query; units of 2 pages take the max.
    q = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    kmin = torch.tensor([[[[3.0, -9.0], [-9.0, 5.0], [0.0, 0.0], [1.0, 1.0]]]])
    kmax = kmin + 1.0
    idx, val = pt.page_topk(q, kmin, kmax, 4, 2, sub=2)
    assert idx.tolist() == [[[0, 1]]] and val.tolist() == [[[6.0, 2.0]]]  # unit 0: max(4, 6); unit 1: 2
    assert torch.equal(pt.triton_page_topk(q, kmin, kmax, 4, 2, sub=2)[1], val)


def test_argument_errors_are_usage_errors() -> None:
    q, kmin, kmax = int_inputs(0, 1, 2, 4, 10, 16)
    with pytest.raises(UsageError, match="kmin, kmax"):
        pt.page_topk(q, kmin, kmax[:, :, :5], 10, 2)
    with pytest.raises(UsageError, match="sub=0"):
        pt.page_topk(q, kmin, kmax, 10, 2, sub=0)


def test_bench_cases_cover_quest_and_lserve() -> None:
    cases = pt.bench_cases()
    assert len({c.label for c in cases}) == len(cases)
    assert all(c.torch_path is pt.native_page_topk for c in cases)
    assert {c.label.split()[0] for c in cases} == {"quest", "lserve"}
    for c in cases:
        assert (c.targets.get("bw_fraction") == 0.70) == (c.bytes_moved >= 64 << 20)


def test_bench_check_accepts_the_native_path_on_case_inputs() -> None:
    # The smallest case's own random inputs on the CPU; the exact torch path stands in for Triton's.
    case = pt.bench_cases()[0]
    inputs = case.make_inputs(torch.device("cpu"))
    assert case.check is not None
    case.check(pt.torch_page_topk(**inputs), case.torch_path(**inputs))


@pytest.mark.gpu
@pytest.mark.parametrize(("b", "p", "k", "sub"), [(1, 8192, 256, 1), (16, 8192, 64, 4), (2, 65536, 256, 1)])
def test_gpu_realistic_sizes(b: int, p: int, k: int, sub: int) -> None:
    inputs = int_inputs(b + p, b, 8, 4, p, 128)
    nv = torch.randint(p // 2, p + 1, (b,))
    expected = pt.reference_page_topk(*inputs, nv, k, sub)
    for fn in (pt.torch_page_topk, pt.triton_page_topk):
        idx, val = fn(*(t.cuda() for t in inputs), nv.cuda(), k, sub)
        assert torch.equal(idx.cpu(), expected[0]) and torch.equal(val.cpu(), expected[1]), fn.__name__


@pytest.mark.gpu
@pytest.mark.parametrize(
    "label", ["quest B=1 L=131072 pages=8192 sub=1 k=256", "lserve B=16 L=131072 pages=8192 sub=4 k=64"]
)
def test_gpu_bench_case_check_passes(label: str) -> None:
    (case,) = [c for c in pt.bench_cases() if c.label == label]
    inputs = case.make_inputs(torch.device("cuda"))
    case.check(case.optimized(**inputs), case.torch_path(**inputs))
