"""Attention-distribution distillation: row KL between maps and the SSTA head loss.

SSTA (Wu et al., ICML 2022) makes chosen student heads mimic the attention distribution
of the most important head of a supervised teacher and of a self-supervised teaching
assistant (TA).  The paper leaves the KL direction, temperature, weights and the student
head assignment open (spec ``ssta.md`` §1.3); each is a keyword here, with defaults
documented as "our choice".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._array import namespace
from ._common import (
    check_block_rows,
    check_floor,
    check_pair,
    floored_log,
    row_blocks,
    xlogx_ratio,
)

__all__ = ["attention_kl", "ssta_attention_loss"]

_DIRECTIONS = ("forward", "reverse", "symmetric")
_REDUCTIONS = ("mean", "sum", "none")
_ASSIGNMENTS = ("dedicated", "all", "mean")


def _probs(x: Any, from_logits: bool, temperature: float) -> Any:
    """Row distributions ``softmax(x / τ)`` (logits) or ``P^{1/τ}`` renormalized."""
    xp = namespace(x)
    if from_logits:
        s = x / temperature
        s = s - xp.max(s, axis=-1, keepdims=True)
        e = xp.exp(s)
    elif temperature == 1.0:
        return x
    else:  # softmax(log P / τ): zeros stay zero
        pos = x > 0
        e = xp.where(pos, xp.where(pos, x, xp.ones_like(x)) ** (1.0 / temperature),
                     xp.zeros_like(x))
    return e / xp.sum(e, axis=-1, keepdims=True)


def _row_kl(p: Any, q: Any, floor: float) -> Any:
    """Per-row ``KL(p ‖ q)`` with ``q`` floored and renormalized; shape ``(..., L)``."""
    return xlogx_ratio(p, floored_log(q, floor))


def attention_kl(
    target: Any,
    student: Any,
    *,
    from_logits: bool = False,
    temperature: float = 1.0,
    scale_by_t2: bool = True,
    direction: str = "forward",
    floor: float = 1e-12,
    reduction: str = "mean",
    block_rows: int = 256,
    check_finite: bool = True,
) -> Any:
    """Row-wise KL divergence between two stacks of attention maps.

    ``forward``: ``KL(T ‖ S) = Σ_j T_ij (log T_ij − log S_ij)`` per row ``i`` (target
    first, the usual attention-transfer direction); ``reverse``: ``KL(S ‖ T)``;
    ``symmetric``: ``½ (KL(T ‖ S) + KL(S ‖ T))``.

    Parameters
    ----------
    target, student : array, shape (..., L_q, L_k)
        Row-stochastic maps (or logits with ``from_logits=True``), numpy or torch of one
        dtype and shape.  torch in → torch out, differentiable in both arguments.
    from_logits : bool, default False
        Inputs are scores; rows are ``softmax(x / τ)`` (``-inf`` = masked).
    temperature : float, default 1.0
        ``τ > 0``.  On probabilities the rows become ``P^{1/τ}`` renormalized (the same
        as ``softmax(log P / τ)``; zeros stay zero).  ``τ → ∞`` flattens both to uniform
        rows over their supports.
    scale_by_t2 : bool, default True
        Multiply by ``τ²`` (Hinton's convention, so gradients keep their size).
    direction : {"forward", "reverse", "symmetric"}, default "forward"
    floor : float, default 1e-12
        The distribution in the second slot of each KL is raised to ``floor`` and
        renormalized per row, so a zero where the first has mass costs
        ``≈ p·log(p/floor)`` instead of infinity.  Entries where the first slot is 0
        contribute 0 (``0·log 0 = 0``): masked keys of the target are free.
    reduction : {"mean", "sum", "none"}, default "mean"
        Mean or sum over every row of every leading dimension, or the per-row values,
        shape ``(..., L_q)``.
    block_rows : int, default 256
        Rows processed at a time: temporaries are ``O(block_rows · L)`` per map.
    check_finite : bool, default True
        Reject NaN/Inf (``-inf`` logits are allowed with ``from_logits``).

    Returns
    -------
    array
        0-d array (``mean``/``sum``) or shape ``(..., L)`` (``none``), nats.

    Notes
    -----
    ``O(n·L²)`` time for ``n`` maps; ``KL >= 0`` and ``= 0`` iff the rows agree (where
    the floor is inactive).

    Examples
    --------
    >>> import numpy as np
    >>> from structattn.analysis import attention_kl
    >>> T = np.array([[[0.5, 0.5], [0.9, 0.1]]])
    >>> S = np.array([[[0.5, 0.5], [0.5, 0.5]]])
    >>> float(attention_kl(T, S, reduction="sum")).__round__(6)
    0.368064
    """
    check_pair(target, student, ("target", "student"),
               check_finite=check_finite and not from_logits)
    if from_logits and check_finite:
        for name, a in (("target", target), ("student", student)):
            xp = namespace(a)
            if bool(xp.any(xp.isnan(a))) or bool(xp.any(a == float("inf"))):
                raise ValueError(f"{name} logits contain NaN or +Inf values")
    if not isinstance(from_logits, bool) or not isinstance(scale_by_t2, bool):
        raise TypeError(f"from_logits and scale_by_t2 must be bools, got {from_logits!r}, "
                        f"{scale_by_t2!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.floating)) \
            or not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    floor = check_floor(floor)
    block_rows = check_block_rows(block_rows)
    tau = float(temperature)
    xp = namespace(target)
    parts = []
    for rows in row_blocks(target.shape[-2], block_rows):
        t = _probs(target[..., rows, :], from_logits, tau)
        s = _probs(student[..., rows, :], from_logits, tau)
        if direction == "forward":
            kl = _row_kl(t, s, floor)
        elif direction == "reverse":
            kl = _row_kl(s, t, floor)
        else:
            kl = 0.5 * (_row_kl(t, s, floor) + _row_kl(s, t, floor))
        parts.append(kl)
    per_row = parts[0] if len(parts) == 1 else xp.concat(parts, axis=-1)
    if scale_by_t2 and tau != 1.0:
        per_row = per_row * (tau * tau)
    if reduction == "none":
        return per_row
    total = xp.sum(per_row)
    n = math.prod(per_row.shape)
    return total / n if reduction == "mean" and n else total


def _head(maps: Any, h: int, name: str) -> Any:
    H = maps.shape[-3]
    if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or not -H <= h < H:
        raise ValueError(f"{name} must be a head index in [-{H}, {H}), got {h!r}")
    return maps[..., int(h), :, :]


def ssta_attention_loss(
    student_maps: Any,
    teacher_maps: Any | None,
    assistant_maps: Any | None,
    *,
    teacher_head: int = 0,
    assistant_head: int = 0,
    student_heads: Sequence[int] = (0, 1),
    assignment: str = "dedicated",
    weights: Sequence[float] = (1.0, 1.0),
    return_terms: bool = False,
    **kl_kwargs: Any,
) -> Any:
    """SSTA head-level attention distillation loss for one layer.

    ``L_att = w_T · KL(P_T[h_T] ‖ S_T) + w_A · KL(P_A[h_A] ‖ S_A)`` with the student
    side chosen by ``assignment``:

    * ``"dedicated"`` (default, our choice): ``S_T = P_S[j_T]``, ``S_A = P_S[j_A]``
      with ``(j_T, j_A) = student_heads`` — one student head per target;
    * ``"all"``: every student head imitates both targets, ``KL`` averaged over heads;
    * ``"mean"``: the head-mean student map ``mean_j P_S[j]`` imitates each target.

    Parameters
    ----------
    student_maps : array, shape (..., H_S, L, L)
        The student's maps of the distilled layer (row-stochastic, or logits with
        ``from_logits=True`` in ``kl_kwargs``).
    teacher_maps : array, shape (..., H_T, L, L), or None
        The supervised teacher's maps of its chosen layer; None drops the term.
    assistant_maps : array, shape (..., H_A, L, L), or None
        The teaching assistant's maps; None drops the term.
    teacher_head, assistant_head : int
        ``h_T``, ``h_A`` (e.g. from :func:`select_heads`).
    student_heads : (int, int), default (0, 1)
        ``(j_T, j_A)`` for ``"dedicated"``.
    assignment : {"dedicated", "all", "mean"}
    weights : (float, float), default (1.0, 1.0)
        ``(w_T, w_A)``.
    return_terms : bool, default False
        Also return the two weighted terms (0 for a dropped target).
    **kl_kwargs
        Passed to :func:`attention_kl` (``direction``, ``temperature``, ``floor``,
        ``from_logits``…; ``reduction`` must stay ``"mean"``).

    Returns
    -------
    loss : 0-d array
    terms : (0-d array, 0-d array)
        Only with ``return_terms=True``.

    Notes
    -----
    All maps must share the token layout ``L`` (same patch grid and prefix tokens).
    Cost: 2 (``dedicated``, ``mean``) or ``2·H_S`` (``all``) row-KLs of ``L x L`` maps.
    """
    if assignment not in _ASSIGNMENTS:
        raise ValueError(f"assignment must be one of {_ASSIGNMENTS}, got {assignment!r}")
    if kl_kwargs.get("reduction", "mean") != "mean":
        raise ValueError("ssta_attention_loss needs reduction='mean'")
    kl_kwargs = {k: v for k, v in kl_kwargs.items() if k != "reduction"}
    if assignment == "mean" and kl_kwargs.get("from_logits", False):
        raise ValueError("assignment='mean' averages probability maps; pass maps, not "
                         "logits (from_logits=False)")
    w = tuple(float(v) for v in weights)
    if len(w) != 2 or not all(np.isfinite(v) and v >= 0 for v in w):
        raise ValueError(f"weights must be two finite numbers >= 0, got {weights!r}")
    js = tuple(student_heads)
    if teacher_maps is None and assistant_maps is None:
        raise ValueError("give teacher_maps, assistant_maps or both")
    if len(js) != 2:
        raise ValueError(f"student_heads must be two head indices (j_T, j_A), got "
                         f"{student_heads!r}")
    xp = namespace(student_maps)
    H = student_maps.shape[-3] if student_maps.ndim >= 3 else 0
    if H == 0:
        raise ValueError(f"student_maps must be (..., H, L, L), got shape "
                         f"{tuple(student_maps.shape)}")

    def term(maps: Any, h: int, j: int, name: str) -> Any:
        target = _head(maps, h, name)
        if assignment == "dedicated":
            return attention_kl(target, _head(student_maps, j, "student_heads"), **kl_kwargs)
        if assignment == "mean":
            return attention_kl(target, xp.mean(student_maps, axis=-3), **kl_kwargs)
        kls = [attention_kl(target, student_maps[..., i, :, :], **kl_kwargs)
               for i in range(H)]
        return sum(kls[1:], kls[0]) / H

    zero = xp.sum(student_maps[..., :0, 0, 0])  # a differentiable 0 of the right kind
    t_term = zero if teacher_maps is None else w[0] * term(
        teacher_maps, teacher_head, js[0], "teacher_head")
    a_term = zero if assistant_maps is None else w[1] * term(
        assistant_maps, assistant_head, js[1], "assistant_head")
    loss = t_term + a_term
    return (loss, (t_term, a_term)) if return_terms else loss
