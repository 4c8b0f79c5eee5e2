"""Level-by-level exponential tree-distance DP for torch tensors (and numpy without numba).

The same DP as :mod:`structattn.backends.numba.tree`, vectorised over the nodes of one
depth level (``depth + 1`` sequential steps per pass instead of ``L``):

* up pass, deepest level first: ``U_p += Σ_{c child of p} α_c U_c`` (a segment sum:
  torch ``index_add_``, numpy ``add.reduceat`` over the contiguous children of each parent);
  rows are permuted once into breadth-first position order, so every level is a
  contiguous slice;
* down pass, root level first: ``y_c = U_c + α_c (y_p − α_c U_c)``, i.e. the outside part
  ``D_c = y_p − α_c U_c`` by the subtractive shortcut of masks.md §2.5.

The shortcut subtracts nearly equal numbers when ``α_c ≈ 1`` and the subtree of ``c``
dominates, so both passes run in float64 (also for float32 inputs; the result is cast
back), where the cancellation costs ``~1e-16`` relative to the larger operand.  Devices
without float64 (Apple MPS) stay in the input dtype.  Only edge factors ``α ≤ 1``
multiply: no ``r^{depth}`` is formed (no overflow on deep trees).

On torch the product runs in a custom autograd Function: the mask is symmetric, so the
backward pass is the same DP applied to the incoming gradient (memory ``O(L·F)``, not one
block per level).  This module imports torch only when a torch tensor arrives.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._array import is_torch

__all__ = ["tree_exp_dp", "tree_exp_dp_levels"]


def _work_dtype(X: Any) -> Any:
    if is_torch(X):
        import torch

        return X.dtype if X.device.type == "mps" else torch.float64
    return np.float64


def _levels_numpy(X, order, ppos, level_ptr, alpha, amps):
    Xw = np.asarray(X, dtype=np.float64)[..., order, :]  # BFS position space
    out = np.zeros_like(Xw)
    H = len(level_ptr) - 1
    for s in range(alpha.shape[0]):
        al = alpha[s][:, None]
        U = Xw.copy()
        for d in range(H - 1, 0, -1):
            a, b = int(level_ptr[d]), int(level_ptr[d + 1])
            par = ppos[a:b]
            # the children of one parent are contiguous positions (BFS)
            starts = np.flatnonzero(np.r_[True, par[1:] != par[:-1]])
            U[..., par[starts], :] += np.add.reduceat(U[..., a:b, :] * al[a:b], starts,
                                                      axis=-2)
        Y = np.empty_like(U)
        Y[..., 0, :] = U[..., 0, :]
        for d in range(1, H):
            a, b = int(level_ptr[d]), int(level_ptr[d + 1])
            Uc, w = U[..., a:b, :], al[a:b]
            Y[..., a:b, :] = Uc + w * (Y[..., ppos[a:b], :] - w * Uc)
        out += amps[s] * Y
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    return out[..., inverse, :].astype(X.dtype, copy=False)


def _levels_torch(X, order, ppos, level_ptr, alpha, amps):
    import torch

    wd = _work_dtype(X)
    dev = X.device
    order_t = torch.as_tensor(order, device=dev)
    Xw = X.to(wd).index_select(-2, order_t)  # BFS position space
    out = torch.zeros_like(Xw)
    H = len(level_ptr) - 1
    ppos_t = torch.as_tensor(np.maximum(ppos, 0), device=dev)
    alpha_t = torch.as_tensor(alpha, dtype=wd, device=dev)
    for s in range(alpha.shape[0]):
        al = alpha_t[s][:, None]
        U = Xw.clone()
        for d in range(H - 1, 0, -1):
            a, b = int(level_ptr[d]), int(level_ptr[d + 1])
            U.index_add_(-2, ppos_t[a:b], U[..., a:b, :] * al[a:b])
        Y = torch.empty_like(U)
        Y[..., 0, :] = U[..., 0, :]
        for d in range(1, H):
            a, b = int(level_ptr[d]), int(level_ptr[d + 1])
            Uc, w = U[..., a:b, :], al[a:b]
            Y[..., a:b, :] = Uc + w * (Y.index_select(-2, ppos_t[a:b]) - w * Uc)
        out += float(amps[s]) * Y
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    return out.index_select(-2, torch.as_tensor(inverse, device=dev)).to(X.dtype)


def tree_exp_dp_levels(
    X: Any,
    order: np.ndarray,
    parent_pos: np.ndarray,
    level_ptr: np.ndarray,
    child_ptr: np.ndarray,
    alpha: np.ndarray,
    amps: np.ndarray,
) -> Any:
    """Level-wise DP without autograd bookkeeping (numpy arrays or torch tensors).

    Parameters are those of :func:`structattn.backends.numba.tree.tree_exp_dp` (BFS
    position space: positions ``level_ptr[d] … level_ptr[d+1] - 1`` are at depth ``d``);
    ``child_ptr`` is unused here.

    Returns
    -------
    array, shape (..., L, F)
        Same kind, dtype and device as ``X``.
    """
    del child_ptr
    if is_torch(X):
        import torch

        with torch.no_grad():
            return _levels_torch(X, order, parent_pos, level_ptr, alpha, amps)
    return _levels_numpy(X, order, parent_pos, level_ptr, alpha, amps)


def tree_exp_dp(
    X: Any,
    order: np.ndarray,
    parent_pos: np.ndarray,
    level_ptr: np.ndarray,
    child_ptr: np.ndarray,
    alpha: np.ndarray,
    amps: np.ndarray,
) -> Any:
    """Tree-distance mask product on torch tensors, differentiable with respect to ``X``.

    The backward pass applies the same (symmetric) mask to the gradient: ``O(L·F)``
    memory.  Gradients do not flow to the tree or the decay parameters.
    """
    import torch

    structure = (order, parent_pos, level_ptr, child_ptr, alpha, amps)
    if not (torch.is_grad_enabled() and X.requires_grad):
        return tree_exp_dp_levels(X, *structure)
    from ._tree_function import TreeDP

    return TreeDP.apply(X, structure)
