"""Input handling of :func:`~structattn.solvers.consistent_attention`.

The score maps, the pooling factors, the witness duals and the solver options are
checked here, before any work is done, with errors that name the argument.  O(Σ n_j) for
the finiteness scans, O(1) otherwise.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._array import (
    describe_array,
    dtype_name,
    is_numpy,
    is_torch,
    namespace,
    validate_float_array,
    validate_same_kind,
)

METHODS = ("closed_form", "dual_gd", "newton", "witness")
GRADS = ("auto", "implicit", "unroll")
_ACCEPTED_DTYPES = ("float32", "float64")
_DEFAULT_TOL = {"float32": 1e-6, "float64": 1e-10}


def validate_scores(scores: Any, pools: Any) -> tuple[list, list[int]]:
    if is_numpy(scores) or is_torch(scores) or not isinstance(scores, Sequence):
        raise TypeError(
            "scores must be a list or tuple of score maps (numpy arrays or torch tensors), "
            f"got {type(scores).__name__}"
        )
    scores = list(scores)
    if not scores:
        raise ValueError("scores must contain at least one score map, got an empty sequence")
    first = scores[0]
    for j, s in enumerate(scores):
        name = f"scores[{j}]"
        if not (is_numpy(s) or is_torch(s)):
            raise TypeError(
                f"{name} must be a numpy.ndarray or torch.Tensor, got {type(s).__name__}"
            )
        if is_torch(s) != is_torch(first):
            raise TypeError(
                f"{name} and scores[0] must both be numpy arrays or both torch tensors; "
                f"got {describe_array(s)} and {describe_array(first)}"
            )
        if dtype_name(s) not in _ACCEPTED_DTYPES:
            raise TypeError(f"{name} must have dtype float32 or float64, got {dtype_name(s)}")
        if dtype_name(s) != dtype_name(first):
            raise TypeError(
                f"{name} must have the dtype of scores[0] ({dtype_name(first)}), "
                f"got {dtype_name(s)}"
            )
        if is_torch(s) and s.device != first.device:
            raise ValueError(
                f"{name} must be on the device of scores[0] ({first.device}), got {s.device}"
            )
        if s.ndim < 2:
            raise ValueError(f"{name} must have shape (..., h, w), got shape {tuple(s.shape)}")
        if tuple(s.shape[:-2]) != tuple(first.shape[:-2]):
            raise ValueError(
                f"{name} must have the batch shape of scores[0] {tuple(first.shape[:-2])}, "
                f"got shape {tuple(s.shape)}"
            )
        if s.shape[-1] == 0 or s.shape[-2] == 0:
            raise ValueError(f"{name} must have a nonempty grid, got shape {tuple(s.shape)}")
        xp = namespace(s)
        if not bool(xp.all(xp.isfinite(s))):
            raise ValueError(f"{name} contains NaN or Inf values ({describe_array(s)})")
    if isinstance(pools, (str, bytes)) or not isinstance(pools, Sequence):
        raise TypeError(f"pools must be a list or tuple of positive ints, got {pools!r}")
    pools = list(pools)
    if len(pools) != len(scores) - 1:
        raise ValueError(
            f"pools must have one factor per pair of consecutive layers: {len(scores)} score "
            f"maps need {len(scores) - 1} pools, got {len(pools)}"
        )
    out = []
    for j, s in enumerate(pools):
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise TypeError(f"pools[{j}] must be a positive int, got {s!r}")
        if s < 1:
            raise ValueError(f"pools[{j}] must be a positive int, got {s!r}")
        s = int(s)
        fine, coarse = tuple(scores[j].shape[-2:]), tuple(scores[j + 1].shape[-2:])
        if fine[0] % s or fine[1] % s:
            raise ValueError(f"pools[{j}] = {s} does not divide the grid {fine} of scores[{j}]")
        if (fine[0] // s, fine[1] // s) != coarse:
            raise ValueError(
                f"scores[{j}] grid {fine} pooled by pools[{j}] = {s} gives "
                f"{(fine[0] // s, fine[1] // s)}, but scores[{j + 1}] has grid {coarse}"
            )
        out.append(s)
    return scores, out


def validate_witness(witness: Any, scores: list, pools: list[int]) -> list:
    """The witness as a list of ``M - 1`` arrays broadcastable to the dual shapes."""
    if witness is None:
        raise ValueError("method='witness' needs witness= (the dual maps λ_j), got None")
    if is_numpy(witness) or is_torch(witness):
        if len(pools) != 1:
            raise ValueError(
                f"a single witness array serves two layers only; {len(scores)} score maps "
                f"need a list of {len(pools)} witness maps"
            )
        witness = [witness]
    if isinstance(witness, (str, bytes)) or not isinstance(witness, Sequence):
        raise TypeError(f"witness must be an array or a list of arrays, got {witness!r}")
    witness = list(witness)
    if len(witness) != len(pools):
        raise ValueError(
            f"witness must have one map per constraint: {len(scores)} score maps need "
            f"{len(pools)} witness maps, got {len(witness)}"
        )
    for j, lam in enumerate(witness):
        name = f"witness[{j}]"
        validate_float_array(lam, name, min_ndim=2, check_finite=False)
        validate_same_kind({"scores[0]": scores[0], name: lam})
        target = tuple(scores[j + 1].shape)
        ok = lam.ndim <= len(target)
        if ok:
            try:
                ok = tuple(np.broadcast_shapes(tuple(lam.shape), target)) == target
            except ValueError:
                ok = False
        if not ok:
            raise ValueError(
                f"{name} must broadcast to the shape {target} of scores[{j + 1}], "
                f"got shape {tuple(lam.shape)}"
            )
        validate_float_array(lam, name, min_ndim=2, check_finite=True)
    return witness


def validate_options(method: Any, tol: Any, max_iter: Any, strict: Any, dtype: str) -> float:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if tol is None:
        tol = _DEFAULT_TOL[dtype]
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"tol must be None or a positive real number, got {tol!r}")
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive finite number, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool, got {strict!r}")
    return float(tol)

