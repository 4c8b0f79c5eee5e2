"""Ranking metrics computed in document blocks: MRR@k, Recall@k, nDCG@k, ranks, Hits@k.

Every metric takes the scores either as a dense array ``(..., n, m)`` (queries ``n``,
documents ``m``) or as a pair of dual-encoder embeddings ``(phi, psi)`` with
``phi (..., n, d)`` and ``psi (..., m, d)`` whose scores ``phi @ psiᵀ`` are formed
``block`` documents at a time.  Only an ``(..., n, block)`` slab of scores exists at any
moment; top-k lists are kept in a running buffer of ``k`` entries per query (the
vectorized form of a size-``k`` heap), and ranks are counts over blocks, so memory is
``O(n · (block + k))`` whatever ``m`` is.

Relevance comes either as a dense array ``relevance (..., n, m)`` (a document is relevant
when its value is ``> 0``; for :func:`ndcg_at_k` the values are the graded gains) or as
``positives (..., n)``, the index of the single relevant document of each query (for
large ``m``, where a dense relevance matrix would itself be ``(n, m)``).

**Ordering conventions.**
* :func:`rank_of`, :func:`mrr_at_k`, :func:`recall_at_k`, :func:`ndcg_at_k`, :func:`top_k`:
  a stable sort by descending score, **ties broken by the lower document index**
  (``ties="index"``).  trec_eval breaks ties by document-id string instead, so
  cross-checks against it use tie-free scores.
* :func:`hits_at_k` and :func:`mrr` follow the C-SWM / HOWM evaluation code: the true
  pair is ranked **before every document with an equal score** (``ties="positive_first"``,
  their "prepend the true distance, then stable lexsort"), the positive defaults to the
  diagonal, and ``lower_is_better=True`` ranks energies / distances.

Queries without any relevant document are excluded from the mean (their per-query value
with ``reduction="none"`` is NaN, their rank 0).  Metrics are not differentiable; torch
inputs are read on the CPU and per-query results are returned as tensors on the input's
device.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .._array import validate_same_kind
from ._common import check_array, check_choice, check_int, check_scores, like, to_numpy

__all__ = [
    "hits_at_k",
    "mrr",
    "mrr_at_k",
    "ndcg_at_k",
    "rank_of",
    "recall_at_k",
    "top_k",
]

#: Default number of documents scored at a time.
DEFAULT_BLOCK = 4096
_TIES = ("index", "positive_first")


class _Scores:
    """A score matrix, dense or as DE embeddings, read in document blocks (numpy)."""

    def __init__(self, scores: Any, *, lower_is_better: bool = False) -> None:
        self.template: Any
        if isinstance(scores, tuple):
            if len(scores) != 2:
                raise ValueError(
                    "scores given as a tuple must be (phi, psi) with phi (..., n, d) and "
                    f"psi (..., m, d); got a tuple of length {len(scores)}"
                )
            phi, psi = scores
            check_scores(phi, "phi", min_ndim=2)
            check_scores(psi, "psi", min_ndim=2)
            validate_same_kind({"phi": phi, "psi": psi})
            if phi.shape[-1] != psi.shape[-1]:
                raise ValueError(
                    f"phi and psi must have the same embedding size d; got phi.shape="
                    f"{tuple(phi.shape)} and psi.shape={tuple(psi.shape)}"
                )
            self.phi, self.psi, self.dense = to_numpy(phi), to_numpy(psi), None
            batch = np.broadcast_shapes(self.phi.shape[:-2], self.psi.shape[:-2])
            self.n, self.m = self.phi.shape[-2], self.psi.shape[-2]
            self.template = phi
        else:
            check_scores(scores, "scores", min_ndim=2)
            self.dense = to_numpy(scores)
            batch = self.dense.shape[:-2]
            self.n, self.m = self.dense.shape[-2:]
            self.template = scores
        if self.m == 0 or self.n == 0:
            raise ValueError(f"scores must have n >= 1 queries and m >= 1 documents, "
                             f"got n={self.n}, m={self.m}")
        self.batch: tuple[int, ...] = tuple(batch)
        self.sign = -1.0 if lower_is_better else 1.0

    def widen(self, batch: tuple[int, ...]) -> None:
        """Broadcast the batch shape with another input's."""
        self.batch = tuple(np.broadcast_shapes(self.batch, batch))

    def blocks(self, block: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, S[..., :, start:start+block])`` oriented so that higher is better."""
        shape = (*self.batch, self.n)
        for start in range(0, self.m, block):
            stop = min(start + block, self.m)
            if self.dense is not None:
                blk = self.dense[..., start:stop]
            else:
                blk = self.phi @ np.swapaxes(self.psi[..., start:stop, :], -1, -2)
            if self.sign < 0:
                blk = -blk
            yield start, np.broadcast_to(blk, (*shape, stop - start))


def _relevance(
    S: _Scores, relevance: Any, positives: Any, *, name: str = "relevance"
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Validate exactly one of a dense relevance matrix and positive indices."""
    if (relevance is None) == (positives is None):
        raise ValueError(f"give exactly one of {name} (..., n, m) and positives (..., n)")
    if relevance is not None:
        check_array(relevance, name, min_ndim=2)
        rel = to_numpy(relevance)
        if rel.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be bool, integer or float, got dtype {rel.dtype}")
        if rel.shape[-2:] != (S.n, S.m):
            raise ValueError(
                f"{name} must have shape (..., n, m) = (..., {S.n}, {S.m}) like the scores, "
                f"got {rel.shape}"
            )
        if rel.dtype.kind == "f" and not np.all(np.isfinite(rel)):
            raise ValueError(f"{name} contains NaN or Inf values")
        if np.any(rel < 0):
            raise ValueError(f"{name} must be non-negative (0 = not relevant)")
        S.widen(rel.shape[:-2])
        return rel, None
    check_array(positives, "positives", min_ndim=1)
    pos = to_numpy(positives)
    if pos.dtype.kind not in "iu":
        raise TypeError(f"positives must be an integer array, got dtype {pos.dtype}")
    if pos.shape[-1] != S.n:
        raise ValueError(f"positives must have shape (..., n) = (..., {S.n}), got {pos.shape}")
    if pos.size and (pos.min() < 0 or pos.max() >= S.m):
        raise ValueError(f"positives must be document indices in [0, {S.m}), got values in "
                         f"[{pos.min()}, {pos.max()}]")
    S.widen(pos.shape[:-1])
    return None, pos.astype(np.int64)


def _check_block(block: Any) -> int:
    return check_int(block, "block", minimum=1)


def _best_relevant(
    S: _Scores, rel: np.ndarray | None, pos: np.ndarray | None, block: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query: score and index of the first relevant document in ranking order."""
    shape = (*S.batch, S.n)
    best = np.full(shape, -np.inf)
    arg = np.zeros(shape, dtype=np.int64)
    has = np.zeros(shape, dtype=bool)
    if pos is not None:
        pos_b = np.broadcast_to(pos, shape)
    for start, blk in S.blocks(block):
        stop = start + blk.shape[-1]
        if pos is not None:
            inside = (pos_b >= start) & (pos_b < stop)
            local = np.clip(pos_b - start, 0, stop - start - 1)
            val = np.take_along_axis(blk, local[..., None], axis=-1)[..., 0]
            best = np.where(inside, val, best)
            arg = np.where(inside, pos_b, arg)
            has |= inside
            continue
        mask = np.broadcast_to(rel[..., start:stop] > 0, blk.shape)
        masked = np.where(mask, blk, -np.inf)
        j = np.argmax(masked, axis=-1)
        val = np.take_along_axis(masked, j[..., None], axis=-1)[..., 0]
        any_rel = mask.any(axis=-1)
        better = any_rel & (~has | (val > best))  # strict: earlier index wins ties
        best = np.where(better, val, best)
        arg = np.where(better, j + start, arg)
        has |= any_rel
    return best, arg, has


def _ranks(
    S: _Scores, rel: np.ndarray | None, pos: np.ndarray | None, block: int, ties: str
) -> tuple[np.ndarray, np.ndarray]:
    """1-based rank of the first relevant document (0 where there is none), and ``has``."""
    best, arg, has = _best_relevant(S, rel, pos, block)
    count = np.zeros(best.shape, dtype=np.int64)
    for start, blk in S.blocks(block):
        count += (blk > best[..., None]).sum(axis=-1)
        if ties == "index":
            idx = np.arange(start, start + blk.shape[-1])
            count += ((blk == best[..., None]) & (idx < arg[..., None])).sum(axis=-1)
    return np.where(has, count + 1, 0), has


def _reduce(values: np.ndarray, has: np.ndarray, reduction: str, template: Any) -> Any:
    check_choice(reduction, "reduction", ("mean", "none"))
    if reduction == "none":
        return like(np.where(has, values, np.nan), template)
    if not has.any():
        return float("nan")
    return float(values[has].mean())


def rank_of(
    scores: Any,
    relevance: Any = None,
    *,
    positives: Any = None,
    ties: str = "index",
    lower_is_better: bool = False,
    block: int = DEFAULT_BLOCK,
) -> Any:
    """1-based rank of each query's first relevant document.

    Parameters
    ----------
    scores : array (..., n, m) or tuple (phi (..., n, d), psi (..., m, d))
        Scores, or dual-encoder embeddings scored block by block.
    relevance : array (..., n, m), optional
        Relevant where ``> 0``.  Give this or ``positives``.
    positives : int array (..., n), optional
        Index of the single relevant document per query.
    ties : {"index", "positive_first"}
        ``"index"``: equal scores are ordered by document index (a stable sort);
        ``"positive_first"``: the relevant document precedes every equal score.
    lower_is_better : bool
        Rank ascending (energies, distances).
    block : int
        Documents scored at a time.

    Returns
    -------
    int64 array (..., n)
        Ranks in ``1..m``; 0 for a query without a relevant document.  Same kind as the
        input (numpy, or torch on the input's device).

    Notes
    -----
    Two passes over the document blocks (the best relevant score, then the count of
    documents ranked before it): ``O(n · m · d)`` time for embeddings, ``O(n · m)`` for a
    dense matrix, ``O(n · block)`` extra memory.
    """
    check_choice(ties, "ties", _TIES)
    S = _Scores(scores, lower_is_better=bool(lower_is_better))
    rel, pos = _relevance(S, relevance, positives)
    ranks, _ = _ranks(S, rel, pos, _check_block(block), ties)
    return like(ranks, S.template)


def mrr_at_k(
    scores: Any,
    relevance: Any = None,
    *,
    k: int = 10,
    positives: Any = None,
    reduction: str = "mean",
    block: int = DEFAULT_BLOCK,
) -> Any:
    """Mean reciprocal rank at cut-off ``k``: ``RR@k = 1/rank`` if ``rank <= k`` else 0.

    Parameters
    ----------
    scores, relevance, positives, block
        As in :func:`rank_of` (ties broken by document index).
    k : int
        Cut-off.
    reduction : {"mean", "none"}
        Mean over queries with a relevant document (a float), or per-query values
        ``(..., n)`` (NaN where a query has none).

    Returns
    -------
    float or array (..., n)
    """
    k = check_int(k, "k")
    S = _Scores(scores)
    rel, pos = _relevance(S, relevance, positives)
    ranks, has = _ranks(S, rel, pos, _check_block(block), "index")
    rr = np.where(has & (ranks <= k), 1.0 / np.maximum(ranks, 1), 0.0)
    return _reduce(rr, has, reduction, S.template)


def _top_k(S: _Scores, k: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, S.m)
    shape = (*S.batch, S.n)
    vals = np.zeros((*shape, 0), dtype=np.float64)
    idx = np.zeros((*shape, 0), dtype=np.int64)
    for start, blk in S.blocks(block):
        cand_v = np.concatenate([vals, blk.astype(np.float64)], axis=-1)
        ar = np.broadcast_to(np.arange(start, start + blk.shape[-1]), blk.shape)
        cand_i = np.concatenate([idx, ar], axis=-1)
        # The buffer holds lower indices, already in order: a stable sort keeps ties by index.
        order = np.argsort(-cand_v, axis=-1, kind="stable")[..., :k]
        vals = np.take_along_axis(cand_v, order, axis=-1)
        idx = np.take_along_axis(cand_i, order, axis=-1)
    return vals * S.sign, idx


def top_k(
    scores: Any, k: int, *, lower_is_better: bool = False, block: int = DEFAULT_BLOCK
) -> tuple[Any, Any]:
    """The ``k`` best documents per query, scored block by block.

    Parameters
    ----------
    scores : array (..., n, m) or tuple (phi (..., n, d), psi (..., m, d))
    k : int
        List length (``min(k, m)`` entries are returned).
    lower_is_better : bool
        Select the smallest scores instead.
    block : int
        Documents scored at a time.

    Returns
    -------
    values : float64 array (..., n, k)
    indices : int64 array (..., n, k)
        In ranking order, ties broken by the lower document index.

    Notes
    -----
    ``O(n · m · d)`` time for embeddings plus ``O(n · (m/block) · (k + block) log(k + block))``
    for the merges; ``O(n · (k + block))`` memory.
    """
    k = check_int(k, "k")
    S = _Scores(scores, lower_is_better=bool(lower_is_better))
    vals, idx = _top_k(S, k, _check_block(block))
    return like(vals, S.template), like(idx, S.template)


def recall_at_k(
    scores: Any,
    relevance: Any = None,
    *,
    k: int,
    positives: Any = None,
    reduction: str = "mean",
    block: int = DEFAULT_BLOCK,
) -> Any:
    """``Recall@k = |relevant ∩ top-k| / |relevant|`` per query, averaged.

    Parameters
    ----------
    scores, relevance, positives, block
        As in :func:`rank_of`.
    k : int
        Cut-off.
    reduction : {"mean", "none"}
        As in :func:`mrr_at_k`.

    Returns
    -------
    float or array (..., n)
    """
    k = check_int(k, "k")
    S = _Scores(scores)
    rel, pos = _relevance(S, relevance, positives)
    _, idx = _top_k(S, k, _check_block(block))
    shape = (*S.batch, S.n)
    if pos is not None:
        hit = (idx == np.broadcast_to(pos, shape)[..., None]).any(axis=-1)
        return _reduce(hit.astype(np.float64), np.ones(shape, dtype=bool), reduction,
                       S.template)
    relb = np.broadcast_to(rel > 0, (*shape, S.m))
    found = np.take_along_axis(relb, idx, axis=-1).sum(axis=-1)
    total = relb.sum(axis=-1)
    has = total > 0
    return _reduce(found / np.maximum(total, 1), has, reduction, S.template)


def ndcg_at_k(
    scores: Any,
    gains: Any = None,
    *,
    k: int,
    gain: str = "linear",
    positives: Any = None,
    reduction: str = "mean",
    block: int = DEFAULT_BLOCK,
) -> Any:
    """Normalized discounted cumulative gain at ``k``.

    ``DCG@k = Σ_{r<=k} g(rel_r) / log2(r + 1)`` over the ranked list, ``IDCG@k`` the same
    over the ideal ordering, ``nDCG@k = DCG@k / IDCG@k`` (0/0 -> the query is excluded).

    Parameters
    ----------
    scores, positives, block
        As in :func:`rank_of`.
    gains : array (..., n, m), optional
        Graded relevance ``>= 0``.  With ``positives`` the positive has gain 1.
    k : int
        Cut-off.
    gain : {"linear", "exp2"}
        ``g(r) = r`` (trec_eval) or ``2**r - 1``.
    reduction : {"mean", "none"}
        As in :func:`mrr_at_k`.

    Returns
    -------
    float or array (..., n)
    """
    k = check_int(k, "k")
    check_choice(gain, "gain", ("linear", "exp2"))
    S = _Scores(scores)
    rel, pos = _relevance(S, gains, positives, name="gains")
    _, idx = _top_k(S, k, _check_block(block))
    shape = (*S.batch, S.n)
    disc = 1.0 / np.log2(np.arange(2, idx.shape[-1] + 2))
    if pos is not None:
        g = (idx == np.broadcast_to(pos, shape)[..., None]).astype(np.float64)
        return _reduce((g * disc).sum(axis=-1), np.ones(shape, dtype=bool), reduction,
                       S.template)
    relb = np.broadcast_to(rel.astype(np.float64), (*shape, S.m))
    g = relb if gain == "linear" else np.expm1(relb * np.log(2.0))
    dcg = (np.take_along_axis(g, idx, axis=-1) * disc).sum(axis=-1)
    ideal = -np.sort(-g, axis=-1)[..., : idx.shape[-1]]
    idcg = (ideal * disc).sum(axis=-1)
    has = idcg > 0
    return _reduce(dcg / np.where(has, idcg, 1.0), has, reduction, S.template)


def _diagonal_positives(S: _Scores, positives: Any) -> Any:
    if positives is not None:
        return positives
    if S.n > S.m:
        raise ValueError(
            f"the default positives are the diagonal, which needs n <= m; got n={S.n}, "
            f"m={S.m}: pass positives=(..., n) indices"
        )
    return np.arange(S.n, dtype=np.int64)


def hits_at_k(
    scores: Any,
    k: int = 1,
    *,
    positives: Any = None,
    lower_is_better: bool = False,
    reduction: str = "mean",
    block: int = DEFAULT_BLOCK,
) -> Any:
    """Hits@k: the fraction of queries whose positive ranks in the top ``k`` (C-SWM/HOWM).

    Parameters
    ----------
    scores : array (..., n, m) or tuple (phi, psi)
        Scores, or energies/distances with ``lower_is_better=True``.
    k : int
        Cut-off.
    positives : int array (..., n), optional
        Index of each row's positive; default the diagonal ``0..n-1`` (needs ``n <= m``).
    lower_is_better : bool
        Rank ascending (the HOWM evaluation ranks pairwise distances).
    reduction : {"mean", "none"}
        Mean over queries (a float) or the per-query 0/1 values ``(..., n)``.
    block : int
        Documents scored at a time.

    Returns
    -------
    float or array (..., n)

    Notes
    -----
    Ties favour the positive: ``rank = 1 + #{j : score_j strictly better}``, as in the
    HOWM/C-SWM ``eval.py`` (true distance prepended, stable lexsort).
    """
    k = check_int(k, "k")
    S = _Scores(scores, lower_is_better=bool(lower_is_better))
    _, pos = _relevance(S, None, _diagonal_positives(S, positives))
    ranks, has = _ranks(S, None, pos, _check_block(block), "positive_first")
    return _reduce((ranks <= k).astype(np.float64), has, reduction, S.template)


def mrr(
    scores: Any,
    *,
    positives: Any = None,
    lower_is_better: bool = False,
    reduction: str = "mean",
    block: int = DEFAULT_BLOCK,
) -> Any:
    """Mean reciprocal rank of each row's positive, no cut-off (C-SWM/HOWM convention).

    Parameters and tie rule as in :func:`hits_at_k`.

    Returns
    -------
    float or array (..., n)
    """
    S = _Scores(scores, lower_is_better=bool(lower_is_better))
    _, pos = _relevance(S, None, _diagonal_positives(S, positives))
    ranks, has = _ranks(S, None, pos, _check_block(block), "positive_first")
    return _reduce(1.0 / np.maximum(ranks, 1), has, reduction, S.template)
