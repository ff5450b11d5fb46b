"""Threshold selection: Triton (interpreter on CPU) and torch paths vs the reference; calibration."""

from __future__ import annotations

import math

import pytest
import torch

from bench.errors import UsageError
from kernels_gpu import threshold as th

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def int_inputs(seed: int, b: int, h: int, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(-4, 5, (b, h, d), generator=gen).to(torch.bfloat16)
    keys = torch.randint(-4, 5, (b, h, n, d), generator=gen).to(torch.bfloat16)
    return q, keys


@pytest.mark.parametrize(
    ("b", "h", "n", "d", "n_valid", "ratio"),
    [
        (2, 3, 300, 128, [[300, 129, 7], [1, 0, 255]], 0.3),  # per-row counts, an empty row
        (1, 2, 1100, 64, 1029, 0.05),  # several tiles, n_valid not a multiple of the tile
        (1, 1, 50, 16, 50, 1.0),  # everything selected
    ],
)
def test_paths_agree_exactly(
    poison: None, b: int, h: int, n: int, d: int, n_valid: object, ratio: float
) -> None:
    q, keys = int_inputs(n, b, h, n, d)
    nv = torch.tensor(n_valid) if isinstance(n_valid, list) else n_valid
    thr = th.calibrate_threshold(th.threshold_logits(q, keys), ratio)
    blocks, counts = th.reference_threshold(q, keys, nv, thr)
    for fn in (th.torch_threshold, th.triton_threshold):
        got = fn(q.to(DEVICE), keys.to(DEVICE), nv.to(DEVICE) if isinstance(nv, torch.Tensor) else nv, thr)
        assert torch.equal(got[0].cpu(), blocks) and torch.equal(got[1].cpu(), counts), fn.__name__
    # Lists are ascending, then -1; every listed block clears the threshold.
    logits = th.threshold_logits(q, keys)
    for row, cnt in zip(blocks.view(-1, n), counts.view(-1), strict=True):
        listed = row[:cnt]
        assert (row[cnt:] == -1).all() and (listed.diff() > 0).all()
    assert all(
        (logits.view(-1, n)[r, blocks.view(-1, n)[r, :c].long()] >= thr).all()
        for r, c in enumerate(counts.view(-1))
    )


@pytest.mark.parametrize(
    ("b", "h", "n", "n_valid", "ratio"),
    [
        (2, 3, 90, [[90, 41, 7], [1, 0, 89]], 0.3),  # per-row counts, an empty row
        (2, 2, 70, [70, 33], 0.5),  # per-batch counts
        (1, 2, 60, 45, 0.2),  # an int count below the capacity
        (1, 1, 50, 50, 1.0),  # everything selected
    ],
)
def test_native_selects_the_reference_blocks(
    b: int, h: int, n: int, n_valid: int | list[int], ratio: float
) -> None:
    # D = 16 and values in {-4..4}: dots within 256 and the scale 1/4, so even bf16 logits are exact.
    q, keys = int_inputs(n + b, b, h, n, 16)
    nv = torch.tensor(n_valid) if isinstance(n_valid, list) else n_valid
    thr = th.calibrate_threshold(th.threshold_logits(q, keys), ratio)
    blocks, counts = th.reference_threshold(q, keys, nv, thr)
    nv_dev = nv.to(DEVICE) if isinstance(nv, torch.Tensor) else nv
    got = th.native_threshold(q.to(DEVICE), keys.to(DEVICE), nv_dev, thr)
    assert torch.equal(got[0].cpu(), blocks) and torch.equal(got[1].cpu(), counts)
    assert int(counts.sum()) > 0


def test_threshold_is_inclusive_and_scaled() -> None:
    d = 16
    q = torch.ones(1, 1, d)
    keys = torch.arange(4.0).view(1, 1, 4, 1).expand(1, 1, 4, d).contiguous()  # dots 0, 16, 32, 48
    thr = 32.0 / math.sqrt(d)
    for fn in (th.reference_threshold, th.torch_threshold, th.native_threshold, th.triton_threshold):
        blocks, counts = fn(q, keys, 4, thr)
        assert blocks.tolist() == [[[2, 3, -1, -1]]] and counts.tolist() == [[2]], fn.__name__


def test_calibrate_threshold_hits_the_ratio() -> None:
    scores = torch.randn(10_000, generator=torch.Generator().manual_seed(1))
    thr = th.calibrate_threshold(scores, 0.1)
    assert int((scores >= thr).sum()) == 1000
    assert th.calibrate_threshold(torch.zeros(8), 0.25) == 0.0  # ties: all 8 clear it
    with pytest.raises(UsageError, match="ratio"):
        th.calibrate_threshold(scores, 0.0)
    with pytest.raises(UsageError, match="at least one"):
        th.calibrate_threshold(torch.zeros(0), 0.5)


def test_bench_cases_are_well_formed() -> None:
    cases = th.bench_cases()
    assert len({c.label for c in cases}) == len(cases)
    for c in cases:
        assert (c.targets.get("bw_fraction") == 0.70) == (c.bytes_moved >= 64 << 20)
        assert c.torch_path is th.native_threshold and c.check is th.check_lists


def test_check_lists_tolerates_boundary_flips_only() -> None:
    gen = torch.Generator().manual_seed(3)
    q, keys = torch.randn(1, 2, 16, generator=gen), torch.randn(1, 2, 64, 16, generator=gen)
    ranked = th.threshold_logits(q, keys).flatten().sort(descending=True).values.tolist()
    select = [th.torch_threshold(q, keys, 64, ranked[m]) for m in (30, 31, 60)]  # 31, 32, 61 selected
    th.check_lists(select[0], select[1])  # 1 flip of 128 blocks: within 2 + 0.5%
    th.check_lists(select[1], select[0])
    with pytest.raises(AssertionError, match=r"30 selections differ \(at most 2 allowed\)"):
        th.check_lists(select[0], select[2])
    th.check_lists(select[0], select[2], max_flip_fraction=0.25)
    blocks, counts = select[0]
    unordered = blocks.clone()
    unordered[0, 0, :2] = unordered[0, 0, :2].flip(0)
    with pytest.raises(AssertionError, match="ascending"):
        th.check_lists(select[0], (unordered, counts))
    with pytest.raises(AssertionError, match="counts"):
        th.check_lists(select[0], (blocks, counts + 1))


def test_bench_check_accepts_the_native_path_on_case_inputs() -> None:
    # The smallest case's own random inputs on the CPU; the exact torch path stands in for Triton's.
    case = th.bench_cases()[0]
    inputs = case.make_inputs(torch.device("cpu"))
    assert case.check is not None
    case.check(th.torch_threshold(**inputs), case.torch_path(**inputs))


@pytest.mark.gpu
@pytest.mark.parametrize(("b", "n"), [(1, 2048), (16, 2048), (64, 16384)])
def test_gpu_realistic_sizes(b: int, n: int) -> None:
    q, keys = int_inputs(b + n, b, 8, n, 128)
    nv = torch.randint(n // 2, n + 1, (b,))
    thr = th.calibrate_threshold(th.threshold_logits(q, keys), 0.1)
    expected = th.reference_threshold(q, keys, nv, thr)
    for fn in (th.torch_threshold, th.triton_threshold):
        blocks, counts = fn(q.cuda(), keys.cuda(), nv.cuda(), thr)
        assert torch.equal(blocks.cpu(), expected[0]) and torch.equal(counts.cpu(), expected[1]), fn.__name__


@pytest.mark.gpu
@pytest.mark.parametrize(
    "label", ["B=16 L=131072 blocks=2048 ratio=0.1", "B=64 L=1048576 blocks=16384 ratio=0.1"]
)
def test_gpu_bench_case_check_passes(label: str) -> None:
    (case,) = [c for c in th.bench_cases() if c.label == label]
    inputs = case.make_inputs(torch.device("cuda"))
    case.check(case.optimized(**inputs), case.torch_path(**inputs))
