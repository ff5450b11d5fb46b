"""BM25 scatter + top-k: Triton (interpreter on CPU) and torch paths vs the float64 reference."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from bench.errors import UsageError
from kernels_gpu import bm25
from kernels_gpu import topk as tk
from kernels_gpu.registry import BenchCase

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_index(seed: int, vocab: int, n_docs: int, dyadic: bool) -> tuple[torch.Tensor, ...]:
    """A random CSR index; term 0 is in every document. ``dyadic``: with k1 = 1 and b = 0 every term
    contribution idf * 2 tf / (tf + 1) is a short binary fraction, so any summation order is exact."""
    gen = torch.Generator().manual_seed(seed)
    df = torch.randint(0, n_docs // 3, (vocab,), generator=gen)
    df[0] = n_docs
    indptr = torch.zeros(vocab + 1, dtype=torch.int64)
    indptr[1:] = df.cumsum(0)
    doc_ids = torch.cat([torch.randperm(n_docs, generator=gen)[: int(f)] for f in df]).int()
    tf = torch.tensor([1, 3, 7, 15])[torch.randint(0, 4, (int(indptr[-1]),), generator=gen)]
    doc_len = torch.randint(5, 40, (n_docs,), generator=gen, dtype=torch.int32)
    if dyadic:
        idf = torch.tensor([0.5, 1.0, 2.0, 4.0])[torch.randint(0, 4, (vocab,), generator=gen)]
        return indptr, doc_ids, tf.to(torch.int16), doc_len, idf
    return indptr, doc_ids, tf.to(torch.float16), doc_len, torch.rand(vocab, generator=gen) * 3


def queries(seed: int, b: int, t: int, vocab: int) -> torch.Tensor:
    return torch.randint(-1, vocab, (b, t), generator=torch.Generator().manual_seed(seed)).int()


def run_all(
    q: torch.Tensor, index: tuple[torch.Tensor, ...], k: int, **kw: float
) -> list[tuple[torch.Tensor, ...]]:
    on_device = [t.to(DEVICE) for t in (q, *index)]
    return [
        bm25.reference_bm25(q, *index, k, **kw),
        *((t.cpu() for t in fn(*on_device, k, **kw)) for fn in (bm25.torch_bm25, bm25.triton_bm25)),
    ]


@pytest.mark.parametrize(
    ("vocab", "n_docs", "b", "t", "k"),
    [
        (20, 300, 3, 5, 10),  # rows with different terms, -1 padding in queries
        (30, 700, 1, 6, 1),  # k = 1
        (5, 10, 2, 3, 20),  # k > N: padding
    ],
)
def test_paths_agree_exactly_on_dyadic_inputs(
    poison: None, vocab: int, n_docs: int, b: int, t: int, k: int
) -> None:
    index = make_index(n_docs + k, vocab, n_docs, dyadic=True)
    q = queries(k, b, t, vocab)
    q[0, 0] = 0  # a term in every document: many ties
    ref, *others = run_all(q, index, k, k1=1.0, b=0.0)
    for idx, val in others:
        assert torch.equal(idx, ref[0]) and torch.equal(val, ref[1])


def test_length_normalization_matches_within_rounding() -> None:
    index = make_index(3, 25, 400, dyadic=False)
    ref, *others = run_all(queries(4, 2, 6, 25), index, 7, avg_doc_len=21.0)
    for out in others:
        tk.check_topk(ref, tuple(out), 1e-5)


@pytest.mark.parametrize(("b", "k"), [(3, 6), (2, 1), (1, 500)])  # k = 500 > N: padding
def test_native_selects_the_reference_set(same_selection: Callable[..., None], b: int, k: int) -> None:
    # Random idf and lengths. Documents can still tie (same terms, tf and length), so the inputs are
    # checked to separate the k-th and (k+1)-th scores by far more than fp32 rounding: the set is unique.
    index = make_index(k, 25, 400, dyadic=False)
    q = queries(k + 1, b, 6, 25)
    if k < 400:
        edge = bm25.reference_bm25(q, *index, k + 1)[1]
        assert (edge[:, k - 1] - edge[:, k] > 1e-4 * edge[:, 0]).all(), "no gap at the selection boundary"
    idx, val = bm25.native_bm25(*(t.to(DEVICE) for t in (q, *index)), k)
    assert idx.shape == (b, k) and val.dtype == torch.float32
    same_selection(bm25.reference_bm25(q, *index, k), (idx, val), rel_tol=1e-6)


def test_scores_follow_the_formula() -> None:
    # One term in doc 1 (tf 2, length 10) and doc 0 (tf 1, length 30); average length 20.
    indptr = torch.tensor([0, 2])
    doc_ids = torch.tensor([1, 0], dtype=torch.int32)
    tf = torch.tensor([2.0, 1.0]).half()
    doc_len = torch.tensor([30, 10], dtype=torch.int32)
    idf = torch.tensor([1.5])
    want = [1.5 * 2 * 2.2 / (2 + 1.2 * (0.25 + 0.75 * 0.5)), 1.5 * 1 * 2.2 / (1 + 1.2 * (0.25 + 0.75 * 1.5))]
    for fn in (bm25.reference_bm25, bm25.torch_bm25, bm25.native_bm25, bm25.triton_bm25):
        idx, val = fn(torch.tensor([[0, -1]]), indptr, doc_ids, tf, doc_len, idf, 2, avg_doc_len=20.0)
        assert idx.tolist() == [[1, 0]], fn.__name__
        assert torch.allclose(val, torch.tensor([want]), rtol=1e-6), fn.__name__


def test_shape_errors_are_usage_errors() -> None:
    index = make_index(0, 5, 10, dyadic=True)
    with pytest.raises(UsageError, match="indptr"):
        bm25.bm25(queries(0, 1, 2, 5), index[0][:-1], *index[1:], 3)


def test_bench_cases_are_well_formed() -> None:
    cases = bm25.bench_cases()
    assert len({c.label for c in cases}) == len(cases) == 4
    assert all(c.torch_path is bm25.native_bm25 for c in cases)
    assert all(c.bytes_moved > c.flops > 0 and not c.targets for c in cases)


def test_bench_check_accepts_the_native_path_on_case_inputs() -> None:
    # The smallest case's own random inputs on the CPU; the exact torch path stands in for Triton's.
    case = bm25.bench_cases()[0]
    inputs = case.make_inputs(torch.device("cpu"))
    assert case.check is not None
    case.check(bm25.torch_bm25(**inputs), case.torch_path(**inputs))


@pytest.mark.gpu
@pytest.mark.parametrize("case", bm25.bench_cases(), ids=lambda c: c.label)
def test_gpu_bench_cases_paths_agree(case: BenchCase) -> None:
    inputs = case.make_inputs(torch.device("cuda"))
    case.check(case.torch_path(**inputs), case.optimized(**inputs))
