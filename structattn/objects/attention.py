"""Slot and binding attention: the inverted (Slot Attention) step, binding, Sinkhorn.

Three attention operators from object-oriented world models (HOWM, Zhao et al., ICML 2022;
Slot Attention, Locatello et al., NeurIPS 2020), written once against the array API so that
numpy arrays and torch tensors (with autograd, any device) take the same code path.  Shapes
carry any leading batch/head dimensions ``...``.

* :func:`inverted_attention` — Slot Attention's step.  The softmax runs over the **queries**
  (slots compete for each input), then each slot's weights are renormalised over the inputs:
  ``A = colnormalize(softmax_K(k qᵀ·scale) + eps)``, output ``Aᵀ v``.  That is one Sinkhorn
  iteration on ``exp(k qᵀ·scale)`` (slot axis, then input axis).
* :func:`binding_attention` — HOWM's action-binding matrix ``M (N, K)``: queries from slots,
  keys from library identities, softmax over slots, so each library object's row is a
  distribution over slots.  :func:`bind_actions` routes library-indexed actions to slots.
* :func:`sinkhorn` — log-domain Sinkhorn normalisation with rectangular marginals and a
  temperature; the doubly-stochastic variant of the binding when ``K = N`` (a proposal, not
  from the paper's code) and the many-iteration limit of the Slot Attention normalisation.
"""

from __future__ import annotations

import math
from typing import Any

from .._array import namespace, validate_attention_inputs, validate_same_kind
from ._common import (
    check_arrays,
    check_backend,
    check_eps,
    check_int,
    check_positive,
    check_scale,
    logsumexp,
    softmax,
)

__all__ = ["bind_actions", "binding_attention", "inverted_attention", "sinkhorn"]

_FIRST_AXES = ("slots", "inputs")


def inverted_attention(
    q: Any,
    k: Any,
    v: Any,
    *,
    scale: float | None = None,
    eps: float = 1e-8,
    return_weights: bool = False,
    backend: str = "auto",
    check_finite: bool = True,
) -> Any:
    """Slot Attention's inverted attention step: softmax over slots, then a weighted mean.

    ``L = k qᵀ · scale`` ``(..., n, K)``; ``A = softmax over K of L``; ``A ← A + eps``;
    ``A ← A / Σ_inputs A`` (every column sums to 1); output ``U = Aᵀ v``.

    Parameters
    ----------
    q : array (..., K, d)
        Slot queries (``K`` slots).
    k : array (..., n, d)
        Input keys.
    v : array (..., n, d_v)
        Input values.
    scale : float, optional
        Logit scale, default ``1/sqrt(d)``.
    eps : float
        Added to the softmax before the column normalisation (``1e-8`` in Slot Attention),
        so that a slot no input chose still gets a well-defined mean.
    return_weights : bool
        Also return ``A`` ``(..., n, K)`` (columns sum to 1).
    backend : {"auto", "numpy", "numba", "torch"}
        Checked against the inputs; numpy and numba both run the numpy core.
    check_finite : bool
        Scan the inputs for NaN/Inf.

    Returns
    -------
    out : array (..., K, d_v)
        Each slot's weighted mean of the values.
    weights : array (..., n, K)
        Only with ``return_weights=True``.

    Notes
    -----
    ``O(n·K·(d + d_v))`` time and ``O(n·K)`` memory: no ``n × n`` matrix.  Permuting the
    slots permutes the output rows identically (equivariance); permuting the rows of ``k``
    and ``v`` jointly leaves the output unchanged (invariance).
    """
    check_backend(backend, q, k, v)
    _, _, _, d, _ = validate_attention_inputs(q, k, v, check_finite=check_finite)
    scale = check_scale(scale, d)
    eps = check_eps(eps)
    xp = namespace(q, k, v)
    logits = (k @ xp.matrix_transpose(q)) * scale  # (..., n, K)
    A = softmax(logits, axis=-1) + eps
    A = A / xp.sum(A, axis=-2, keepdims=True)
    out = xp.matrix_transpose(A) @ v
    return (out, A) if return_weights else out


def binding_attention(
    slots: Any,
    *,
    w_q: Any,
    w_k: Any,
    identities: Any = None,
    scale: float | None = None,
    backend: str = "auto",
    check_finite: bool = True,
) -> Any:
    """HOWM's binding matrix: each library object's distribution over the ``K`` slots.

    ``M = softmax over K of (keys · (slots w_q)ᵀ · scale)`` ``(..., N, K)``, with
    ``keys = identities @ w_k``; without ``identities`` the identities are the one-hot
    library ids ``I_N`` and ``keys = w_k``.

    Parameters
    ----------
    slots : array (..., K, D_s)
        Slot states.
    w_q : array (D_s, d)
        Query projection of the slots.
    w_k : array (N, d) or (D_id, d)
        Key projection: one row per library object when ``identities`` is None, otherwise
        the projection of the identity features.
    identities : array (..., N, D_id), optional
        Identity features of the ``N`` library objects (default: one-hot, ``I_N``).
    scale : float, optional
        Logit scale, default ``1/sqrt(d)``.
    backend, check_finite
        As in :func:`inverted_attention`.

    Returns
    -------
    M : array (..., N, K)
        Rows sum to 1.  (The authors' code detaches ``M`` before using it in the energy;
        this operator does not: call ``M.detach()`` for that behaviour.)

    Notes
    -----
    ``O(K·D_s·d + N·D_id·d + N·K·d)`` time.  Permuting the identities (rows of
    ``identities``, or of ``w_k``) by ``σ ∈ S_N`` permutes the rows of ``M`` by ``σ``;
    permuting the slots permutes its columns.
    """
    check_backend(backend, slots, w_q, w_k, identities)
    check_arrays({"slots": slots}, min_ndim=2, check_finite=check_finite)
    check_arrays({"w_q": w_q, "w_k": w_k}, min_ndim=2, check_finite=check_finite)
    validate_same_kind({"slots": slots, "w_q": w_q, "w_k": w_k})
    for name, w in (("w_q", w_q), ("w_k", w_k)):
        if w.ndim != 2:
            raise ValueError(f"{name} must be a matrix (2-D), got shape {tuple(w.shape)}")
    if w_q.shape[0] != slots.shape[-1]:
        raise ValueError(
            f"w_q must have shape (D_s, d) with D_s = slots.shape[-1] = {slots.shape[-1]}; "
            f"got w_q.shape={tuple(w_q.shape)}"
        )
    if w_k.shape[1] != w_q.shape[1]:
        raise ValueError(
            f"w_k and w_q must project to the same size d; got w_q.shape={tuple(w_q.shape)} "
            f"and w_k.shape={tuple(w_k.shape)}"
        )
    if identities is not None:
        check_arrays({"identities": identities}, min_ndim=2, check_finite=check_finite)
        validate_same_kind({"slots": slots, "identities": identities})
        if identities.shape[-1] != w_k.shape[0]:
            raise ValueError(
                f"w_k must have shape (D_id, d) with D_id = identities.shape[-1] = "
                f"{identities.shape[-1]}; got w_k.shape={tuple(w_k.shape)}"
            )
        keys = identities @ w_k
    else:
        keys = w_k
    scale = check_scale(scale, int(w_q.shape[1]))
    xp = namespace(slots, w_q, w_k)
    queries = slots @ w_q  # (..., K, d)
    logits = (keys @ xp.matrix_transpose(queries)) * scale  # (..., N, K)
    return softmax(logits, axis=-1)


def bind_actions(
    M: Any, action_values: Any, *, eps: float = 1e-8, backend: str = "auto",
    check_finite: bool = True,
) -> Any:
    """Route library-indexed action values to slots: ``(M + eps)ᵀ V``.

    Parameters
    ----------
    M : array (..., N, K)
        Binding matrix (rows: library objects, columns: slots).
    action_values : array (..., N, d_a)
        One action vector per library object (HOWM: ``LN(a_lib W_enc) W_v``; a one-hot
        ``(N, 4)`` action works as is).
    eps : float
        Added to ``M`` as in the authors' code.
    backend : {"auto", "numpy", "numba", "torch"}
        Checked against the inputs.
    check_finite : bool
        Scan the inputs for NaN/Inf.

    Returns
    -------
    array (..., K, d_a)
        A **sum** (not a mean) of the actions bound to each slot.

    Notes
    -----
    ``O(N·K·d_a)`` time.  Leading dimensions broadcast (``M`` may be shared by a batch).
    """
    check_backend(backend, M, action_values)
    check_arrays({"M": M, "action_values": action_values}, check_finite=check_finite)
    if M.shape[-2] != action_values.shape[-2]:
        raise ValueError(
            f"M (..., N, K) and action_values (..., N, d_a) must have the same N; got "
            f"M.shape={tuple(M.shape)} and action_values.shape={tuple(action_values.shape)}"
        )
    eps = check_eps(eps)
    xp = namespace(M, action_values)
    return xp.matrix_transpose(M + eps) @ action_values


def _log_marginal(m: Any, name: str, logits: Any, axis: int, default: float) -> Any:
    """``log`` of a validated marginal over ``axis`` of ``logits`` (-2: inputs, -1: slots)."""
    xp = namespace(logits)
    size = int(logits.shape[axis])
    if m is None:
        ones = xp.ones_like(logits[..., :, 0] if axis == -2 else logits[..., 0, :])
        return ones * math.log(default)
    check_arrays({name: m}, min_ndim=1)
    validate_same_kind({"logits": logits, name: m})
    if m.shape[-1] != size:
        raise ValueError(f"{name} must have shape (..., {size}), got {tuple(m.shape)}")
    if not bool(xp.all(m > 0)):
        raise ValueError(f"{name} must be strictly positive")
    return xp.log(m)


def sinkhorn(
    logits: Any,
    *,
    iterations: int = 20,
    tau: float = 1.0,
    first_axis: str = "slots",
    input_marginal: Any = None,
    slot_marginal: Any = None,
    return_log: bool = False,
    backend: str = "auto",
    check_finite: bool = True,
) -> Any:
    """Log-domain Sinkhorn normalisation of ``exp(logits / tau)`` with rectangular marginals.

    The plan ``P (..., n, K)`` is rescaled alternately so that each input row sums to its
    ``input_marginal`` (the *slots* half: a normalisation over the slot axis, ``-1``) and
    each slot column sums to its ``slot_marginal`` (the *inputs* half: over axis ``-2``).
    One iteration is both halves, in the order ``first_axis`` says; the last half applied
    (the second) holds exactly.

    Parameters
    ----------
    logits : array (..., n, K)
        Rows: inputs (Slot Attention) or library objects (binding); columns: slots.
    iterations : int
        Number of full iterations (each ``O(n·K)``).
    tau : float
        Temperature: ``exp(logits / tau)``.  ``tau → 0`` drives a square plan whose logits
        are dominated by a permutation to that permutation matrix.
    first_axis : {"slots", "inputs"}
        Which half comes first.  ``"slots"`` with ``iterations=1`` is the
        :func:`inverted_attention` weight matrix (up to its ``eps``).
    input_marginal : array (..., n), optional
        Positive row sums; default ``K/n`` for every input.
    slot_marginal : array (..., K), optional
        Positive column sums; default 1 for every slot (each slot a weighted mean).
        Both marginals must have the same total; the defaults total ``K``.
    return_log : bool
        Return ``log P`` instead of ``P``.
    backend, check_finite
        As in :func:`inverted_attention`.

    Returns
    -------
    array (..., n, K)
        The plan (or its log).

    Notes
    -----
    ``O(iterations·n·K)`` time; every step is a ``logsumexp``, so small ``tau`` neither
    overflows nor underflows.  Differentiable (torch autograd through the iterations).
    """
    check_backend(backend, logits, input_marginal, slot_marginal)
    check_arrays({"logits": logits}, min_ndim=2, check_finite=check_finite)
    iterations = check_int(iterations, "iterations", minimum=1)
    tau = check_positive(tau, "tau")
    if first_axis not in _FIRST_AXES:
        raise ValueError(f"first_axis must be one of {_FIRST_AXES}, got {first_axis!r}")
    xp = namespace(logits)
    n, K = int(logits.shape[-2]), int(logits.shape[-1])
    log_a = _log_marginal(input_marginal, "input_marginal", logits, -2, K / n)
    log_b = _log_marginal(slot_marginal, "slot_marginal", logits, -1, 1.0)
    if input_marginal is not None or slot_marginal is not None:
        ta = xp.sum(xp.exp(log_a), axis=-1)
        tb = xp.sum(xp.exp(log_b), axis=-1)
        if not bool(xp.all(xp.abs(ta - tb) <= 1e-6 * xp.maximum(xp.abs(ta), xp.abs(tb)))):
            raise ValueError(
                "input_marginal and slot_marginal must have the same total mass; got totals "
                f"{ta} and {tb} (defaults: K/n per input, 1 per slot)"
            )
    log_a = log_a[..., :, None]
    log_b = log_b[..., None, :]
    log_p = logits / tau
    for _ in range(iterations):
        if first_axis == "slots":
            log_p = log_p - logsumexp(log_p, axis=-1) + log_a
            log_p = log_p - logsumexp(log_p, axis=-2) + log_b
        else:
            log_p = log_p - logsumexp(log_p, axis=-2) + log_b
            log_p = log_p - logsumexp(log_p, axis=-1) + log_a
    return log_p if return_log else xp.exp(log_p)
