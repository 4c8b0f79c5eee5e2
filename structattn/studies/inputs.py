"""Synthetic attention inputs for accuracy studies."""

from __future__ import annotations

import numpy as np

__all__ = [
    "MINILM_ENTROPY_RATIO",
    "calibrated_scale",
    "minilm_entropy_target",
    "normalized_entropy",
    "synthetic_inputs",
]

# Inputs are drawn from a child stream of SeedSequence(seed), so that a feature map
# built with the same integer seed (default_rng(seed)) draws independent projections.
_INPUT_STREAM = 0x51A7


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def synthetic_inputs(
    length: int,
    *,
    dim: int = 64,
    value_dim: int = 64,
    heads: int = 2,
    batch: int = 1,
    seed: int = 0,
    scale: float = 1.0,
    dtype: str = "float64",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian queries, keys and values.

    ``q, k ~ scale · N(0, I)`` and ``v ~ N(0, I)``, drawn (in that order, in float64,
    then cast to ``dtype``) from a numpy Generator seeded by ``seed``.  The stream is
    ``SeedSequence(seed, spawn_key=(0x51A7,))``, independent of ``default_rng(seed)``, so
    a feature map drawn with the same integer seed is not correlated with the inputs.

    Parameters
    ----------
    length : int
        Sequence length ``L`` (queries and keys).
    dim : int, default 64
        Query/key size ``d``.
    value_dim : int, default 64
        Value size ``d_v``.
    heads, batch : int
        Leading dimensions.
    seed : int, default 0
        Non-negative integer; equal seeds give identical arrays.
    scale : float, default 1.0
        Standard deviation of queries and keys.  With the softmax temperature
        ``d**-0.5`` the scores ``q·k/√d`` then have standard deviation ``scale²``.
    dtype : {"float64", "float32"}

    Returns
    -------
    q, k : numpy.ndarray, shape (batch, heads, L, d)
    v : numpy.ndarray, shape (batch, heads, L, d_v)

    Notes
    -----
    ``O(batch·heads·L·(2d + d_v))`` time and memory.
    """
    length = _positive_int(length, "length")
    dim = _positive_int(dim, "dim")
    value_dim = _positive_int(value_dim, "value_dim")
    heads = _positive_int(heads, "heads")
    batch = _positive_int(batch, "batch")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating)) or not (
        np.isfinite(scale) and scale > 0
    ):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_INPUT_STREAM,)))
    shape = (batch, heads, length)
    q = rng.standard_normal((*shape, dim)) * scale
    k = rng.standard_normal((*shape, dim)) * scale
    v = rng.standard_normal((*shape, value_dim))
    return q.astype(dtype), k.astype(dtype), v.astype(dtype)


#: Mean normalized row entropy ``H / ln L`` of MiniLM-L6 attention at ``L = 512`` (72
#: heads, unpadded text, seed 0), the target of :func:`calibrated_inputs` when the
#: MiniLM package is not installed (measured with :func:`minilm_entropy_target`).
MINILM_ENTROPY_RATIO = 0.690


def normalized_entropy(q: np.ndarray, k: np.ndarray, *, rows: int | None = 256) -> float:
    """Mean row entropy of ``softmax(q kᵀ/√d)`` divided by ``ln L_k`` (1 = uniform).

    ``rows`` evenly spaced query rows are used (all when None): ``O(rows·L·d)``.
    """
    from .metrics import attention_entropy

    L_q = q.shape[-2]
    if rows is not None and L_q > rows:
        q = q[..., np.linspace(0, L_q - 1, rows).astype(int), :]
    return attention_entropy(q, k) / float(np.log(k.shape[-2]))


def minilm_entropy_target(*, seed: int = 0) -> float:
    """``H / ln L`` of real MiniLM attention at ``L = 512``, all 72 heads (needs the extra)."""
    from .minilm import MAX_LENGTH, minilm_attention_inputs

    q, k, _ = minilm_attention_inputs(MAX_LENGTH, layer="all", seed=seed)
    return normalized_entropy(q, k, rows=None)


def calibrated_scale(
    length: int, target: float, *, dim: int = 32, heads: int = 12, seed: int = 0,
    tol: float = 1e-3,
) -> float:
    """The ``scale`` of :func:`synthetic_inputs` whose map has ``H / ln L = target``.

    The normalized mean row entropy decreases monotonically with the scale of Gaussian
    queries and keys; the scale is found by bisection on ``log scale`` (about 20 entropy
    evaluations on 256 query rows each, ``O(20·256·L·d·heads)``), deterministically.

    Raises
    ------
    ValueError
        If ``target`` is not in ``(0, 1)``.
    """
    if not (isinstance(target, (int, float)) and 0.0 < target < 1.0):
        raise ValueError(f"target must be a normalized entropy in (0, 1), got {target!r}")
    q1, k1, _ = synthetic_inputs(length, dim=dim, value_dim=1, heads=heads, seed=seed,
                                 scale=1.0)
    lo, hi = -4.0, 4.0  # log scale
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        s = float(np.exp(mid))
        if normalized_entropy(q1 * s, k1 * s) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo < tol:
            break
    return float(np.exp(0.5 * (lo + hi)))
