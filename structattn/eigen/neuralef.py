"""NeuralEF: kernel eigenfunctions learned by neural networks (Deng, Shi & Zhu, ICML 2022).

``k`` functions ``ψ_1..ψ_k`` play the game of neuralef.md §1.2: player ``j`` maximises
``R_jj - Σ_{i<j} R_ij² / R_ii`` with ``R_ij = E[ψ_i(x) κ(x, x') ψ_j(x')]`` under
``E[ψ_j²] = 1``, treating the earlier players as constants; the unique equilibrium (for
distinct eigenvalues) is the top-``k`` eigenfunctions in order.  Training minimises the
scalar surrogate

``L = -Σ_j R̂_jj + Σ_{i<j} R̂(sg ψ_i, ψ_j)² / sg(R̂_ii)``,  ``R̂ = Ψᵀ K_b Ψ / B²``,

on minibatches (``sg`` = stop-gradient, ``detach``), whose gradient with respect to the
batch outputs is ``-2 G / B²`` with ``G = K_b Ψ (I - U)`` of
``structattn.eigen._core.batch_terms`` (checked in the tests).  The constraint is
met by L2 batch normalisation: raw outputs are divided by their batch RMS (gradients
flow through it) and an EMA of the RMS replaces it at evaluation.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

import numpy as np

from .._array import as_generator, is_torch
from . import _core
from ._kernel_base import Kernel, check_points
from .base import EigenFunctions
from .kernels import kernel_matmul
from .nystrom import _check_kernel, _check_rank_request

__all__ = ["NeuralEF", "neuralef_surrogate_loss"]

_NETWORKS = ("mlp", "linear-features")
_ESTIMATORS = ("rayleigh", "ema")
_ACTIVATIONS = ("sin", "tanh", "relu", "erf")


def neuralef_surrogate_loss(psi: Any, kernel_matmul: Any, *, split: bool = False) -> Any:
    """The NeuralEF scalar surrogate loss on one batch (torch, differentiable).

    Parameters
    ----------
    psi : torch.Tensor, shape (B, k)
        L2-normalised outputs (with autograd history).
    kernel_matmul : callable
        ``V -> K_b V`` for ``(B, r)`` tensors (a precomputed block or a feature product);
        with ``split=True`` it is called as ``kernel_matmul(V, part)`` for the two halves
        ``part in (0, 1)`` of the batch and must multiply by that half's diagonal block.
    split : bool, default False
        Estimate the penalty numerator ``R̂_ij²`` on the first half of the batch and its
        denominator ``R̂_ii`` on the second (independent) half, removing the same-batch
        ratio bias of neuralef.md §1.4(b).

    Returns
    -------
    torch.Tensor
        Scalar ``-Σ_j R̂_jj + Σ_{i<j} R̂(sg ψ_i, ψ_j)² / sg(R̂_ii)``.

    Notes
    -----
    ``O(B² k + B k²)`` with an explicit block.  Without ``split`` its gradient with
    respect to ``psi`` is ``-2 G / B²`` with ``G`` of ``_core.batch_terms``.
    """
    import torch

    B, k = psi.shape
    psd = psi.detach()
    if not split:
        kpsd = kernel_matmul(psd)
        return _surrogate(psi, kpsd, torch.diagonal(psd.T @ kpsd) / (B * B))
    h = B // 2
    if h < 1:
        raise ValueError(f"split=True needs a batch of at least 2 points, got B={B}")
    upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=psi.device), diagonal=1)
    a, b = psi[:h], psd[h : 2 * h]
    kpa = kernel_matmul(psd[:h], 0)
    den = torch.diagonal(b.T @ kernel_matmul(b, 1)) / (h * h)
    kpsd = kernel_matmul(psd, None)
    diag = (2 * torch.sum(kpsd * psi, dim=0) - torch.sum(kpsd * psd, dim=0)) / (B * B)
    cross = (kpa.T @ a) / (h * h)
    return _penalised(diag, cross, den, upper)


def _surrogate(psi: Any, kpsd: Any, den: Any) -> Any:
    """The surrogate from ``K_b sg(Ψ)`` alone (one kernel product per step).

    ``Σ_j R̂_jj`` is replaced by ``(2⟨K sgψ_j, ψ_j⟩ - ⟨K sgψ_j, sgψ_j⟩)/B²``: the same
    value and the same gradient ``2 K ψ_j / B²`` (``K`` symmetric).
    """
    import torch

    B, k = psi.shape
    psd = psi.detach()
    upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=psi.device), diagonal=1)
    diag = (2 * torch.sum(kpsd * psi, dim=0) - torch.sum(kpsd * psd, dim=0)) / (B * B)
    cross = (kpsd.T @ psi) / (B * B)
    return _penalised(diag, cross, den, upper)


def _penalised(diag: Any, cross: Any, den: Any, upper: Any) -> Any:
    import torch

    safe = torch.where(den > 0, den, torch.ones_like(den))
    penalty = torch.where(upper & (den[:, None] > 0), cross * cross / safe[:, None],
                          torch.zeros_like(cross))
    return -torch.sum(diag) + torch.sum(penalty)


# ------------------------------------------------------------------------- networks
def _torch_modules():
    import torch

    class ParallelMLP(torch.nn.Module):
        """``k`` independent MLPs evaluated with batched matmuls: ``(B, d) -> (B, k)``."""

        def __init__(self, d: int, k: int, hidden: int, layers: int, activation: str):
            super().__init__()
            sizes = [d] + [hidden] * (layers - 1) + [1]
            self.weights = torch.nn.ParameterList()
            self.biases = torch.nn.ParameterList()
            for fan_in, fan_out in itertools.pairwise(sizes):
                bound = 1.0 / math.sqrt(fan_in)
                if activation == "sin" and fan_in == d:
                    bound = 1.0  # first sin layer: frequencies O(1) over the data scale
                W = (torch.rand(k, fan_in, fan_out) * 2 - 1) * bound
                b = (torch.rand(k, 1, fan_out) * 2 - 1) * bound
                self.weights.append(torch.nn.Parameter(W))
                self.biases.append(torch.nn.Parameter(b))
            self.activation = activation

        def _act(self, h):
            if self.activation == "sin":
                return torch.sin(h)
            if self.activation == "tanh":
                return torch.tanh(h)
            if self.activation == "relu":
                return torch.relu(h)
            return torch.erf(h)

        def forward(self, x):
            h = x.unsqueeze(0)
            last = len(self.weights) - 1
            for i, (W, b) in enumerate(zip(self.weights, self.biases, strict=True)):
                h = h @ W + b
                if i < last:
                    h = self._act(h)
            return h.squeeze(-1).T

    class LinearFeatures(torch.nn.Module):
        """``ψ = Φ(x) W``: fixed Gaussian bumps plus a constant, learned ``W``."""

        def __init__(self, centers, width: float, k: int, X):
            super().__init__()
            self.register_buffer("centers", centers)
            self.inv2w2 = 0.5 / width**2
            # whiten the basis on the training sample (Φ̃ᵀΦ̃/N = I on the kept span):
            # the game is then solved in well-conditioned coordinates
            with torch.no_grad():
                P = self.raw_basis(X)
                lam, V = torch.linalg.eigh(P.T @ P / P.shape[0])
                keep = lam > 1e-10 * lam[-1]
                self.register_buffer("whiten", V[:, keep] / torch.sqrt(lam[keep]))
            F = self.whiten.shape[1]
            self.W = torch.nn.Parameter(torch.randn(F, k, dtype=centers.dtype) / math.sqrt(F))

        def raw_basis(self, x):
            sq = ((x[:, None, :] - self.centers[None, :, :]) ** 2).sum(-1)
            bumps = torch.exp(-sq * self.inv2w2)
            return torch.cat([torch.ones_like(bumps[:, :1]), bumps], dim=1)

        def basis(self, x):
            return self.raw_basis(x) @ self.whiten

        def forward(self, x):
            return self.basis(x) @ self.W

    class Normalised(torch.nn.Module):
        """L2 batch normalisation of a body's outputs, with an EMA of the batch RMS."""

        def __init__(self, body, k: int, momentum: float):
            super().__init__()
            self.body = body
            self.momentum = momentum
            self.register_buffer("rms", torch.ones(k))
            self.register_buffer("started", torch.zeros((), dtype=torch.bool))

        def forward(self, x):
            h = self.body(x)
            if h.ndim != 2 or h.shape[1] != self.rms.shape[0]:
                raise ValueError(
                    f"the network must map (B, d) to (B, k) with k={self.rms.shape[0]}; for "
                    f"input shape {tuple(x.shape)} it returned shape {tuple(h.shape)}"
                )
            if not self.training:
                return h / self.rms
            s = torch.sqrt(torch.mean(h * h, dim=0))
            with torch.no_grad():
                if bool(self.started):
                    self.rms.mul_(self.momentum).add_((1 - self.momentum) * s.detach())
                else:
                    self.rms.copy_(s.detach())
                    self.started.fill_(True)
            return h / s

    return ParallelMLP, LinearFeatures, Normalised


def _bump_centers(X: np.ndarray, num_basis: int,
                  rng: np.random.Generator | None) -> tuple[np.ndarray, float]:
    """Centers and width of the Gaussian-bump basis (1-D: a grid over the data's 0.1 %
    … 99.9 % quantiles, width one grid step; d > 1: a random subset of the data,
    width half the median distance between centers)."""
    d = X.shape[1]
    if d == 1:
        lo, hi = np.quantile(X[:, 0], [0.001, 0.999])
        centers = np.linspace(lo, hi, num_basis)[:, None]
        step = (hi - lo) / max(1, num_basis - 1)
        return centers, 1.0 * step if step > 0 else 1.0
    idx = rng.choice(X.shape[0], size=min(num_basis, X.shape[0]), replace=False)
    centers = X[np.sort(idx)]
    dist = np.sqrt(((centers[:, None, :] - centers[None, :, :]) ** 2).sum(-1))
    med = float(np.median(dist[np.triu_indices(len(centers), 1)])) if len(centers) > 1 else 1.0
    return centers, 0.5 * med if med > 0 else 1.0


class NeuralEF:
    """Learn the top-``k`` eigenfunctions of ``kernel`` under the data distribution.

    Parameters
    ----------
    kernel : Kernel
        Explicit kernels are evaluated on a ``B x B`` block per step; kernels with
        ``feature_only`` (Monte Carlo NNGP, sketched empirical NTK) through
        ``K_b Ψ ≈ F (Fᵀ Ψ)`` (``use_features``).
    k : int
        Number of eigenfunctions (``<=`` the kernel's rank and ``<= N``).  Train one or
        two more than you need: the last converges worst.
    network : None, "mlp", "linear-features" or torch.nn.Module
        ``None``/``"mlp"``: ``k`` independent MLPs (``layers`` layers of width
        ``hidden``, ``activation``) evaluated in one batched matmul, as in the paper;
        ``"linear-features"``: ``ψ = Φ(x) W`` with ``num_basis`` fixed Gaussian bumps
        plus a constant (its exact target is the Rayleigh–Ritz solution in that basis,
        which isolates the optimiser from network capacity); a module must map
        ``(B, d)`` to ``(B, k)`` (its initialisation is the caller's).
    batch_size : int, default 256
        ``B``; batches are drawn without replacement (one permutation per epoch).
    steps : int, default 2000
    lr : float, default 1e-3
        Adam learning rate, with cosine decay to 0 over ``steps``.
    ema : float, default 0.9
        Momentum of the RMS buffer and of the eigenvalue EMA (first value copied).
    eigenvalue_estimator : {"rayleigh", "ema"}
        Reported eigenvalues: ``"rayleigh"`` the diagonal-free Rayleigh quotient of the
        trained functions on ``eval_points`` points of ``X`` (free of the ``O(1/B)``
        diagonal bias); ``"ema"`` the paper's EMA of ``diag(R̂)`` over the iterations.
        Both are kept in ``info``.
    split_batch : bool, default False
        Penalty ratio with numerator and denominator from independent half batches
        (see :func:`neuralef_surrogate_loss`).
    sort : bool, default True
        Order the learned functions by the estimated eigenvalue (near-ties can swap).
    hidden, layers, activation : int, int, str
        MLP width (32), depth (3) and activation (``"sin"``, ``"tanh"``, ``"relu"``,
        ``"erf"``).
    num_basis : int, default 40
        Bumps of ``"linear-features"``.
    eval_points : int, default 4000
        Points of ``X`` (a seeded subset) used by the Rayleigh estimator; its kernel is
        applied in blocks of 256 rows (``O(256 · eval_points)`` memory).
    use_features : bool, optional
        Force (True) or forbid (False) the feature route; default: the kernel's
        ``feature_only``.
    seed : int, default 0
        Network initialisation, batch order and evaluation subset.
    dtype : {"float64", "float32"}, optional
        Training dtype; default the dtype of ``X``.
    device : str or torch.device, optional
        Default: ``X``'s device for tensors, CPU for numpy.

    Notes
    -----
    Per step ``O(k · B · cost_net + B² (d + k) + B k²)`` time and
    ``O(B² + B k + parameters)`` memory, independent of ``N``; evaluating a new point
    costs ``k`` network passes and needs no stored training set.

    Examples
    --------
    >>> import numpy as np
    >>> from structattn.eigen import NeuralEF, rbf
    >>> X = np.random.default_rng(0).standard_normal((500, 1))
    >>> psi = NeuralEF(rbf(1.0), 3, network="linear-features", steps=100, lr=1e-2).fit(X)
    >>> psi(X).shape
    (500, 3)
    """

    def __init__(self, kernel: Kernel, k: int, *, network: Any = None, batch_size: int = 256,
                 steps: int = 2000, lr: float = 1e-3, ema: float = 0.9,
                 eigenvalue_estimator: str = "rayleigh", split_batch: bool = False,
                 sort: bool = True, hidden: int = 32, layers: int = 3, activation: str = "sin",
                 num_basis: int = 40, eval_points: int = 4000, use_features: bool | None = None,
                 seed: int = 0, dtype: str | None = None, device: Any = None):
        _check_kernel(kernel)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        if network is not None and not isinstance(network, str):
            import torch

            if not isinstance(network, torch.nn.Module):
                raise TypeError(
                    f"network must be None, 'mlp', 'linear-features' or a torch.nn.Module, "
                    f"got {type(network).__name__}"
                )
        elif network is not None and network not in _NETWORKS:
            raise ValueError(f"network must be None, 'mlp' or 'linear-features', got {network!r}")
        for name, value, lo in (("batch_size", batch_size, 2), ("steps", steps, 1),
                                ("hidden", hidden, 1), ("layers", layers, 1),
                                ("num_basis", num_basis, 1), ("eval_points", eval_points, 2),
                                ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive finite number, got {lr!r}")
        if not (isinstance(ema, (int, float)) and 0 <= ema < 1):
            raise ValueError(f"ema must be a number in [0, 1), got {ema!r}")
        if eigenvalue_estimator not in _ESTIMATORS:
            raise ValueError(
                f"eigenvalue_estimator must be one of {_ESTIMATORS}, got {eigenvalue_estimator!r}"
            )
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
        if dtype not in (None, "float32", "float64"):
            raise ValueError(f"dtype must be None, 'float32' or 'float64', got {dtype!r}")
        self.kernel, self.k, self.network = kernel, int(k), network
        self.batch_size, self.steps = int(batch_size), int(steps)
        self.lr, self.ema = float(lr), float(ema)
        self.eigenvalue_estimator = eigenvalue_estimator
        self.split_batch, self.sort = bool(split_batch), bool(sort)
        self.hidden, self.layers, self.activation = int(hidden), int(layers), activation
        self.num_basis, self.eval_points = int(num_basis), int(eval_points)
        self.use_features = kernel.feature_only if use_features is None else bool(use_features)
        self.seed, self.dtype, self.device = int(seed), dtype, device

    # ------------------------------------------------------------------ helpers
    def _build(self, Xn: np.ndarray, d: int, tdtype: Any, device: Any, rng: np.random.Generator):
        import torch

        ParallelMLP, LinearFeatures, Normalised = _torch_modules()
        if isinstance(self.network, torch.nn.Module):
            body = self.network
            if not any(p.requires_grad for p in body.parameters()):
                raise ValueError("network has no trainable parameters")
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                if self.network == "linear-features":
                    centers, width = _bump_centers(Xn, self.num_basis, rng)
                    body = LinearFeatures(torch.as_tensor(centers, dtype=tdtype), width, self.k,
                                          torch.as_tensor(Xn, dtype=tdtype))
                else:
                    body = ParallelMLP(d, self.k, self.hidden, self.layers, self.activation)
        return Normalised(body, self.k, self.ema).to(dtype=tdtype, device=device)

    def _operator(self, xb: Any, split: bool):
        """``V -> K_b V`` (and the per-half variant for the split estimator)."""
        import torch

        h = xb.shape[0] // 2
        if self.use_features:
            F = self.kernel.features(xb)
            parts = (F[:h], F[h : 2 * h])

            def full(V):
                return F @ (F.T @ V)
        else:
            with torch.no_grad():
                Kb = self.kernel._block(xb, xb)  # inputs were validated once in fit
            parts = (Kb[:h, :h], Kb[h : 2 * h, h : 2 * h])

            def full(V):
                return Kb @ V

        if not split:
            return full

        def op(V, part=None):
            if part is None:
                return full(V)
            P = parts[part]
            return P @ (P.T @ V) if self.use_features else P @ V

        return op

    def _rayleigh(self, psi: Any, xe: Any) -> Any:
        """Diagonal-free Rayleigh quotients on ``xe`` (kernel applied in row blocks)."""
        import torch

        with torch.no_grad():
            if self.use_features:
                F = self.kernel.features(xe)
                kpsi, kdiag = F @ (F.T @ psi), torch.sum(F * F, dim=1)
            else:
                kpsi = kernel_matmul(self.kernel, xe, xe, psi, block=256)
                kdiag = self.kernel.diag(xe)
            return _core.diagonal_free_rayleigh(psi, kpsi, kdiag)

    # ---------------------------------------------------------------------- fit
    def fit(self, X: Any) -> EigenFunctions:
        """Train on samples ``X`` of shape ``(N, d)``; return the learned eigenfunctions.

        Returns
        -------
        EigenFunctions
            ``method="neuralef"``; evaluation runs the trained networks (numpy in →
            numpy out).  ``info``: ``"ema_eigenvalues"``, ``"rayleigh_eigenvalues"``,
            ``"rms"``, ``"final_loss"``, ``"order"`` (the sort permutation),
            ``"network"`` (the trained module), ``"seconds"``.

        Raises
        ------
        ValueError
            Non-finite or mis-shaped ``X``; ``k`` larger than ``N`` or the kernel's rank.
        """
        import torch

        check_points(X, "X")
        N, d = X.shape
        _check_rank_request(self.kernel, self.k, N, d, "points")
        if self.kernel.dim is not None and d != self.kernel.dim:
            raise ValueError(f"X has dimension {d}, the kernel expects {self.kernel.dim}")
        name = self.dtype or str(X.dtype).replace("torch.", "")
        tdtype = torch.float64 if name == "float64" else torch.float32
        device = self.device if self.device is not None else (X.device if is_torch(X) else "cpu")
        Xt = torch.as_tensor(X.detach() if is_torch(X) else np.asarray(X), dtype=tdtype,
                             device=device)
        Xn = Xt.detach().cpu().numpy().astype(np.float64)
        rng = as_generator(self.seed)
        net = self._build(Xn, d, tdtype, device, rng)
        B = min(self.batch_size, N)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.steps)
        gen = torch.Generator().manual_seed(self.seed)
        perm, pos = torch.randperm(N, generator=gen), 0
        mu_ema = None
        loss_value = float("nan")
        t0 = time.perf_counter()
        net.train()
        for _ in range(self.steps):
            if pos + B > N:
                perm, pos = torch.randperm(N, generator=gen), 0
            xb = Xt[perm[pos : pos + B].to(device)]
            pos += B
            op = self._operator(xb, self.split_batch)
            psi = net(xb)
            psd = psi.detach()
            with torch.no_grad():
                kpsd = op(psd)
                mu = _core.batch_terms(psd, kpsd).eigenvalues  # diag(R̂), the shared core
            if self.split_batch:
                loss = neuralef_surrogate_loss(psi, op, split=True)
            else:
                loss = _surrogate(psi, kpsd, mu)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            mu_ema = mu.clone() if mu_ema is None else self.ema * mu_ema + (1 - self.ema) * mu
            loss_value = float(loss.detach())
        seconds = time.perf_counter() - t0
        net.eval()
        ne = min(self.eval_points, N)
        eidx = np.sort(rng.choice(N, size=ne, replace=False)) if ne < N else np.arange(N)
        xe = Xt[torch.as_tensor(eidx, device=device)]
        with torch.no_grad():
            rq = self._rayleigh(net(xe), xe)
        ema_np = mu_ema.detach().cpu().numpy().astype(np.float64)
        rq_np = rq.detach().cpu().numpy().astype(np.float64)
        est = rq_np if self.eigenvalue_estimator == "rayleigh" else ema_np
        order = np.argsort(-est, kind="stable") if self.sort else np.arange(self.k)
        order_t = torch.as_tensor(order.copy(), device=device)

        def evaluate(Y: Any, block: int = 65536) -> Any:
            with torch.no_grad():
                Yt = torch.as_tensor(Y.detach() if is_torch(Y) else np.asarray(Y),
                                     dtype=tdtype, device=device)
                out = torch.cat([net(Yt[s : s + block]) for s in range(0, Yt.shape[0], block)])
                out = out[:, order_t]
            if is_torch(Y):
                return out.to(dtype=Y.dtype, device=Y.device)
            return out.cpu().numpy().astype(Y.dtype, copy=False)

        info = {
            "ema_eigenvalues": ema_np[order], "rayleigh_eigenvalues": rq_np[order],
            "rms": net.rms.detach().cpu().numpy()[order], "final_loss": loss_value,
            "order": order, "network": net, "seconds": seconds, "steps": self.steps,
            "batch_size": B, "estimator": self.eigenvalue_estimator,
        }
        return EigenFunctions(est[order], evaluate, d, method="neuralef", kernel=self.kernel,
                              info=info)
