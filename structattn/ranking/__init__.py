"""Dual encoders vs cross-attention: score-matrix capacity, distillation losses, metrics.

See ``docs/ranking.rst`` and the spec ``dual_encoder.md``.
"""

from .capacity import best_de_fit, de_capacity, de_fit_errors, de_scores
from .fit import FitResult, fit_free_embeddings
from .losses import listwise_kl, margin_mse, softmax_ce
from .metrics import hits_at_k, mrr, mrr_at_k, ndcg_at_k, rank_of, recall_at_k, top_k

__all__ = [
    "FitResult",
    "best_de_fit",
    "de_capacity",
    "de_fit_errors",
    "de_scores",
    "fit_free_embeddings",
    "hits_at_k",
    "listwise_kl",
    "margin_mse",
    "mrr",
    "mrr_at_k",
    "ndcg_at_k",
    "rank_of",
    "recall_at_k",
    "softmax_ce",
    "top_k",
]
