"""Testing support shipped with the package: tolerances, a dot test and a mask test mixin.

Every mask in structattn is tested with :class:`MaskTestCase`; users writing their own
:class:`~structattn.masks.Mask` get the same checks::

    from structattn.testing import MaskTestCase

    class TestMyMask(MaskTestCase):
        def make_operator(self):
            return MyMask(...)

        def dense_reference(self):
            return ...  # numpy float64 (*batch, M, N), built independently (loops)

The mixin compares every product with the dense reference on every backend (numpy,
numba, torch) in float64 and float32, checks the adjoint (dot test, ``T``), batching,
the ``@`` operator, the masked product ``(M ⊙ A Bᵀ) V`` and its adjoint, and runs
``torch.autograd.gradcheck`` in float64.  pytest is needed only to run it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._array import dtype_name, is_torch, to_numpy
from .backends import numba_available, torch_available

__all__ = [
    "PARITY_TOLERANCES",
    "TOLERANCES",
    "MaskTestCase",
    "assert_close",
    "dot_test",
    "relative_error",
    "to_numpy",
]

#: Normwise relative tolerance of a fast path against its float64 dense reference.
#: The half-precision rows (torch only) are four units of the dtype's rounding error
#: (``4·2**-8`` for bfloat16, ``4·2**-11`` for float16): attention computed as structattn
#: does it (float32 from the rounded inputs, output rounded once) measured 3.9e-3
#: (bfloat16) and 4.7e-4 (float16) on unit-variance inputs, ``L = 128``, ``d = 16``.
TOLERANCES: dict[str, float] = {
    "float64": 1e-10,
    "float32": 1e-4,
    "float16": 2e-3,
    "bfloat16": 1.6e-2,
}

#: Normwise relative tolerance between two backends running the same algorithm.
PARITY_TOLERANCES: dict[str, float] = {
    "float64": 1e-12,
    "float32": 1e-5,
    "float16": 1e-3,
    "bfloat16": 8e-3,
}


def relative_error(actual: Any, desired: Any) -> float:
    """Normwise relative error ``‖actual − desired‖_F / ‖desired‖_F`` in float64.

    Returns the absolute error when ``desired`` is zero.
    """
    a = to_numpy(actual).astype(np.float64)
    d = to_numpy(desired).astype(np.float64)
    if a.shape != d.shape:
        raise AssertionError(f"shape mismatch: actual {a.shape} vs desired {d.shape}")
    scale = float(np.linalg.norm(d))
    err = float(np.linalg.norm(a - d))
    return err / scale if scale > 0 else err


def assert_close(
    actual: Any,
    desired: Any,
    *,
    dtype: str | None = None,
    rtol: float | None = None,
    what: str = "",
) -> None:
    """Assert a normwise relative error within the tolerance of ``dtype``.

    Parameters
    ----------
    actual, desired : arrays
        numpy or torch; ``desired`` is usually a float64 reference.
    dtype : str, optional
        Tolerance row (default: ``actual``'s dtype).
    rtol : float, optional
        Overrides the table.
    what : str
        Prefix of the failure message.
    """
    dtype = dtype or dtype_name(actual)
    tol = TOLERANCES[dtype] if rtol is None else rtol
    err = relative_error(actual, desired)
    if not err <= tol:
        raise AssertionError(f"{what}: relative error {err:.3e} exceeds {tol:.1e} ({dtype})")


def dot_test(mask: Any, *, seed: int = 0, columns: int = 3, rtol: float = 1e-10) -> float:
    """Adjoint (dot) test: ``⟨U, M X⟩ == ⟨Mᵀ U, X⟩`` in float64 on numpy.

    Returns the relative mismatch; raises AssertionError above ``rtol``.
    """
    rng = np.random.default_rng(seed)
    M, N = mask.shape
    batch = tuple(mask.batch_shape)
    X = rng.standard_normal((*batch, N, columns))
    U = rng.standard_normal((*batch, M, columns))
    lhs = float(np.sum(U * mask.matmat(X, backend="numpy")))
    rhs = float(np.sum(mask.rmatmat(U, backend="numpy") * X))
    mismatch = abs(lhs - rhs) / max(abs(lhs), abs(rhs), 1e-300)
    if not mismatch <= rtol:
        raise AssertionError(f"dot test failed: <U, MX>={lhs!r} but <MᵀU, X>={rhs!r}")
    return mismatch


def _skip(reason: str) -> None:
    import pytest

    pytest.skip(reason)


def _backend_inputs(backend: str, arrays: list[np.ndarray], dtype: str) -> list[Any]:
    if backend == "torch":
        if not torch_available():
            _skip("torch is not installed")
        import torch

        return [torch.as_tensor(a.astype(dtype)) for a in arrays]
    if backend == "numba" and not numba_available():
        _skip("numba is not installed")
    return [a.astype(dtype) for a in arrays]


class MaskTestCase:
    """Mixin of checks for a :class:`~structattn.masks.Mask`.

    Subclasses implement :meth:`make_operator` and :meth:`dense_reference`; class
    attributes tune the problem sizes.  Tests are plain ``test_*`` methods, collected by
    pytest from any ``Test*`` class that inherits the mixin.
    """

    seed: int = 0
    columns: int = 3
    num_features: int = 4
    value_dim: int = 3
    extra_batch: tuple[int, ...] = (2,)
    #: Masked products are compared in float32 against this tolerance (None: table).
    float32_rtol: float | None = None

    # -- to implement --------------------------------------------------------------
    def make_operator(self) -> Any:
        """Return the mask under test."""
        raise AssertionError("MaskTestCase subclasses must implement make_operator()")

    def dense_reference(self) -> np.ndarray:
        """Return the float64 numpy reference matrix, shape ``(*batch, M, N)``."""
        raise AssertionError("MaskTestCase subclasses must implement dense_reference()")

    # -- helpers -------------------------------------------------------------------
    def _rng(self, salt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, salt])

    def _shapes(self) -> tuple[tuple[int, ...], int, int]:
        op = self.make_operator()
        return tuple(op.batch_shape), op.shape[0], op.shape[1]

    def _tol(self, dtype: str) -> float:
        if dtype == "float32" and self.float32_rtol is not None:
            return self.float32_rtol
        return TOLERANCES[dtype]

    def _check_matmat(self, backend: str, dtype: str, transpose: bool = False) -> None:
        op = self.make_operator()
        op = op.T if transpose else op
        ref = self.dense_reference()
        ref = np.swapaxes(ref, -1, -2) if transpose else ref
        batch, _, N = (tuple(op.batch_shape), *op.shape)
        X = self._rng(1).standard_normal((*self.extra_batch, *batch, N, self.columns))
        (Xb,) = _backend_inputs(backend, [X], dtype)
        Y = op.matmat(Xb, backend=backend)
        assert dtype_name(Y) == dtype, f"output dtype {dtype_name(Y)} != input {dtype}"
        assert is_torch(Y) == (backend == "torch"), "output kind must follow the input"
        assert_close(Y, ref @ X, rtol=self._tol(dtype),
                     what=f"{'rmatmat' if transpose else 'matmat'}[{backend}, {dtype}]")

    def _masked_inputs(self, transpose: bool = False) -> tuple[np.ndarray, ...]:
        batch, M, N = self._shapes()
        if transpose:
            M, N = N, M
        rng = self._rng(2)
        lead = (*self.extra_batch, *batch)
        A = rng.uniform(0.1, 1.0, (*lead, M, self.num_features))
        B = rng.uniform(0.1, 1.0, (*lead, N, self.num_features))
        V = rng.standard_normal((*lead, N, self.value_dim))
        return A, B, V

    def _check_masked(self, backend: str, dtype: str, transpose: bool = False) -> None:
        op = self.make_operator()
        op = op.T if transpose else op
        ref = self.dense_reference()
        ref = np.swapaxes(ref, -1, -2) if transpose else ref
        A, B, V = self._masked_inputs(transpose)
        expected = (ref * (A @ np.swapaxes(B, -1, -2))) @ V
        out = op.masked_matmul(*_backend_inputs(backend, [A, B, V], dtype), backend=backend)
        assert dtype_name(out) == dtype
        assert_close(out, expected, rtol=self._tol(dtype),
                     what=f"masked_matmul{'ᵀ' if transpose else ''}[{backend}, {dtype}]")

    # -- checks --------------------------------------------------------------------
    def test_shape_and_to_dense(self) -> None:
        op = self.make_operator()
        ref = self.dense_reference()
        assert (*op.batch_shape, *op.shape) == ref.shape
        assert_close(op.to_dense(like=np.empty(0)), ref, dtype="float64", what="to_dense")
        if op.nonnegative:
            assert np.all(ref >= 0), "mask claims nonnegative but the reference is not"

    def test_transpose(self) -> None:
        op = self.make_operator()
        assert op.T.shape == op.shape[::-1]
        assert_close(op.T.T.to_dense(like=np.empty(0)), self.dense_reference(),
                     dtype="float64", what="T.T")
        assert_close(op.T.to_dense(like=np.empty(0)), np.swapaxes(self.dense_reference(), -1, -2),
                     dtype="float64", what="T.to_dense")

    def test_dot(self) -> None:
        dot_test(self.make_operator(), seed=self.seed)

    def test_matmat_numpy(self) -> None:
        for dtype in ("float64", "float32"):
            self._check_matmat("numpy", dtype)
            self._check_matmat("numpy", dtype, transpose=True)

    def test_matmat_numba(self) -> None:
        for dtype in ("float64", "float32"):
            self._check_matmat("numba", dtype)
            self._check_matmat("numba", dtype, transpose=True)

    def test_matmat_torch(self) -> None:
        for dtype in ("float64", "float32"):
            self._check_matmat("torch", dtype)
            self._check_matmat("torch", dtype, transpose=True)

    def test_matmul_operator(self) -> None:
        op = self.make_operator()
        batch, _, N = self._shapes()
        X = self._rng(3).standard_normal((*batch, N, 2))
        assert_close(op @ X, self.dense_reference() @ X, what="@")

    def test_masked_matmul_numpy(self) -> None:
        for dtype in ("float64", "float32"):
            self._check_masked("numpy", dtype)
            self._check_masked("numpy", dtype, transpose=True)

    def test_masked_matmul_numba(self) -> None:
        for dtype in ("float64", "float32"):
            self._check_masked("numba", dtype)
            self._check_masked("numba", dtype, transpose=True)

    def test_masked_matmul_torch(self) -> None:
        for dtype in ("float64", "float32"):
            self._check_masked("torch", dtype)
            self._check_masked("torch", dtype, transpose=True)

    def test_backend_parity(self) -> None:
        A, B, V = self._masked_inputs()
        op = self.make_operator()
        outs = {}
        for backend in ("numpy", "numba", "torch"):
            if (backend == "torch" and not torch_available()) or (
                backend == "numba" and not numba_available()
            ):
                continue
            outs[backend] = to_numpy(
                op.masked_matmul(*_backend_inputs(backend, [A, B, V], "float64"),
                                 backend=backend)
            )
        base = outs.pop("numpy")
        for backend, out in outs.items():
            err = relative_error(out, base)
            assert err <= PARITY_TOLERANCES["float64"], f"{backend} vs numpy: {err:.2e}"

    def test_torch_gradcheck(self) -> None:
        if not torch_available():
            _skip("torch is not installed")
        import torch

        op = self.make_operator()
        A, B, V = (torch.as_tensor(a).requires_grad_(True) for a in self._masked_inputs())

        def f(a: Any, b: Any, v: Any) -> Any:
            return op.masked_matmul(a, b, v, backend="torch")

        # fast_mode checks random Jacobian projections: same guarantee, a fraction of
        # the calls (full Jacobians of L x m inputs would dominate the suite's runtime)
        assert torch.autograd.gradcheck(f, (A, B, V), eps=1e-6, atol=1e-7, rtol=1e-5,
                                        fast_mode=True)
        X = torch.as_tensor(self._rng(4).standard_normal((*op.batch_shape, op.shape[1], 2)))
        X.requires_grad_(True)
        assert torch.autograd.gradcheck(lambda x: op.matmat(x, backend="torch"), (X,),
                                        fast_mode=True)

    def test_wrong_operand_length_raises(self) -> None:
        import pytest

        op = self.make_operator()
        batch, _M, N = self._shapes()
        X = np.ones((*batch, N + 1, 2))
        with pytest.raises(ValueError, match=r"X.shape\[-2\] must equal"):
            op.matmat(X)
        A, B, V = self._masked_inputs()
        with pytest.raises(ValueError, match=r"B.shape\[-2\] must equal"):
            op.masked_matmul(A, np.concatenate([B, B[..., :1, :]], axis=-2), V)
