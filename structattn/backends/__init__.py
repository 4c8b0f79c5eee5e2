"""Backend resolution and the registry of hot-loop kernels.

``backends`` knows nothing of the operator classes: a kernel takes arrays and returns
arrays.  Operators call :func:`kernel` with a kernel name and a resolved backend name;
the implementation module is imported lazily, so numba compiles nothing at import and
torch is only imported when torch tensors are used.

Backends
--------
``"numpy"``
    The array-API core on numpy arrays (vectorised numpy, no compilation).
``"numba"``
    numba-compiled CPU kernels for numpy arrays where a loop beats array operations.
``"torch"``
    The array-API core on torch tensors (CPU or CUDA) plus custom autograd Functions
    where plain torch ops would waste memory.
``"auto"``
    torch for tensors; numba for numpy arrays when numba imports; numpy otherwise.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

from .._array import is_torch

__all__ = ["BACKENDS", "kernel", "numba_available", "resolve_backend", "torch_available"]

#: Accepted values of every public ``backend=`` argument.
BACKENDS = ("auto", "numpy", "numba", "torch")

# kernel name -> backend -> "module:function" (relative to this package)
_KERNELS: dict[str, dict[str, str]] = {
    "causal_masked_matmul": {
        "numpy": ".scan:causal_masked_matmul",
        "numba": ".numba.causal:causal_masked_matmul",
        "torch": ".torch.causal:causal_masked_matmul",
    },
    # one array-API implementation serves numpy (no numba) and torch (autograd)
    "ripple_sat": {
        "numpy": ".sat:ripple_sat",
        "numba": ".numba.ripple:ripple_sat",
        "torch": ".sat:ripple_sat",
    },
    # ISTA/FISTA per (batch, column); numpy without numba and torch use the array-API
    # core in structattn.solvers.lasso (torch: autograd through the unrolled iterations)
    "lasso_prox": {
        "numba": ".numba.lasso:lasso_prox",
    },
    # --- structattn.graphs kernels ---
    # exponential tree-distance masks: sibling-sum DP (numba); level-wise DP written for
    # numpy and torch in .torch.tree (torch: custom autograd Function)
    "tree_exp_dp": {
        "numpy": ".torch.tree:tree_exp_dp_levels",
        "numba": ".numba.tree:tree_exp_dp",
        "torch": ".torch.tree:tree_exp_dp",
    },
    # CSR sparse softmax attention (numpy path: vectorized core in structattn.graphs)
    "graph_sparse_attention": {
        "numba": ".numba.sparse_attention:sparse_attention",
        "torch": ".torch.sparse_attention:sparse_attention",
    },
    "graph_sparse_attention_probs": {
        "torch": ".torch.sparse_attention:sparse_attention_probs",
    },
    # --- structattn.mra kernels ---
    # block-sparse rows + coarse merge, one task per block row; numpy without numba and
    # torch use the array-API gather / index_add core in structattn.mra.attention
    "mra_block_sparse": {
        "numba": ".numba.mra:mra_block_sparse",
    },
    # --- structattn.estimators / layers kernels ---
    # --- structattn.eigen kernels ---
}


@functools.cache
def numba_available() -> bool:
    """True when numba can be imported."""
    return importlib.util.find_spec("numba") is not None


@functools.cache
def torch_available() -> bool:
    """True when torch can be imported."""
    return importlib.util.find_spec("torch") is not None


def resolve_backend(backend: str, *arrays: Any) -> str:
    """Turn a user's ``backend=`` argument into a concrete backend name.

    Parameters
    ----------
    backend : {"auto", "numpy", "numba", "torch"}
        The requested backend.
    *arrays : array
        The inputs of the call (None entries are ignored).

    Returns
    -------
    str
        One of ``"numpy"``, ``"numba"``, ``"torch"``.

    Raises
    ------
    ValueError
        If ``backend`` is not a known name.
    TypeError
        If the backend cannot take the inputs (torch backend with numpy arrays or the
        other way round).
    ImportError
        If ``backend="numba"`` is requested and numba is not installed.
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    torch_input = any(is_torch(a) for a in arrays if a is not None)
    if backend == "auto":
        if torch_input:
            return "torch"
        return "numba" if numba_available() else "numpy"
    if backend == "torch" and not torch_input:
        raise TypeError(
            "backend='torch' requires torch tensors, got numpy arrays; convert them with "
            "torch.as_tensor(...) or use backend='numpy'/'numba'"
        )
    if backend in ("numpy", "numba") and torch_input:
        raise TypeError(
            f"backend={backend!r} requires numpy arrays, got torch tensors; use "
            "backend='torch' (or 'auto'), or convert with tensor.detach().cpu().numpy()"
        )
    if backend == "numba" and not numba_available():
        raise ImportError(
            "backend='numba' requires numba, which is not installed; "
            "`pip install numba` or use backend='numpy'"
        )
    return backend


def kernel(name: str, backend: str) -> Callable[..., Any]:
    """Return the implementation of kernel ``name`` for a resolved ``backend``.

    Raises
    ------
    KeyError
        If no such kernel is registered.
    """
    loaded = _LOADED.get((name, backend))
    if loaded is not None:  # a plain dict lookup: torch.compile traces it without a break
        return loaded
    try:
        target = _KERNELS[name][backend]
    except KeyError:
        raise KeyError(f"no kernel {name!r} for backend {backend!r}") from None
    module, func = target.split(":")
    loaded = getattr(importlib.import_module(module, __name__), func)
    _LOADED[(name, backend)] = loaded
    return loaded


#: Kernels already imported, by (name, backend).
_LOADED: dict[tuple[str, str], Callable[..., Any]] = {}
