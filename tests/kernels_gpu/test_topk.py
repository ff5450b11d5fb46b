"""Exact top-k machinery: packed keys, the tie rule on all three paths, tile and radix selection, dispatch."""

from __future__ import annotations

import pytest
import torch

from bench.errors import DeviceUnavailableError, UsageError
from kernels_gpu import topk as tk

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
POISON = -(2**31) + 7  # never a valid index; an unwritten int slot shows up as this


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


def assert_same(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> None:
    assert torch.equal(a[0].cpu(), b[0].cpu()), f"indices differ:\n{a[0]}\n{b[0]}"
    assert torch.equal(a[1].cpu(), b[1].cpu()), f"scores differ:\n{a[1]}\n{b[1]}"


def tie_scores(seed: int, rows: int, n: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(-4, 5, (rows, n), generator=gen).float()


def all_paths(scores: torch.Tensor, n_valid: torch.Tensor, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    s, nv = scores.to(DEVICE), n_valid.to(DEVICE)
    return [tk.reference_topk(scores, n_valid, k), tk.torch_topk(s, nv, k), tk.triton_topk(s, nv, k)]


def test_order_keys_follow_float_order() -> None:
    gen = torch.Generator().manual_seed(0)
    special = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), 1e-45, -1e-45, 3.4e38, -3.4e38])
    x = torch.cat(
        [torch.randn(500, generator=gen) * 10.0 ** torch.randint(-30, 30, (500,), generator=gen), special]
    )
    keys = tk.order_keys(x).long()
    i, j = torch.meshgrid(torch.arange(len(x)), torch.arange(len(x)), indexing="ij")
    assert torch.equal(keys[i] < keys[j], x[i] < x[j])
    assert tk.order_keys(torch.tensor([-0.0])).item() == tk.order_keys(torch.tensor([0.0])).item()


def test_pack_unpack_round_trip() -> None:
    gen = torch.Generator().manual_seed(1)
    s = torch.randn(3, 50, generator=gen)
    s[0, :5] = float("-inf")
    nv = torch.tensor([50, 17, 0], dtype=torch.int32)
    idx, val = tk.unpack_keys(tk.pack_keys(s, nv))
    col = torch.arange(50).expand(3, 50)
    valid = col < nv[:, None].long()
    assert torch.equal(idx, torch.where(valid, col, -1).int())
    assert torch.equal(val, torch.where(valid, s, float("-inf")))


@pytest.mark.parametrize(
    ("rows", "n", "k"),
    [
        (3, 200, 5),  # tile path, rows with different n_valid
        (1, 190, 40),  # tile path, n not a power of two
        (1, 9, 1),  # k = 1
        (2, 40, 70),  # k > n: padding
        (1, 600, 260),  # radix path at the default limits
    ],
)
def test_paths_agree_exactly_with_ties(poison: None, rows: int, n: int, k: int) -> None:
    scores = tie_scores(n + k, rows, n)
    scores[0, :3] = -0.0  # counts as +0.0
    n_valid = torch.tensor([n, max(n // 3, 1)] * rows, dtype=torch.int32)[:rows]
    ref, *others = all_paths(scores, n_valid, k)
    for out in others:
        assert_same(ref, out)
    assert ref[0].shape == (rows, k) and ref[0].dtype == torch.int32 and ref[1].dtype == torch.float32
    taken = min(k, int(n_valid[-1]))
    assert (ref[0][-1, :taken] >= 0).all() and (ref[0][-1, taken:] == -1).all()
    assert torch.isneginf(ref[1][-1, taken:]).all()


def test_tile_merges_over_several_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tk, "SCORES_TILE", 32)  # 10 tiles of 8 candidates, then merges 80 -> 24 -> 5
    monkeypatch.setattr(tk, "MERGE_BLOCK", 32)
    scores = tie_scores(5, 2, 300)
    nv = torch.tensor([300, 299], dtype=torch.int32)
    ref, *others = all_paths(scores, nv, 5)
    for out in others:
        assert_same(ref, out)


@pytest.mark.parametrize("pattern", ["all_equal", "infinities", "random"])
def test_radix_path_over_many_programs_and_chunks(monkeypatch: pytest.MonkeyPatch, pattern: str) -> None:
    monkeypatch.setattr(tk, "TILE_MAX_K", 8)  # k = 20 takes the radix path
    monkeypatch.setattr(tk, "PARTITION_BLOCK", 128)
    monkeypatch.setattr(tk, "REFINE_CHUNK", 64)
    gen = torch.Generator().manual_seed(11)
    if pattern == "all_equal":  # every level down to the index bits is needed
        scores = torch.full((2, 700), 2.5)
    elif pattern == "infinities":
        scores = tie_scores(12, 2, 700)
        scores[:, 100:180] = float("inf")
        scores[1, ::3] = float("-inf")
    else:
        scores = torch.randn(2, 700, generator=gen)
    nv = torch.tensor([700, 613], dtype=torch.int32)
    ref, *others = all_paths(scores, nv, 20)
    for out in others:
        assert_same(ref, out)


def test_topk_dispatch_on_cpu_uses_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    scores = tie_scores(3, 2, 50)
    monkeypatch.setattr(tk, "triton_topk", lambda *a: pytest.fail("auto must not pick Triton on CPU"))
    assert_same(tk.topk(scores, 50, 4), tk.reference_topk(scores, torch.full((2,), 50), 4))


def test_resolve_impl_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.zeros(1)
    with pytest.raises(UsageError, match="impl='fast'"):
        tk.resolve_impl("fast", cpu)
    assert tk.resolve_impl("auto", cpu) == "torch"
    assert tk.resolve_impl("torch", cpu) == "torch"
    monkeypatch.setattr(tk, "INTERPRETED", False)
    with pytest.raises(DeviceUnavailableError, match="TRITON_INTERPRET=1"):
        tk.resolve_impl("triton", cpu)
    monkeypatch.setattr(tk, "triton", None)
    with pytest.raises(DeviceUnavailableError, match="triton package"):
        tk.resolve_impl("triton", cpu)


def test_rows_n_valid_broadcasts_and_rejects() -> None:
    nv = tk.rows_n_valid(torch.tensor([5, 900]), (2, 3), 100, torch.device("cpu"))
    assert nv.tolist() == [5, 5, 5, 100, 100, 100]
    assert tk.rows_n_valid(-3, (2,), 10, torch.device("cpu")).tolist() == [0, 0]
    with pytest.raises(UsageError, match="prefix"):
        tk.rows_n_valid(torch.tensor([1, 2, 3]), (2, 3), 10, torch.device("cpu"))
    with pytest.raises(UsageError, match="positive"):
        tk.torch_topk(torch.zeros(1, 4), torch.tensor([4]), 0)
    with pytest.raises(UsageError, match="limit"):
        tk.triton_topk(torch.zeros(1, 4), torch.tensor([4]), tk.MAX_K + 1)


def test_check_topk_allows_near_ties_only() -> None:
    idx = torch.tensor([[4, 2, 9]], dtype=torch.int32)
    val = torch.tensor([[5.0, 3.0, 1.0]])
    near = (torch.tensor([[4, 2, 7]], dtype=torch.int32), torch.tensor([[5.0, 3.0, 1.0 + 1e-5]]))
    tk.check_topk((idx, val), near)
    far = (torch.tensor([[4, 7, 9]], dtype=torch.int32), val)
    with pytest.raises(AssertionError):
        tk.check_topk((idx, val), far)


def test_bench_cases_are_well_formed() -> None:
    cases = tk.bench_cases()
    assert len({c.label for c in cases}) == len(cases)
    assert all(c.bytes_moved > 0 and c.check is tk.check_topk for c in cases)
    big = [c for c in cases if c.bytes_moved >= 64 << 20]
    assert big and all(c.targets.get("bw_fraction") == 0.70 for c in big)


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("rows", "n", "k"), [(64, 131072, 2048), (1, 1 << 20, 2048), (256, 32768, 64), (1, 21_000_000, 10)]
)
def test_gpu_realistic_sizes(rows: int, n: int, k: int) -> None:
    gen = torch.Generator(device="cuda").manual_seed(rows + n)
    scores = torch.randn((rows, n), generator=gen, device="cuda")
    scores[:, : n // 4] = torch.randint(-3, 4, (rows, n // 4), generator=gen, device="cuda").float()  # ties
    nv = torch.full((rows,), n, dtype=torch.int32, device="cuda")
    nv[0] = n - 12345 if n > 20000 else n
    expected = tk.torch_topk(scores, nv, k)  # exact packed torch.topk, checked against the reference on CPU
    assert_same(expected, tk.triton_topk(scores, nv, k))
    if rows * n <= 1 << 24:
        assert_same(tk.reference_topk(scores.cpu(), nv.cpu(), k), expected)
