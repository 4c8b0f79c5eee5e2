"""The NeuralEF minibatch algebra, written once against the array API.

These functions take the normalised outputs ``Ψ`` of ``k`` eigenfunction candidates on
a batch of ``B`` points and the product ``K_b Ψ`` of the batch kernel block with them,
and return the quantities of neuralef.md §1.4:

* ``R̂ = Ψᵀ K_b Ψ / B²`` (``k x k``), whose diagonal estimates the eigenvalues;
* the strictly upper triangular ``U`` with ``U_ij = R̂_ij / R̂_ii`` (``i < j``);
* the output-gradient matrix ``G = K_b Ψ (I - U)``: the functional gradient direction of
  every player of the game (the surrogate loss of :mod:`structattn.eigen.neuralef` has
  gradient ``-2 G / B²`` with respect to ``Ψ``);
* the backward pass of the L2 batch normalisation ``ψ = h / s``,
  ``s = sqrt(mean_b h²)``: ``∂L/∂h = (g - ψ ⊙ mean_b(g ⊙ ψ)) / s``.

They run on numpy arrays and on (detached) torch tensors alike; the torch trainer calls
them for its eigenvalue estimates, and the tests check that the torch autograd of the
surrogate loss reproduces ``G`` and the normalisation backward to 1e-12 in float64.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .._array import namespace

__all__ = [
    "BatchTerms",
    "batch_terms",
    "diagonal_free_rayleigh",
    "l2bn_backward",
    "l2bn_forward",
]


class BatchTerms(NamedTuple):
    """Result of :func:`batch_terms` (arrays of the input's kind)."""

    R: Any
    """``R̂ = Ψᵀ K_b Ψ / B²``, shape ``(k, k)``."""
    U: Any
    """Strictly upper triangular ``U_ij = R̂_ij / R̂_ii`` (``i < j``), shape ``(k, k)``."""
    G: Any
    """Output-gradient matrix ``K_b Ψ (I - U)``, shape ``(B, k)``."""
    eigenvalues: Any
    """``diag(R̂)``, shape ``(k,)``: the batch eigenvalue estimates."""


def batch_terms(psi: Any, kpsi: Any) -> BatchTerms:
    """``R̂``, ``U``, ``G`` and ``diag(R̂)`` from ``Ψ`` and ``K_b Ψ``.

    Parameters
    ----------
    psi : array, shape (B, k)
        Normalised function values on the batch (``mean_b ψ_j² = 1``).
    kpsi : array, shape (B, k)
        ``K_b Ψ`` (exact block product or a feature estimate ``Fᵀ(FΨ)/S``).

    Returns
    -------
    BatchTerms

    Notes
    -----
    ``O(B k²)`` time.  A non-positive ``R̂_ii`` (possible only with a signed feature
    estimate of ``K_b``) makes ``U`` undefined; those rows of ``U`` are set to zero.
    """
    xp = namespace(psi, kpsi)
    B, k = psi.shape
    R = (xp.matrix_transpose(psi) @ kpsi) / (B * B)
    R = (R + xp.matrix_transpose(R)) / 2
    diag = xp.linalg.diagonal(R)
    safe = xp.where(diag > 0, diag, xp.ones_like(diag))
    rows = xp.arange(k)
    upper = rows[:, None] < rows[None, :]
    ratio = xp.where(diag[:, None] > 0, R / safe[:, None], xp.zeros_like(R))
    U = xp.where(upper, ratio, xp.zeros_like(R))
    eye = xp.eye(k, dtype=psi.dtype, device=getattr(psi, "device", None))
    G = kpsi @ (eye - U)
    return BatchTerms(R=R, U=U, G=G, eigenvalues=diag)


def l2bn_forward(h: Any) -> tuple[Any, Any]:
    """L2 batch normalisation ``ψ = h / s`` with ``s = sqrt(mean_b h²)`` per column.

    Parameters
    ----------
    h : array, shape (B, k)

    Returns
    -------
    psi : array, shape (B, k)
    s : array, shape (k,)
    """
    xp = namespace(h)
    s = xp.sqrt(xp.mean(h * h, axis=0))
    return h / s, s


def l2bn_backward(g: Any, psi: Any, s: Any) -> Any:
    """Backward of :func:`l2bn_forward`: ``∂L/∂h = (g - ψ ⊙ mean_b(g ⊙ ψ)) / s``.

    Parameters
    ----------
    g : array, shape (B, k)
        ``∂L/∂ψ``.
    psi : array, shape (B, k)
        The normalised outputs.
    s : array, shape (k,)
        The batch RMS used in the forward pass.

    Returns
    -------
    array, shape (B, k)
    """
    xp = namespace(g, psi)
    return (g - psi * xp.mean(g * psi, axis=0)) / s


def diagonal_free_rayleigh(psi: Any, kpsi: Any, kdiag: Any) -> Any:
    """Diagonal-free Rayleigh quotients ``μ̂_j`` on ``N`` points (neuralef.md §1.4).

    ``μ̂_j = [Σ_{n≠m} ψ_j(x_n) κ(x_n, x_m) ψ_j(x_m) / (N(N-1))] / [Σ_n ψ_j(x_n)² / N]``:
    the U-statistic of ``⟨ψ_j, T ψ_j⟩`` over the sample estimate of ``⟨ψ_j, ψ_j⟩``,
    free of the ``O(1/N)`` upward bias of the kernel diagonal.

    Parameters
    ----------
    psi : array, shape (N, k)
        Function values on the points.
    kpsi : array, shape (N, k)
        ``K Ψ`` on the same points (``K`` may be applied in blocks by the caller).
    kdiag : array, shape (N,)
        ``κ(x_n, x_n)``.

    Returns
    -------
    array, shape (k,)

    Notes
    -----
    ``O(N k)`` given ``K Ψ``.
    """
    xp = namespace(psi, kpsi, kdiag)
    N = psi.shape[0]
    if N < 2:
        raise ValueError(f"the diagonal-free Rayleigh quotient needs N >= 2 points, got {N}")
    quad = xp.sum(psi * kpsi, axis=0)
    diag = xp.sum(kdiag[:, None] * psi * psi, axis=0)
    norm = xp.sum(psi * psi, axis=0) / N
    return (quad - diag) / (N * (N - 1)) / norm
