"""Rows of masked kernel attention whose normalizer underflowed: exact recomputation.

:func:`~structattn.attention.kernel_attention` exponentiates the features with one
shift per feature (the balanced stabilizer of
:class:`~structattn.features.PositiveRandomFeatures`), then runs a fast masked product.
That never underflows without a mask (the shift is the maximum over all keys), nor for a
causal mask while no later key exceeds the first key's log-features by more than the
headroom ``H``.  Beyond that (extreme magnitudes, e.g. float32 keys of norm ~30 at
``d = 64``), or with a sparse mask whose row misses the keys that set the shift, a row's
normalizer can underflow.  On the host paths (numpy inputs, or torch inside
:func:`structattn.debug`) such rows are detected with one reduction and recomputed here
in the log domain:

* scan masks (:class:`~structattn.masks.Causal`, :class:`~structattn.masks.DecayedCausal`,
  :class:`~structattn.masks.BottomRightCausal`): the rescaled running state of
  :mod:`structattn.backends.numba.rescaled` — exact, ``O(L·F·d_v)`` per affected batch
  element, its normalizers are ``>= 1``;
* any other non-negative mask: per row, ``log w_s = log M_is + logsumexp_r(lq_ir +
  lk_sr)`` over the keys of the row (mask rows read with ``rmatmat``), ``O(L_k·F)`` per
  row, up to :data:`REPAIR_BUDGET` element operations per call;
* torch inputs that need gradients, or with a non-scan mask: the generic rows in torch
  (differentiable, any mask), up to :data:`REPAIR_BUDGET_AUTOGRAD`; scan masks without
  gradients: the numpy path, copied back.

The recomputed value is the same estimator (same features, same projection): the
fast path's shifts and ``F^{-1/2}`` factors cancel in the row normalization.  Rows that
cannot be recomputed (a feature map without log-features, a budget exceeded, a mask
with a batch shape) stay zero and are reported with a
:class:`~structattn.attention.NormalizerWarning`.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ._array import as_like, index_like, is_torch, namespace, to_numpy
from ._validate import tiny

__all__ = ["REPAIR_BUDGET", "REPAIR_BUDGET_AUTOGRAD", "recompute_underflowed_matrix_rows",
           "recompute_underflowed_rows", "report_underflowed_rows", "underflow_threshold"]

#: Largest ``rows x L_k x F`` element count the generic (any-mask) recomputation does in
#: one call (about a second of numpy work); scan masks have no budget (linear time).
REPAIR_BUDGET = 2**27

#: The same for torch inputs that need gradients (autograd keeps the ``n x L_k x F``
#: temporaries: 2**24 float64 elements are 128 MiB).
REPAIR_BUDGET_AUTOGRAD = 2**24

#: Rows per block of the generic recomputation (bounds its ``n x L_k x F`` temporary).
_BLOCK_ROWS = 64


def underflow_threshold(den: Any) -> float:
    """Normalizers below ``tiny / eps`` (``~1e-31`` float32, ``~1e-292`` float64).

    Below it, the terms summed into the normalizer were partly subnormal: the row has
    lost relative precision even where the normalizer itself is still a normal number.
    """
    dt = den.dtype if not is_torch(den) else None
    if dt is None:
        import torch

        return float(torch.finfo(den.dtype).tiny / torch.finfo(den.dtype).eps)
    return float(np.finfo(dt).tiny / np.finfo(dt).eps)


def _log_feature_map(feature_map: Any) -> Any:
    """The map if its features are ``exp(log-features)`` with nothing added, else None."""
    from .features import PositiveRandomFeatures

    if isinstance(feature_map, PositiveRandomFeatures) and not feature_map.eps:
        return feature_map
    return None


def _scan_geometry(mask: Any, L_q: int, L_k: int) -> tuple[float, bool, int] | None:
    """``(gamma, exclusive, offset)`` of a scan mask, else None."""
    from .masks.causal import BottomRightCausal, Causal, DecayedCausal

    if isinstance(mask, (Causal, DecayedCausal)):
        return float(mask.gamma), bool(mask.exclusive), 0
    if isinstance(mask, BottomRightCausal):
        return 1.0, False, L_k - L_q
    return None


def _support(mask: Any, like: Any, L_k: int) -> Any:
    """``(..., L_q)`` booleans: rows of the mask with at least one positive entry."""
    xp = namespace(like)
    ones = xp.broadcast_to(xp.ones_like(like[..., :1, :1]), (*like.shape[:-2], L_k, 1))
    support = mask.matmat(ones, backend="numpy" if not is_torch(like) else "torch",
                          check_finite=False)
    return support[..., 0] > 0


def _mask_rows(mask: Any, rows: Any, L_q: int, like: Any) -> Any:
    """Rows ``rows`` of the mask, ``(n, L_k)``, read with ``rmatmat`` on one-hot columns."""
    xp = namespace(like)
    n = int(rows.shape[0])
    X = np.zeros((L_q, n))
    X[to_numpy(rows), np.arange(n)] = 1.0
    backend = "torch" if is_torch(like) else "numpy"
    R = mask.rmatmat(as_like(X, like), backend=backend, check_finite=False)
    return xp.matrix_transpose(R)


def _log_domain_weights(lq: Any, lk: Any, mask_rows: Any) -> Any:
    """Row-normalized weights ``w_s / Σ_s w_s`` over the mask row, from the log domain.

    ``log w_s = log M_is + logsumexp_r(lq_ir + lk_sr)``, shifted by its maximum over
    the row's support; ``lq (n, F)``, ``lk (L_k, F)``, ``mask_rows (n, L_k)``; numpy or
    torch (differentiable), ``O(n·L_k·F)``.  Rows with an empty support are zero.
    """
    xp = namespace(lq)
    logits = lq[:, None, :] + lk[None, :, :]  # (n, L_k, F)
    top = xp.max(logits, axis=-1, keepdims=True)
    logw = top[..., 0] + xp.log(xp.sum(xp.exp(logits - top), axis=-1))
    keep = mask_rows > 0
    one = xp.ones_like(mask_rows)
    neg_inf = xp.full_like(logw, -float("inf"))
    logw = xp.where(keep, logw + xp.log(xp.where(keep, mask_rows, one)), neg_inf)
    peak = xp.max(logw, axis=-1, keepdims=True)
    peak = xp.where(xp.isfinite(peak), peak, xp.zeros_like(peak))
    w = xp.exp(logw - peak)
    den = xp.sum(w, axis=-1, keepdims=True)
    return w / xp.where(den > 0, den, xp.ones_like(den))


def _generic_rows(lq: Any, lk: Any, v: Any, mask_rows: Any) -> Any:
    """Attention rows ``Σ_s w_s v_s / Σ_s w_s`` from the log domain (see
    :func:`_log_domain_weights`); ``v (L_k, d_v)``, ``O(n·L_k·(F + d_v))``."""
    return _log_domain_weights(lq, lk, mask_rows) @ v


def recompute_underflowed_matrix_rows(
    P: Any, den: Any, q: Any, k: Any, feature_map: Any, mask_dense: Any
) -> Any:
    """``P`` (a row-normalized ``(..., L_q, L_k)`` kernel attention matrix) with the rows
    whose normalizer underflowed recomputed in the log domain.

    ``den (..., L_q, 1)`` are the row sums before normalization, ``mask_dense`` the
    dense non-negative mask (``(L_q, L_k)`` or with batch dimensions) or None.  Same
    contract as :func:`recompute_underflowed_rows` (host paths; differentiable on
    torch; rows of a map without a log-domain form are reported).  ``O(n·L_k·F)`` for
    ``n`` recomputed rows, on top of the ``O(L_q·L_k)`` the matrix already costs.
    """
    xp = namespace(den)

    def support() -> Any:
        if mask_dense is None:
            return xp.ones_like(den[..., 0], dtype=xp.bool)
        return xp.broadcast_to(xp.any(mask_dense > 0, axis=-1), den.shape[:-1])

    found = _rows_to_recompute(den, support, feature_map)
    if found is None:
        return P
    bad, fm = found
    L_q, L_k = q.shape[-2], k.shape[-2]
    batch = tuple(den.shape[:-2])
    qf = _flat(q, batch)
    kf = _flat(k, batch)
    masks = None if mask_dense is None else _flat(
        xp.broadcast_to(mask_dense, (*batch, L_q, L_k)), batch)
    bad_flat = bad.reshape(-1, L_q)
    fixed = xp.reshape(P, (-1, L_q, L_k))
    fixed = fixed.clone() if is_torch(fixed) else np.array(fixed)
    for b in np.flatnonzero(bad_flat.any(axis=-1)):
        idx = np.flatnonzero(bad_flat[b])
        rows = index_like(idx, P)
        lq, lk = fm._log_features(_float64(qf[b])), fm._log_features(_float64(kf[b]))
        if masks is None:
            m = xp.ones((idx.size, L_k), dtype=lq.dtype, device=getattr(lq, "device", None))
        else:
            m = _float64(masks[b])[rows]
        w = _log_domain_weights(lq[rows], lk, m)
        fixed[b, rows] = w.to(P.dtype) if is_torch(w) else w.astype(P.dtype)
    return xp.reshape(fixed, P.shape)


def _float64(x: Any) -> Any:
    """``x`` in float64, same kind and device (torch: differentiable cast)."""
    if is_torch(x):
        import torch

        return x.to(dtype=torch.float64)
    return np.asarray(x, dtype=np.float64)


def _needs_grad(*arrays: Any) -> bool:
    return any(is_torch(a) and a.requires_grad for a in arrays)


def _rows_to_recompute(den: Any, support: Any, feature_map: Any
                       ) -> tuple[np.ndarray, Any] | None:
    """``(bad rows (..., L_q) on the host, log-domain map)``, or None when nothing is to do.

    One reduction (``den < tiny/eps``) when nothing underflowed; else ``support()``
    (the rows with a non-empty mask row) restricts the rows.  A map without a log-domain
    form cannot recompute: the rows its division zeroed are reported, and None returned.
    """
    xp = namespace(den)
    low = den[..., 0] < underflow_threshold(den)
    if not bool(xp.any(low)):
        return None
    bad = to_numpy(low & support())
    if not bad.any():
        return None
    fm = _log_feature_map(feature_map)
    if fm is None:  # nothing to recompute with: report the rows the division zeroed
        bad &= to_numpy(den[..., 0] < tiny(den))
        if bad.any():
            _warn(int(bad.sum()), "the feature map has no log-domain form")
        return None
    return bad, fm


def recompute_underflowed_rows(
    out: Any, den: Any, q: Any, k: Any, v: Any, feature_map: Any, mask: Any
) -> Any:
    """``out`` with the rows whose normalizer underflowed recomputed exactly.

    Parameters
    ----------
    out : array, shape (..., L_q, d_v)
        The fast path's rows (zero where ``den`` underflowed).
    den : array, shape (..., L_q, 1)
        The fast path's normalizers.
    q, k, v : arrays, shapes (..., L_q, d), (..., L_k, d), (..., L_k, d_v)
        The attention inputs (after grouped-query expansion).
    feature_map : FeatureMap
        Non-negative feature map of the call.
    mask : Mask
        The resolved non-negative mask (``Full`` without one).

    Returns
    -------
    array like ``out``
        Every row with a non-empty mask row has a positive normalizer in the log-domain
        recomputation and lies in the convex hull of the value rows it attends to.  On
        torch inputs that need gradients the recomputed rows are differentiable.

    Warns
    -----
    NormalizerWarning
        For rows that could not be recomputed (they are returned as zeros).

    Notes
    -----
    One reduction (``den < tiny/eps``) when nothing underflowed; otherwise one mask
    product for the support plus the recomputation (see the module notes).
    """
    found = _rows_to_recompute(den, lambda: _support(mask, den, k.shape[-2]), feature_map)
    if found is None:
        return out
    bad, fm = found
    if getattr(mask, "batch_shape", ()) != ():
        _warn(int(bad.sum()), "masks with a batch shape are not recomputed")
        return out
    if _needs_grad(out, q, k, v) or (
            is_torch(out) and _scan_geometry(mask, q.shape[-2], k.shape[-2]) is None):
        return _recompute_torch(out, bad, q, k, v, fm, mask)
    return _recompute_host(out, bad, q, k, v, fm, mask)


def _flat(x: Any, batch: tuple[int, ...]) -> Any:
    """``x (..., L, c)`` broadcast to ``batch`` and flattened to ``(B, L, c)``."""
    xp = namespace(x)
    full = xp.broadcast_to(x, (*batch, *x.shape[-2:]))
    return xp.reshape(full, (-1, *x.shape[-2:]))


def _recompute_host(out: Any, bad: np.ndarray, q: Any, k: Any, v: Any, fm: Any,
                    mask: Any) -> Any:
    """numpy float64 recomputation (torch scan masks without gradients: copied back)."""
    L_q, L_k = q.shape[-2], k.shape[-2]
    batch = bad.shape[:-1]
    qn, kn, vn = (_flat(to_numpy(a), batch) for a in (q, k, v))
    bad_flat = bad.reshape(-1, L_q)
    elements = np.flatnonzero(bad_flat.any(axis=-1))
    fixed = np.array(to_numpy(out), dtype=np.float64).reshape(-1, L_q, vn.shape[-1])
    lq = fm._log_features(qn[elements].astype(np.float64))
    lk = fm._log_features(kn[elements].astype(np.float64))
    vb = vn[elements].astype(np.float64)
    geometry = _scan_geometry(mask, L_q, L_k)
    left = 0
    if geometry is not None:
        from .backends.numba.rescaled import rescaled_causal_attention

        gamma, exclusive, offset = geometry
        rows = rescaled_causal_attention(lq, lk, vb, gamma=gamma, exclusive=exclusive,
                                         offset=offset)
        for n, b in enumerate(elements):
            fixed[b, bad_flat[b]] = rows[n, bad_flat[b]]
    else:
        budget = REPAIR_BUDGET
        for n, b in enumerate(elements):
            rows = np.flatnonzero(bad_flat[b])
            cost = rows.size * L_k * lq.shape[-1]
            if cost > budget:
                left += rows.size
                continue
            budget -= cost
            for start in range(0, rows.size, _BLOCK_ROWS):
                sel = rows[start:start + _BLOCK_ROWS]
                fixed[b, sel] = _generic_rows(lq[n][sel], lk[n], vb[n],
                                              _mask_rows(mask, sel, L_q, lq))
    if left:
        _warn(left, f"more than {REPAIR_BUDGET} element operations to recompute")
    result = fixed.reshape(out.shape)
    return as_like(result, out)


def _recompute_torch(out: Any, bad: np.ndarray, q: Any, k: Any, v: Any, fm: Any,
                              mask: Any) -> Any:
    """torch recomputation (generic log-domain rows, any mask), through autograd."""
    import torch

    L_q, L_k = q.shape[-2], k.shape[-2]
    batch = bad.shape[:-1]
    qf, kf, vf = (_flat(a, batch).to(torch.float64) for a in (q, k, v))
    bad_flat = bad.reshape(-1, L_q)
    fixed = out.reshape(-1, L_q, out.shape[-1]).clone()
    budget, left = REPAIR_BUDGET_AUTOGRAD, 0
    for b in np.flatnonzero(bad_flat.any(axis=-1)):
        rows = np.flatnonzero(bad_flat[b])
        lq, lk = fm._log_features(qf[b]), fm._log_features(kf[b])
        cost = rows.size * L_k * lq.shape[-1]
        if cost > budget:
            left += rows.size
            continue
        budget -= cost
        idx = index_like(rows, out)
        mask_rows = _mask_rows(mask, idx, L_q, lq)
        fixed[b, idx] = _generic_rows(lq[idx], lk, vf[b], mask_rows).to(out.dtype)
    if left:
        _warn(left, f"more than {REPAIR_BUDGET_AUTOGRAD} element operations to "
              "recompute with gradients")
    return fixed.reshape(out.shape)


def report_underflowed_rows(den: Any, what: str) -> None:
    """Warn about normalizers below ``tiny/eps`` (rows that cannot be recomputed).

    For callers that hold a state rather than the keys (decoding): ``den (..., L, 1)``
    of rows that all attend to at least one key.  One reduction when nothing underflowed.
    """
    xp = namespace(den)
    low = den < underflow_threshold(den)
    if bool(xp.any(low)):
        _warn(int(xp.sum(xp.astype(low, xp.int64))),
              f"{what} holds one scale per feature, not the keys")


def _warn(count: int, reason: str) -> None:
    from .attention import NormalizerWarning

    warnings.warn(
        f"{count} attention row(s) have a zero normalizer although their mask row is not "
        f"empty: the features underflowed (e.g. float32 with a large head dimension or "
        f"extreme inputs) and the rows could not be recomputed ({reason}); they are "
        "returned as zeros — use float64",
        NormalizerWarning,
        stacklevel=4,
    )
