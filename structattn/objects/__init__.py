"""Slot and binding attention for object-oriented world models (HOWM), and its environment.

Operators (numpy arrays or torch tensors with autograd; batch dimensions ``...``):

* :func:`inverted_attention` — Slot Attention's step (softmax over slots, then a weighted
  mean over inputs: one Sinkhorn iteration);
* :func:`binding_attention`, :func:`bind_actions` — the library-to-slot binding matrix and
  the routing of library-indexed actions to slots;
* :func:`lift`, :func:`project`, :func:`hard_binding` — moving states between the slot
  and the library (full) MDP;
* :func:`aligned_energy` — HOWM's slot-order-free energy;
* :func:`sinkhorn` — log-domain Sinkhorn with rectangular marginals and a temperature;
* :func:`hits_at_k`, :func:`mrr` — ranking metrics (from :mod:`structattn.ranking`).

Environment: :class:`ObjectLibrary` (coordinate-level Object Library, train/eval scene
compositions, "shapes" and "rush hour" variants) and its pure dynamics
:func:`library_step`.  See ``docs/objects.rst`` and the spec ``howm.md``.
"""

from .attention import bind_actions, binding_attention, inverted_attention, sinkhorn
from .binding import aligned_energy, hard_binding, lift, project
from .library import DIRECTIONS, ObjectLibrary, Trajectories, library_step, move_direction
from .metrics import hits_at_k, mrr

__all__ = [
    "DIRECTIONS",
    "ObjectLibrary",
    "Trajectories",
    "aligned_energy",
    "bind_actions",
    "binding_attention",
    "hard_binding",
    "hits_at_k",
    "inverted_attention",
    "library_step",
    "lift",
    "move_direction",
    "mrr",
    "project",
    "sinkhorn",
]
