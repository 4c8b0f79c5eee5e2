"""Work model of the hybrid and the rule splitting a budget between keys and features.

Work is counted in multiply-adds per head:

* dense softmax attention: ``L²·(d + d_v)`` (scores and the weighted sum of values);
* the hybrid with ``m`` features and ``nnz`` support pairs:
  ``2·L·m·(d + d_v + 1)`` (query and key features, the ``m x (d_v + 1)`` key state and
  the query products) ``+ nnz·(d + d_v + m)`` (exact score, value accumulation, and the
  low-rank correction ``φ̃(q_i)·φ̃(k_j)`` on every support pair).

:func:`split_budget` gives a fraction ``f`` of the dense work to the features with a fixed
share (:data:`FEATURE_SHARE` = 0.2) and the rest to the support.  Measured on MiniLM
attention (``docs/hybrid.rst``, L = 512, 72 heads) with FAVOR+ features: at 10 % of the
dense work shares 0.2–0.3 are the best of {0, 0.1, 0.2, 0.3, 0.5}, and 0.2 beats 0 (the
sparse part alone) at 5 % and 15 % for MRA and LSH supports; at 25 % and above every
share > 0 is worse than spending the whole budget on keys, and 0.5 is worse at every
budget measured.
"""

from __future__ import annotations

import math

from .._validate import check_int, check_real

__all__ = ["FEATURE_SHARE", "dense_work", "hybrid_work", "split_budget"]

#: Fraction of the hybrid's budget spent on the low-rank (feature) part.
FEATURE_SHARE = 0.2


def dense_work(length: int, d: int, d_v: int) -> float:
    """``L²·(d + d_v)``: multiply-adds of dense softmax attention per head."""
    return float(length) ** 2 * (d + d_v)


def hybrid_work(length: int, d: int, d_v: int, nnz: float, num_features: int) -> float:
    """Multiply-adds of the hybrid per head (see the module docstring)."""
    m = num_features
    return 2.0 * length * m * (d + d_v + 1) + float(nnz) * (d + d_v + m)


def split_budget(work_fraction: float, length: int, d: int, d_v: int | None = None, *,
                 feature_share: float = FEATURE_SHARE, min_features: int = 1
                 ) -> tuple[int, int]:
    """``(keys_per_row, num_features)`` whose hybrid work is ``<= work_fraction`` of dense.

    Parameters
    ----------
    work_fraction : float
        Budget as a fraction of :func:`dense_work`, in ``(0, 1]``.
    length, d : int
        ``L`` and the head dimension.
    d_v : int, optional
        Value dimension (default ``d``).
    feature_share : float, default FEATURE_SHARE
        Share of the budget given to the features, in ``[0, 1)``; ``0`` gives no
        features (the sparse part alone).
    min_features : int, default 1
        Lower bound on ``m`` when ``feature_share > 0``.

    Returns
    -------
    (int, int)
        ``r`` keys per row (``1 <= r <= L``) and ``m`` features.
    """
    f = check_real(work_fraction, "work_fraction", minimum=0.0)
    if not 0.0 < f <= 1.0:
        raise ValueError(f"work_fraction must lie in (0, 1], got {work_fraction!r}")
    share = check_real(feature_share, "feature_share", minimum=0.0)
    if share >= 1.0:
        raise ValueError(f"feature_share must lie in [0, 1), got {feature_share!r}")
    L = check_int(length, "length", minimum=1)
    d = check_int(d, "d", minimum=1)
    d_v = d if d_v is None else check_int(d_v, "d_v", minimum=1)
    W = f * dense_work(L, d, d_v)
    m = 0
    if share > 0:
        m = max(int(min_features), int(share * W // (2 * L * (d + d_v + 1))))
    rest = W - 2.0 * L * m * (d + d_v + 1)
    r = int(rest // (L * (d + d_v + m))) if rest > 0 else 0
    return max(1, min(L, r)), m


def work_fraction_of(length: int, d: int, d_v: int, nnz: float, num_features: int) -> float:
    """:func:`hybrid_work` over :func:`dense_work`."""
    return hybrid_work(length, d, d_v, nnz, num_features) / dense_work(length, d, d_v)


def blocks_for(keys_per_row: int, block_size: int, n_blocks: int) -> int:
    """Blocks per row of a block support with about ``keys_per_row`` keys per row."""
    return max(1, min(n_blocks, math.floor(keys_per_row / block_size)))
