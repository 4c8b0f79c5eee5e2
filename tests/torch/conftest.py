"""Fixtures of the torch-readiness tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors: one intra-op thread (on a loaded 2-core machine, OpenMP thread
    hand-offs made single 16x64 matmuls take ~7 ms instead of ~30 µs)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
