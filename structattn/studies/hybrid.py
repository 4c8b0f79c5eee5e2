"""Study registrations for sparse + low-rank attention (:mod:`structattn.hybrid`).

* ``"hybrid-mra"`` — MRA-2's adaptive selection of ``16 x 16`` blocks as the support;
* ``"hybrid-window"`` — a sliding window ``|i − j| <= w``;
* ``"hybrid-lsh"`` — angular-LSH buckets (``r`` keys per row);

each with the first and last tokens as global keys (``[CLS]``/``[SEP]`` in text models)
and FAVOR+ features (orthogonal, from the study seed) on the complement.

Budget: ``work_fraction`` — the multiply-adds of the hybrid (features, support pairs,
low-rank correction, the selection itself) as a fraction of dense attention's
``L²·(d + d_v)`` (:mod:`structattn.hybrid.budget`), split between keys and features by
:func:`~structattn.hybrid.split_budget`.  ``hybrid-mra`` and ``hybrid-lsh`` choose their
support from all keys, so they have no causal form; ``hybrid-window`` has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..attention import FeatureMapAttention
from ..features import FeatureMap, PositiveRandomFeatures
from ..graphs import window
from ..hybrid import (
    FEATURE_SHARE,
    SparseLowRankAttention,
    Support,
    as_support,
    lsh_support,
    mra_support,
    split_budget,
)
from ..hybrid.budget import dense_work, hybrid_work
from ..mra.selection import num_block_rows
from .registry import register

__all__ = ["BLOCK_SIZE", "KINDS", "SupportRule", "hybrid_operator", "minilm_eigen_errors",
           "minilm_errors", "minilm_oracle_errors", "plot_minilm_errors",
           "sparse_part_operator"]

#: Block size of ``hybrid-mra``.
BLOCK_SIZE = 16
#: Support kinds of the registered entries.
KINDS = ("mra", "window", "lsh")
_BUDGETS = {"work_fraction": (0.05, 0.1, 0.25, 0.5)}


@dataclass(frozen=True)
class SupportRule:
    """A picklable support rule ``rule(q, k) -> Support`` with about ``keys_per_row`` keys.

    ``kind``: ``"mra"`` (``keys_per_row // 16`` blocks per row, at least one),
    ``"window"`` (``w = (keys_per_row - 1) // 2``) or ``"lsh"``; global keys (the first
    and last tokens, seen by every query) are added to each.
    """

    kind: str
    keys_per_row: int
    seed: int = 0
    global_keys: bool = True

    def __call__(self, q: Any, k: Any) -> Support:
        L = int(q.shape[-2])
        B = math.prod(q.shape[:-2])
        r = max(1, min(L, int(self.keys_per_row)))
        if self.kind == "mra":
            b = min(BLOCK_SIZE, 1 << max(0, (L - 1).bit_length()))
            n = num_block_rows(L, b)
            sup = as_support(mra_support(q, k, block_size=b,
                                         blocks_per_row=max(1, min(n, r // b))), L, B)
        elif self.kind == "window":
            sup = as_support(window(L, max(0, (r - 1) // 2)), L, B)
        elif self.kind == "lsh":
            sup = lsh_support(q, k, r, seed=self.seed)
        else:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.global_keys:
            cols = np.array(sorted({0, L - 1}), dtype=np.int64)
            g = Support(np.arange(L + 1, dtype=np.int64)[None, :] * cols.size,
                        np.tile(cols, L), L)
            sup = sup.union(g)
        return sup

    def selection_work(self, L: int, d: int) -> float:
        """Multiply-adds of choosing the support (block means + coarse scores, hashing)."""
        if self.kind == "mra":
            n = num_block_rows(L, BLOCK_SIZE)
            return 2.0 * L * d + n * n * d
        if self.kind == "lsh":
            return 2.0 * L * d * 8
        return 0.0


class _NoFeatures(FeatureMap):
    """``φ = 0`` (one zero feature): the hybrid is then softmax on the support alone."""

    nonnegative = True

    def feature_dim(self, d: int) -> int:
        return 1

    def _features(self, x: Any) -> Any:
        return x[..., :1] * 0


def _budget(work_fraction: float, length: int, dim: int, feature_share: float
            ) -> tuple[int, int]:
    return split_budget(work_fraction, length, dim, dim, feature_share=feature_share)


def hybrid_operator(kind: str, *, length: int, dim: int, work_fraction: float, seed: int = 0,
                    causal: bool = False, backend: str = "auto",
                    feature_share: float = FEATURE_SHARE) -> SparseLowRankAttention:
    """The hybrid of one support kind at a budget (``work_fraction`` of dense work)."""
    r, m = _budget(work_fraction, length, dim, feature_share)
    phi = (PositiveRandomFeatures(dim=dim, num_features=m, seed=seed) if m > 0
           else _NoFeatures())
    return SparseLowRankAttention(phi, support=SupportRule(kind, r, seed=seed), causal=causal,
                                  backend=backend)


def sparse_part_operator(kind: str, *, length: int, dim: int, work_fraction: float,
                         seed: int = 0, causal: bool = False, backend: str = "auto"
                         ) -> SparseLowRankAttention:
    """The sparse part alone (softmax on the support), the whole budget on keys."""
    return hybrid_operator(kind, length=length, dim=dim, work_fraction=work_fraction,
                           seed=seed, causal=causal, backend=backend, feature_share=0.0)


def _register(kind: str, causal: bool, what: str) -> None:
    @register(f"hybrid-{kind}", budgets=_BUDGETS, causal=causal,
              description=f"Scatterbrain: exact softmax on {what} + FAVOR+ on the rest")
    def _factory(*, dim: int, seed: int, causal: bool, length: int,
                 work_fraction: float = 0.25, backend: str = "auto") -> SparseLowRankAttention:
        return hybrid_operator(kind, length=length, dim=dim, work_fraction=work_fraction,
                               seed=seed, causal=causal, backend=backend)


_register("mra", False, "MRA-2-selected 16x16 blocks")
_register("window", True, "a sliding window")
_register("lsh", False, "angular-LSH buckets")


def _work(op: Any, sup: Support | None, L: int, d: int, m: int) -> float:
    nnz = 0.0 if sup is None else sup.indices.size / sup.num_heads
    extra = 0.0 if sup is None else op.support.selection_work(L, d)
    return (hybrid_work(L, d, d, nnz, m) + extra) / dense_work(L, d, d)


def minilm_errors(
    length: int = 512, *, work_fractions: tuple[float, ...] = (0.05, 0.1, 0.15, 0.25, 0.5),
    kinds: tuple[str, ...] = KINDS, feature_shares: tuple[float, ...] = (FEATURE_SHARE,),
    seed: int = 0, backend: str = "auto", progress: bool = True,
) -> list[dict[str, Any]]:
    """Mean relative output error on real MiniLM attention (72 heads) vs work fraction.

    For every kind and budget: the hybrid (``"hybrid"``), its sparse part alone
    (``"sparse"``, the whole budget on keys), and the low-rank part alone
    (``"lowrank"``: FAVOR+ with the whole budget on features); plus the uniform
    baseline.  Error per head ``||Y − Ŷ||_F / ||Y||_F`` against exact softmax.

    Returns
    -------
    list of dict
        ``{"method", "kind", "feature_share", "target", "work", "keys_per_row",
        "num_features", "mean_rel_error", "median_rel_error", "n_heads"}``.
    """
    from tqdm.auto import tqdm

    from ..attention import softmax_attention
    from .minilm import minilm_attention_inputs, minilm_token_ids

    ids = minilm_token_ids(length, seed=seed)
    assert not np.any(ids == 0), "MiniLM inputs must hold no padding token"
    q, k, v = minilm_attention_inputs(length, layer="all", seed=seed)
    d = q.shape[-1]
    q, k, v = (x.reshape(-1, length, d) for x in (q, k, v))
    Y = softmax_attention(q, k, v)
    norm = np.linalg.norm(Y, axis=(-2, -1))

    def err(Yh: np.ndarray) -> tuple[float, float]:
        e = np.linalg.norm(Yh - Y, axis=(-2, -1)) / norm
        return float(np.mean(e)), float(np.median(e))

    out: list[dict[str, Any]] = []

    def add(method: str, kind: str, share: float, f: float, work: float, r: int, m: int,
            Yh: np.ndarray) -> None:
        mean, med = err(Yh)
        out.append({"method": method, "kind": kind, "feature_share": share, "target": f,
                    "work": work, "keys_per_row": r, "num_features": m,
                    "mean_rel_error": mean, "median_rel_error": med, "n_heads": len(norm)})

    U = np.broadcast_to(v.mean(axis=-2, keepdims=True), Y.shape)
    add("uniform", "-", 0.0, 0.0, 0.0, 0, 0, U)
    jobs = [(f, kind, s) for f in work_fractions for kind in kinds for s in feature_shares]
    for f in tqdm(work_fractions, desc="hybrid: low-rank part", disable=not progress):
        m = max(1, int(f * dense_work(length, d, d) // (2 * length * (2 * d + 1))))
        op = FeatureMapAttention(PositiveRandomFeatures(dim=d, num_features=m, seed=seed),
                                 backend=backend)
        add("lowrank", "-", 1.0, f, hybrid_work(length, d, d, 0, m) /
            dense_work(length, d, d), 0, m, op(q, k, v))
    for f, kind, s in tqdm(jobs, desc="hybrid: MiniLM sweep", disable=not progress):
        for method, share in (("hybrid", s), ("sparse", 0.0)):
            if method == "sparse" and s != feature_shares[0]:
                continue
            op = hybrid_operator(kind, length=length, dim=d, work_fraction=f, seed=seed,
                                 backend=backend, feature_share=share)
            sup = op.support(q, k)
            m = 0 if isinstance(op.feature_map, _NoFeatures) else op.feature_map.num_features
            Yh = SparseLowRankAttention(op.feature_map, support=sup, backend=backend)(q, k, v)
            add(method, kind, share, f, _work(op, sup, length, d, m),
                op.support.keys_per_row, m, Yh)
    return out


def minilm_eigen_errors(
    length: int = 512, *, work_fractions: tuple[float, ...] = (0.1, 0.25), rank: int = 16,
    landmarks: int = 64, kind: str = "mra", seed: int = 0, progress: bool = True,
) -> list[dict[str, Any]]:
    """The hybrid with per-head Nyström eigenfeatures of the softmax kernel on MiniLM.

    For each head, :func:`~structattn.eigen.softmax_eigenfeatures` is fitted on that
    head's pooled queries and keys (``landmarks`` tokens, ``rank`` eigenfunctions); the
    support gets the rest of the budget.  Work counts the kernel evaluations against the
    landmarks ``2·L·ℓ·d``, the fit ``ℓ²·d + ℓ³``, the projections ``2·L·ℓ·rank`` and the
    hybrid's own ``2·L·rank·(d_v + 1) + nnz·(d + d_v + rank)``.  A head whose kernel
    matrix on the landmarks has a lower numerical rank gets ``rank // 2`` (then
    ``rank // 4``) eigenfunctions; ``heads_with_reduced_rank`` counts the reductions.

    Returns
    -------
    list of dict
        ``{"method": "hybrid-eigen", "kind", "target", "work", "keys_per_row",
        "num_features", "mean_rel_error", "median_rel_error", "n_heads"}``.
    """
    import warnings

    from tqdm.auto import tqdm

    from ..attention import softmax_attention
    from ..eigen import softmax_eigenfeatures
    from ..hybrid import sparse_lowrank_attention
    from .minilm import minilm_attention_inputs

    q, k, v = minilm_attention_inputs(length, layer="all", seed=seed)
    d = q.shape[-1]
    q, k, v = (x.reshape(-1, length, d) for x in (q, k, v))
    Y = softmax_attention(q, k, v)
    L, lm = length, landmarks
    feat = 2.0 * L * lm * d + lm * lm * d + lm**3 + 2.0 * L * lm * rank
    out = []
    for f in tqdm(work_fractions, desc="hybrid: eigen features", disable=not progress):
        W = f * dense_work(L, d, d)
        rest = W - feat - 2.0 * L * rank * (d + 1)
        r = max(1, int(rest // (L * (2 * d + rank))))
        rule = SupportRule(kind, r, seed=seed)
        errs = []
        nnz = 0.0
        reduced = 0
        for h in range(q.shape[0]):
            qh, kh, vh = q[h:h + 1], k[h:h + 1], v[h:h + 1]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for rk in (rank, rank // 2, rank // 4, 1):  # below the numerical rank
                    try:
                        phi = softmax_eigenfeatures(qh, kh, max(rk, 1), landmarks=lm,
                                                    seed=seed, on_small="warn")
                        break
                    except ValueError:
                        reduced += 1
                sup = rule(qh, kh)
                yh = sparse_lowrank_attention(qh, kh, vh, sup, phi)
            nnz += sup.indices.size / q.shape[0]
            errs.append(np.linalg.norm(yh - Y[h:h + 1]) / np.linalg.norm(Y[h:h + 1]))
        work = (feat + hybrid_work(L, d, d, nnz, rank) + rule.selection_work(L, d)) / \
            dense_work(L, d, d)
        out.append({"method": "hybrid-eigen", "kind": kind, "target": f, "work": work,
                    "keys_per_row": r, "num_features": rank,
                    "mean_rel_error": float(np.mean(errs)),
                    "median_rel_error": float(np.median(errs)), "n_heads": len(errs),
                    "heads_with_reduced_rank": reduced})
    return out


def plot_minilm_errors(records: list[dict[str, Any]], path: str, *,
                       share: float = FEATURE_SHARE, goal: tuple[float, float] = (0.25, 0.10)
                       ) -> None:
    """Error vs fraction of dense work: hybrids, their parts, uniform, and the goal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {"mra": "C0", "window": "C1", "lsh": "C2", "-": "C3"}
    for method, style in (("hybrid", "-o"), ("sparse", "--s"), ("lowrank", ":^"),
                          ("hybrid-eigen", "-D"), ("oracle-sparse", "-.x")):
        for kind in ("mra", "window", "lsh", "-"):
            rows = sorted((r for r in records if r["method"] == method and r["kind"] == kind
                           and (method != "hybrid" or r["feature_share"] == share)),
                          key=lambda r: r["work"])
            if rows:
                label = f"{method} ({kind})" if kind != "-" else method
                color = {"hybrid-eigen": "C4", "oracle-sparse": "k"}.get(method, colors[kind])
                ax.plot([r["work"] for r in rows], [r["mean_rel_error"] for r in rows],
                        style, color=color, label=label, ms=4)
    uni = [r["mean_rel_error"] for r in records if r["method"] == "uniform"]
    if uni:
        ax.axhline(uni[0], color="grey", lw=1, label="uniform attention")
    ax.plot(*goal, "k*", ms=12, label="goal (0.10 at 25 %)")
    ax.set_xlabel("fraction of dense work (multiply-adds)")
    ax.set_ylabel("mean relative output error (72 heads)")
    ax.set_ylim(0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def minilm_oracle_errors(length: int = 512, *,
                         work_fractions: tuple[float, ...] = (0.05, 0.1, 0.15, 0.25, 0.5),
                         seed: int = 0) -> list[dict[str, Any]]:
    """A bound for sparse supports: exact softmax on each row's top-``r`` true weights.

    ``r = ⌊f·L⌋`` keys per row (the whole budget on keys, no selection cost): no sparse
    support of that size captures more attention mass (``mean_mass_kept``: the mean
    exact attention mass of the kept keys per row).  Dense ``O(L²)``: a study tool.
    """
    from ..attention import softmax_attention
    from .minilm import minilm_attention_inputs

    q, k, v = minilm_attention_inputs(length, layer="all", seed=seed)
    d = q.shape[-1]
    q, k, v = (x.reshape(-1, length, d) for x in (q, k, v))
    Y = softmax_attention(q, k, v)
    s = q @ np.swapaxes(k, -1, -2)
    order = np.argsort(-s, axis=-1)
    P = np.exp(s / math.sqrt(d) - np.max(s / math.sqrt(d), axis=-1, keepdims=True))
    P /= P.sum(axis=-1, keepdims=True)
    out = []
    for f in work_fractions:
        r = max(1, int(f * length))
        mask = np.zeros(s.shape, dtype=bool)
        np.put_along_axis(mask, order[..., :r], True, axis=-1)
        e = np.linalg.norm(softmax_attention(q, k, v, mask=mask) - Y, axis=(-2, -1)) / \
            np.linalg.norm(Y, axis=(-2, -1))
        mass = float(np.mean(np.sum(np.where(mask, P, 0.0), axis=-1)))
        out.append({"method": "oracle-sparse", "kind": "-", "target": f, "work": r / length,
                    "keys_per_row": r, "num_features": 0, "mean_rel_error": float(e.mean()),
                    "median_rel_error": float(np.median(e)), "n_heads": int(e.size),
                    "mean_mass_kept": mass})
    return out


def plot_feature_share(records: list[dict[str, Any]], path: str) -> None:
    """Error vs the share of the budget given to features, per kind and budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, kind in enumerate(("mra", "window")):
        for j, f in enumerate(sorted({r["target"] for r in records
                                      if r["method"] == "hybrid" and r["kind"] == kind})):
            pts = {r["feature_share"]: r["mean_rel_error"] for r in records
                   if r["method"] == "sparse" and r["kind"] == kind and r["target"] == f}
            pts.update({r["feature_share"]: r["mean_rel_error"] for r in records
                        if r["method"] == "hybrid" and r["kind"] == kind
                        and r["target"] == f})
            if len(pts) < 3:
                continue
            xs = sorted(pts)
            ax.plot(xs, [pts[x] for x in xs], "-o", color=f"C{i}", alpha=min(1.0, 0.5 + 0.25 * j),
                    ms=4, label=f"{kind}, {f:.0%} of dense work")
    ax.set_xlabel("share of the budget spent on FAVOR+ features")
    ax.set_ylabel("mean relative output error")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
