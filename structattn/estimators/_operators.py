"""Operator objects (``__call__(q, k, v)`` and ``matrix(q, k)``) for the estimators.

The study runner sweeps these; ``matrix`` returns the dense ``(..., L_q, L_k)``
row-stochastic matrix the estimator applies with the *same* draws as ``__call__``
(the seed is re-read on each call), so ``op.matrix(q, k) @ v`` equals ``op(q, k, v)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._cosformer import cosformer, cosformer_matrix
from ._lara import lara_parts
from ._randomized import ra_core
from ._snis import rfa_snis_core

__all__ = [
    "CosformerAttention",
    "LinearRandomizedAttention",
    "RandomizedAttention",
    "SNISAttention",
]


@dataclass(frozen=True, eq=False)
class SNISAttention:
    """:func:`~structattn.estimators.rfa_snis` as an operator (``S`` shared samples).

    Parameters
    ----------
    num_samples : int
    seed : int
    orthogonal : bool, default False
    scale : float, optional
    backend : str, default "auto"
    """

    num_samples: int
    seed: Any
    orthogonal: bool = False
    scale: float | None = None
    backend: str = "auto"

    def _run(self, q: Any, k: Any, v: Any) -> Any:
        return rfa_snis_core(q, k, v, num_samples=self.num_samples, seed=self.seed,
                             projection=None, orthogonal=self.orthogonal, scale=self.scale,
                             backend=self.backend, check_finite=True)

    def __call__(self, q: Any, k: Any, v: Any) -> Any:
        """Output ``(..., L_q, d_v)``."""
        return self._run(q, k, v)

    def matrix(self, q: Any, k: Any) -> Any:
        """Implied attention matrix ``(..., L_q, L_k)``."""
        return self._run(q, k, None)


@dataclass(frozen=True, eq=False)
class RandomizedAttention:
    """:func:`~structattn.estimators.randomized_attention` as an operator.

    Parameters
    ----------
    num_samples : int
    seed : int
    mode : str, default "one-sample"
    causal : bool, default False
    noise_scale : float, default 1.0
    deterministic : bool, default False
    scale : float, optional
    backend : str, default "auto"
    """

    num_samples: int
    seed: Any
    mode: str = "one-sample"
    causal: bool = False
    noise_scale: float = 1.0
    deterministic: bool = False
    scale: float | None = None
    backend: str = "auto"

    def _run(self, q: Any, k: Any, v: Any) -> Any:
        return ra_core(q, k, v, num_samples=self.num_samples, seed=self.seed, mode=self.mode,
                       causal=self.causal, noise_scale=self.noise_scale,
                       deterministic=self.deterministic, scale=self.scale, noise=None,
                       components=None, return_samples=False, backend=self.backend,
                       check_finite=True)

    def __call__(self, q: Any, k: Any, v: Any) -> Any:
        """Output ``(..., L_q, d_v)``."""
        return self._run(q, k, v)

    def matrix(self, q: Any, k: Any) -> Any:
        """Implied attention matrix ``(..., L_q, L_k)`` (mean of the per-draw key softmaxes)."""
        return self._run(q, k, None)


@dataclass(frozen=True, eq=False)
class LinearRandomizedAttention:
    """:func:`~structattn.estimators.lara` as an operator.

    Parameters
    ----------
    num_landmarks : int
    seed : int, optional
    landmarks : str, default "segment-mean"
    mis : str, default "opt"
    alpha_coeff : float, default 1.0
    antithetic : bool, default False
    deterministic : bool, default False
    noise_scale : float, default 1.0
    alpha_floor : float, None or "auto", default "auto"
    grid_shape : (int, int), optional
    scale : float, optional
    backend : str, default "auto"
        All as in :func:`~structattn.estimators.lara`.
    """

    num_landmarks: int
    seed: Any = None
    landmarks: str = "segment-mean"
    mis: str = "opt"
    alpha_coeff: float = 1.0
    antithetic: bool = False
    deterministic: bool = False
    noise_scale: float = 1.0
    alpha_floor: float | str | None = "auto"
    grid_shape: tuple[int, int] | None = None
    scale: float | None = None
    backend: str = "auto"

    def parts(self, q: Any, k: Any, v: Any | None = None):
        """All intermediates (:class:`~structattn.estimators.LaraParts`)."""
        return lara_parts(
            q, k, v, num_landmarks=self.num_landmarks, landmarks=self.landmarks,
            mis=self.mis, alpha_coeff=self.alpha_coeff, antithetic=self.antithetic,
            deterministic=self.deterministic, seed=self.seed, noise_scale=self.noise_scale,
            alpha_floor=self.alpha_floor, grid_shape=self.grid_shape, scale=self.scale,
            backend=self.backend,
        )

    def __call__(self, q: Any, k: Any, v: Any) -> Any:
        """Output ``(..., L_q, d_v)``."""
        return self.parts(q, k, v).output

    def matrix(self, q: Any, k: Any) -> Any:
        """Implied attention matrix ``(..., L_q, L_k)``."""
        return self.parts(q, k).matrix()


@dataclass(frozen=True, eq=False)
class CosformerAttention:
    """:func:`~structattn.estimators.cosformer` as an operator.

    Parameters
    ----------
    causal : bool, default False
    max_length : int, optional
    eps : float, default 0.0
    backend : str, default "auto"
    """

    causal: bool = False
    max_length: int | None = None
    eps: float = 0.0
    backend: str = "auto"

    def __call__(self, q: Any, k: Any, v: Any) -> Any:
        """Output ``(..., L_q, d_v)``."""
        return cosformer(q, k, v, causal=self.causal, max_length=self.max_length,
                         eps=self.eps, backend=self.backend)

    def matrix(self, q: Any, k: Any) -> Any:
        """The dense cosFormer matrix ``(..., L_q, L_k)``."""
        return cosformer_matrix(q, k, causal=self.causal, max_length=self.max_length,
                                eps=self.eps)
