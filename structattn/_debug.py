"""Debug mode: turn on every data-dependent check (``structattn.debug()``).

On torch tensors the default forward and backward of structattn never synchronize with
the host: no ``.item()``, ``bool(tensor)`` or ``.cpu()``.  The checks that need a
host-side answer (NaN/Inf in the inputs, non-positive attention normalizers, underflowed
features) then run only when asked for, with ``check_finite=True`` on a call, or for
every call inside ``with structattn.debug():``.  numpy inputs are always checked unless
``check_finite=False`` (there is no device to wait for).

Examples
--------
>>> import structattn as sa
>>> from structattn._debug import debug_enabled
>>> with sa.debug():
...     debug_enabled()
True
>>> debug_enabled()
False
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["debug", "debug_enabled", "resolve_check_finite"]

_state = threading.local()


def debug_enabled() -> bool:
    """True inside a :func:`debug` context (of this thread)."""
    return getattr(_state, "depth", 0) > 0


@contextlib.contextmanager
def debug(enabled: bool = True) -> Iterator[None]:
    """Context manager that turns on every data-dependent check, on numpy and torch.

    Parameters
    ----------
    enabled : bool, default True
        ``debug(False)`` is a no-op context (convenient for a command-line flag).

    Notes
    -----
    Inside the context every structattn call that was not given
    ``check_finite=False`` explicitly behaves as if ``check_finite=True`` was passed,
    and normalizer warnings (:class:`~structattn.attention.NormalizerWarning`) are
    computed on torch tensors too; each of these checks is one reduction plus a device
    synchronization.  Contexts nest; the state is per thread.
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {enabled!r}")
    if not enabled:
        yield
        return
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


def resolve_check_finite(check_finite: Any, *arrays: Any) -> bool:
    """The effective ``check_finite`` of a call.

    ``True``/``False`` are used as given; ``None`` (the default of the torch-aware entry
    points) means: check numpy inputs, and torch tensors only inside :func:`debug`.
    (Internal calls pass ``False`` for inputs their caller has already checked.)
    """
    if check_finite is None:
        from ._array import is_torch

        if debug_enabled():
            return True
        return not any(is_torch(a) for a in arrays if a is not None)
    if not isinstance(check_finite, (bool,)) and type(check_finite).__name__ != "bool_":
        raise TypeError(f"check_finite must be a bool or None, got {check_finite!r}")
    return bool(check_finite)
