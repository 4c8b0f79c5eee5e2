"""Array-namespace helpers and input validation shared by every public entry point.

Everything in :mod:`structattn` is written once against the array API
(:func:`array_api_compat.array_namespace`), so the same code runs on numpy arrays and
torch tensors (CPU or CUDA, with autograd).  This module is the only place that knows
how to tell the two apart, how to move a mask's numpy parameters onto a tensor's
device, and how to validate user input with error messages that name the argument,
what it got and what it expected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import array_api_compat
import numpy as np

__all__ = [
    "FLOAT_DTYPES",
    "as_generator",
    "as_like",
    "describe_array",
    "detach",
    "device_of",
    "dtype_name",
    "index_like",
    "is_numpy",
    "is_torch",
    "namespace",
    "to_numpy",
    "validate_attention_inputs",
    "validate_float_array",
    "validate_same_kind",
]

#: Floating dtypes the library computes in (names as numpy and torch spell them).
FLOAT_DTYPES = ("float32", "float64")


def is_torch(x: Any) -> bool:
    """Return True when ``x`` is a torch tensor (without importing torch)."""
    return array_api_compat.is_torch_array(x)


def is_numpy(x: Any) -> bool:
    """Return True when ``x`` is a numpy ndarray."""
    return isinstance(x, np.ndarray)


def namespace(*arrays: Any):
    """Array-API namespace of ``arrays`` (numpy or torch, wrapped by array-api-compat)."""
    return array_api_compat.array_namespace(*arrays)


def to_numpy(x: Any) -> np.ndarray:
    """A numpy array of ``x`` on the host: tensors are detached and copied to the CPU.

    numpy input is returned as is (``np.asarray``, no copy); a bfloat16 tensor is widened
    exactly to float32 first (numpy has no bfloat16).  O(size) transfer for a device
    tensor; this synchronizes with the device, so the library calls it only outside
    the torch hot paths (plans, certificates, reports).
    """
    if is_torch(x):
        x = x.detach().cpu()
        if dtype_name(x) == "bfloat16":
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def detach(x: Any) -> Any:
    """``x`` with its autograd history dropped (torch); numpy arrays as they are."""
    return x.detach() if is_torch(x) else x


def device_of(x: Any) -> Any:
    """The array-API device of ``x`` (``'cpu'`` for numpy, ``tensor.device`` for torch)."""
    return array_api_compat.device(x)


def dtype_name(x: Any) -> str:
    """The dtype of an array as a short string, e.g. ``'float32'`` for numpy and torch."""
    return str(x.dtype).replace("torch.", "")


def describe_array(x: Any) -> str:
    """A one-line description used in error messages: kind, shape, dtype, device."""
    if is_torch(x):
        return f"torch.Tensor(shape={tuple(x.shape)}, dtype={dtype_name(x)}, device={x.device})"
    if is_numpy(x):
        return f"numpy.ndarray(shape={x.shape}, dtype={x.dtype})"
    return f"{type(x).__name__}"


def validate_float_array(
    x: Any,
    name: str,
    *,
    min_ndim: int = 1,
    check_finite: bool = True,
) -> None:
    """Check that ``x`` is a floating numpy array or torch tensor.

    Parameters
    ----------
    x : array
        The candidate array.
    name : str
        Argument name used in error messages.
    min_ndim : int
        Minimum number of dimensions.
    check_finite : bool
        Scan for NaN/Inf (one reduction, O(size)).

    Raises
    ------
    TypeError
        If ``x`` is neither a numpy array nor a torch tensor, or is not float32/float64.
    ValueError
        If ``x`` has fewer than ``min_ndim`` dimensions or contains NaN/Inf.
    """
    _validated_extrema(x, name, min_ndim=min_ndim, check_finite=check_finite)


def _extrema(x: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` of a non-empty numpy float array; both propagate NaN.

    Two SIMD passes of numpy's (a one-pass numba kernel with the NaN test measured 2-4x
    slower: its branches do not vectorize).
    """
    return float(x.min()), float(x.max())


def _validated_extrema(
    x: Any, name: str, *, min_ndim: int = 1, check_finite: bool = True
) -> tuple[float, float] | None:
    """:func:`validate_float_array`; returns ``(min, max)`` of a scanned non-empty
    numpy array (the score-range check reuses them), else None."""
    if not (is_numpy(x) or is_torch(x)):
        raise TypeError(
            f"{name} must be a numpy.ndarray or torch.Tensor, got {type(x).__name__}"
        )
    if dtype_name(x) not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must have a floating dtype in {FLOAT_DTYPES}, got {dtype_name(x)}"
        )
    if x.ndim < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimensions, got shape {tuple(x.shape)}"
        )
    if not check_finite:
        return None
    bounds = None
    if is_numpy(x):  # min and max show NaN and ±inf: no boolean temporary
        bounds = None if x.size == 0 else _extrema(x)
        finite = bounds is None or (math.isfinite(bounds[0]) and math.isfinite(bounds[1]))
    else:
        xp = namespace(x)
        finite = bool(xp.all(xp.isfinite(x)))
    if not finite:
        raise ValueError(f"{name} contains NaN or Inf values ({describe_array(x)})")
    return bounds


def validate_same_kind(arrays: Mapping[str, Any]) -> None:
    """Check that all arrays are of one kind (numpy or torch), one dtype and one device.

    Raises
    ------
    TypeError
        On a mix of numpy and torch, or of dtypes.
    ValueError
        On a mix of torch devices.
    """
    items = [(n, a) for n, a in arrays.items() if a is not None]
    if not items:
        return
    first_name, first = items[0]
    for name, a in items[1:]:
        if is_torch(a) != is_torch(first):
            raise TypeError(
                f"{name} and {first_name} must both be numpy arrays or both torch tensors; "
                f"got {describe_array(a)} and {describe_array(first)}"
            )
        if dtype_name(a) != dtype_name(first):
            raise TypeError(
                f"{name} must have the same dtype as {first_name} ({dtype_name(first)}), "
                f"got {dtype_name(a)}"
            )
        if is_torch(a) and a.device != first.device:
            raise ValueError(
                f"{name} must be on the same device as {first_name} ({first.device}), "
                f"got {a.device}"
            )


def validate_attention_inputs(
    q: Any, k: Any, v: Any, *, check_finite: bool = True, values: bool = True
) -> tuple[tuple[int, ...], int, int, int, int]:
    """Validate ``q (..., L_q, d)``, ``k (..., L_k, d)``, ``v (..., L_k, d_v)``.

    Leading (batch, head) dimensions must be identical for the three inputs: structattn
    does not broadcast attention inputs silently.  ``d = 0`` and ``d_v = 0`` are refused
    with a ``ValueError`` (``values=False``: ``v`` is a stand-in, ``d_v`` not checked);
    ``L_q = 0`` and ``L_k = 0`` are valid (see ``docs/reliability.rst``).

    Returns
    -------
    batch_shape, L_q, L_k, d, d_v
    """
    bounds = {name: _validated_extrema(a, name, min_ndim=2, check_finite=check_finite)
              for name, a in (("q", q), ("k", k), ("v", v))}
    validate_same_kind({"q": q, "k": k, "v": v})
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must have the same feature size d; got q.shape={tuple(q.shape)} "
            f"(d={q.shape[-1]}) and k.shape={tuple(k.shape)} (d={k.shape[-1]})"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"k and v must have the same length L_k; got k.shape={tuple(k.shape)} "
            f"and v.shape={tuple(v.shape)}"
        )
    if q.shape[-1] == 0:
        raise ValueError(
            f"q and k must have a feature size d >= 1, got q.shape={tuple(q.shape)}"
        )
    if values and v.shape[-1] == 0:
        raise ValueError(
            f"v must have a value size d_v >= 1, got v.shape={tuple(v.shape)}"
        )
    batch = tuple(q.shape[:-2])
    for name, a in (("k", k), ("v", v)):
        if tuple(a.shape[:-2]) != batch:
            raise ValueError(
                f"{name} must have the same leading (batch, head) dimensions as q, "
                f"{batch}; got {tuple(a.shape[:-2])} (shape {tuple(a.shape)})"
            )
    if check_finite:
        _check_score_range(q, k, bounds["q"], bounds["k"])
    return batch, int(q.shape[-2]), int(k.shape[-2]), int(q.shape[-1]), int(v.shape[-1])


def _check_score_range(q: Any, k: Any, q_bounds: tuple[float, float] | None = None,
                       k_bounds: tuple[float, float] | None = None) -> None:
    """Refuse ``q, k`` whose scores or squared norms would overflow their dtype.

    ``|q·k| <= d·max|q|·max|k|`` and ``|x|² <= d·max|x|²``: beyond a sixteenth of the
    largest float every method (exact, kernelized, sampled) computes ``inf - inf``.
    One reduction per input; runs with the NaN/Inf scan, whose ``(min, max)`` of numpy
    inputs (``q_bounds``, ``k_bounds``) it reuses.
    """
    if q.size == 0 if is_numpy(q) else q.numel() == 0:
        return
    if is_torch(q):  # a check, not part of the graph (float() of a grad tensor warns)
        q, k = q.detach(), k.detach()
    xp = namespace(q, k)
    d = int(q.shape[-1])

    def max_abs(x: Any) -> float:
        if is_numpy(x):  # max(-min, max): no |x| temporary
            return max(-float(x.min()), float(x.max()))
        return float(xp.max(xp.abs(x)))

    def bound(x: Any, known: tuple[float, float] | None) -> float:
        return max(-known[0], known[1]) if known is not None else max_abs(x)

    big = max(bound(q, q_bounds), bound(k, k_bounds)) if k.shape[-2] else bound(q, q_bounds)
    limit = float(np.finfo(np.dtype(dtype_name(q))).max) / 16
    if big * big * d >= limit:
        raise ValueError(
            f"attention scores may overflow {dtype_name(q)}: q and k are outside its range, "
            f"d·max(|q|, |k|)² = {big * big * d:.3g} >= {limit:.3g}; rescale the inputs "
            "(e.g. layer-normalize them) or use float64"
        )


def as_like(param: Any, like: Any) -> Any:
    """Return ``param`` as an array of the same kind, dtype and device as ``like``.

    A numpy parameter (mask coefficients, random projection) is moved onto a torch
    tensor's device and dtype; a torch parameter stays a tensor (so gradients flow) but
    is cast to ``like``'s dtype/device.  A torch parameter cannot be applied to a numpy
    array: that raises ``TypeError`` instead of silently detaching the graph.
    """
    if is_torch(like):
        import torch

        if isinstance(param, np.ndarray):
            param = param.copy(order="C")  # also fixes negative strides
        return torch.as_tensor(param, dtype=like.dtype, device=like.device)
    if is_torch(param):
        raise TypeError(
            "this operator holds torch tensors but was applied to a numpy array; "
            "pass torch tensors, or build the operator from numpy arrays"
        )
    return np.asarray(param, dtype=like.dtype)


def index_like(idx: np.ndarray, like: Any) -> Any:
    """An integer index array on ``like``'s kind and device (int64)."""
    if is_torch(like):
        import torch

        return torch.as_tensor(np.ascontiguousarray(idx, dtype=np.int64), device=like.device)
    return np.asarray(idx, dtype=np.int64)


def as_generator(seed: Any, name: str = "seed") -> np.random.Generator:
    """Turn an explicit ``seed`` (int, SeedSequence or Generator) into a Generator.

    ``None`` is refused: every random draw in structattn is reproducible from an explicit
    seed.  A Generator passed in is used (and advanced) as is.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (np.random.SeedSequence,)) or (
        isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0
    ):
        return np.random.default_rng(seed)
    raise TypeError(
        f"{name} must be a non-negative int, a numpy SeedSequence or a numpy Generator, "
        f"got {seed!r}; structattn never draws from an implicit global random state"
    )
