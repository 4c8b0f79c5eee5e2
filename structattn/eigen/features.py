"""Eigenfunction features for attention (neuralef.md §1.8).

With eigenpairs ``(μ_j, ψ_j)`` of the softmax kernel ``exp(q·k/τ)`` (``τ = √d``) under
the token distribution, the truncated Mercer expansion gives the rank-``k`` feature map
``φ(x) = Ψ(x) Λ^{1/2}`` and

``softmax(QKᵀ/√d) V ≈ D⁻¹ Ψ_Q Λ Ψ_Kᵀ V``,  ``D = diag(Ψ_Q Λ Ψ_Kᵀ 1)``,

in ``O((n_q + n_k) k d_v)`` after the features (:class:`EigenFeatures`, usable with
:func:`~structattn.attention.kernel_attention`).  Caveats surfaced by the API:

* the truncated kernel is not positive, so a row normaliser ``D_i`` can be tiny or
  negative: :meth:`EigenFeatures.attention` reports the minimum (as the mean
  approximate kernel value of the row) and refuses or warns when it is below
  ``eps`` times the largest;
* queries and keys usually follow different distributions; the eigenfunctions here
  are those of the *pooled* query/key distribution (:func:`softmax_eigenfeatures`),
  the symmetric case NeuralEF covers;
* with ``σ² >= τ/2`` the operator is not Hilbert–Schmidt and the expansion converges
  very slowly.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._array import (
    describe_array,
    is_torch,
    namespace,
    validate_attention_inputs,
    validate_float_array,
)
from .._validate import check_scale
from ..attention import NormalizerWarning, kernel_attention
from ..features import FeatureMap
from .base import EigenFunctions
from .kernels import ExponentialKernel, exponential
from .neuralef import NeuralEF
from .nystrom import nystrom

__all__ = [
    "EigenAttention",
    "EigenFeatures",
    "NormalizerError",
    "RankClippedWarning",
    "softmax_eigenfeatures",
]


class NormalizerError(ValueError):
    """Eigenfunction attention refused: some row normaliser is ``<= eps`` (relative)."""


class EigenFeatures(FeatureMap):
    """Feature map ``φ(x) = Ψ(x) Λ^{1/2}`` from kernel eigenfunctions.

    ``φ(q)·φ(k) = Σ_j μ_j ψ_j(q) ψ_j(k)``, the rank-``k`` truncation of the kernel;
    with eigenfunctions of ``exponential(τ = √d)`` it approximates the softmax kernel,
    deterministically.  Features are signed (``nonnegative = False``), so
    :func:`~structattn.attention.kernel_attention` warns on non-positive normalisers;
    :meth:`attention` adds the ``eps`` guard.

    Parameters
    ----------
    eigenfunctions : EigenFunctions
        With positive eigenvalues.
    eps : float, default 1e-3
        Guard threshold: a row is *unsafe* when its normaliser, expressed as the mean
        approximate kernel value over the keys it sees, is ``<= eps`` times the
        largest such value over all rows (scale-free; negative values always fail).
    on_small : {"raise", "warn"}
        What :meth:`attention` does with unsafe rows: raise :class:`NormalizerError`
        (default; the output would be dominated by truncation error) or emit a
        :class:`~structattn.attention.NormalizerWarning` and compute anyway.

    Attributes
    ----------
    last_min_normalizer : float or None
        Minimum row normaliser (mean kernel value per key) of the last
        :meth:`attention` call.

    Notes
    -----
    Inputs ``(..., L, d)`` with ``d = eigenfunctions.dim``; the feature cost is that of
    evaluating the eigenfunctions (Nyström: ``O(L m (d + k))`` for ``m`` points;
    NeuralEF: ``k`` network passes per token).
    """

    nonnegative = False

    def __init__(self, eigenfunctions: EigenFunctions, *, eps: float = 1e-3,
                 on_small: str = "raise"):
        if not isinstance(eigenfunctions, EigenFunctions):
            raise TypeError(
                f"eigenfunctions must be an EigenFunctions object, got "
                f"{type(eigenfunctions).__name__}"
            )
        mu = eigenfunctions.eigenvalues
        if not np.all(np.isfinite(mu)) or np.any(mu <= 0):
            raise ValueError(
                f"EigenFeatures needs positive finite eigenvalues (a PSD truncation), got "
                f"{mu}"
            )
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and 0 <= eps < 1):
            raise ValueError(f"eps must be a number in [0, 1), got {eps!r}")
        if on_small not in ("raise", "warn"):
            raise ValueError(f"on_small must be 'raise' or 'warn', got {on_small!r}")
        self.eigenfunctions = eigenfunctions
        self.eps = float(eps)
        self.on_small = on_small
        self.last_min_normalizer: float | None = None
        kern = eigenfunctions.kernel
        self.approximates_softmax = isinstance(kern, ExponentialKernel) and math.isclose(
            kern.tau, math.sqrt(eigenfunctions.dim))
        self._sqrt_mu = np.sqrt(mu)

    @property
    def rank(self) -> int:
        """Number of features ``k``."""
        return self.eigenfunctions.k

    def feature_dim(self, d: int) -> int:
        return self.eigenfunctions.k

    def _check(self, x: Any, name: str) -> None:
        validate_float_array(x, name, min_ndim=2, check_finite=True)
        if x.shape[-1] != self.eigenfunctions.dim:
            raise ValueError(
                f"{name}.shape[-1] must equal the eigenfunctions' dimension "
                f"d={self.eigenfunctions.dim}, got {describe_array(x)}"
            )

    def _features(self, x: Any) -> Any:
        xp = namespace(x)
        flat = xp.reshape(x, (-1, x.shape[-1]))
        psi = self.eigenfunctions(flat)
        scale = self._sqrt_mu.astype(np.float64)
        if is_torch(x):
            import torch

            scale = torch.as_tensor(scale, dtype=x.dtype, device=x.device)
        else:
            scale = scale.astype(x.dtype)
        return xp.reshape(psi * scale, (*x.shape[:-1], self.eigenfunctions.k))

    # ------------------------------------------------------------------ guard
    def normalizers(self, q: Any, k: Any, *, causal: bool = False) -> Any:
        """Row normalisers ``D_i = φ(q_i)·Σ_j φ(k_j)`` (``j <= i`` when causal).

        Parameters
        ----------
        q : array, shape (..., L_q, d)
        k : array, shape (..., L_k, d)
        causal : bool, default False

        Returns
        -------
        array, shape (..., L_q)
            ``O((L_q + L_k) k)`` after the features.
        """
        validate_attention_inputs(q, k, k[..., :1], check_finite=True)
        return self._normalizers(self.queries(q), self.keys(k), causal)

    @staticmethod
    def _normalizers(fq: Any, fk: Any, causal: bool) -> Any:
        xp = namespace(fq, fk)
        if not causal:
            return xp.sum(fq * xp.sum(fk, axis=-2, keepdims=True), axis=-1)
        if fq.shape[-2] != fk.shape[-2]:
            raise ValueError("causal normalisers need L_q == L_k")
        return xp.sum(fq * xp.cumulative_sum(fk, axis=-2), axis=-1)

    def min_normalizer(self, q: Any, k: Any, *, causal: bool = False) -> float:
        """``min_i D_i / n_i``: the smallest mean approximate kernel value of a row
        (``n_i`` = number of keys row ``i`` sees).  The exact softmax kernel gives
        values ``> 0``."""
        D = self.normalizers(q, k, causal=causal)
        return float(self._per_key(D, causal, k.shape[-2]).min())

    @staticmethod
    def _per_key(D: Any, causal: bool, L_k: int) -> np.ndarray:
        Dn = np.asarray(D.detach().cpu().numpy() if is_torch(D) else D, dtype=np.float64)
        if causal:
            return Dn / np.arange(1, Dn.shape[-1] + 1, dtype=np.float64)
        return Dn / L_k

    def attention(self, q: Any, k: Any, v: Any, *, causal: bool = False,
                  backend: str = "auto") -> Any:
        """Guarded ``D⁻¹ Ψ_Q Λ Ψ_Kᵀ V`` through :func:`~structattn.attention.kernel_attention`.

        Parameters
        ----------
        q, k, v : arrays, shapes (..., L_q, d), (..., L_k, d), (..., L_k, d_v)
        causal : bool, default False
        backend : str, default "auto"

        Returns
        -------
        array, shape (..., L_q, d_v)

        Raises
        ------
        NormalizerError
            With ``on_small="raise"``, when ``min_i D_i/n_i <= eps · max_i |D_i/n_i|``.
        """
        validate_attention_inputs(q, k, v, check_finite=True)
        fq, fk = self.queries(q), self.keys(k, causal=causal)
        D = self._normalizers(fq, fk, causal)
        per_key = self._per_key(D, causal, k.shape[-2])
        lo, hi = float(per_key.min()), float(np.abs(per_key).max())
        self.last_min_normalizer = lo
        if not lo > self.eps * hi:
            bad = int(np.sum(per_key <= self.eps * hi))
            msg = (
                f"{bad} attention row normaliser(s) are <= eps·max = {self.eps:g}·{hi:.3g} "
                f"(minimum mean kernel value {lo:.3g}): the rank-{self.rank} eigen-truncation "
                "of the kernel is not positive enough for these queries/keys; raise the rank, "
                "fit the eigenfunctions on these tokens, or pass on_small='warn'"
            )
            if self.on_small == "raise":
                raise NormalizerError(msg)
            warnings.warn(msg, NormalizerWarning, stacklevel=2)
        with warnings.catch_warnings():
            if self.on_small == "warn":  # already reported once above
                warnings.simplefilter("ignore", NormalizerWarning)
            return kernel_attention(q, k, v, self, causal=causal, backend=backend,
                                    check_finite=False)


def _pooled(q: Any, k: Any) -> Any:
    xp = namespace(q, k)
    d = q.shape[-1]
    return xp.concat([xp.reshape(q, (-1, d)), xp.reshape(k, (-1, d))], axis=0)


def _check_kernel_range(X: Any, scale: float) -> None:
    """The kernel ``exp(scale·x·y)`` must be representable on the pooled tokens.

    Its largest entry is ``exp(scale·max|x|²)`` (Cauchy-Schwarz); beyond the float64
    exponent range the eigenproblem has no finite answer, so this is refused by name
    instead of failing inside LAPACK ("must not contain infs or NaNs").
    """
    xn = np.asarray(X.detach().cpu().numpy() if is_torch(X) else X, dtype=np.float64)
    top = scale * float(np.max(np.sum(xn * xn, axis=-1))) if xn.size else 0.0
    limit = float(np.log(np.finfo(np.float64).max)) / 2
    if not top < limit:
        raise ValueError(
            f"the softmax kernel exp(scale·q·k) overflows on these inputs: "
            f"scale·max|x|² = {top:.4g} >= {limit:.4g} (half the float64 exponent range); "
            "rescale q and k (e.g. layer-normalize them) or lower scale"
        )


def softmax_eigenfeatures(q: Any, k: Any, rank: int, *, scale: float | None = None,
                          method: str = "nystrom", landmarks: int | None = 2048,
                          seed: int = 0, eps: float = 1e-3, on_small: str = "raise",
                          **neuralef_options: Any) -> EigenFeatures:
    """Fit eigenfunctions of the softmax kernel on the pooled query/key tokens.

    The tokens of ``q`` and ``k`` (all leading dimensions flattened) are pooled into one
    sample from the symmetrised token distribution, and the top-``rank`` eigenpairs of
    ``exponential(τ = 1/scale)`` under it are fitted.

    Parameters
    ----------
    q : array, shape (..., L_q, d)
    k : array, shape (..., L_k, d)
    rank : int
        Number of eigenfunctions ``k``.
    scale : float, optional
        Softmax scale; default ``d**-0.5`` (``τ = √d``).
    method : {"nystrom", "neuralef"}
        ``"nystrom"`` (deterministic given ``seed``) or :class:`NeuralEF`
        (``neuralef_options`` are passed to it).
    landmarks : int or None, default 2048
        Nyström on at most this many pooled tokens (a seeded subset); None: all.
    seed : int, default 0
    eps, on_small
        See :class:`EigenFeatures`.

    Returns
    -------
    EigenFeatures

    Examples
    --------
    >>> import numpy as np
    >>> from structattn.eigen import softmax_eigenfeatures
    >>> rng = np.random.default_rng(0)
    >>> q, k, v = rng.standard_normal((3, 256, 4))
    >>> phi = softmax_eigenfeatures(q, k, rank=15)
    >>> phi.attention(q, k, v).shape
    (256, 4)
    """
    validate_attention_inputs(q, k, k[..., :1], check_finite=True)
    d = q.shape[-1]
    scale = check_scale(scale, d)
    kern = exponential(1.0 / scale)
    X = _pooled(q, k)
    _check_kernel_range(X, scale)
    if method == "nystrom":
        n = X.shape[0]
        lm = landmarks if (landmarks is not None and landmarks < n) else None
        ef = nystrom(kern, X, rank, landmarks=lm, seed=seed)
    elif method == "neuralef":
        ef = NeuralEF(kern, rank, seed=seed, **neuralef_options).fit(X)
    else:
        raise ValueError(f"method must be 'nystrom' or 'neuralef', got {method!r}")
    return EigenFeatures(ef, eps=eps, on_small=on_small)


class RankClippedWarning(UserWarning):
    """A requested rank was larger than the number of points and was reduced."""


@dataclass(frozen=True, eq=False)
class EigenAttention:
    """Deterministic low-rank softmax attention from Nyström eigenfunctions.

    Each call fits, for every leading (batch, head) slice, the top-``rank``
    eigenfunctions of ``exp(q·k/√d)`` on that slice's pooled query/key tokens
    (:func:`softmax_eigenfeatures`) and applies ``D⁻¹ Ψ_Q Λ Ψ_Kᵀ V``.  The basis
    depends on every token, so there is no causal form.  On torch inputs the fit uses
    detached tokens; gradients flow through the feature evaluation and ``v`` only.

    Parameters
    ----------
    rank : int
        Number of eigenfunctions (the budget, comparable to a feature count).
    landmarks : int, default 1024
        Nyström points per slice (a seeded subset of the pooled tokens when more).
    seed : int, default 0
    eps : float, default 1e-3
    on_small : {"raise", "warn"}, default "warn"
        Guard of :class:`EigenFeatures` (a study records the warning).
    backend : str, default "auto"
    clip_rank : bool, default False
        When ``rank`` exceeds the number of Nyström points of a slice
        (``min(L_q + L_k, landmarks)``) or the numerical rank of its kernel matrix
        (eigenvalues above ``1e-10`` times the largest): False raises ``ValueError``;
        True uses that number instead and emits a :class:`RankClippedWarning`, so a
        study sweeping ranks records the clipping instead of failing.
    """

    rank: int
    landmarks: int = 1024
    seed: int = 0
    eps: float = 1e-3
    on_small: str = "warn"
    backend: str = "auto"
    clip_rank: bool = False

    def _slices(self, q: Any, k: Any):
        batch = q.shape[:-2]
        rank = self.rank
        points = min(q.shape[-2] + k.shape[-2], self.landmarks)
        if self.clip_rank and rank > points:
            warnings.warn(
                f"rank={rank} exceeds the {points} Nyström points of each slice; using "
                f"rank={points}",
                RankClippedWarning,
                stacklevel=3,
            )
            rank = points
        for idx in np.ndindex(*batch):
            try:
                phi = softmax_eigenfeatures(q[idx], k[idx], rank, landmarks=self.landmarks,
                                            seed=self.seed, eps=self.eps,
                                            on_small=self.on_small)
            except ValueError as exc:
                # the kernel matrix of this slice has a smaller numerical rank: with
                # clip_rank, fit that many eigenfunctions and say so (never refuse)
                found = re.search(r"only (\d+) eigenvalues", str(exc))
                if not (self.clip_rank and found and int(found.group(1)) >= 1):
                    raise
                numerical = int(found.group(1))
                warnings.warn(
                    f"rank={rank} exceeds the numerical rank {numerical} of the kernel "
                    f"matrix of slice {idx}; using rank={numerical} there",
                    RankClippedWarning,
                    stacklevel=3,
                )
                phi = softmax_eigenfeatures(q[idx], k[idx], numerical,
                                            landmarks=self.landmarks, seed=self.seed,
                                            eps=self.eps, on_small=self.on_small)
            yield idx, phi

    def __call__(self, q: Any, k: Any, v: Any) -> Any:
        """Output ``(..., L_q, d_v)``."""
        validate_attention_inputs(q, k, v)
        xp = namespace(q, k, v)
        outs = [phi.attention(q[idx], k[idx], v[idx], backend=self.backend)
                for idx, phi in self._slices(q, k)]
        return xp.reshape(xp.stack(outs), (*q.shape[:-1], v.shape[-1]))

    def matrix(self, q: Any, k: Any) -> Any:
        """Dense row-normalised ``(..., L_q, L_k)`` matrix ``D⁻¹ Ψ_Q Λ Ψ_Kᵀ``."""
        validate_attention_inputs(q, k, k[..., :1])
        xp = namespace(q, k)
        mats = []
        for idx, phi in self._slices(q, k):
            W = phi.queries(q[idx]) @ xp.matrix_transpose(phi.keys(k[idx]))
            den = xp.sum(W, axis=-1, keepdims=True)
            mats.append(W / xp.where(den == 0, xp.ones_like(den), den))
        return xp.reshape(xp.stack(mats), (*q.shape[:-1], k.shape[-2]))
