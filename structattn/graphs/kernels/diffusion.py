"""Graph-kernel masks ``g(W)`` applied by sparse products: diffusion and resolvent.

masks.md §2.6: with a sparse weighted adjacency ``W`` (``|E|`` edges), a mask that is a
function of ``W`` is never formed; its product with an ``L x F`` block costs ``K``
sparse products, ``O(K·|E|·F)``, for a polynomial or Krylov approximation of degree
``K`` chosen from a tolerance:

* :class:`DiffusionMask` — the heat kernel ``exp(−t·ℒ)`` of a graph Laplacian (or
  ``exp(t·W)``) by a scaled Taylor polynomial with an a-priori truncation bound, or
  :func:`scipy.sparse.linalg.expm_multiply` (numpy);
* :class:`ResolventMask` — the random-walk kernel ``(I − λW)⁻¹ = Σ_k λ^k W^k``
  (requires ``λ·ρ(W) < 1``) by the truncated Neumann series or conjugate gradients.

Both run on numpy arrays (scipy.sparse) and torch tensors (sparse CSR tensors on the
operand's device) with the same algorithm; on torch the product is a custom autograd
Function whose backward applies ``Mᵀ`` (gradients flow to the operand, not to ``t``,
``λ`` or the graph).
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..._array import is_torch
from ...masks.base import Mask
from ._adjacency import (
    AdjointPairProducts,
    SparseOperator,
    _block,
    as_adjacency,
    check_length,
    is_symmetric,
    one_norm,
)

__all__ = ["DiffusionMask", "ResolventMask", "spectral_radius"]

_OPERATORS = ("laplacian", "normalized_laplacian", "random_walk_laplacian", "adjacency")

#: Largest graph whose spectral radius is computed by a dense eigenvalue solver.
DENSE_EIG_MAX = 512

#: ``λ·ρ(W) >= 1 − RHO_MARGIN`` is refused by :class:`ResolventMask` (ρ is numerical).
RHO_MARGIN = 1e-8

#: Largest truncated-series degree :class:`ResolventMask` accepts.
MAX_SERIES_DEGREE = 100_000


def _dag_depth(W: sp.csr_array) -> int | None:
    """Longest path length (edges) if the directed graph of ``W != 0`` is acyclic, else None.

    Then ``W`` is nilpotent (``W^{depth+1} = 0``).  Kahn's algorithm, ``O(n + nnz)``.
    """
    A = sp.csr_array(W)
    A.eliminate_zeros()
    n = A.shape[0]
    indeg = np.diff(sp.csc_array(A).indptr)
    level = np.zeros(n, dtype=np.int64)
    frontier = list(np.flatnonzero(indeg == 0))
    indeg = indeg.copy()
    seen = 0
    indptr, indices = A.indptr, A.indices
    while frontier:
        u = frontier.pop()
        seen += 1
        for v in indices[indptr[u]:indptr[u + 1]]:
            level[v] = max(level[v], level[u] + 1)
            indeg[v] -= 1
            if indeg[v] == 0:
                frontier.append(v)
    return int(level.max()) if seen == n else None


def _check_tol(tol: Any) -> float:
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating)) or not (
        0 < float(tol) < 1
    ):
        raise ValueError(f"tol must be a float with 0 < tol < 1, got {tol!r}")
    return float(tol)


def _work(X: Any) -> Any:
    """``X`` in the float64 work dtype (float32 inputs too; MPS keeps its dtype)."""
    if is_torch(X):
        import torch

        return X if X.device.type == "mps" else X.to(torch.float64)
    return np.asarray(X, dtype=np.float64)


def _cast_back(Y: Any, X: Any) -> Any:
    return Y.to(X.dtype) if is_torch(X) else Y.astype(X.dtype, copy=False)


def spectral_radius(W: Any) -> float:
    """Spectral radius ``ρ(W) = max |eig(W)|`` of a weighted adjacency matrix.

    Parameters
    ----------
    W : scipy.sparse matrix or array, shape (n, n)

    Returns
    -------
    float
        Dense eigenvalues for ``n <= 512``; otherwise ARPACK (Lanczos for a symmetric
        ``W``, Arnoldi otherwise), and the bound ``min(‖W‖_1, ‖W‖_∞) >= ρ`` if ARPACK
        does not converge.
    """
    A = sp.csr_array(W, dtype=np.float64)
    n = A.shape[0]
    if A.nnz == 0:
        return 0.0
    sym = is_symmetric(A)
    if n <= DENSE_EIG_MAX:
        dense = A.toarray()
        ev = np.linalg.eigvalsh(dense) if sym else np.linalg.eigvals(dense)
        return float(np.max(np.abs(ev)))
    try:
        if sym:
            ev = spla.eigsh(A, k=1, which="LM", tol=1e-12, return_eigenvectors=False)
        else:
            ev = spla.eigs(A, k=1, which="LM", tol=1e-12, return_eigenvectors=False)
        return float(np.max(np.abs(ev)))
    except spla.ArpackNoConvergence:  # pragma: no cover - rare
        return min(one_norm(A), one_norm(A.T.tocsr()))


class _SparseFunctionMask(AdjointPairProducts, Mask):
    """Shared plumbing: an ``n x n`` mask ``g(W)`` applied through :meth:`_apply`."""

    exact = False
    num_nodes: int
    symmetric: bool

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_nodes, self.num_nodes)

    @property
    def lower_triangular(self) -> bool:  # type: ignore[override]
        return self.num_nodes == 1

    @property
    def T(self) -> Mask:
        """``Mᵀ``: the mask itself when ``W`` (hence ``g(W)``) is symmetric."""
        return self if self.symmetric else super().T



def _diag(values: np.ndarray) -> sp.csr_array:
    """A sparse diagonal matrix (``dia_array``: scipy >= 1.8, unlike ``diags_array``)."""
    n = values.shape[0]
    return sp.csr_array(sp.dia_array((values[None, :], [0]), shape=(n, n)))


def _generator(W: sp.csr_array, t: float, operator: str) -> sp.csr_array:
    """``A`` with ``M = exp(A)``: ``−t·ℒ`` for a Laplacian, ``t·W`` for ``"adjacency"``."""
    n = W.shape[0]
    deg = np.asarray(W.sum(axis=1)).ravel()
    eye = _diag(np.ones(n))
    if operator == "adjacency":
        A = t * W
    elif operator == "laplacian":
        A = t * (W - _diag(deg))
    else:
        with np.errstate(divide="ignore"):
            if operator == "normalized_laplacian":
                s = np.where(deg > 0, 1.0 / np.sqrt(deg), 0.0)
                P = _diag(s) @ W @ _diag(s)
            else:
                P = _diag(np.where(deg > 0, 1.0 / deg, 0.0)) @ W
        A = t * (P - eye)
    A = sp.csr_array(A)
    A.eliminate_zeros()
    return A


def _taylor_plan(norm: float, tol: float) -> tuple[int, int]:
    """Steps ``s`` and degree ``K`` with ``s·δ(θ, K) <= tol``, ``θ = norm/s``, cheapest ``s·K``.

    ``δ(θ, K) = θ^{K+1}/(K+1)!·e^{2θ}`` bounds the relative truncation error of one
    Taylor step ``Σ_{k<=K} B^k/k!`` for ``‖B‖ <= θ`` (remainder ``<= θ^{K+1} e^θ/(K+1)!``,
    and ``‖e^B‖ >= e^{−θ}``).  ``θ <= 3`` keeps the cancellation of alternating terms
    below ``e^{2θ}·u``.
    """
    if norm == 0.0:
        return 1, 0
    best = None
    for theta_max in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0):
        s = max(1, math.ceil(norm / theta_max))
        theta = norm / s
        K, log_term = 0, 0.0
        target = math.log(tol / s) - 2.0 * theta
        while True:
            log_term += math.log(theta) - math.log(K + 1)  # log θ^{K+1}/(K+1)!
            if log_term <= target or K >= 200:
                break
            K += 1
        cand = (s * (K + 1), s, K + 1)
        if best is None or cand < best:
            best = cand
    return best[1], best[2]


@dataclass(frozen=True, eq=False, init=False)
class DiffusionMask(_SparseFunctionMask):
    """Heat-kernel mask ``M = exp(−t·ℒ)`` of a graph (or ``exp(t·W)``).

    Parameters
    ----------
    graph : AttentionGraph, networkx.Graph, scipy.sparse matrix or numpy array
        Weighted adjacency ``W >= 0`` on the ``L`` tokens (networkx edge attribute
        ``"weight"``, default 1); self-loops are kept.
    t : float
        Diffusion time, ``t >= 0`` (``t = 0`` is the identity).
    operator : {"laplacian", "normalized_laplacian", "random_walk_laplacian", "adjacency"}
        ``ℒ = D − W`` (default; ``D`` = weighted out-degrees), ``I − D^{-1/2} W D^{-1/2}``,
        ``I − D⁻¹W`` (the Markov generator: rows of ``M`` sum to one), or
        ``M = exp(+t·W)``.  Isolated nodes get ``D^{-1} = 0``.
    method : {"taylor", "expm_multiply"}
        ``"taylor"`` (numpy and torch): ``exp(A) = (T_K(A/s))^s`` with ``s``, ``K`` fixed
        a priori from ``‖A‖_1`` and ``tol``, so the product is one fixed polynomial in
        ``W`` (linear, identical on every backend).  ``"expm_multiply"``:
        :func:`scipy.sparse.linalg.expm_multiply` (numpy arrays only; full float64
        accuracy, ``tol`` unused).
    tol : float, default 1e-10
        Relative truncation tolerance of the Taylor method.
    length : int, optional
        Expected number of tokens ``L``; ``ValueError`` if the graph has another size.

    Notes
    -----
    Cost ``s·K`` sparse products, ``O(s·K·|E|·F)`` for ``F`` columns, with
    ``s`` steps of degree ``K`` chosen a priori from ``‖A‖_1`` and ``tol`` (the cheapest
    ``s·K`` whose remainder bound, which carries a factor ``e^{2‖A‖_1/s}``, meets ``tol``):
    ``s·K`` grows linearly in ``‖A‖_1``, about ``9·‖A‖_1`` at ``tol = 1e-10`` (72 products
    at ``‖A‖_1 = 8``, about 45k at ``‖A‖_1 = 4800``; see :meth:`cost`; no trace shift
    is applied, which would help graphs with very uneven degrees); computed in float64 (float32
    operands too) and cast back.  ``exp(−t·ℒ)`` and ``exp(t·W)`` are entrywise
    nonnegative for ``W >= 0``.  The error bound is the a-priori Taylor remainder per
    step; measured errors against :func:`scipy.linalg.expm` stay below ``tol`` (see the
    tests).  Symmetric ``W`` and a symmetric ``ℒ`` give a symmetric mask.

    Examples
    --------
    >>> import networkx as nx
    >>> from structattn.graphs.kernels import DiffusionMask
    >>> M = DiffusionMask(nx.path_graph(4), t=0.5)
    >>> M.to_dense().sum(axis=1).round(12)  # exp(-tL) conserves mass (L 1 = 0)
    array([1., 1., 1., 1.])
    """

    num_nodes: int
    t: float
    operator: str
    method: str
    tol: float
    symmetric: bool

    def __init__(self, graph: Any, t: float, *, operator: str = "laplacian",
                 method: str = "taylor", tol: float = 1e-10,
                 length: int | None = None) -> None:
        W = as_adjacency(graph)
        n = W.shape[0]
        check_length(n, length)
        if isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)) \
                or not math.isfinite(float(t)) or float(t) < 0:
            raise ValueError(f"t must be a finite float >= 0 (diffusion time), got {t!r}")
        if operator not in _OPERATORS:
            raise ValueError(f"operator must be one of {_OPERATORS}, got {operator!r}")
        if method not in ("taylor", "expm_multiply"):
            raise ValueError(
                f"method must be 'taylor' or 'expm_multiply', got {method!r}"
            )
        tol = _check_tol(tol)
        A = _generator(W, float(t), operator)
        s, K = _taylor_plan(one_norm(A), tol)
        for name, value in (("num_nodes", n), ("t", float(t)), ("operator", operator),
                            ("method", method), ("tol", tol),
                            ("symmetric", is_symmetric(A))):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_generator", A)
        object.__setattr__(self, "_step", SparseOperator(A / s))
        object.__setattr__(self, "plan", (s, K))
        object.__setattr__(self, "_log_scale", 0.0)

    def _normalized(self) -> Mask:
        """``e^{-c}·M`` with ``c = t·min(‖W‖_1, ‖W‖_∞) >= t·ρ(W)`` for ``exp(t·W)``.

        Attention normalizes rows, so the positive factor cancels; it keeps
        ``exp(t·W)`` (entries up to ``e^{t·ρ}``) inside the float32/float64 range: the
        factor ``e^{-c/s}`` is applied after each of the ``s`` Taylor steps.  Laplacian
        heat kernels have entries in ``[0, 1]`` and are returned unchanged.
        """
        if self.operator != "adjacency" or self.t == 0:
            return self
        A = self._generator
        c = min(one_norm(A), one_norm(sp.csr_array(A.T)))
        if c == 0.0:
            return self
        out = copy.copy(self)
        object.__setattr__(out, "_log_scale", -c)
        return out

    @property
    def nonnegative(self) -> bool:  # type: ignore[override]
        return True

    @property
    def generator(self) -> sp.csr_array:
        """The sparse ``A`` with ``M = exp(A)`` (``−t·ℒ`` or ``t·W``)."""
        return self._generator

    def cost(self, F: int) -> float:
        """Estimated flops of one product with ``F`` columns: ``2·s·K·(nnz(A) + L)·F``."""
        s, K = self.plan
        if self.method == "expm_multiply":
            s, K = max(1, s), max(K, 10)
        return 2.0 * s * K * (self._generator.nnz + self.num_nodes) * F

    def _apply(self, X: Any, transpose: bool) -> Any:
        if self.method == "expm_multiply":
            if is_torch(X):
                raise TypeError(
                    "method='expm_multiply' runs on numpy arrays only (scipy); use "
                    "method='taylor' for torch tensors"
                )
            A = self._generator.T.tocsr() if transpose else self._generator
            X2, back = _block(np.asarray(X, dtype=np.float64))
            if self._log_scale:
                A = A + self._log_scale * _diag(np.ones(A.shape[0]))
            return _cast_back(back(spla.expm_multiply(A, X2)), X)
        s, K = self.plan
        factor = math.exp(self._log_scale / s)
        Y = _work(X)
        for _ in range(s):
            term, acc = Y, Y
            for k in range(1, K + 1):
                term = self._step.apply(term, transpose) / k
                acc = acc + term
            Y = acc * factor if factor != 1.0 else acc
        return _cast_back(Y, X)

    def _structure(self) -> str:
        s, K = self.plan
        return (f"diffusion exp({'t·W' if self.operator == 'adjacency' else '-t·ℒ'}), "
                f"{self.operator}, t={self.t}: {self.method} ({s} step(s) x degree {K}), "
                f"tol={self.tol:g}")


@dataclass(frozen=True, eq=False, init=False)
class ResolventMask(_SparseFunctionMask):
    """Random-walk (resolvent) kernel mask ``M = (I − λW)⁻¹ = Σ_k λ^k W^k``.

    Parameters
    ----------
    graph : AttentionGraph, networkx.Graph, scipy.sparse matrix or numpy array
        Weighted adjacency ``W >= 0`` (self-loops kept).
    lam : float
        ``λ >= 0`` with ``λ·ρ(W) < 1`` (``ρ`` = spectral radius, :func:`spectral_radius`):
        then the series converges and ``M`` is entrywise nonnegative.
    method : {"auto", "series", "cg"}
        ``"series"``: truncated Neumann series of degree ``K`` (a fixed polynomial,
        numpy and torch); ``"cg"``: conjugate gradients on ``(I − λW) Y = X``, one
        independent solve per column (symmetric ``W`` only); ``"auto"``: the one with
        fewer sparse products by the a-priori counts below.
    tol : float, default 1e-10
        Relative error target.
    length : int, optional
        Expected number of tokens ``L``; ``ValueError`` if the graph has another size.

    Raises
    ------
    ValueError
        If ``λ·ρ(W) >= 1`` (the inverse is not the nonnegative series, or does not
        exist), for ``"cg"`` on an asymmetric ``W``, or invalid arguments.

    Notes
    -----
    With ``q = λ·ρ(W)``, symmetric ``W``: series degree ``K = ⌈log(tol)/log q⌉ − 1``
    (relative 2-norm error ``q^{K+1}``).  Directed acyclic ``W`` (nilpotent, ``ρ = 0``):
    ``K`` = the longest path length, the series is exact.  Other directed ``W``: ``ρ``
    bounds nothing about a truncation, so ``K`` comes from ``ν = λ·min(‖W‖_1, ‖W‖_∞)
    < 1`` (error ``≤ ν^{K+1}/(1 − ν)`` relative to the operand; ``ValueError`` if
    ``ν >= 1``).  ``λρ`` within ``1e-8`` of 1 and degrees above ``MAX_SERIES_DEGREE``
    are refused.
    ``O(K·|E|·F)``.  CG stops when every column's relative residual is below
    ``tol/κ`` with ``κ = (1 + q)/(1 − q)`` (then the relative error is below ``tol``);
    about ``√κ/2·log(2κ/tol)`` iterations.  CG's iteration count depends on the
    operand, so it is linear only to ``tol``; on torch its backward pass is another CG
    solve (``M`` symmetric).  Computed in float64 and cast back.
    """

    num_nodes: int
    lam: float
    method: str
    tol: float
    symmetric: bool
    rho: float

    def __init__(self, graph: Any, lam: float, *, method: str = "auto", tol: float = 1e-10,
                 length: int | None = None) -> None:
        W = as_adjacency(graph)
        n = W.shape[0]
        check_length(n, length)
        if isinstance(lam, bool) or not isinstance(lam, (int, float, np.integer,
                                                         np.floating)) \
                or not math.isfinite(float(lam)) or float(lam) < 0:
            raise ValueError(f"lam must be a finite float >= 0, got {lam!r}")
        if method not in ("auto", "series", "cg"):
            raise ValueError(f"method must be one of ('auto', 'series', 'cg'), got {method!r}")
        tol = _check_tol(tol)
        lam = float(lam)
        symmetric = is_symmetric(W)
        depth = None if symmetric else _dag_depth(W)
        rho = 0.0 if depth is not None else spectral_radius(W)
        q = lam * rho
        if q >= 1 - RHO_MARGIN:
            raise ValueError(
                f"lam * rho(W) must be < 1 for (I - lam W)^-1 = sum_k lam^k W^k to converge "
                f"(values within {RHO_MARGIN:g} of 1 are refused: rho is computed "
                f"numerically and the series would not terminate): got lam={lam:g}, "
                f"spectral radius rho(W)={rho:.6g}, lam*rho={q:.6g}; use "
                f"lam < 1/rho = {1 / rho:.6g}"
            )
        if symmetric:  # ||(lam W)^(K+1)||_2 = q^(K+1)
            K = 0 if q == 0 else max(0, math.ceil(math.log(tol) / math.log(q)) - 1)
        elif depth is not None:  # acyclic: W^(depth+1) = 0, the series is finite
            K = depth
        else:  # non-normal: rho bounds nothing; use nu = lam·min(||W||_1, ||W||_inf)
            nu = lam * min(one_norm(W), one_norm(W.T.tocsr()))
            if nu >= 1:
                raise ValueError(
                    f"directed W with lam*rho(W)={q:.6g} < 1 but lam*min(||W||_1, "
                    f"||W||_inf)={nu:.6g} >= 1: the truncated series has no a-priori error "
                    f"bound (W is not normal); use lam < "
                    f"{lam / nu:.6g} or a symmetric graph"
                )
            K = 0 if nu == 0 else max(
                0, math.ceil(math.log(tol * (1 - nu)) / math.log(nu)) - 1)
        if K > MAX_SERIES_DEGREE:
            raise ValueError(
                f"the series needs degree {K} > {MAX_SERIES_DEGREE} for tol={tol:g} "
                f"(lam*rho={q:.6g} too close to 1); lower lam or raise tol"
            )
        kappa = (1 + q) / (1 - q)
        cg_iters = math.ceil(0.5 * math.sqrt(kappa) * math.log(2 * kappa / tol)) + 1
        if method == "cg" and not symmetric:
            raise ValueError(
                "method='cg' needs a symmetric adjacency W (then I - lam W is symmetric "
                "positive definite); use method='series' for directed graphs"
            )
        if method == "auto":
            method = "cg" if symmetric and cg_iters < K else "series"
        for name, value in (("num_nodes", n), ("lam", lam), ("method", method),
                            ("tol", tol), ("symmetric", symmetric), ("rho", rho)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_W", SparseOperator(lam * W))
        object.__setattr__(self, "plan", {"series_degree": K, "cg_iterations": cg_iters,
                                          "kappa": kappa, "q": q})

    @property
    def nonnegative(self) -> bool:  # type: ignore[override]
        return True

    def cost(self, F: int) -> float:
        """Estimated flops: ``2·K·(nnz + L)·F`` (series) or ``2·iters·(nnz + 5L)·F`` (CG)."""
        nnz, n = self._W.nnz, self.num_nodes
        if self.method == "series":
            return 2.0 * self.plan["series_degree"] * (nnz + n) * F
        return 2.0 * self.plan["cg_iterations"] * (nnz + 5 * n) * F

    def _apply(self, X: Any, transpose: bool) -> Any:
        Xw = _work(X)
        if self.method == "series":
            Y, term = Xw, Xw
            for _ in range(self.plan["series_degree"]):
                term = self._W.apply(term, transpose)
                Y = Y + term
            return _cast_back(Y, X)
        return _cast_back(self._cg(Xw), X)

    def _cg(self, B: Any) -> Any:
        """Column-wise CG on ``(I − λW) Y = B`` (all columns at once)."""
        B2, back = _block(B)
        torch_in = is_torch(B2)

        def colsum(Z: Any) -> Any:
            return Z.sum(dim=0) if torch_in else Z.sum(axis=0)

        def op(Z: Any) -> Any:
            return Z - self._W.apply(Z)

        Y = B2 * 0
        R = B2.clone() if torch_in else B2.copy()
        P = R
        rr = colsum(R * R)
        target = (self.tol / self.plan["kappa"]) ** 2 * colsum(B2 * B2)
        max_iter = 2 * self.plan["cg_iterations"] + 20
        for _ in range(max_iter):
            if bool((rr <= target).all()):
                break
            AP = op(P)
            pap = colsum(P * AP)
            active = rr > target
            denom = pap + (pap == 0) if torch_in else np.where(pap == 0, 1.0, pap)
            alpha = rr / denom * active
            Y = Y + alpha * P
            R = R - alpha * AP
            rr_new = colsum(R * R)
            beta = rr_new / (rr + (rr == 0)) * active
            P = R + beta * P
            rr = rr_new
        else:
            warnings.warn(
                f"ResolventMask CG did not reach tol={self.tol:g} in {max_iter} iterations",
                RuntimeWarning, stacklevel=4,
            )
        return back(Y)

    def _structure(self) -> str:
        how = (f"Neumann series degree {self.plan['series_degree']}" if self.method == "series"
               else f"CG (<= ~{self.plan['cg_iterations']} iterations)")
        return (f"resolvent (I - λW)^-1, λ={self.lam:g}, λρ={self.plan['q']:.3g}: {how}, "
                f"tol={self.tol:g}")

