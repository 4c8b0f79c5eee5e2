"""Infinite-width network kernels: NNGP and NTK in closed form, NNGP by Monte Carlo."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._array import (
    as_generator,
    as_like,
    is_torch,
    namespace,
)
from ._kernel_base import (
    FeatureKernel,
    Kernel,
    _clamp,
    _int_at_least,
    _positive,
    _relu_angular,
    _sq_norms,
    check_points,
)

__all__ = ["MonteCarloNNGPKernel", "NNGPKernel", "NTKKernel"]


def _activation_name(activation: Any) -> str:
    if activation not in ("relu", "erf"):
        raise ValueError(f"activation must be 'relu' or 'erf', got {activation!r}")
    return activation


class NNGPKernel(Kernel):
    """NNGP kernel of a fully connected network with ``depth`` hidden layers.

    ``Σ⁰(x, y) = σ_b² + σ_w² xᵀy / d`` and, per hidden layer,

    * ReLU: ``Σ^{l+1} = σ_b² + σ_w² √(Σ^l_xx Σ^l_yy) J1(θ_l)``,
      ``J1(θ) = (sin θ + (π - θ) cos θ)/(2π)``, ``cos θ_l = Σ^l_xy / √(Σ^l_xx Σ^l_yy)``
      clipped to ``[-1, 1]`` on both sides;
    * erf: ``Σ^{l+1} = σ_b² + σ_w² (2/π) arcsin(2Σ^l_xy / √((1 + 2Σ^l_xx)(1 + 2Σ^l_yy)))``.

    The kernel is ``Σ^{depth}``: the covariance of the scalar output of an infinitely
    wide network ``h¹ = σ_w W⁰x/√d + σ_b b⁰``, ``h^{l+1} = σ_w W^l φ(h^l)/√n + σ_b b^l``
    with standard normal weights and biases.

    Parameters
    ----------
    depth : int
        Number of hidden layers (``0``: the linear kernel ``Σ⁰``).
    activation : {"relu", "erf"}
    sigma_w2, sigma_b2 : float
        Weight and bias variances (defaults 2 and 1 as in the paper's NNGP toys).

    Notes
    -----
    ``O(N M (d + depth))`` per block.
    """

    name = "nngp"

    def __init__(self, depth: int, activation: str = "relu", *, sigma_w2: float = 2.0,
                 sigma_b2: float = 1.0):
        self.depth = _int_at_least(depth, "depth", 0)
        self.activation = _activation_name(activation)
        self.sigma_w2 = _positive(sigma_w2, "sigma_w2")
        self.sigma_b2 = _positive(sigma_b2, "sigma_b2", allow_zero=True)

    def _params(self) -> dict[str, Any]:
        return {"depth": self.depth, "activation": self.activation,
                "sigma_w2": self.sigma_w2, "sigma_b2": self.sigma_b2}

    def _step(self, xp: Any, sxy: Any, sxx: Any, syy: Any) -> tuple[Any, Any, Any]:
        """One layer of the recursion; also returns ``J0`` (ReLU derivative term)."""
        wb, bb = self.sigma_w2, self.sigma_b2
        if self.activation == "relu":
            norm = xp.sqrt(sxx[:, None] * syy[None, :])
            j1, j0 = _relu_angular(xp, sxy / norm)
            return bb + wb * norm * j1, bb + wb * sxx / 2, bb + wb * syy / 2, j0
        arg = 2 * sxy / xp.sqrt((1 + 2 * sxx)[:, None] * (1 + 2 * syy)[None, :])
        new = bb + wb * (2 / math.pi) * xp.asin(_clamp(arg, -1.0, 1.0))
        dxx = bb + wb * (2 / math.pi) * xp.asin(2 * sxx / (1 + 2 * sxx))
        dyy = bb + wb * (2 / math.pi) * xp.asin(2 * syy / (1 + 2 * syy))
        return new, dxx, dyy, None

    def _base(self, X: Any, Y: Any) -> tuple[Any, Any, Any]:
        xp = namespace(X, Y)
        d = X.shape[1]
        sxy = self.sigma_b2 + self.sigma_w2 * (X @ xp.matrix_transpose(Y)) / d
        sxx = self.sigma_b2 + self.sigma_w2 * _sq_norms(X) / d
        syy = self.sigma_b2 + self.sigma_w2 * _sq_norms(Y) / d
        return sxy, sxx, syy

    def _block(self, X: Any, Y: Any) -> Any:
        xp = namespace(X, Y)
        sxy, sxx, syy = self._base(X, Y)
        if self.activation == "relu" and (self.depth and self.sigma_b2 == 0):
            tiny = xp.asarray(np.finfo(np.float64).tiny, dtype=sxx.dtype, device=sxx.device)
            sxx, syy = xp.maximum(sxx, tiny), xp.maximum(syy, tiny)
        for _ in range(self.depth):
            sxy, sxx, syy, _ = self._step(xp, sxy, sxx, syy)
        return sxy

    def _diag(self, X: Any) -> Any:
        xp = namespace(X)
        d = X.shape[1]
        s = self.sigma_b2 + self.sigma_w2 * _sq_norms(X) / d
        for _ in range(self.depth):
            if self.activation == "relu":
                s = self.sigma_b2 + self.sigma_w2 * s / 2
            else:
                s = self.sigma_b2 + self.sigma_w2 * (2 / math.pi) * xp.asin(2 * s / (1 + 2 * s))
        return s


class NTKKernel(NNGPKernel):
    """Neural tangent kernel of a fully connected ReLU network (NTK parametrisation).

    ``Θ⁰ = Σ⁰`` and ``Θ^{l+1} = Σ^{l+1} + σ_w² Θ^l J0(θ_l)``, ``J0(θ) = (π - θ)/(2π)``,
    with ``Σ^l``, ``θ_l`` of :class:`NNGPKernel` (ReLU).  It is the limit of
    :func:`empirical_ntk` of the network described there, at initialisation, as the
    width grows.

    Parameters
    ----------
    depth : int
        Number of hidden layers.
    sigma_w2, sigma_b2 : float
        Weight and bias variances.
    """

    name = "ntk"

    def __init__(self, depth: int, *, sigma_w2: float = 2.0, sigma_b2: float = 1.0):
        super().__init__(depth, "relu", sigma_w2=sigma_w2, sigma_b2=sigma_b2)

    def _params(self) -> dict[str, Any]:
        return {"depth": self.depth, "sigma_w2": self.sigma_w2, "sigma_b2": self.sigma_b2}

    def _block(self, X: Any, Y: Any) -> Any:
        xp = namespace(X, Y)
        sxy, sxx, syy = self._base(X, Y)
        theta = sxy
        for _ in range(self.depth):
            sxy, sxx, syy, j0 = self._step(xp, sxy, sxx, syy)
            theta = sxy + self.sigma_w2 * theta * j0
        return theta

    def _diag(self, X: Any) -> Any:
        d = X.shape[1]
        s = self.sigma_b2 + self.sigma_w2 * _sq_norms(X) / d
        theta = s
        for _ in range(self.depth):
            s = self.sigma_b2 + self.sigma_w2 * s / 2
            theta = s + self.sigma_w2 * theta / 2
        return theta


# ------------------------------------------------------------- feature-only kernels
class MonteCarloNNGPKernel(FeatureKernel):
    """Monte Carlo estimate of :class:`NNGPKernel` from random networks.

    ``num_nets`` networks of hidden ``width`` are drawn (weights and biases standard
    normal, scaled as in :class:`NNGPKernel`); the features are the last hidden layer,
    ``F(x) = [σ_b, σ_w φ(h^{depth}(x)) / √width]`` per network, concatenated and divided
    by ``√num_nets``, so that ``F(x)·F(y)`` is the average over networks of the
    covariance that the output layer's weights would give.  For ``depth = 1`` it is
    unbiased; deeper networks add an ``O(1/width)`` finite-width bias.  Standard error
    ``O(1/√(width · num_nets))``.

    Parameters
    ----------
    depth : int
        Number of hidden layers (``>= 1``).
    activation : {"relu", "erf"}
    width : int, default 2048
    num_nets : int, default 1
    sigma_w2, sigma_b2 : float
    seed : int or numpy Generator, default 0
        The draws; every call of :meth:`features` uses the same networks.

    Notes
    -----
    ``O(N · num_nets · (d·width + depth·width²))`` per :meth:`features` call.
    """

    name = "nngp-mc"
    feature_only = True

    def __init__(self, depth: int, activation: str = "relu", *, width: int = 2048,
                 num_nets: int = 1, sigma_w2: float = 2.0, sigma_b2: float = 1.0,
                 seed: Any = 0):
        self.depth = _int_at_least(depth, "depth", 1)
        self.activation = _activation_name(activation)
        self.width = _int_at_least(width, "width", 1)
        self.num_nets = _int_at_least(num_nets, "num_nets", 1)
        self.sigma_w2 = _positive(sigma_w2, "sigma_w2")
        self.sigma_b2 = _positive(sigma_b2, "sigma_b2", allow_zero=True)
        self.seed = seed
        self._draws: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}

    def _params(self) -> dict[str, Any]:
        return {"depth": self.depth, "activation": self.activation, "width": self.width,
                "num_nets": self.num_nets}

    def _weights(self, d: int) -> list[tuple[np.ndarray, np.ndarray]]:
        if d not in self._draws:
            rng = as_generator(self.seed)  # a Generator passed in is advanced once per d
            layers, fan_in = [], d
            for _ in range(self.depth):
                W = rng.standard_normal((self.num_nets, fan_in, self.width))
                b = rng.standard_normal((self.num_nets, 1, self.width))
                layers.append((W * math.sqrt(self.sigma_w2 / fan_in), b * math.sqrt(self.sigma_b2)))
                fan_in = self.width
            self._draws[d] = layers
        return self._draws[d]

    def _act(self, xp: Any, h: Any) -> Any:
        if self.activation == "relu":
            return xp.maximum(h, xp.zeros_like(h))
        if is_torch(h):
            import torch

            return torch.erf(h)
        from scipy.special import erf

        return erf(h)

    def features(self, X: Any) -> Any:
        """Features of shape ``(N, num_nets · (width + 1))``; see the class docstring."""
        check_points(X, "X")
        xp = namespace(X)
        h = X[None, :, :]
        for i, (W, b) in enumerate(self._weights(X.shape[1])):
            pre = h if i == 0 else self._act(xp, h)
            h = pre @ as_like(W, X) + as_like(b, X)
        last = self._act(xp, h) * math.sqrt(self.sigma_w2 / self.width)
        bias = xp.full((self.num_nets, X.shape[0], 1), math.sqrt(self.sigma_b2),
                       dtype=X.dtype, device=X.device)
        F = xp.concat([bias, last], axis=-1)  # (nets, N, width + 1)
        F = xp.permute_dims(F, (1, 0, 2))
        return xp.reshape(F, (X.shape[0], -1)) / math.sqrt(self.num_nets)
