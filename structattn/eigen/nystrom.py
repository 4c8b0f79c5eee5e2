"""Nyström eigenfunctions: the sample-based baseline (neuralef.md §1.6).

Solve ``K u_j = ℓ_j u_j`` on the training (or landmark) points, then
``μ̂_j = ℓ_j / N`` and ``ψ̂_j(x) = (√N / ℓ_j) Σ_n κ(x, x_n) u_nj``, which equals
``√N u_nj`` at the training points and is orthonormal there:
``(1/N) Σ_n ψ̂_i(x_n) ψ̂_j(x_n) = δ_ij``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from .._array import as_generator, as_like, is_torch
from ._kernel_base import Kernel, check_points
from .base import EigenFunctions
from .kernels import kernel_matmul

__all__ = ["DENSE_THRESHOLD", "RANK_RTOL", "nystrom"]

#: Largest number of points solved by a dense ``scipy.linalg.eigh``; above it ``eigsh``.
DENSE_THRESHOLD = 2000

#: Eigenvalues ``ℓ_j <= RANK_RTOL · ℓ_1`` are treated as zero (numerical rank).
RANK_RTOL = 1e-10


def _check_kernel(kernel: Any) -> None:
    if not isinstance(kernel, Kernel):
        raise TypeError(f"kernel must be a structattn.eigen Kernel, got {type(kernel).__name__}")


def _check_rank_request(kernel: Kernel, k: Any, n: int, d: int, what: str) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    k = int(k)
    if k > n:
        raise ValueError(f"k={k} exceeds the number of {what} N={n}; ask for k <= {n}")
    rank = kernel.rank(d)
    if rank is not None and k > rank:
        raise ValueError(
            f"k={k} exceeds the rank {rank} of {kernel!r} on R^{d}: eigenfunctions beyond "
            f"the rank are undefined (null space); ask for k <= {rank}"
        )
    return k


def _select_landmarks(X: np.ndarray, landmarks: Any, seed: Any) -> np.ndarray:
    if landmarks is None:
        return X
    if isinstance(landmarks, (int, np.integer)) and not isinstance(landmarks, bool):
        m = int(landmarks)
        if not 1 <= m <= X.shape[0]:
            raise ValueError(f"landmarks={m} must be between 1 and N={X.shape[0]}")
        idx = np.sort(as_generator(seed).choice(X.shape[0], size=m, replace=False))
        return X[idx]
    Z = np.asarray(landmarks.detach().cpu().numpy() if is_torch(landmarks) else landmarks)
    check_points(Z, "landmarks")
    if Z.shape[1] != X.shape[1]:
        raise ValueError(
            f"landmarks must have the dimension of X (d={X.shape[1]}), got shape {Z.shape}"
        )
    return Z.astype(np.float64, copy=False)


def _kernel_matrix(kernel: Kernel, Z: np.ndarray, block: int) -> np.ndarray:
    """``κ(Z, Z)`` filled in row blocks (peak memory ``N² + O(block · N)`` floats),
    symmetrised in place."""
    n = Z.shape[0]
    K = np.empty((n, n))
    for s in range(0, n, block):
        K[s : s + block] = kernel(Z[s : s + block], Z)
    # in-place symmetrisation, one block of rows at a time
    for s in range(0, n, block):
        e = min(s + block, n)
        avg = (K[s:e, s:] + K[s:, s:e].T) / 2
        K[s:e, s:] = avg
        K[s:, s:e] = avg.T
    return K


def _top_eigenpairs(K: np.ndarray, k: int, method: str, seed: Any) -> tuple[np.ndarray, np.ndarray]:
    n = K.shape[0]
    if method == "eigh":
        if 4 * k >= n:  # many eigenpairs: the divide-and-conquer full solve is faster
            vals, vecs = scipy.linalg.eigh(K, driver="evd")
            vals, vecs = vals[n - k :], vecs[:, n - k :]
        else:
            vals, vecs = scipy.linalg.eigh(K, subset_by_index=(n - k, n - 1), driver="evr")
    elif method == "eigsh":
        if k >= n - 1:  # ARPACK needs k < n; the dense solver is exact here
            return _top_eigenpairs(K, k, "eigh", seed)
        v0 = as_generator(seed).standard_normal(n)
        vals, vecs = scipy.sparse.linalg.eigsh(K, k=k, which="LA", v0=v0, tol=1e-12)
    elif method == "lobpcg":
        if 5 * k >= n:
            return _top_eigenpairs(K, k, "eigh", seed)
        X0 = as_generator(seed).standard_normal((n, k))
        vals, vecs = scipy.sparse.linalg.lobpcg(K, X0, largest=True, tol=1e-10, maxiter=500)
    else:
        raise ValueError(f"method must be 'auto', 'eigh', 'eigsh' or 'lobpcg', got {method!r}")
    order = np.argsort(vals)[::-1]
    vals, vecs = vals[order], vecs[:, order]
    # deterministic signs: the largest-magnitude entry of every eigenvector is positive
    piv = np.argmax(np.abs(vecs), axis=0)
    vecs = vecs * np.sign(vecs[piv, np.arange(vecs.shape[1])])
    return vals, vecs


def nystrom(kernel: Kernel, X: Any, k: int, *, landmarks: Any = None, method: str = "auto",
            dense_threshold: int = DENSE_THRESHOLD, seed: Any = 0,
            block: int = 2048) -> EigenFunctions:
    """Nyström estimate of the top-``k`` eigenpairs of ``kernel`` under the data of ``X``.

    Parameters
    ----------
    kernel : Kernel
        E.g. :func:`~structattn.eigen.rbf`.
    X : array, shape (N, d)
        Samples from the data distribution ``p`` (numpy or torch; solved in float64 numpy).
    k : int
        Number of eigenpairs, ``k <= N`` and ``k <=`` the kernel's rank.
    landmarks : int or array of shape (m, d), optional
        Solve on ``m`` landmarks instead of all ``N`` points: an int draws ``m`` rows of
        ``X`` without replacement from ``seed``; an array gives the points.  The
        formulas are those above with ``N`` replaced by ``m``.
    method : {"auto", "eigh", "eigsh", "lobpcg"}
        ``"auto"``: dense ``scipy.linalg.eigh`` (top-``k`` subset) up to
        ``dense_threshold`` points, ARPACK ``eigsh`` above.
    dense_threshold : int, default 2000
    seed : int or numpy Generator, default 0
        Landmark draws and the iterative solvers' start vectors.
    block : int, default 2048
        Rows per block when extending to new points (memory ``O(block · N)``).

    Returns
    -------
    EigenFunctions
        ``eigenvalues = ℓ_j / N``; calling it evaluates
        ``ψ̂_j(x) = (√N/ℓ_j) Σ_n κ(x, x_n) u_nj`` (numpy or torch, as the input).
        ``info`` holds ``"points"`` (``N`` used), ``"solver"`` and ``"train_values"``
        (``√N U``, the values at the solved points).

    Raises
    ------
    ValueError
        ``k`` larger than ``N`` or the kernel's rank, or than the numerical rank of
        ``K`` (eigenvalues ``<= 1e-10 · ℓ_1``); non-finite or mis-shaped ``X``.

    Notes
    -----
    Kernel matrix ``O(N² d)`` time and ``O(N²)`` memory; dense eigh ``O(N³)``, eigsh
    ``O(N² k · iterations)``; each new point ``O(N (d + k))``, and the ``N`` points are
    stored.  Compare :class:`~structattn.eigen.NeuralEF` (memory independent of ``N``).

    Examples
    --------
    >>> import numpy as np
    >>> from structattn.eigen import nystrom, rbf
    >>> X = np.random.default_rng(0).standard_normal((500, 1))
    >>> psi = nystrom(rbf(1.0), X, 3)
    >>> psi(X).shape, bool(abs(psi.eigenvalues[0] - 0.618) < 0.05)
    ((500, 3), True)
    """
    _check_kernel(kernel)
    check_points(X, "X")
    if not isinstance(dense_threshold, (int, np.integer)) or dense_threshold < 1:
        raise ValueError(f"dense_threshold must be an integer >= 1, got {dense_threshold!r}")
    Xn = X.detach().cpu().numpy() if is_torch(X) else X
    Xn = np.asarray(Xn, dtype=np.float64)
    Z = _select_landmarks(Xn, landmarks, seed)
    n, d = Z.shape
    k = _check_rank_request(kernel, k, n, d, "landmarks" if landmarks is not None else "points")
    if method == "auto":
        method = "eigh" if n <= dense_threshold else "eigsh"
    K = _kernel_matrix(kernel, Z, block)
    vals, U = _top_eigenpairs(K, k, method, seed)
    del K
    top = max(float(vals[0]), 0.0)
    if not top > 0 or float(vals[-1]) <= RANK_RTOL * top:
        numerical = int(np.sum(vals > RANK_RTOL * top)) if top > 0 else 0
        raise ValueError(
            f"k={k} exceeds the numerical rank of the kernel matrix on these {n} points "
            f"(only {numerical} eigenvalues > {RANK_RTOL:g} x the largest); ask for fewer "
            "eigenfunctions"
        )
    coef = U * (math.sqrt(n) / vals)  # ψ̂(x) = κ(x, Z) coef

    def evaluate(Y: Any) -> Any:
        if is_torch(Y):
            return kernel_matmul(kernel, Y, as_like(Z, Y), as_like(coef, Y), block=block)
        out = kernel_matmul(kernel, np.asarray(Y, dtype=np.float64), Z, coef, block=block)
        return out.astype(Y.dtype, copy=False)

    info = {"points": n, "solver": method, "train_values": U * math.sqrt(n),
            "landmarks": Z}
    return EigenFunctions(vals / n, evaluate, d, method="nystrom", kernel=kernel, info=info)

