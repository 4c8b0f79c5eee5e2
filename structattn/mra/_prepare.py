"""Validation and preparation of one MRA call: checks, blocking, selection.

Internal to :mod:`structattn.mra`: :func:`_prepare` validates the arguments of
:func:`~structattn.mra.mra_attention` / :class:`~structattn.mra.MRAAttention`, blocks the
inputs (:mod:`structattn.mra._layout`) and selects the refined blocks (host
:func:`~structattn.mra.select_blocks` or the device selection for torch).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import dtype_name, is_torch, namespace, to_numpy, validate_attention_inputs
from .._debug import resolve_check_finite
from .._validate import check_choice, check_int, check_scale
from ..backends import resolve_backend
from ._layout import _Blocks, _blocks, _DeviceSelection, _key_mask, _valid_tokens
from .selection import (
    BlockSelection,
    check_block_size,
    num_block_rows,
    resolve_budget,
    select_blocks,
    select_flat_torch,
)

#: Accepted values of ``mode``: MRA-2 (coarse + fine) and MRA-2-s (fine only).
MODES = ("full", "sparse")


# ------------------------------------------------------------------ validation
def _check_mode(mode: Any) -> str:
    return check_choice(mode, "mode", MODES)


def _check_prior(value: Any, name: str) -> int:
    return check_int(value, name, minimum=0)


def _check_scale(scale: Any, d: int) -> float:
    return check_scale(scale, max(d, 1))


def _selection_for(blk: _Blocks, selection: BlockSelection | None, k: int | None,
                   prior_first: int, prior_diag: int, device: bool = False
                   ) -> BlockSelection | _DeviceSelection:
    """The given selection, or select ``k`` blocks (``device``: torch, on the device)."""
    if selection is not None:
        if not isinstance(selection, BlockSelection):
            raise TypeError(
                f"selection must be a BlockSelection or None, got {type(selection).__name__}"
            )
        if selection.num_block_rows != blk.n or selection.batch_shape != blk.batch:
            raise ValueError(
                f"selection was made for batch {selection.batch_shape} with "
                f"{selection.num_block_rows} block rows; these inputs have batch "
                f"{blk.batch} and n_b = {blk.n} (L={blk.L}, block_size={blk.b})"
            )
        return selection
    if device and is_torch(blk.scores):
        flat = select_flat_torch(blk.scores, blk.counts > 0 if blk.masked else None, k,
                                 prior_first, prior_diag)
        return _DeviceSelection(flat, blk.n)
    block_valid = None
    if blk.masked:
        block_valid = to_numpy(blk.counts).reshape(*blk.batch, blk.n) > 0
    return select_blocks(
        to_numpy(blk.scores).reshape(*blk.batch, blk.n, blk.n), k,
        prior_first=prior_first, prior_diag=prior_diag, block_valid=block_valid,
    )



def _check_score_range(q: Any, k: Any, scale: float) -> None:
    """Refuse inputs whose scores ``scale·q·k`` can overflow the dtype (O(L·d) bound).

    ``|s_ij| <= scale·max_i‖q_i‖·max_j‖k_j‖`` (Cauchy–Schwarz); an overflowing score would
    turn into ``inf - inf = NaN`` weights and rows silently zeroed by the merge.
    """
    if q.shape[-2] == 0 or k.shape[-2] == 0 or q.shape[-1] == 0:
        return
    if is_torch(q):
        q, k = q.detach(), k.detach()
    xp = namespace(q, k)
    nq = float(xp.max(xp.linalg.vector_norm(xp.astype(q, xp.float64), axis=-1)))
    nk = float(xp.max(xp.linalg.vector_norm(xp.astype(k, xp.float64), axis=-1)))
    limit = float(np.finfo(np.float32 if dtype_name(q) == "float32" else np.float64).max)
    limit = limit / 4
    if scale * nq * nk >= limit:
        raise ValueError(
            f"scores scale*q.k may overflow {dtype_name(q)}: scale*max|q|*max|k| = "
            f"{scale * nq * nk:.3g} (limit {limit:.3g}); rescale q and k or use float64"
        )


def _prepare(
    q: Any, k: Any, v: Any | None, *, block_size: Any, blocks_per_row: Any, num_blocks: Any,
    mode: Any, prior_first: Any, prior_diag: Any, key_padding_mask: Any, scale: Any,
    selection: Any, backend: str, check_finite: bool | None, key_mask: Any = None,
    device_selection: bool = False,
) -> tuple[_Blocks, BlockSelection | _DeviceSelection, str, str]:
    key_padding_mask, attend = _key_mask(key_mask, key_padding_mask, "mra_attention")
    checks = resolve_check_finite(check_finite, q, k, v)
    if v is None:
        validate_attention_inputs(q, k, k, check_finite=checks)
    else:
        validate_attention_inputs(q, k, v, check_finite=checks)
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(
            f"MRA attention is self-attention: q and k must have the same length "
            f"(L_q == L_k); got q.shape={tuple(q.shape)} and k.shape={tuple(k.shape)}"
        )
    b = check_block_size(block_size)
    mode = _check_mode(mode)
    pf, pd = _check_prior(prior_first, "prior_first"), _check_prior(prior_diag, "prior_diag")
    L, d = int(q.shape[-2]), int(q.shape[-1])
    n = num_block_rows(L, b)
    budget = None
    if selection is None:
        budget = resolve_budget(n, blocks_per_row, num_blocks, length=L, block_size=b)
    scl = _check_scale(scale, d)
    be = resolve_backend(backend, q, k, v)
    if checks:
        _check_score_range(q, k, scl)
    batch = tuple(q.shape[:-2])
    valid = _valid_tokens(key_padding_mask, q, batch, L, attend=attend)
    blk = _blocks(q, k, v, valid, b, scl)
    sel = _selection_for(blk, selection, budget, pf, pd, device=device_selection)
    return blk, sel, mode, be


