"""Training and distillation losses over candidate lists (numpy and torch with autograd).

Scores are ``(..., c)`` candidate lists (``c = 1 + k``: one positive, ``k`` negatives);
the positive's position is ``positive_index`` (an int, or an int array of the batch
shape ``(...)`` — e.g. ``arange(n)`` for in-batch negatives on an ``(n, n)`` matrix).
Student scores ``s``, teacher scores ``t``; margins ``Δs_j = s_+ − s_j``,
``Δt_j = t_+ − t_j`` over the negatives ``j``.

* :func:`softmax_ce` — one-hot cross-entropy ``−log softmax(s/τ)_+``;
* :func:`margin_mse` — Margin-MSE (Hofstätter et al. 2020) ``mean_j (Δs_j − Δt_j)²`` and
  its ordering-focused variants (``pool="max" | "lse"``, ``one_sided``);
* :func:`listwise_kl` — ``KL(softmax(t/τ) ‖ softmax(s/τ))`` (or the reverse direction).

All three are invariant to adding a per-list constant to ``s`` or ``t``.  Cost
``O(size)``; written once against the array API.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import index_like, is_torch, namespace, validate_float_array, validate_same_kind
from ._common import REDUCTIONS, check_choice, check_positive, to_numpy

__all__ = ["listwise_kl", "margin_mse", "softmax_ce"]


def _logsumexp(xp: Any, x: Any) -> Any:
    mx = xp.max(x, axis=-1, keepdims=True)
    if is_torch(mx):
        mx = mx.detach()
    mx = xp.where(xp.isfinite(mx), mx, xp.zeros_like(mx))
    return xp.log(xp.sum(xp.exp(x - mx), axis=-1)) + mx[..., 0]


def _reduce(xp: Any, loss: Any, reduction: str) -> Any:
    check_choice(reduction, "reduction", REDUCTIONS)
    if reduction == "mean":
        return xp.mean(loss)
    if reduction == "sum":
        return xp.sum(loss)
    return loss


def _positive_mask(xp: Any, scores: Any, positive_index: Any) -> Any:
    """Boolean ``(..., c)`` mask of the positive candidate."""
    c = scores.shape[-1]
    if isinstance(positive_index, (int, np.integer)) and not isinstance(positive_index, bool):
        p = int(positive_index)
        if not -c <= p < c:
            raise ValueError(f"positive_index must be in [-{c}, {c}) for {c} candidates, "
                             f"got {p}")
        p %= c
        pos = np.zeros((c,), dtype=bool)
        pos[p] = True
        mask = index_like(pos.astype(np.int64), scores)
        return mask == 1
    if not (isinstance(positive_index, np.ndarray) or is_torch(positive_index)):
        raise TypeError(f"positive_index must be an int or an integer array of the batch shape "
                        f"{tuple(scores.shape[:-1])}, got {type(positive_index).__name__}")
    pi = to_numpy(positive_index)
    if pi.dtype.kind not in "iu":
        raise TypeError(f"positive_index must be integer, got dtype {pi.dtype}")
    if pi.size and (pi.min() < 0 or pi.max() >= c):
        raise ValueError(f"positive_index values must be in [0, {c}), got [{pi.min()}, "
                         f"{pi.max()}]")
    onehot = pi[..., None] == np.arange(c)
    try:
        np.broadcast_shapes(onehot.shape, tuple(scores.shape))
    except ValueError as exc:
        raise ValueError(f"positive_index of shape {pi.shape} does not broadcast with the batch "
                         f"shape {tuple(scores.shape[:-1])}") from exc
    return index_like(onehot.astype(np.int64), scores) == 1


def _check_scores(scores: Any, name: str, *, min_c: int = 2) -> None:
    validate_float_array(scores, name, min_ndim=1)
    if scores.shape[-1] < min_c:
        raise ValueError(f"{name} must hold at least {min_c} candidates on its last axis, "
                         f"got shape {tuple(scores.shape)}")


def softmax_ce(
    scores: Any,
    *,
    positive_index: Any = 0,
    temperature: float = 1.0,
    reduction: str = "mean",
) -> Any:
    """One-hot softmax cross-entropy ``−log softmax(s/τ)_+`` over each candidate list.

    Parameters
    ----------
    scores : array (..., c)
        Student scores of ``c >= 2`` candidates.
    positive_index : int or int array (...)
        Position of the positive in each list.
    temperature : float
        ``τ > 0``.
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    scalar or array (...)
    """
    _check_scores(scores, "scores")
    tau = check_positive(temperature, "temperature")
    xp = namespace(scores)
    z = scores / tau
    mask = _positive_mask(xp, z, positive_index)
    pos = xp.sum(xp.where(mask, z, xp.zeros_like(z)), axis=-1)
    return _reduce(xp, _logsumexp(xp, z) - pos, reduction)


def margin_mse(
    student: Any,
    teacher: Any,
    *,
    positive_index: Any = 0,
    pool: str = "mean",
    one_sided: bool = False,
    lse_temperature: float = 1.0,
    reduction: str = "mean",
) -> Any:
    """Margin-MSE between student and teacher margins, with ordering-focused pools.

    ``e_j = (Δs_j − Δt_j)²`` (or ``max(0, Δt_j − Δs_j)²`` with ``one_sided``: only a
    student margin *smaller* than the teacher's is penalised), pooled over the ``k``
    negatives by ``"mean"`` (Margin-MSE; ``k = 1`` is the triplet form
    ``MSE(s⁺ − s⁻, t⁺ − t⁻)``), ``"max"`` (worst negative) or ``"lse"``, the smooth max
    ``τ log((1/k) Σ_j exp(e_j / τ))`` (log-*mean*-exp: 0 when student and teacher agree,
    between the mean and the max, tending to the max as ``τ → 0`` and to the mean as
    ``τ → ∞``; the spec's ``τ log Σ exp`` differs by the constant ``τ log k``).

    Parameters
    ----------
    student, teacher : array (..., c)
        Scores of the same ``c >= 2`` candidates (batch dimensions broadcast).
    positive_index : int or int array (...)
    pool : {"mean", "max", "lse"}
    one_sided : bool
    lse_temperature : float
        ``τ`` of the ``"lse"`` pool.
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    scalar or array (...)

    Notes
    -----
    The margin is signed (no absolute value), as in sentence-transformers' ``MarginMSELoss``.
    Which pool/one-sided combination Menon et al. (2022) use is not verified; the default
    is the verified Margin-MSE.
    """
    _check_scores(student, "student")
    _check_scores(teacher, "teacher")
    validate_same_kind({"student": student, "teacher": teacher})
    if student.shape[-1] != teacher.shape[-1]:
        raise ValueError(f"student and teacher must score the same candidates; got shapes "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    check_choice(pool, "pool", ("mean", "max", "lse"))
    tau = check_positive(lse_temperature, "lse_temperature")
    xp = namespace(student, teacher)
    mask = _positive_mask(xp, student, positive_index)
    zero_s, zero_t = xp.zeros_like(student), xp.zeros_like(teacher)
    s_pos = xp.sum(xp.where(mask, student, zero_s), axis=-1, keepdims=True)
    t_pos = xp.sum(xp.where(mask, teacher, zero_t), axis=-1, keepdims=True)
    diff = (t_pos - teacher) - (s_pos - student)  # Δt_j − Δs_j; 0 at the positive
    if one_sided:
        diff = xp.where(diff > 0, diff, xp.zeros_like(diff))
    err = diff * diff
    k = student.shape[-1] - 1
    if pool == "mean":
        loss = xp.sum(err, axis=-1) / k
    elif pool == "max":
        loss = xp.max(err, axis=-1)  # e_+ = 0 <= every e_j
    else:
        neg_inf = xp.full_like(err, -float("inf"))
        loss = tau * (_logsumexp(xp, xp.where(mask, neg_inf, err / tau)) - float(np.log(k)))
    return _reduce(xp, loss, reduction)


def listwise_kl(
    student: Any,
    teacher: Any,
    *,
    temperature: float = 1.0,
    scale_by_t2: bool = False,
    direction: str = "teacher||student",
    reduction: str = "mean",
) -> Any:
    """KL divergence between the teacher's and the student's softmax over each list.

    Parameters
    ----------
    student, teacher : array (..., c)
        Scores of the same candidates.
    temperature : float
        Both score lists are divided by ``τ`` before the softmax.
    scale_by_t2 : bool
        Multiply by ``τ²`` (Hinton et al.; off by default).
    direction : {"teacher||student", "student||teacher"}
        ``KL(p_t ‖ p_s)`` (forward, the distillation default) or ``KL(p_s ‖ p_t)``.
    reduction : {"mean", "sum", "none"}
        Over the lists (each list's KL is a sum over its candidates).

    Returns
    -------
    scalar or array (...)

    Notes
    -----
    With two candidates, ``softmax([a, b])_0 = σ(a − b)``, so the loss is the binary KL
    of the sigmoids of the margins.
    """
    _check_scores(student, "student")
    _check_scores(teacher, "teacher")
    validate_same_kind({"student": student, "teacher": teacher})
    if student.shape[-1] != teacher.shape[-1]:
        raise ValueError(f"student and teacher must score the same candidates; got shapes "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    tau = check_positive(temperature, "temperature")
    check_choice(direction, "direction", ("teacher||student", "student||teacher"))
    xp = namespace(student, teacher)
    log_s = student / tau - _logsumexp(xp, student / tau)[..., None]
    log_t = teacher / tau - _logsumexp(xp, teacher / tau)[..., None]
    if direction == "teacher||student":
        kl = xp.sum(xp.exp(log_t) * (log_t - log_s), axis=-1)
    else:
        kl = xp.sum(xp.exp(log_s) * (log_s - log_t), axis=-1)
    if scale_by_t2:
        kl = kl * tau**2
    return _reduce(xp, kl, reduction)
