"""Shared fixtures: every operator test runs on each backend."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

BACKENDS = ("numpy", "numba", "torch")


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """The backend under test: numpy arrays for numpy/numba, torch tensors for torch."""
    return request.param


@pytest.fixture(params=("float64", "float32"))
def dtype(request) -> str:
    return request.param


def convert(backend: str, dtype: str, *arrays: np.ndarray):
    """Arrays in the kind the backend takes, cast to ``dtype``."""
    if backend == "torch":
        return tuple(torch.as_tensor(np.asarray(a, dtype=dtype)) for a in arrays)
    return tuple(np.asarray(a, dtype=dtype) for a in arrays)


def to_np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


@pytest.fixture(autouse=True)
def _no_tf32():
    """Tests compare to float64 references: keep TF32 off on any CUDA device."""
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = prev
