"""Positive semi-definite kernels ``κ(x, y)`` as small objects (numpy and torch).

Every kernel is called as ``kernel(X, Y)`` with ``X`` of shape ``(N, d)`` and ``Y`` of
shape ``(M, d)`` (``Y`` defaults to ``X``) and returns the ``(N, M)`` matrix
``κ(x_n, y_m)``: numpy in → numpy out, torch in → torch out (same device and dtype,
differentiable).  ``kernel.diag(X)`` gives ``κ(x_n, x_n)`` in ``O(N d)``.

Closed-form kernels (neuralef.md §1.7): :func:`rbf`, :func:`polynomial`,
:func:`exponential` (the softmax kernel ``exp(x·y/τ)``), :func:`arccos` (order 0 and 1),
:func:`nngp` (fully connected ReLU/erf network), :func:`ntk` (ReLU network).
Kernels known only through features (neuralef.md §1.5): :func:`nngp_features`
(Monte Carlo NNGP from random networks) and :func:`empirical_ntk` (``J Jᵀ`` of a torch
model, exact or by a random JVP sketch).  A kernel with a feature representation has
``kernel.features(X)`` of shape ``(N, S)`` with ``κ(x, y) ≈ features(x)·features(y)``
(exact for :func:`empirical_ntk` without sketch, an unbiased Monte Carlo estimate
otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._array import (
    as_generator,
    as_like,
    describe_array,
    is_torch,
    namespace,
    validate_float_array,
    validate_same_kind,
)

__all__ = [
    "ArcCosineKernel",
    "EmpiricalNTKKernel",
    "ExponentialKernel",
    "Kernel",
    "MonteCarloNNGPKernel",
    "NNGPKernel",
    "NTKKernel",
    "PolynomialKernel",
    "RBFKernel",
    "arccos",
    "empirical_ntk",
    "exponential",
    "nngp",
    "nngp_features",
    "ntk",
    "polynomial",
    "rbf",
]


# ---------------------------------------------------------------------------- checks
def _positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        what = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {what}, got {value!r}")
    return value


def _int_at_least(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_points(X: Any, name: str = "X", *, check_finite: bool = True) -> None:
    """Check that ``X`` is a float ``(N, d)`` numpy array or torch tensor with ``N >= 1``."""
    validate_float_array(X, name, min_ndim=2, check_finite=check_finite)
    if X.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of points of shape (N, d), got shape "
            f"{tuple(X.shape)}; reshape 1-D data with X[:, None]"
        )
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(
            f"{name} must have N >= 1 points of dimension d >= 1, got {describe_array(X)}"
        )


def _check_pair(X: Any, Y: Any, dim: int | None = None) -> Any:
    check_points(X, "X")
    if Y is None:
        Y = X
    else:
        check_points(Y, "Y")
        validate_same_kind({"X": X, "Y": Y})
        if X.shape[1] != Y.shape[1]:
            raise ValueError(
                f"X and Y must have the same dimension d; got X.shape={tuple(X.shape)} "
                f"and Y.shape={tuple(Y.shape)}"
            )
    if dim is not None and X.shape[1] != dim:
        raise ValueError(
            f"this kernel is defined on points of dimension d={dim}, got "
            f"X.shape={tuple(X.shape)}"
        )
    return Y


def _sq_norms(X: Any) -> Any:
    return namespace(X).sum(X * X, axis=1)


def _clamp(x: Any, lo: float | None = None, hi: float | None = None) -> Any:
    """Clip to ``[lo, hi]`` (direct numpy/torch call: the array-API ``clip`` wrapper of
    array-api-compat costs ~0.5 ms per call on small torch tensors)."""
    if is_torch(x):
        return x.clamp(min=lo, max=hi)
    return np.clip(x, lo, hi)


def _relu_angular(xp: Any, c: Any) -> tuple[Any, Any]:
    """``J1(θ) = (sin θ + (π - θ) cos θ) / (2π)`` and ``J0(θ) = (π - θ) / (2π)``
    for ``cos θ = c`` (clipped to ``[-1, 1]`` on both sides)."""
    c = _clamp(c, -1.0, 1.0)
    theta = xp.acos(c)
    sin = xp.sqrt(_clamp(1 - c * c, 0.0))
    return (sin + (math.pi - theta) * c) / (2 * math.pi), (math.pi - theta) / (2 * math.pi)


# ------------------------------------------------------------------------------ base
class Kernel:
    """Base class: a symmetric positive semi-definite kernel ``κ(x, y)``.

    Subclasses implement ``_block(X, Y)`` (validated inputs) and may override
    ``_diag``, ``rank`` and ``features``.

    Attributes
    ----------
    name : str
        Short name used in reprs and benchmark tables.
    """

    name = "kernel"
    #: Dimension the kernel is tied to (``None``: any ``d``).
    dim: int | None = None

    def __call__(self, X: Any, Y: Any = None) -> Any:
        """The kernel matrix ``κ(X, Y)``.

        Parameters
        ----------
        X : array, shape (N, d)
        Y : array, shape (M, d), optional
            Defaults to ``X``.

        Returns
        -------
        array, shape (N, M)
            Of ``X``'s kind, dtype and device.
        """
        Y = _check_pair(X, Y, self.dim)
        return self._block(X, Y)

    def diag(self, X: Any) -> Any:
        """``κ(x_n, x_n)`` for every row of ``X``, shape ``(N,)``, ``O(N d)``."""
        _check_pair(X, None, self.dim)
        return self._diag(X)

    def _diag(self, X: Any) -> Any:
        xp = namespace(X)
        return xp.stack([self._block(X[i : i + 1], X[i : i + 1])[0, 0] for i in range(X.shape[0])])

    def _block(self, X: Any, Y: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def rank(self, d: int) -> int | None:
        """Rank of the integral operator on ``R^d`` (``None`` when infinite)."""
        return None

    #: True when the kernel can be evaluated only through :meth:`features`.
    feature_only = False

    def features(self, X: Any) -> Any:
        """Feature representation ``F(X)``, shape ``(N, S)``, ``κ ≈ F(x)·F(y)``."""
        raise NotImplementedError(f"{type(self).__name__} has no feature representation")

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({params})"

    def _params(self) -> dict[str, Any]:
        return {}


# ------------------------------------------------------------------- closed forms
class RBFKernel(Kernel):
    """Gaussian kernel ``a · exp(-|x - y|² / (2 ℓ²))``.

    Parameters
    ----------
    lengthscale : float, default 1.0
        ``ℓ`` (the official NeuralEF helper's ``length_scale`` is ``ℓ²``).
    amplitude : float, default 1.0
        ``a``.

    Notes
    -----
    ``O(N M d)`` per block.
    """

    name = "rbf"

    def __init__(self, lengthscale: float = 1.0, amplitude: float = 1.0):
        self.lengthscale = _positive(lengthscale, "lengthscale")
        self.amplitude = _positive(amplitude, "amplitude")

    def _params(self) -> dict[str, Any]:
        return {"lengthscale": self.lengthscale, "amplitude": self.amplitude}

    def _block(self, X: Any, Y: Any) -> Any:
        xp = namespace(X, Y)
        sq = _sq_norms(X)[:, None] + _sq_norms(Y)[None, :] - 2 * (X @ xp.matrix_transpose(Y))
        sq = _clamp(sq, 0.0)
        return self.amplitude * xp.exp(sq * (-0.5 / self.lengthscale**2))

    def _diag(self, X: Any) -> Any:
        xp = namespace(X)
        return xp.full((X.shape[0],), self.amplitude, dtype=X.dtype, device=X.device)


class PolynomialKernel(Kernel):
    """Polynomial kernel ``(η xᵀy + ν)^p``.

    Parameters
    ----------
    degree : int, default 2
        ``p >= 1``.
    eta : float, default 1.0
        ``η > 0``.
    nu : float, default 1.0
        ``ν >= 0``.

    Notes
    -----
    Finite rank: ``C(d + p, p)`` with ``ν > 0``, ``C(d + p - 1, p)`` with ``ν = 0``
    (the paper's 1-D ``(x y + 1.5)^4`` has rank 5).
    """

    name = "polynomial"

    def __init__(self, degree: int = 2, eta: float = 1.0, nu: float = 1.0):
        self.degree = _int_at_least(degree, "degree", 1)
        self.eta = _positive(eta, "eta")
        self.nu = _positive(nu, "nu", allow_zero=True)

    def _params(self) -> dict[str, Any]:
        return {"degree": self.degree, "eta": self.eta, "nu": self.nu}

    def _block(self, X: Any, Y: Any) -> Any:
        xp = namespace(X, Y)
        return (self.eta * (X @ xp.matrix_transpose(Y)) + self.nu) ** self.degree

    def _diag(self, X: Any) -> Any:
        return (self.eta * _sq_norms(X) + self.nu) ** self.degree

    def rank(self, d: int) -> int:
        if self.nu > 0:
            return math.comb(d + self.degree, self.degree)
        return math.comb(d + self.degree - 1, self.degree)


class ExponentialKernel(Kernel):
    """The softmax (exponential) kernel ``exp(xᵀy / τ)``.

    ``exp(xᵀy/τ) = exp(|x|²/2τ) · exp(-|x - y|²/2τ) · exp(|y|²/2τ)``: a diagonal
    conjugation of the RBF kernel with ``ℓ² = τ``.  With ``τ = √d_head`` it is the kernel
    of ``softmax(QKᵀ/√d)``.  Its integral operator under ``N(0, σ² I)`` is
    Hilbert–Schmidt only for ``σ² < τ/2``.

    Parameters
    ----------
    tau : float
        Temperature ``τ > 0``.
    """

    name = "exponential"

    def __init__(self, tau: float):
        self.tau = _positive(tau, "tau")

    def _params(self) -> dict[str, Any]:
        return {"tau": self.tau}

    def _block(self, X: Any, Y: Any) -> Any:
        xp = namespace(X, Y)
        return xp.exp((X @ xp.matrix_transpose(Y)) / self.tau)

    def _diag(self, X: Any) -> Any:
        return namespace(X).exp(_sq_norms(X) / self.tau)


class ArcCosineKernel(Kernel):
    """Arc-cosine kernels: ``E_w[φ(wᵀx) φ(wᵀy)]``, ``w ~ N(0, I)``.

    * order 0 (step ``φ = 1{· > 0}``): ``(π - θ) / (2π)``;
    * order 1 (ReLU): ``|x||y| (sin θ + (π - θ) cos θ) / (2π)``,

    with ``θ`` the angle between ``x`` and ``y``.  This is the expectation convention;
    Cho & Saul's ``k_n`` is twice these values.

    Parameters
    ----------
    order : {0, 1}
    num_features : int, default 4096
        Random features used by :meth:`features`.
    seed : int or numpy Generator, default 0
        Source of the feature draws.
    """

    name = "arccos"

    def __init__(self, order: int = 1, *, num_features: int = 4096, seed: Any = 0):
        if order not in (0, 1) or isinstance(order, bool):
            raise ValueError(f"order must be 0 or 1, got {order!r}")
        self.order = int(order)
        self.num_features = _int_at_least(num_features, "num_features", 1)
        self.seed = seed

    def _params(self) -> dict[str, Any]:
        return {"order": self.order}

    def _block(self, X: Any, Y: Any) -> Any:
        xp = namespace(X, Y)
        nx = xp.sqrt(_sq_norms(X))[:, None]
        ny = xp.sqrt(_sq_norms(Y))[None, :]
        denom = nx * ny
        safe = xp.where(denom > 0, denom, xp.ones_like(denom))
        c = (X @ xp.matrix_transpose(Y)) / safe
        c = xp.where(denom > 0, c, xp.ones_like(c))  # zero vector: θ := 0 by convention
        j1, j0 = _relu_angular(xp, c)
        return j0 if self.order == 0 else denom * j1

    def _diag(self, X: Any) -> Any:
        xp = namespace(X)
        if self.order == 0:
            return xp.full((X.shape[0],), 0.5, dtype=X.dtype, device=X.device)
        return _sq_norms(X) / 2

    def features(self, X: Any) -> Any:
        """Monte Carlo features ``φ(W x) / √S``, ``W ~ N(0, I)`` drawn from ``seed``.

        Returns
        -------
        array, shape (N, num_features)
        """
        check_points(X, "X")
        W = as_generator(self.seed).standard_normal((X.shape[1], self.num_features))
        P = X @ as_like(W, X)
        xp = namespace(X)
        zero = xp.zeros_like(P)
        F = xp.where(P > 0, xp.ones_like(P), zero) if self.order == 0 else xp.maximum(P, zero)
        return F / math.sqrt(self.num_features)


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
class MonteCarloNNGPKernel(Kernel):
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

    def _block(self, X: Any, Y: Any) -> Any:
        xp = namespace(X, Y)
        return self.features(X) @ xp.matrix_transpose(self.features(Y))

    def _diag(self, X: Any) -> Any:
        F = self.features(X)
        return namespace(F).sum(F * F, axis=1)


class EmpiricalNTKKernel(Kernel):
    """Empirical NTK ``Θ(x, y) = J(x) J(y)ᵀ`` of a scalar-output torch model.

    ``J(x) = ∂f(x)/∂θ`` at the model's current parameters.  Exact: per-sample Jacobians
    by ``torch.func.vmap(torch.func.jacrev(...))`` (features ``J``, ``O(N P)`` memory).
    Sketch (``sketch=S``): ``F = J V / √S`` with ``V`` a ``P x S`` Rademacher matrix,
    ``E[F Fᵀ] = J Jᵀ``, computed by forward-mode ``torch.func.jvp`` vectorised over the
    ``S`` directions with ``torch.func.vmap`` (exact directional derivatives, not the
    finite differences of the official code): ``O(N S)`` memory, never ``N x P``.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(N, d)`` to ``(N,)`` or ``(N, 1)``.
    sketch : int, optional
        Number of random directions ``S``; ``None`` for the exact kernel.
    seed : int, default 0
        Seed of the Rademacher directions (a torch Generator on the CPU).

    Notes
    -----
    numpy inputs are converted to the model's dtype and device; the result is numpy.
    """

    name = "empirical-ntk"

    def __init__(self, model: Any, *, sketch: int | None = None, seed: int = 0):
        import torch

        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.sketch = None if sketch is None else _int_at_least(sketch, "sketch", 1)
        self.seed = _int_at_least(seed, "seed", 0)
        self._directions: dict[Any, Any] = {}

    def _params(self) -> dict[str, Any]:
        return {"sketch": self.sketch}

    def _to_model(self, X: Any) -> tuple[Any, bool]:
        import torch

        p = next(self.model.parameters())
        if is_torch(X):
            return X.to(dtype=p.dtype, device=p.device), False
        return torch.as_tensor(X, dtype=p.dtype, device=p.device), True

    def _functional(self):
        import torch

        params = {n: p.detach() for n, p in self.model.named_parameters()}
        buffers = {n: b.detach() for n, b in self.model.named_buffers()}

        def f(theta, x):
            out = torch.func.functional_call(self.model, (theta, buffers), (x[None, :],))
            if out.numel() != 1:
                raise ValueError(
                    "empirical_ntk needs a scalar-output model (N, d) -> (N,) or (N, 1); "
                    f"got an output of shape {tuple(out.shape)} per point"
                )
            return out.reshape(())

        return f, params

    def features(self, X: Any) -> Any:
        """``J(X)`` (exact, shape ``(N, P)``) or the sketch ``J V / √S`` (``(N, S)``)."""
        import torch

        check_points(X, "X")
        Xt, back = self._to_model(X)
        f, params = self._functional()
        if self.sketch is None:
            jac = torch.func.vmap(torch.func.jacrev(f), in_dims=(None, 0))(params, Xt)
            F = torch.cat([j.reshape(Xt.shape[0], -1) for j in jac.values()], dim=1)
        else:
            V = self._rademacher(params)

            def jv(direction):
                return torch.func.jvp(
                    lambda th: torch.func.vmap(f, in_dims=(None, 0))(th, Xt),
                    (params,), (direction,))[1]

            F = torch.func.vmap(jv)(V).T / math.sqrt(self.sketch)
        F = F.detach()
        if back:
            return F.cpu().numpy().astype(X.dtype, copy=False)
        return F.to(dtype=X.dtype)

    def _rademacher(self, params: dict[str, Any]) -> dict[str, Any]:
        import torch

        key = tuple((n, tuple(p.shape), str(p.dtype), str(p.device)) for n, p in params.items())
        if key not in self._directions:
            g = torch.Generator().manual_seed(self.seed)
            out = {}
            for n, p in params.items():
                r = torch.randint(0, 2, (self.sketch, *p.shape), generator=g) * 2 - 1
                out[n] = r.to(dtype=p.dtype, device=p.device)
            self._directions = {key: out}
        return self._directions[key]

    def _block(self, X: Any, Y: Any) -> Any:
        xp = namespace(X, Y)
        return self.features(X) @ xp.matrix_transpose(self.features(Y))

    def _diag(self, X: Any) -> Any:
        F = self.features(X)
        return namespace(F).sum(F * F, axis=1)


# ------------------------------------------------------------------------ factories
def rbf(lengthscale: float = 1.0, amplitude: float = 1.0) -> RBFKernel:
    """Gaussian kernel ``a exp(-|x - y|²/(2ℓ²))``; see :class:`RBFKernel`."""
    return RBFKernel(lengthscale, amplitude)


def polynomial(degree: int = 2, eta: float = 1.0, nu: float = 1.0) -> PolynomialKernel:
    """Polynomial kernel ``(η xᵀy + ν)^p``; see :class:`PolynomialKernel`."""
    return PolynomialKernel(degree, eta, nu)


def exponential(tau: float) -> ExponentialKernel:
    """Softmax kernel ``exp(xᵀy/τ)``; see :class:`ExponentialKernel`."""
    return ExponentialKernel(tau)


def arccos(order: int = 1, *, num_features: int = 4096, seed: Any = 0) -> ArcCosineKernel:
    """Arc-cosine kernel of order 0 or 1; see :class:`ArcCosineKernel`."""
    return ArcCosineKernel(order, num_features=num_features, seed=seed)


def nngp(depth: int, activation: str = "relu", *, sigma_w2: float = 2.0,
         sigma_b2: float = 1.0) -> NNGPKernel:
    """NNGP kernel of a fully connected ReLU/erf network; see :class:`NNGPKernel`."""
    return NNGPKernel(depth, activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2)


def ntk(depth: int, *, sigma_w2: float = 2.0, sigma_b2: float = 1.0) -> NTKKernel:
    """NTK of a fully connected ReLU network; see :class:`NTKKernel`."""
    return NTKKernel(depth, sigma_w2=sigma_w2, sigma_b2=sigma_b2)


def nngp_features(depth: int, activation: str = "relu", *, width: int = 2048,
                  num_nets: int = 1, sigma_w2: float = 2.0, sigma_b2: float = 1.0,
                  seed: Any = 0) -> MonteCarloNNGPKernel:
    """Monte Carlo NNGP kernel from random networks; see :class:`MonteCarloNNGPKernel`."""
    return MonteCarloNNGPKernel(depth, activation, width=width, num_nets=num_nets,
                                sigma_w2=sigma_w2, sigma_b2=sigma_b2, seed=seed)


def empirical_ntk(model: Any, *, sketch: int | None = None, seed: int = 0) -> EmpiricalNTKKernel:
    """Empirical NTK of a torch model; see :class:`EmpiricalNTKKernel`."""
    return EmpiricalNTKKernel(model, sketch=sketch, seed=seed)


def kernel_matmul(kernel: Kernel, X: Any, Y: Any, V: Any, *, block: int = 2048) -> Any:
    """``κ(X, Y) V`` in row blocks of ``X`` (``O(block · M)`` extra memory).

    Parameters
    ----------
    kernel : Kernel
    X : array, shape (N, d)
    Y : array, shape (M, d)
    V : array, shape (M, r)
    block : int
        Rows of ``X`` per block.

    Returns
    -------
    array, shape (N, r)
    """
    xp = namespace(X, Y, V)
    parts: Sequence[Any] = [kernel(X[s : s + block], Y) @ V for s in range(0, X.shape[0], block)]
    return xp.concat(list(parts), axis=0)
