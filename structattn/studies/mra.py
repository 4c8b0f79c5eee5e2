"""Study registrations for the multi-resolution approximations of :mod:`structattn.mra`.

* ``"mra-2"`` — MRA-2 (coarse block means + exact blocks), ``block_size = 32``;
* ``"mra-2-s"`` — MRA-2-s (exact blocks only).

Budget: ``blocks_per_row`` in ``(1, 2, 4, 8)`` (the authors' table, mra.md §4.1), i.e.
``k = n_b · blocks_per_row`` exact ``32 x 32`` blocks per head.  At lengths with fewer
than ``blocks_per_row`` block columns the budget is capped at ``n_b`` blocks per row
(then the method is exact) and every call emits a :class:`BudgetClippedWarning`, which
the study records in the row's notes.  Deterministic (``seed`` unused), no causal form.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

from ..mra import MRAAttention
from ..mra.selection import num_block_rows
from .registry import register

__all__ = ["BLOCK_SIZE", "BudgetClippedWarning", "minilm_errors"]

#: Block size of the registered MRA operators (the official value).
BLOCK_SIZE = 32
_BUDGETS = {"blocks_per_row": (1, 2, 4, 8)}


class BudgetClippedWarning(UserWarning):
    """A study budget larger than the number of blocks was reduced to that number."""


@dataclass(frozen=True, eq=False)
class _ClippedBudget:
    """An operator run at a smaller budget than the study point asked for, and says so.

    ``mra_attention`` rejects ``blocks_per_row`` above the number of key blocks; a sweep
    over short lengths uses the largest valid budget instead and every call warns (the
    study records the warning in its notes, so the record is not mislabelled silently).
    """

    operator: MRAAttention
    message: str

    def __call__(self, q: Any, k: Any, v: Any) -> Any:
        warnings.warn(self.message, BudgetClippedWarning, stacklevel=2)
        return self.operator(q, k, v)

    def matrix(self, q: Any, k: Any) -> Any:
        warnings.warn(self.message, BudgetClippedWarning, stacklevel=2)
        return self.operator.matrix(q, k)


def _mra(mode: str, length: int, blocks_per_row: int, backend: str) -> Any:
    n = num_block_rows(length, BLOCK_SIZE)
    op = MRAAttention(block_size=BLOCK_SIZE, blocks_per_row=min(blocks_per_row, n),
                      mode=mode, backend=backend)
    if blocks_per_row <= n:
        return op
    return _ClippedBudget(op, f"blocks_per_row={blocks_per_row} exceeds the {n} key blocks "
                              f"of L={length}; ran blocks_per_row={n} (the exact budget)")


@register(
    "mra-2",
    budgets=_BUDGETS,
    description="MRA-2: exp of 32x32 block-mean scores plus k exact blocks (Zeng et al. 2022)",
    causal=False,
)
def _mra2(
    *, dim: int, seed: int, causal: bool, length: int, blocks_per_row: int = 8,
    backend: str = "auto",
) -> MRAAttention:
    del dim, seed, causal  # deterministic; causal sweeps skip the entry
    return _mra("full", length, blocks_per_row, backend)


@register(
    "mra-2-s",
    budgets=_BUDGETS,
    description="MRA-2-s: only the k selected exact 32x32 blocks (data-dependent block sparsity)",
    causal=False,
)
def _mra2s(
    *, dim: int, seed: int, causal: bool, length: int, blocks_per_row: int = 8,
    backend: str = "auto",
) -> MRAAttention:
    del dim, seed, causal
    return _mra("sparse", length, blocks_per_row, backend)


def minilm_errors(
    length: int = 512,
    *,
    seeds: tuple[int, ...] = (0, 1),
    blocks_per_row: tuple[int, ...] = (1, 2, 4, 8),
    temperatures: tuple[float, ...] = (1.0,),
    layers: tuple[int, ...] = (0, 1, 2, 3, 4, 5),
    backend: str = "auto",
) -> list[dict[str, Any]]:
    """Relative output error of MRA-2 / MRA-2-s on MiniLM attention inputs (mra.md §4.1).

    For every sequence (``seed``), layer and head: ``||Y - Ŷ||_F / ||Y||_F`` against exact
    softmax attention, with ``q, k`` scaled by ``sqrt(s)`` for temperature ``s`` (the
    authors' supplement protocol), averaged over sequences x layers x heads.

    Returns
    -------
    list of dict
        ``{"mode", "blocks_per_row", "temperature", "length", "mean_rel_error",
        "median_rel_error", "n_heads"}`` per configuration.  Needs the ``studies`` extra
        (:func:`~structattn.studies.minilm.minilm_attention_inputs`).
    """
    import numpy as np

    from ..attention import softmax_attention
    from ..mra import mra_attention
    from .minilm import minilm_attention_inputs

    errs: dict[tuple[str, int, float], list[float]] = {}
    for seed in seeds:
        for layer in layers:
            q, k, v = minilm_attention_inputs(length, layer=layer, seed=seed)
            for s in temperatures:
                qs, ks = q * math.sqrt(s), k * math.sqrt(s)
                exact = softmax_attention(qs, ks, v)
                norm = np.linalg.norm(exact, axis=(-2, -1))
                for mode in ("full", "sparse"):
                    for r in blocks_per_row:
                        y = mra_attention(qs, ks, v, block_size=BLOCK_SIZE, mode=mode,
                                          blocks_per_row=min(r, -(-length // BLOCK_SIZE)),
                                          backend=backend)
                        e = np.linalg.norm(y - exact, axis=(-2, -1)) / norm
                        errs.setdefault((mode, r, s), []).extend(e.ravel().tolist())
    return [{"mode": m, "blocks_per_row": r, "temperature": s, "length": length,
             "mean_rel_error": float(np.mean(v)), "median_rel_error": float(np.median(v)),
             "n_heads": len(v)}
            for (m, r, s), v in errs.items()]
