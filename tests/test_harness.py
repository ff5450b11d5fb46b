"""The test harness itself: uninitialized memory is poisoned in every test (see conftest.py)."""

import torch


def test_uninitialized_memory_is_poisoned() -> None:
    assert torch.empty(3).isnan().all()
    assert torch.empty_like(torch.zeros(2, dtype=torch.int16)).eq(-12345).all()
    assert torch.zeros(1).new_empty(2, dtype=torch.bool).all()
    assert torch.empty(2, dtype=torch.int64).eq(-1234567).all()
