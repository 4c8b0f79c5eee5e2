"""A guard that makes every host synchronization of a torch tensor raise.

Inside :func:`no_host_sync`, ``bool(tensor)``, ``tensor.item()``, ``tensor.cpu()``,
``tensor.numpy()``, ``tensor.tolist()``, ``int(tensor)`` and ``float(tensor)`` raise
:class:`HostSyncError`.  On a GPU each of these waits for the device; on the CPU they
are cheap, so the guard is how a CPU-only test proves the default torch path never does
them (``torch.cuda.set_sync_debug_mode`` needs a CUDA device).
"""

from __future__ import annotations

import contextlib

import torch

_METHODS = ("__bool__", "item", "cpu", "numpy", "tolist", "__int__", "__float__")


class HostSyncError(RuntimeError):
    """A tensor was read back to the host inside :func:`no_host_sync`."""


@contextlib.contextmanager
def no_host_sync():
    saved = {name: getattr(torch.Tensor, name) for name in _METHODS}

    def raiser(name):
        def method(self, *args, **kwargs):
            raise HostSyncError(f"host synchronization: Tensor.{name} called")

        return method

    try:
        for name in _METHODS:
            setattr(torch.Tensor, name, raiser(name))
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)
