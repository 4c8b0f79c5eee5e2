"""
Randomized attention estimators: error against budget
=====================================================

:mod:`structattn.estimators` holds estimators of softmax attention that spend a budget of
random samples instead of the :math:`O(L^2)` exact computation:

* **RA** — randomized attention (:func:`~structattn.estimators.randomized_attention`),
  per-query importance sampling, ``num_samples`` draws per query;
* **LARA** — linear randomized attention (:func:`~structattn.estimators.lara`),
  multiple importance sampling with ``num_landmarks`` shared proposals;
* **Performer** — positive random features (:class:`~structattn.PositiveRandomFeatures`
  in :func:`~structattn.kernel_attention`), ``num_features`` features;
* **cosFormer** (:func:`~structattn.estimators.cosformer`) — not an estimator of softmax
  but a different, exactly computed linear attention; it has no budget and appears as a
  horizontal line.

All are compared with exact softmax attention on the same inputs, and with uniform
attention (the mean of the values) as the trivial baseline.
"""

# %%
# Inputs and the reference
# ------------------------
#
# Two heads of length :math:`L = 128`, head dimension 32, queries and keys with standard
# deviation 0.5 (random-feature variance grows like :math:`e^{\|q + k\|^2}`).

import matplotlib.pyplot as plt
import numpy as np

import structattn as sa
from structattn.estimators import cosformer, lara, randomized_attention
from structattn.testing import relative_error

rng = np.random.default_rng(0)
q, k, v = rng.standard_normal((3, 1, 2, 128, 32)) * 0.5
v = v / 0.5
exact = sa.softmax_attention(q, k, v)
uniform = np.broadcast_to(v.mean(axis=-2, keepdims=True), v.shape)
base = relative_error(uniform, exact)
print(f"uniform attention: relative error {base:.3f}")

# %%
# Error against the budget
# ------------------------
#
# Mean relative error over two seeds for each budget.

budgets = [4, 8, 16, 32, 64]
seeds = range(2)
methods = {
    "RA (samples / query)": lambda m, s: randomized_attention(q, k, v, num_samples=m, seed=s),
    "LARA (landmarks)": lambda m, s: lara(q, k, v, num_landmarks=m, seed=s),
    "Performer (features)": lambda m, s: sa.kernel_attention(
        q, k, v, sa.PositiveRandomFeatures(dim=32, num_features=m, seed=s)),
}
errors = {
    name: [np.mean([relative_error(fn(m, s), exact) for s in seeds]) for m in budgets]
    for name, fn in methods.items()
}
cos_err = relative_error(cosformer(q, k, v), exact)

print(f"{'budget':>6} " + " ".join(f"{name:>22}" for name in errors))
for i, m in enumerate(budgets):
    print(f"{m:>6} " + " ".join(f"{errors[name][i]:>22.4f}" for name in errors))
print(f"cosFormer (no budget): relative error vs softmax {cos_err:.4f}")

fig, ax = plt.subplots(figsize=(6.4, 4.4))
for (name, e), marker in zip(errors.items(), "os^", strict=False):
    ax.loglog(budgets, e, marker=marker, label=name)
ax.axhline(cos_err, color="tab:red", ls="--", label="cosFormer (exact, not softmax)")
ax.axhline(base, color="k", ls=":", label="uniform attention")
ax.set_xlabel("budget (samples, landmarks or features)")
ax.set_ylabel("relative error vs softmax attention")
ax.set_title("Estimators of softmax attention, L = 128, d = 32")
ax.legend(fontsize=8)
ax.grid(True, which="both", alpha=0.3)
fig.tight_layout()
