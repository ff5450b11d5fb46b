"""Fixtures shared by the GPU-kernel tests: poisoned outputs and top-k selection comparison."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from kernels_gpu.topk import check_native

POISON = -(2**31) + 7
"""Fill of every new integer tensor under ``poison``: never a valid index, so an unwritten slot shows."""

Selection = tuple[torch.Tensor, torch.Tensor]


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


def _rows(result: Selection) -> list[set[int]]:
    index, score = (t.detach().cpu() for t in result)
    k = index.shape[-1]
    index, score = index.reshape(-1, k), score.reshape(-1, k)
    used = (index >= 0) & ~score.isneginf()
    return [set(row[keep].tolist()) for row, keep in zip(index, used, strict=True)]


@pytest.fixture
def same_selection() -> Callable[..., None]:
    """Asserts two top-k results select the same index set per row, with the same scores, in any order.

    For scores distinct at the selection boundary, where the top-k set is unique; a slot counts when its
    index is >= 0 and its score is not -inf. Scores must agree within ``rel_tol`` of the row's largest
    (0: exactly, for inputs that every path computes exactly).
    """

    def check(expected: Selection, actual: Selection, rel_tol: float = 0.0) -> None:
        want, got = _rows(expected), _rows(actual)
        assert len(want) == len(got), f"{len(want)} vs {len(got)} rows"
        for row, (w, g) in enumerate(zip(want, got, strict=True)):
            assert w == g, f"row {row}: missing {sorted(w - g)}, extra {sorted(g - w)}"
        check_native(expected, actual, rel_tol)

    return check
