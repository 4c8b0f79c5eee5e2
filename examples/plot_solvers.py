"""
Attention as an optimisation problem: sparse maps, consistent layers, VARS
==========================================================================

:mod:`structattn.solvers` computes attention weights as solutions of optimisation
problems:

* **simplex maps** — softmax, :func:`~structattn.solvers.sparsemax` and
  :func:`~structattn.solvers.entmax` are all projections of the scores onto the
  probability simplex with different regularisers; the last two give exact zeros;
* **consistent multi-layer attention** (:func:`~structattn.solvers.consistent_attention`)
  — attention maps on a fine and a coarse grid that agree under pooling;
* **VARS** (:func:`~structattn.solvers.vars_attention`) — attention read as the sparse
  reconstruction of the values from input-dependent templates.
"""

# %%
# Softmax, sparsemax and entmax
# -----------------------------
#
# For two scores :math:`(t, 0)` the first weight is a sigmoid under softmax but reaches
# exactly 0 and 1 at finite :math:`t` under sparsemax (at :math:`|t| = 1`) and
# 1.5-entmax.

import matplotlib.pyplot as plt
import numpy as np

import structattn as sa
from structattn.solvers import consistent_attention, entmax, softmax, sparsemax, vars_attention
from structattn.solvers.attention_maps import SimplexAttention
from structattn.testing import relative_error

t = np.linspace(-3, 3, 241)
x = np.stack([t, np.zeros_like(t)], axis=-1)
maps = {"softmax": softmax(x), "sparsemax": sparsemax(x), "1.5-entmax": entmax(x, 1.5)}
for name, p in maps.items():
    assert np.allclose(p.sum(-1), 1.0)
    zero = t[np.isclose(p[:, 0], 0.0, atol=0.0)]
    print(f"{name:>10}: first weight is exactly 0 for t <= "
          f"{zero.max():.3f}" if zero.size else f"{name:>10}: never exactly 0 on [-3, 3]")

fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
for name, p in maps.items():
    axes[0].plot(t, p[:, 0], label=name)
axes[0].set_xlabel("$t$ (scores $(t, 0)$)")
axes[0].set_ylabel("weight of the first entry")
axes[0].legend()
axes[0].grid(True, alpha=0.3)

# %%
# As attention maps, :class:`~structattn.solvers.attention_maps.SimplexAttention` applies
# the map to each row of :math:`S = QK^\top/\sqrt d`.  Sparsemax and entmax rows keep a
# few keys and give the others exactly zero weight; ``mapping="softmax"`` reproduces
# :func:`~structattn.softmax_attention`.

rng = np.random.default_rng(0)
q, k, v = 2.0 * rng.standard_normal((3, 1, 32, 8))
for mapping in ("softmax", "sparsemax", "entmax"):
    P = SimplexAttention(mapping).matrix(q, k)
    print(f"{mapping:>9}: fraction of exact zeros {float((P == 0).mean()):.3f}, "
          f"rows sum to 1: {bool(np.allclose(P.sum(-1), 1))}")
y_soft = SimplexAttention("softmax")(q, k, v)
assert relative_error(y_soft, sa.softmax_attention(q, k, v)) < 1e-12
axes[1].imshow(SimplexAttention("sparsemax").matrix(q, k)[0], cmap="viridis")
axes[1].set_title("sparsemax attention matrix (exact zeros in dark blue)")
axes[1].set_xlabel("key")
axes[1].set_ylabel("query")

# %%
# Consistent multi-layer attention
# --------------------------------
#
# Two score maps, on an 8 x 8 grid and on the 4 x 4 grid of its 2 x 2 sum-pools.  Two
# independent softmaxes disagree: pooling the fine map does not give the coarse one.
# :func:`~structattn.solvers.consistent_attention` solves the entropy-regularised problem
# with the constraint that they agree, in closed form (nested logit) or by Newton's
# method on the dual; both carry a feasibility certificate.


def pool(p, s=2):
    h, w = p.shape
    return p.reshape(h // s, s, w // s, s).sum(axis=(1, 3))


t1, t2 = 2.0 * rng.standard_normal((8, 8)), 2.0 * rng.standard_normal((4, 4))
p1_ind = softmax(t1.ravel()).reshape(8, 8)
p2_ind = softmax(t2.ravel()).reshape(4, 4)
print(f"independent softmaxes: max |pool(p1) - p2| = {np.abs(pool(p1_ind) - p2_ind).max():.3f}")
cf = consistent_attention([t1, t2], [2])
nt = consistent_attention([t1, t2], [2], method="newton")
print(f"closed form: feasibility {cf.feasibility:.1e}, gap {cf.gap:.1e}")
print(f"Newton     : feasibility {nt.feasibility:.1e}, {nt.n_iter} iterations, "
      f"max difference to the closed form {np.abs(nt.maps[0] - cf.maps[0]).max():.1e}")
assert np.abs(pool(np.asarray(cf.maps[0])) - np.asarray(cf.maps[1])).max() < 1e-12

fig, axes = plt.subplots(1, 4, figsize=(12, 3.2), layout="constrained")
panels = (("independent fine", p1_ind), ("independent coarse", p2_ind),
          ("consistent fine", cf.maps[0]), ("consistent coarse", cf.maps[1]))
for ax, (name, p) in zip(axes, panels, strict=False):
    ax.imshow(np.asarray(p), cmap="magma")
    ax.set_title(name, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])

# %%
# VARS
# ----
#
# With the exact exponential kernel, :math:`\lambda = 0` and one step, VARS *is* softmax
# attention.  With random features and more steps it becomes a different operator — a
# reconstruction of the values — so its distance to softmax attention measures how far
# the operator moves, not an approximation error.

q, k, v = 0.5 * rng.standard_normal((3, 1, 64, 8))
exact = sa.softmax_attention(q, k, v)
y1 = vars_attention(q, k, v, features="exact_kernel", lam=0.0, steps=1)
print(f"VARS (exact kernel, one step) vs softmax: {relative_error(y1, exact):.1e}")
assert relative_error(y1, exact) < 1e-12
steps = [1, 2, 4, 8]
dist = [relative_error(vars_attention(q, k, v, features="random", num_features=64, seed=0,
                                      lam=0.05, steps=n), exact) for n in steps]
for n, e in zip(steps, dist, strict=False):
    print(f"VARS (random features, lam=0.05), {n} steps: distance to softmax {e:.3f}")
