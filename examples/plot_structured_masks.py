"""
Structured relative-position masks: Toeplitz, GridRPE and Ripple
================================================================

A relative-position mask :math:`M_{ij} = f(p_i - p_j)` depends only on the offset between
a query position and a key position.  Such a matrix is never stored: it is a
:class:`~structattn.masks.Mask`, a linear operator whose product :math:`M X` costs
:math:`O(L \\log L)` (FFT) or :math:`O(L)` (summed-area tables) instead of
:math:`O(L^2)`.  This tutorial checks three of them against their dense matrices, uses
them inside masked attention, and measures the cost of a product against the length.

* :class:`~structattn.masks.Toeplitz` — 1-D sequences, :math:`M_{ij} = c_{i-j}`;
* :class:`~structattn.masks.GridRPE` — tokens on a 2-D (or d-D) grid,
  :math:`M_{ij} = f(\\Delta_1, \\Delta_2)`, optionally with special (CLS) tokens;
* :class:`~structattn.masks.Ripple` — a grid mask constant on square rings
  :math:`\\|\\Delta\\|_\\infty = r`, applied with summed-area tables.
"""

# %%
# Exactness against the dense mask
# --------------------------------
#
# Every mask has :meth:`~structattn.masks.Mask.to_dense` (the :math:`L \times L` matrix,
# for checks like this one) and :meth:`~structattn.masks.Mask.matmat` (the fast product).
# The two must agree to rounding in float64.

import time

import matplotlib.pyplot as plt
import numpy as np

import structattn as sa
from structattn.masks import Dense, GridRPE, Ripple, Toeplitz
from structattn.testing import relative_error

rng = np.random.default_rng(0)

L = 64
offsets = np.arange(-(L - 1), L)
toeplitz = Toeplitz(np.exp(-0.1 * np.abs(offsets)))  # c_k = exp(-0.1 |k|)

H = W = 8
d1, d2 = np.meshgrid(np.arange(-(H - 1), H), np.arange(-(W - 1), W), indexing="ij")
grid = GridRPE((H, W), np.exp(-0.3 * np.hypot(d1, d2)), num_special=1, special_value=0.5)

ripple = Ripple((H, W), [1.0, 0.6, 0.3, 0.1])  # rings 0, 1, 2 and a tail weight

masks = {"Toeplitz": toeplitz, "GridRPE (+1 CLS)": grid, "Ripple": ripple}
for name, mask in masks.items():
    X = rng.standard_normal((mask.shape[1], 16))
    err = relative_error(mask.matmat(X), mask.to_dense() @ X)
    print(f"{name:>17}: shape {mask.shape}, |M X - dense(M) X| / |.| = {err:.1e}")
    assert err < 1e-12

# %%
# The three masks as matrices.  The GridRPE mask of an 8 x 8 grid is block Toeplitz with
# Toeplitz blocks; its first row and column are the CLS token's (``special_value``).
# The ripple mask takes one value per ring around the query.

fig, axes = plt.subplots(1, 3, figsize=(10, 3.6), layout="constrained")
for ax, (name, mask) in zip(axes, masks.items(), strict=False):
    im = ax.imshow(mask.to_dense(), cmap="magma")
    ax.set_title(name)
    ax.set_xlabel("key")
    fig.colorbar(im, ax=ax, shrink=0.8)
axes[0].set_ylabel("query")

# %%
# Masked attention with a structured mask
# ---------------------------------------
#
# The mask multiplies the attention weights:
# :math:`\operatorname{rownormalize}(M \odot \exp(QK^\top/\sqrt d))\,V`.  Passing the
# operator or its dense matrix (wrapped as :class:`~structattn.masks.Dense`: a float array
# alone would be ambiguous) to :func:`~structattn.softmax_attention` gives the same output;
# with kernel attention (:func:`~structattn.kernel_attention`) the mask is applied through
# its fast product, without forming any :math:`L \times L` matrix.

Lg = grid.shape[0]
q, k, v = (0.5 * rng.standard_normal((Lg, 16)) for _ in range(3))
out_op = sa.softmax_attention(q, k, v, mask=grid)
out_dense = sa.softmax_attention(q, k, v, mask=Dense(grid.to_dense()))
print(f"softmax attention, operator vs dense mask: {relative_error(out_op, out_dense):.1e}")

phi = sa.PositiveRandomFeatures(dim=16, num_features=64, seed=0)
fast = sa.kernel_attention(q, k, v, phi, mask=grid)
Wk = grid.to_dense() * (phi.queries(q) @ phi.keys(k).T)
dense = (Wk / Wk.sum(axis=1, keepdims=True)) @ v
print(f"kernel attention, structured vs dense formula: {relative_error(fast, dense):.1e}")

# %%
# Cost against the length
# -----------------------
#
# Wall time of one product :math:`M X` with :math:`F = 32` columns, the structured path
# against a dense matrix product with the materialized mask (the dense matrix is built
# outside the timing).  The documentation build runs on a shared machine, so the absolute
# times are noisy; the slopes are the point: the dense product grows like :math:`L^2`.


def best_time(fn, repeats=5):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


F = 32
sides = [8, 16, 24, 32, 48]
lengths = [s * s for s in sides]
timing = {"Toeplitz": [], "Ripple (SAT)": [], "dense": []}
for s, n in zip(sides, lengths, strict=False):
    X = rng.standard_normal((n, F))
    t_mask = Toeplitz(np.exp(-0.1 * np.abs(np.arange(-(n - 1), n))))
    r_mask = Ripple((s, s), [1.0, 0.6, 0.3, 0.1], method="sat")
    D = r_mask.to_dense()
    timing["Toeplitz"].append(best_time(lambda m=t_mask, x=X: m.matmat(x)))
    timing["Ripple (SAT)"].append(best_time(lambda m=r_mask, x=X: m.matmat(x)))
    timing["dense"].append(best_time(lambda m=D, x=X: m @ x))

print(f"{'L':>6} " + " ".join(f"{name:>14}" for name in timing))
for i, n in enumerate(lengths):
    print(f"{n:>6} " + " ".join(f"{timing[name][i] * 1e3:>11.3f} ms" for name in timing))

fig, ax = plt.subplots(figsize=(6, 4.2))
for name, marker in zip(timing, "os^", strict=False):
    ax.loglog(lengths, timing[name], marker=marker, label=name)
ax.set_xlabel("sequence length $L$")
ax.set_ylabel("time of one product $MX$ (s)")
ax.set_title(f"Mask products, F = {F} columns")
ax.grid(True, which="both", alpha=0.3)
ax.legend()
fig.tight_layout()
