"""Ranking metrics of the HOWM / C-SWM evaluation, shared with :mod:`structattn.ranking`.

:func:`hits_at_k` and :func:`mrr` are defined once, in :mod:`structattn.ranking.metrics`,
and re-exported here.  HOWM ranks distances (``lower_is_better=True``) between each
predicted next state and every true next state of the evaluation set; the true pair is
ranked before every equal distance (``rank = 1 + #{j : d_ij < d_ii}``).
"""

from __future__ import annotations

from ..ranking.metrics import hits_at_k, mrr

__all__ = ["hits_at_k", "mrr"]
