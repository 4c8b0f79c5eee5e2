"""Lift, project and hard binding by a binding matrix; HOWM's aligned energy.

A binding matrix ``M (..., N, K)`` relates ``K`` perceived slots to ``N`` library objects
(see :func:`~structattn.objects.binding_attention`).  It moves states between the *slot
MDP* ``(..., K, D)`` and the *full (library) MDP* ``(..., N, D)``:

* :func:`lift` — ``x = M z`` (or ``pinv(M)ᵀ z``, the authors' ``pseudo_inverse`` lift);
* :func:`project` — ``z = Mᵀ x`` (the adjoint of :func:`lift`) or ``pinv(M) x`` (its
  left inverse when ``M`` has full column rank);
* :func:`hard_binding` — the one-hot argmax over slots of every library row;
* :func:`aligned_energy` — the distance between two slot states after lifting each with its
  own binding, so that the slot order at ``t`` and ``t+1`` does not matter.

Leading batch dimensions broadcast between ``z``/``x`` and ``M`` (a binding may be shared).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import namespace
from ._common import check_arrays, check_backend, check_positive

__all__ = ["aligned_energy", "hard_binding", "lift", "project"]


def _check_pair(a: Any, a_name: str, M: Any, axis_name: str, check_finite: bool) -> None:
    check_arrays({a_name: a, "M": M}, min_ndim=2, check_finite=check_finite)
    size = M.shape[-1] if axis_name == "K" else M.shape[-2]
    if a.shape[-2] != size:
        raise ValueError(
            f"{a_name} must have shape (..., {axis_name}, D) with {axis_name} = {size} from "
            f"M.shape={tuple(M.shape)} (..., N, K); got {a_name}.shape={tuple(a.shape)}"
        )
    try:
        np.broadcast_shapes(tuple(a.shape[:-2]), tuple(M.shape[:-2]))
    except ValueError:
        raise ValueError(
            f"the leading (batch) dimensions of {a_name} {tuple(a.shape[:-2])} and M "
            f"{tuple(M.shape[:-2])} do not broadcast"
        ) from None


def lift(
    z: Any, M: Any, *, pseudo_inverse: bool = False, backend: str = "auto",
    check_finite: bool = True,
) -> Any:
    """Lift slot states to the library: ``M z`` ``(..., N, D)``.

    Parameters
    ----------
    z : array (..., K, D)
        Slot states.
    M : array (..., N, K)
        Binding matrix.
    pseudo_inverse : bool
        Lift with ``pinv(M)ᵀ`` instead of ``M`` (HOWM's ``pseudo_inverse=True``): then
        ``project(lift(z, M, pseudo_inverse=True), M) == z`` when ``M`` has full column rank.
    backend : {"auto", "numpy", "numba", "torch"}
        Checked against the inputs (one array-API code path for all).
    check_finite : bool
        Scan the inputs for NaN/Inf.

    Returns
    -------
    array (..., N, D)

    Notes
    -----
    ``O(N·K·D)`` time, plus ``O(N·K²)`` for the pseudo-inverse (an SVD of ``M``).
    """
    check_backend(backend, z, M)
    _check_pair(z, "z", M, "K", check_finite)
    xp = namespace(z, M)
    if pseudo_inverse:
        return xp.matrix_transpose(xp.linalg.pinv(M)) @ z
    return M @ z


def project(
    x: Any, M: Any, *, pseudo_inverse: bool = False, backend: str = "auto",
    check_finite: bool = True,
) -> Any:
    """Project library states onto the slots: ``Mᵀ x`` ``(..., K, D)``.

    Parameters
    ----------
    x : array (..., N, D)
        Library (full-MDP) states.
    M : array (..., N, K)
        Binding matrix.
    pseudo_inverse : bool
        Use ``pinv(M)`` instead of ``Mᵀ``: the least-squares inverse of :func:`lift`, so
        ``project(lift(z, M), M, pseudo_inverse=True) == z`` when ``M`` has full column
        rank (``K ≤ N``).
    backend : {"auto", "numpy", "numba", "torch"}
        Checked against the inputs (one array-API code path for all).
    check_finite : bool
        Scan the inputs for NaN/Inf.

    Returns
    -------
    array (..., K, D)

    Notes
    -----
    Without the pseudo-inverse this is the adjoint of :func:`lift`:
    ``⟨lift(z, M), x⟩ = ⟨z, project(x, M)⟩``.  ``O(N·K·D)`` time (plus ``O(N·K²)`` for
    ``pinv``).
    """
    check_backend(backend, x, M)
    _check_pair(x, "x", M, "N", check_finite)
    xp = namespace(x, M)
    if pseudo_inverse:
        return xp.linalg.pinv(M) @ x
    return xp.matrix_transpose(M) @ x


def hard_binding(M: Any, *, backend: str = "auto", check_finite: bool = True) -> Any:
    """One-hot argmax over the slots of each library row; ties go to the lowest slot.

    Parameters
    ----------
    M : array (..., N, K)
        Binding matrix (any real scores work).
    backend : {"auto", "numpy", "numba", "torch"}
        Checked against the input (one array-API code path for all).
    check_finite : bool
        Scan the input for NaN/Inf.

    Returns
    -------
    array (..., N, K)
        Same dtype as ``M``, exactly one 1 per row.  Piecewise constant: no gradient flows.

    Notes
    -----
    ``O(N·K)`` time.
    """
    check_backend(backend, M)
    check_arrays({"M": M}, min_ndim=2, check_finite=check_finite)
    xp = namespace(M)
    idx = xp.argmax(M, axis=-1)  # numpy and torch both return the first maximum
    slots = xp.arange(int(M.shape[-1]), device=M.device if hasattr(M, "device") else None)
    return xp.astype(slots == idx[..., None], M.dtype)


def aligned_energy(
    z_pred: Any,
    z_next: Any,
    M_t: Any,
    M_next: Any,
    *,
    sigma: float = 0.5,
    backend: str = "auto",
    check_finite: bool = True,
) -> Any:
    """HOWM's aligned energy: a distance between slot states lifted by their own bindings.

    ``E = 1/(2σ²) · mean_N Σ_D (M_t ẑ − M_next z')²`` — the positive term of the
    contrastive loss with ``ẑ = z_t + T(z_t, ã_t)``; the negative term is the same with
    ``ẑ = z_t`` and ``z'`` another sample's slots.

    Parameters
    ----------
    z_pred : array (..., K, D)
        Predicted next slot states (slot order of time ``t``).
    z_next : array (..., K', D)
        Observed next slot states (slot order of time ``t+1``).
    M_t : array (..., N, K)
        Binding at time ``t``.
    M_next : array (..., N, K')
        Binding at time ``t+1``.
    sigma : float
        Energy scale (0.5 in HOWM and C-SWM).
    backend : {"auto", "numpy", "numba", "torch"}
        Checked against the inputs (one array-API code path for all).
    check_finite : bool
        Scan the inputs for NaN/Inf.

    Returns
    -------
    array (...)
        One energy per batch element.

    Notes
    -----
    Invariant to a simultaneous permutation of the slots of ``(z_pred, M_t)`` (and,
    independently, of ``(z_next, M_next)``).  ``O(N·(K + K')·D)`` time.
    """
    sigma = check_positive(sigma, "sigma")
    check_backend(backend, z_pred, z_next, M_t, M_next)
    x = lift(z_pred, M_t, check_finite=check_finite)
    y = lift(z_next, M_next, check_finite=check_finite)
    if x.shape[-2:] != y.shape[-2:]:
        raise ValueError(
            f"lifted states must have the same (N, D); got {tuple(x.shape[-2:])} from "
            f"z_pred/M_t and {tuple(y.shape[-2:])} from z_next/M_next"
        )
    xp = namespace(x, y)
    sq = xp.sum((x - y) ** 2, axis=-1)
    return (0.5 / sigma**2) * xp.mean(sq, axis=-1)
