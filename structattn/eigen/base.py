"""The result type of every eigensolver: :class:`EigenFunctions`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._array import describe_array, is_torch
from ._kernel_base import check_points

__all__ = ["EigenFunctions"]


class EigenFunctions:
    """``k`` eigenfunctions ``ψ_1..ψ_k`` of a kernel's integral operator and their eigenvalues.

    Calling the object evaluates all functions at new points: ``psi(X)`` has shape
    ``(N, k)`` (numpy in → numpy out; torch in → torch out on the same device and dtype).
    Functions are ordered by decreasing eigenvalue and normalised in ``L²(p)``
    (``E_p[ψ_i ψ_j] = δ_ij`` for the exact ones; estimated for learned ones).

    Parameters
    ----------
    eigenvalues : array_like, shape (k,)
        ``μ_1 >= ... >= μ_k``.
    evaluate : callable
        ``evaluate(X) -> (N, k)`` on validated ``(N, dim)`` inputs, of ``X``'s kind.
    dim : int
        Input dimension ``d``.
    method : str
        Where they come from (``"nystrom"``, ``"neuralef"``, ``"hermite-rbf"``, ...).
    kernel : Kernel, optional
        The kernel whose operator they diagonalise.
    info : dict, optional
        Solver diagnostics (sizes, timings, estimator used, ...).

    Attributes
    ----------
    eigenvalues : numpy.ndarray, shape (k,), float64
    k, dim : int
    method : str
    kernel : Kernel or None
    info : dict
    """

    def __init__(self, eigenvalues: Any, evaluate: Callable[[Any], Any], dim: int, *,
                 method: str, kernel: Any = None, info: dict | None = None):
        self.eigenvalues = np.asarray(eigenvalues, dtype=np.float64).reshape(-1)
        self._evaluate = evaluate
        self.dim = int(dim)
        self.method = method
        self.kernel = kernel
        self.info = dict(info or {})

    @property
    def k(self) -> int:
        """Number of eigenfunctions."""
        return int(self.eigenvalues.shape[0])

    def __call__(self, X: Any) -> Any:
        """Evaluate ``[ψ_1(x), ..., ψ_k(x)]`` at every row of ``X``.

        Parameters
        ----------
        X : array, shape (N, dim)

        Returns
        -------
        array, shape (N, k)
        """
        check_points(X, "X")
        if X.shape[1] != self.dim:
            raise ValueError(
                f"X must have dimension d={self.dim} (the eigenfunctions' input size), "
                f"got {describe_array(X)}"
            )
        out = self._evaluate(X)
        if is_torch(X) != is_torch(out):  # pragma: no cover - solver contract
            raise TypeError("eigenfunction evaluation returned the wrong array kind")
        return out

    def __repr__(self) -> str:
        mu = np.array2string(self.eigenvalues[:4], precision=4)
        more = ", ..." if self.k > 4 else ""
        return (f"EigenFunctions(method={self.method!r}, k={self.k}, dim={self.dim}, "
                f"eigenvalues={mu}{more})")
