"""Dual-encoder scores and their capacity: exact rank, row-shift (softmax) rank, best fits.

A dual encoder (DE) scores ``S = Φ Ψᵀ`` with query embeddings ``Φ (..., n, d)`` and
document embeddings ``Ψ (..., m, d)`` — an attention-logit matrix of rank ``<= d``.  A
cross-attention (CA) model may produce any ``S (..., n, m)``.  This module answers how
large ``d`` must be:

* exact scores: ``d = rank(S)``; the best rank-``d`` fit in Frobenius norm is the
  truncated SVD (Eckart–Young), with error ``sqrt(Σ_{i>d} σ_i²)``;
* score *distributions* ``softmax_j S[q, j]`` are invariant to a per-query shift
  ``S + c 1ᵀ``, and ``min_c rank(S + c 1ᵀ) = rank([S; 1ᵀ]) − 1 = rank(S P)`` with
  ``P = I − 1 1ᵀ / m`` the row-centering projection (the row space of ``[S; 1ᵀ]`` is
  ``span(1) ⊕ rowspace(S P)``).  So the softmax capacity is the rank of the
  row-centered matrix: ``rank(S) − 1`` when ``1`` lies in the row space of ``S``, else
  ``rank(S)``; the best shift-invariant rank-``d`` fit is the truncated SVD of ``S P``.

All functions run on numpy arrays and torch tensors (``torch.linalg.svd`` carries
autograd) with any leading batch dimensions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import is_torch, namespace, validate_float_array, validate_same_kind
from ._common import check_choice, check_int, check_positive, to_numpy

__all__ = ["best_de_fit", "de_capacity", "de_fit_errors", "de_scores"]

_TARGETS = ("scores", "softmax")


def de_scores(phi: Any, psi: Any, *, normalize: bool = False, temperature: float = 1.0) -> Any:
    """Dual-encoder scores ``Φ Ψᵀ / temperature``.

    Parameters
    ----------
    phi : array (..., n, d)
        Query embeddings.
    psi : array (..., m, d)
        Document embeddings; batch dimensions broadcast with ``phi``'s.
    normalize : bool
        L2-normalize each embedding first (cosine scores).
    temperature : float
        Divides the scores.

    Returns
    -------
    array (..., n, m)
        Same kind, dtype and device as the inputs; differentiable under torch.

    Notes
    -----
    ``O(n · m · d)`` time; equal to the attention logits ``Q Kᵀ`` with scale ``1/temperature``.
    """
    validate_float_array(phi, "phi", min_ndim=2)
    validate_float_array(psi, "psi", min_ndim=2)
    validate_same_kind({"phi": phi, "psi": psi})
    if phi.shape[-1] != psi.shape[-1]:
        raise ValueError(
            f"phi and psi must have the same embedding size d; got phi.shape={tuple(phi.shape)} "
            f"and psi.shape={tuple(psi.shape)}"
        )
    tau = check_positive(temperature, "temperature")
    xp = namespace(phi, psi)
    if normalize:
        phi = phi / xp.clip(xp.linalg.vector_norm(phi, axis=-1, keepdims=True), min=1e-30)
        psi = psi / xp.clip(xp.linalg.vector_norm(psi, axis=-1, keepdims=True), min=1e-30)
    s = phi @ xp.matrix_transpose(psi)
    return s / tau if tau != 1.0 else s


def _target_matrix(S: Any, target: str) -> Any:
    check_choice(target, "target", _TARGETS)
    if target == "softmax":
        xp = namespace(S)
        return S - xp.mean(S, axis=-1, keepdims=True)
    return S


def _default_rtol(S: Any) -> float:
    return 1e-10 if str(S.dtype).endswith("float64") else 1e-5


def de_capacity(S: Any, *, target: str = "scores", rtol: float | None = None) -> Any:
    """Minimal embedding dimension ``d`` with which a DE reproduces ``S`` exactly.

    Parameters
    ----------
    S : array (..., n, m)
        Score matrix (e.g. a cross-attention teacher's scores).
    target : {"scores", "softmax"}
        ``"scores"``: ``rank(S)``.  ``"softmax"``: the rank needed for every row's softmax
        distribution, ``min_c rank(S + c 1ᵀ)`` = rank of the row-centered matrix.
    rtol : float, optional
        Singular values ``<= rtol · σ_max(S)`` count as zero (``σ_max`` of the *uncentered*
        ``S`` for both targets, so the threshold does not depend on the target).  Default
        ``1e-10`` for float64, ``1e-5`` for float32.

    Returns
    -------
    int, or int64 numpy array of the batch shape
        ``0 <= d <= min(n, m)``.

    Notes
    -----
    One SVD (singular values only) per matrix, ``O(n m min(n, m))``; computed in numpy.
    Bounds: the order-preserving dimension satisfies ``1 <= d_order <= d_softmax <=
    d_scores`` (the first is not computed here; see :func:`fit_free_embeddings`).
    """
    validate_float_array(S, "S", min_ndim=2)
    tol = _default_rtol(S) if rtol is None else check_positive(rtol, "rtol")
    A = to_numpy(S).astype(np.float64)
    top = np.linalg.svd(A, compute_uv=False)[..., :1]
    sv = np.linalg.svd(_target_matrix(A, target), compute_uv=False)
    rank = (sv > tol * top).sum(axis=-1)
    return int(rank) if rank.ndim == 0 else rank.astype(np.int64)


def de_fit_errors(S: Any, *, target: str = "scores") -> Any:
    """Relative error of the best rank-``d`` DE fit for every ``d = 0 … min(n, m)``.

    ``err(d) = sqrt(Σ_{i>d} σ_i²) / ‖T‖_F`` where ``σ`` are the singular values of the
    target matrix ``T`` (``S``, or the row-centered ``S`` for ``target="softmax"``).

    Parameters
    ----------
    S : array (..., n, m)
    target : {"scores", "softmax"}

    Returns
    -------
    float64 numpy array (..., min(n, m) + 1)
        Non-increasing in ``d``, ``err(0) = 1`` (0 for a zero target), ``err(rank) = 0``.
    """
    validate_float_array(S, "S", min_ndim=2)
    sv = np.linalg.svd(_target_matrix(to_numpy(S).astype(np.float64), target),
                       compute_uv=False)
    tail = np.cumsum((sv**2)[..., ::-1], axis=-1)[..., ::-1]
    tail = np.concatenate([tail, np.zeros((*tail.shape[:-1], 1))], axis=-1)
    total = tail[..., :1]
    return np.sqrt(np.clip(tail, 0.0, None)) / np.where(total > 0, np.sqrt(total), 1.0)


def best_de_fit(S: Any, d: int, *, target: str = "scores") -> tuple[Any, Any]:
    """The optimal rank-``d`` dual encoder for ``S`` (truncated SVD, Eckart–Young).

    Parameters
    ----------
    S : array (..., n, m)
    d : int
        Embedding dimension (``>= 1``); columns beyond ``min(n, m)`` are zero.
    target : {"scores", "softmax"}
        ``"scores"``: ``Φ Ψᵀ`` is the best rank-``d`` Frobenius approximation of ``S``.
        ``"softmax"``: of the row-centered ``S − mean_j S`` — the best approximation of
        ``S`` up to a per-query shift, which leaves every row's softmax unchanged (add the
        row means back to recover scores).

    Returns
    -------
    phi : array (..., n, d)
        ``U_d Σ_d^{1/2}``.
    psi : array (..., m, d)
        ``V_d Σ_d^{1/2}``.  Same kind, dtype and device as ``S``; differentiable under
        torch (``torch.linalg.svd``; gradients are undefined at repeated singular values).

    Notes
    -----
    One thin SVD, ``O(n m min(n, m))``.  With ``d >= de_capacity(S, target=target)`` the
    fit is exact (scores, resp. softmax rows) up to round-off.
    """
    validate_float_array(S, "S", min_ndim=2)
    d = check_int(d, "d")
    xp = namespace(S)
    T = _target_matrix(S, target)
    U, sv, Vh = xp.linalg.svd(T, full_matrices=False)
    r = min(d, sv.shape[-1])
    root = xp.sqrt(sv[..., :r])
    phi = U[..., :r] * root[..., None, :]
    psi = xp.matrix_transpose(Vh[..., :r, :]) * root[..., None, :]
    if r < d:
        pad_q = xp.zeros((*phi.shape[:-1], d - r), dtype=phi.dtype)
        pad_d = xp.zeros((*psi.shape[:-1], d - r), dtype=psi.dtype)
        if is_torch(S):
            pad_q, pad_d = pad_q.to(S.device), pad_d.to(S.device)
        phi = xp.concat([phi, pad_q], axis=-1)
        psi = xp.concat([psi, pad_d], axis=-1)
    return phi, psi
