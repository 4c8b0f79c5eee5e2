"""The empirical NTK ``J Jᵀ`` of a torch model, exact or by a random JVP sketch."""

from __future__ import annotations

import math
from typing import Any

from .._array import (
    is_torch,
)
from ._kernel_base import FeatureKernel, _int_at_least, check_points

__all__ = ["EmpiricalNTKKernel"]


class EmpiricalNTKKernel(FeatureKernel):
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
