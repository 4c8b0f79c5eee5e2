"""Backend resolution, the kernel registry, and kernel parity across backends."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from structattn.backends import BACKENDS, kernel, numba_available, resolve_backend
from structattn.testing import PARITY_TOLERANCES, relative_error

torch = pytest.importorskip("torch")


def test_auto_resolution():
    x = np.ones(2)
    assert resolve_backend("auto", x) == ("numba" if numba_available() else "numpy")
    assert resolve_backend("auto", torch.ones(2)) == "torch"
    assert resolve_backend("auto", None, torch.ones(2)) == "torch"
    assert set(BACKENDS) == {"auto", "numpy", "numba", "torch"}


@pytest.mark.parametrize("bad", ["cupy", "", None, 3])
def test_unknown_backend(bad):
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend(bad, np.ones(1))


def test_backend_input_mismatch():
    with pytest.raises(TypeError, match="backend='numba' requires numpy arrays"):
        resolve_backend("numba", torch.ones(1))
    with pytest.raises(TypeError, match="backend='torch' requires torch tensors"):
        resolve_backend("torch", np.ones(1))


def test_missing_numba_is_reported(monkeypatch):
    import structattn.backends as b

    monkeypatch.setattr(b, "numba_available", lambda: False)
    with pytest.raises(ImportError, match="backend='numba' requires numba"):
        b.resolve_backend("numba", np.ones(1))
    assert b.resolve_backend("auto", np.ones(1)) == "numpy"


def test_unknown_kernel():
    with pytest.raises(KeyError, match="no kernel 'nope' for backend 'numpy'"):
        kernel("nope", "numpy")


@settings(max_examples=30, deadline=None)
@given(
    N=st.integers(1, 3),
    L=st.integers(1, 70),
    m=st.integers(1, 6),
    dv=st.integers(1, 5),
    gamma=st.sampled_from([1.0, 0.95, 0.3]),
    exclusive=st.booleans(),
    chunk=st.integers(1, 80),
    seed=st.integers(0, 1000),
)
def test_causal_kernels_agree_across_backends(N, L, m, dv, gamma, exclusive, chunk, seed):
    rng = np.random.default_rng(seed)
    A, B = rng.uniform(0.0, 1.0, (2, N, L, m))
    V = rng.standard_normal((N, L, dv))
    opts = {"gamma": gamma, "exclusive": exclusive}
    ref = kernel("causal_masked_matmul", "numpy")(A, B, V, chunk_size=chunk, **opts)
    nb = kernel("causal_masked_matmul", "numba")(A, B, V, **opts)
    tt = kernel("causal_masked_matmul", "torch")(*(torch.tensor(a) for a in (A, B, V)),
                                                 chunk_size=chunk, **opts)
    tol = PARITY_TOLERANCES["float64"]
    assert relative_error(nb, ref) <= tol
    assert relative_error(tt, ref) <= tol


def test_numba_kernel_float32_accumulates_within_tolerance():
    rng = np.random.default_rng(0)
    L = 4000
    A, B = rng.uniform(0.0, 1.0, (2, 2, L, 8)).astype(np.float32)
    V = rng.standard_normal((2, L, 4)).astype(np.float32)
    ref = kernel("causal_masked_matmul", "numpy")(*(a.astype(np.float64) for a in (A, B, V)))
    out = kernel("causal_masked_matmul", "numba")(A, B, V)
    assert out.dtype == np.float32
    assert relative_error(out, ref) <= 1e-4
