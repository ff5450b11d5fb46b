"""Threshold selection: Triton (interpreter on CPU) and torch paths vs the reference; calibration."""

from __future__ import annotations

import math

import pytest
import torch

from bench.errors import UsageError
from kernels_gpu import threshold as th

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


def test_threshold_is_inclusive_and_scaled() -> None:
    d = 16
    q = torch.ones(1, 1, d)
    keys = torch.arange(4.0).view(1, 1, 4, 1).expand(1, 1, 4, d).contiguous()  # dots 0, 16, 32, 48
    thr = 32.0 / math.sqrt(d)
    for fn in (th.reference_threshold, th.torch_threshold, th.triton_threshold):
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
    # The case check tolerates a boundary flip or two, not a different selection.
    gen = torch.Generator().manual_seed(3)
    q, keys = torch.randn(1, 2, 16, generator=gen), torch.randn(1, 2, 64, 16, generator=gen)
    ranked = th.threshold_logits(q, keys).flatten().sort(descending=True).values.tolist()
    select = [th.torch_threshold(q, keys, 64, ranked[m]) for m in (30, 31, 60)]  # 31, 32, 61 selected
    cases[0].check(select[0], select[1])
    with pytest.raises(AssertionError, match="selections differ"):
        cases[0].check(select[0], select[2])


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
