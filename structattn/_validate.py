"""The one validation module: one contract per public keyword, across the package.

Every public entry point of :mod:`structattn` checks its arguments here, before any work
is done, and raises an error that names the argument, what it received and what it
expected.  The contracts (also in ``docs/reliability.rst``):

=====================  ================================================================
keyword                contract
=====================  ================================================================
``scale``              a finite real number ``> 0`` (``None``: ``d**-0.5``); a bool or a
                       non-number is an :class:`ArgumentTypeError`, anything else a
                       ``ValueError``
``seed``               a non-negative int, a numpy ``SeedSequence`` or ``Generator``
                       (``None`` refused: no implicit global random state)
counts                 ``max_iter``, ``num_features``, ``rank``, ... : a Python or numpy
                       integer (not a bool, not a float) ``>= minimum``
probabilities          a real number in ``[0, 1]`` (open ends where stated)
boolean masks          a bool array, **True = attend** (a real token / an allowed key)
arrays                 numpy arrays or torch tensors, float32/float64, one kind, dtype and
                       device; int, float16, bfloat16 and complex are refused by name
=====================  ================================================================

A wrong *type* raises :class:`ArgumentTypeError`, which is both a ``TypeError`` and a
``ValueError`` (code written against either of the older behaviours keeps working); a
wrong *value* raises ``ValueError``.  Iteration counts are called ``max_iter`` and seeds
``seed`` everywhere; the older keywords keep working through :func:`renamed_keyword`
with a ``DeprecationWarning``.

Data-dependent checks (NaN/Inf scans, normalizer warnings) follow
:func:`~structattn._debug.resolve_check_finite`: numpy inputs are checked unless
``check_finite=False``; torch tensors only with ``check_finite=True`` or inside
``structattn.debug()``, so that the default torch forward and backward never
synchronize with the host.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numpy as np

from ._array import (
    FLOAT_DTYPES,
    as_generator,
    describe_array,
    dtype_name,
    is_numpy,
    is_torch,
    namespace,
    validate_attention_inputs,
    validate_float_array,
    validate_same_kind,
)
from ._debug import debug_enabled, resolve_check_finite

__all__ = [
    "FLOAT_DTYPES",
    "ArgumentTypeError",
    "check_bool",
    "check_bool_mask",
    "check_choice",
    "check_finite_output",
    "check_int",
    "check_probability",
    "check_real",
    "check_scale",
    "check_seed",
    "debug_enabled",
    "describe_array",
    "frozen_array",
    "renamed_keyword",
    "resolve_check_finite",
    "validate_attention_inputs",
    "validate_float_array",
    "validate_same_kind",
]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (also a ``ValueError``, for older callers)."""


def _is_real(value: Any) -> bool:
    return (
        not isinstance(value, (bool, np.bool_))
        and isinstance(value, numbers.Real)
    )


def check_real(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_minimum: bool = False,
    allow_inf: bool = False,
) -> float:
    """A real number (int or float, not bool) in ``[minimum, maximum]``, as a float.

    ``strict_minimum=True`` makes the lower bound open.  NaN is always refused; ±inf
    unless ``allow_inf``.
    """
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if strict_minimum else '>='} {minimum:g}")
    if maximum is not None:
        parts.append(f"<= {maximum:g}")
    cmp = " and ".join(parts)
    want = ("a finite number" if not allow_inf else "a number") + (f" {cmp}" if cmp else "")
    if not _is_real(value):
        raise ArgumentTypeError(f"{name} must be a real number: {want}, got {value!r}")
    value = float(value)
    if (
        math.isnan(value)
        or (math.isinf(value) and not allow_inf)
        or (minimum is not None and (value < minimum or (strict_minimum and value == minimum)))
        or (maximum is not None and value > maximum)
    ):
        raise ValueError(f"{name} must be {want}, got {value!r}")
    return value


def check_scale(scale: Any, d: int | None = None, name: str = "scale") -> float | None:
    """The score scale: a finite real number ``> 0``; ``None`` means ``d**-0.5``.

    With ``d=None`` a ``None`` scale is returned as ``None`` (the caller's default).
    """
    if scale is None:
        if d is None:
            return None
        if d < 1:
            raise ValueError(f"the default {name} d**-0.5 needs d >= 1, got d={d}")
        return 1.0 / math.sqrt(d)
    return check_real(scale, name, minimum=0.0, strict_minimum=True)


def check_int(
    value: Any, name: str, *, minimum: int | None = 1, maximum: int | None = None
) -> int:
    """A count: a Python or numpy integer (not bool, not float) in ``[minimum, maximum]``."""
    want = "an integer"
    if minimum is not None:
        want += f" >= {minimum}"
    if maximum is not None:
        want += f"{' and' if minimum is not None else ''} <= {maximum}"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ArgumentTypeError(f"{name} must be {want}, got {value!r}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {want}, got {value!r}")
    return value


def check_probability(
    p: Any, name: str, *, allow_zero: bool = True, allow_one: bool = True, why: str = ""
) -> float:
    """A probability: a real number in ``[0, 1]`` (ends open when not allowed).

    ``why`` is appended to the message (e.g. what the excluded ends would mean).
    """
    if allow_zero and allow_one:
        want = "a probability in [0, 1]"
    elif not (allow_zero or allow_one):
        want = "a probability strictly between 0 and 1"
    else:
        want = f"a probability in {'[' if allow_zero else '('}0, 1{']' if allow_one else ')'}"
    want += f" {why}" if why else ""
    if not _is_real(p):
        raise ArgumentTypeError(f"{name} must be {want}, got {p!r}")
    value = float(p)
    if not (
        (0.0 < value or (allow_zero and value == 0.0))
        and (value < 1.0 or (allow_one and value == 1.0))
    ):
        raise ValueError(f"{name} must be {want}, got {p!r}")
    return value


def check_bool(value: Any, name: str) -> bool:
    """A bool (Python or numpy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def check_choice(value: Any, name: str, choices: tuple[Any, ...]) -> Any:
    """One of ``choices`` (compared with ``==``; strings are case-sensitive)."""
    try:
        ok = value in choices
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_seed(seed: Any, name: str = "seed") -> np.random.Generator:
    """A numpy Generator from an explicit ``seed`` (int >= 0, SeedSequence, Generator)."""
    try:
        return as_generator(seed, name)
    except TypeError as err:
        raise ArgumentTypeError(str(err)) from None


def check_bool_mask(
    mask: Any, name: str, shape: tuple[int, ...] | None = None
) -> Any:
    """A boolean mask array, **True = attend**, broadcastable to ``shape``.

    Raises
    ------
    ArgumentTypeError
        Not a numpy array / torch tensor, or not of bool dtype.
    ValueError
        Its shape does not broadcast to ``shape``.
    """
    if not (is_numpy(mask) or is_torch(mask)):
        raise ArgumentTypeError(
            f"{name} must be a boolean numpy.ndarray or torch.Tensor (True = attend), "
            f"got {type(mask).__name__}"
        )
    if dtype_name(mask) != "bool":
        raise ArgumentTypeError(
            f"{name} must have dtype bool (True = attend), got {dtype_name(mask)}"
        )
    if shape is not None:
        try:
            out = np.broadcast_shapes(tuple(mask.shape), tuple(shape))
        except ValueError:
            out = None
        if out != tuple(shape):
            raise ValueError(
                f"{name} has shape {tuple(mask.shape)}, which does not broadcast to "
                f"{tuple(shape)}"
            )
    return mask


def frozen_array(x: Any) -> Any:
    """A read-only copy of a numpy array (masks keep this, never the caller's array).

    torch tensors are returned as they are: a mask built from a tensor that requires
    grad must stay attached to it, so that training updates it.
    """
    if is_numpy(x):
        out = np.array(x, copy=True)
        out.setflags(write=False)
        return out
    return x


def renamed_keyword(
    kwargs: dict[str, Any], old: str, new: str, value: Any, default: Any, where: str
) -> Any:
    """Resolve a renamed keyword: ``old`` (popped from ``kwargs``) still works, warned.

    Returns the value to use for ``new``.  Passing both raises ``TypeError``; any other
    key left in ``kwargs`` is the caller's business (it should raise on it).
    """
    if old not in kwargs:
        return value
    old_value = kwargs.pop(old)
    if value is not default and value is not None and value != default:
        raise TypeError(f"{where}: pass {new}= only ({old}= is its deprecated name)")
    warnings.warn(
        f"{where}: the keyword {old}= is deprecated, use {new}= (same meaning)",
        DeprecationWarning,
        stacklevel=3,
    )
    return old_value


def reject_unknown(kwargs: dict[str, Any], where: str) -> None:
    """Raise the usual TypeError for keywords left over after :func:`renamed_keyword`."""
    if kwargs:
        raise TypeError(f"{where}() got an unexpected keyword argument {next(iter(kwargs))!r}")


def check_finite_output(out: Any, what: str, check: bool) -> Any:
    """Post-condition of a method: finite inputs gave a finite result (when ``check``).

    Raises ``FloatingPointError`` naming the method instead of returning NaN/Inf.
    """
    if check:
        xp = namespace(out)
        if not bool(xp.all(xp.isfinite(out))):
            raise FloatingPointError(
                f"{what}: finite inputs gave a non-finite result ({describe_array(out)}); "
                "the inputs are outside this method's floating-point range — rescale "
                "them or use float64"
            )
    return out


def tiny(x: Any) -> float:
    """Smallest positive *normal* number of ``x``'s dtype (below it: subnormal range).

    A normalizer below it has lost relative precision (a subnormal ``den`` makes
    ``num / den`` garbage), so attention treats it like an exact zero.
    """
    if is_torch(x):
        import torch

        return float(torch.finfo(x.dtype).tiny)
    return float(np.finfo(x.dtype).tiny)


def empty_attention(
    q: Any, k: Any, v: Any, L_q: int, L_k: int, width: int | None = None
) -> Any | None:
    """The result for a degenerate length, or ``None`` when ``L_q, L_k >= 1``.

    Semantics (the same for every attention entry point): ``L_q = 0`` gives an empty
    ``(..., 0, d_v)`` result; ``L_k = 0`` gives zeros ``(..., L_q, d_v)``, exactly like
    rows whose keys are all masked out.  On torch the result is attached to the inputs'
    graph (its gradients are zeros, not an error).  ``width`` replaces ``d_v`` (e.g.
    ``L_k`` for an attention matrix).
    """
    if L_q and L_k:
        return None
    xp = namespace(q, k, v)
    shape = (*q.shape[:-2], L_q, v.shape[-1] if width is None else width)
    if is_torch(q):
        out = q.new_zeros(shape)
    else:
        out = np.zeros(shape, dtype=q.dtype)
    return out + (xp.sum(q) + xp.sum(k) + xp.sum(v)) * 0


def check_mask_batch(mask: Any, batch: tuple[int, ...], name: str = "mask") -> None:
    """A (batched) mask's leading dimensions must broadcast to the inputs' ``batch``.

    Accepts a :class:`~structattn.masks.Mask` (its ``batch_shape``, if any) or a boolean
    array ``(..., L_q, L_k)``; raises a ``ValueError`` naming both shapes otherwise.
    """
    if mask is None:
        return
    if is_numpy(mask) or is_torch(mask):
        mb = tuple(mask.shape[:-2])
    else:
        mb = tuple(getattr(mask, "batch_shape", ()) or ())
    try:
        ok = np.broadcast_shapes(mb, tuple(batch)) == tuple(batch)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"{name} has batch dimensions {mb}, which do not broadcast to the inputs' "
            f"leading (batch, head) dimensions {tuple(batch)}"
        )
