"""Exact top-k machinery: packed keys, the tie rule on all three paths, tile and radix selection, dispatch;
the native selection and its comparison."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from bench.errors import DeviceUnavailableError, UsageError
from kernels_gpu import topk as tk
from kernels_gpu.registry import BenchCase

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


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


def test_an_int_n_valid_counts_for_every_row() -> None:
    scores = tie_scores(8, 2, 70)
    expected = tk.reference_topk(scores, torch.full((2,), 41), 6)
    for fn in (tk.torch_topk, tk.triton_topk):
        assert_same(expected, fn(scores.to(DEVICE), 41, 6))


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


@pytest.mark.parametrize(
    ("n_valid", "k"),
    [
        ([[60, 13, 0], [1, 60, 45]], 7),  # per-row counts as a [B, H] tensor, an empty row, k > n_valid
        ([60, 31], 60),  # a [B] tensor broadcast over heads
        (50, 9),  # an int: slicing, not masking
        (60, 64),  # k > N: padded with -1 / -inf
    ],
)
def test_native_selects_the_reference_set(
    same_selection: Callable[..., None], n_valid: int | list[list[int]], k: int
) -> None:
    gen = torch.Generator().manual_seed(k)
    # Distinct scores: every top-k set is unique. bf16 holds these multiples of 1/4 exactly.
    scores = (torch.stack([torch.randperm(181, generator=gen)[:60] for _ in range(6)]) - 90.0) / 4
    scores = scores.view(2, 3, 60)
    nv = torch.tensor(n_valid) if isinstance(n_valid, list) else n_valid
    nv_rows = tk.rows_n_valid(nv, (2, 3), 60, torch.device("cpu"))
    ref = tk.reference_topk(scores.view(6, 60), nv_rows, k)
    for dtype in (torch.float32, torch.bfloat16):
        idx, val = tk.native_topk(
            scores.to(DEVICE, dtype), nv.to(DEVICE) if isinstance(nv, torch.Tensor) else nv, k
        )
        assert idx.shape == val.shape == (2, 3, k) and idx.dtype == torch.int64 and val.dtype == dtype
        same_selection(ref, (idx.view(6, k), val.view(6, k)))


def test_native_topk_rejects_a_bad_n_valid() -> None:
    with pytest.raises(UsageError, match="prefix"):
        tk.native_topk(torch.zeros(2, 3, 5), torch.tensor([1, 2, 3]), 2)
    with pytest.raises(UsageError, match="positive"):
        tk.native_topk(torch.zeros(2, 5), 5, 0)


def test_check_native_allows_order_ties_and_rounding_only() -> None:
    exact = (torch.tensor([[4, 2, 9, -1]], dtype=torch.int32), torch.tensor([[5.0, 3.0, 1.0, float("-inf")]]))
    # Unordered, a tie at the k-th score broken the other way, bf16-rounded, masked padding with any index.
    native = (torch.tensor([[7, 4, 2, 3]]), torch.tensor([[1.0, 5.0, 3.0, float("-inf")]]).bfloat16())
    tk.check_native(exact, native)
    tk.check_native(native, exact)  # symmetric
    rounded = (native[0], torch.tensor([[1.002, 5.01, 3.0, float("-inf")]]))
    tk.check_native(exact, rounded, rel_tol=0.003)
    with pytest.raises(AssertionError, match="differ beyond"):
        tk.check_native(exact, rounded, rel_tol=0.001)
    wrong = (torch.tensor([[4, 8, 9, -1]]), torch.tensor([[5.0, 2.0, 1.0, float("-inf")]]))
    with pytest.raises(AssertionError, match="differ beyond"):
        tk.check_native(exact, wrong, rel_tol=0.1)
    # Scores equal within the tolerance but a selected index far above the k-th score differs.
    swapped = (torch.tensor([[4, 8, 9, -1]]), exact[1])
    with pytest.raises(AssertionError, match=r"index [28] \(score .*no tie"):
        tk.check_native(exact, swapped, rel_tol=0.1)
    fewer = (torch.tensor([[4, 2, -1, -1]]), torch.tensor([[5.0, 3.0, float("-inf"), float("-inf")]]))
    with pytest.raises(AssertionError, match="3 vs 2 selected"):
        tk.check_native(exact, fewer)
    twice = (torch.tensor([[4, 4, 9, -1]]), torch.tensor([[5.0, 3.0, 1.0, float("-inf")]]))
    with pytest.raises(AssertionError, match="twice"):
        tk.check_native(exact, twice, rel_tol=1.0)


def test_bench_cases_are_well_formed() -> None:
    cases = tk.bench_cases()
    assert len({c.label for c in cases}) == len(cases)
    assert all(
        c.bytes_moved > 0 and c.torch_path is tk.native_topk and c.check is tk.check_native for c in cases
    )
    big = [c for c in cases if c.bytes_moved >= 64 << 20]
    assert big and all(c.targets.get("bw_fraction") == 0.70 for c in big)


def test_bench_check_accepts_the_native_path_on_case_inputs() -> None:
    # The smallest case's own random inputs on the CPU; the exact torch path stands in for Triton's.
    case = tk.bench_cases()[0]
    inputs = case.make_inputs(torch.device("cpu"))
    assert case.check is not None
    case.check(tk.torch_topk(**inputs), case.torch_path(**inputs))


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
    tk.check_native(expected, tk.native_topk(scores, nv, k))


@pytest.mark.gpu
@pytest.mark.parametrize("case", tk.bench_cases(), ids=lambda c: c.label)
def test_gpu_bench_case_check_passes(case: BenchCase) -> None:
    inputs = case.make_inputs(torch.device("cuda"))
    case.check(case.optimized(**inputs), case.torch_path(**inputs))
