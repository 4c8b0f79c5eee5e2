"""
Training small models with FLASH and KernelAttention layers
===========================================================

:mod:`structattn.layers` holds ``torch.nn.Module`` layers built on the library's
operators.  This tutorial trains two tiny classifiers on the real handwritten digits of
scikit-learn (:func:`structattn.studies.digits.load_digits_split`), reading each 8 x 8
image as a sequence of 8 row tokens:

* :class:`~structattn.layers.KernelAttention` — multi-head attention with positive
  random features (:class:`~structattn.PositiveRandomFeatures`), linear in the length;
* :class:`~structattn.layers.FLASH` — the gated attention unit with chunked
  quadratic-plus-linear attention (one chunk here: the sequence is short).

Both are compared with the same model without attention (row tokens are mean-pooled
directly, so the model cannot relate rows to each other) and with chance accuracy.
"""

# %%
# Data and models
# ---------------

import matplotlib.pyplot as plt
import numpy as np
import torch

from structattn import PositiveRandomFeatures
from structattn.layers import FLASH, KernelAttention
from structattn.studies.digits import load_digits_split

torch.set_num_threads(1)  # tiny models: threads cost more than they save
split = load_digits_split(seed=0)
x_train, x_test = split.x_train[:, 0], split.x_test[:, 0]  # (n, 8, 8): 8 tokens of 8 pixels
y_train, y_test = split.y_train, split.y_test
print(f"train {tuple(x_train.shape)}, test {tuple(x_test.shape)}, "
      f"pixel range [{float(x_train.min()):.1f}, {float(x_train.max()):.1f}], "
      f"classes {torch.bincount(y_train).tolist()}")

D = 32


class RowModel(torch.nn.Module):
    """Embed the 8 row tokens, mix them with ``mixer`` (or not), mean-pool, classify."""

    def __init__(self, mixer: torch.nn.Module | None, residual: bool):
        super().__init__()
        self.embed = torch.nn.Linear(8, D)
        self.pos = torch.nn.Parameter(0.1 * torch.randn(8, D))
        self.mixer, self.residual = mixer, residual
        self.head = torch.nn.Linear(D, 10)

    def forward(self, x):
        h = self.embed(x) + self.pos
        if self.mixer is not None:
            h = h + self.mixer(h) if self.residual else self.mixer(h)
        return self.head(h.mean(dim=1))


def make(name: str) -> RowModel:
    torch.manual_seed(0)
    if name == "KernelAttention":
        phi = PositiveRandomFeatures(dim=D // 4, num_features=32, seed=0)
        return RowModel(KernelAttention(D, 4, phi), residual=True)
    if name == "FLASH":
        # FLASH adds its own residual connection and normalization
        return RowModel(FLASH(D, chunk_size=8, qk_dim=16), residual=False)
    return RowModel(None, residual=False)


# %%
# Training
# --------
#
# Adam on minibatches of 128 images for 120 steps (about 11 epochs); the test accuracy
# is measured every 10 steps.

steps, batch = 120, 128
curves, acc = {}, {}
for name in ("KernelAttention", "FLASH", "no attention"):
    model = make(name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    losses, accs = [], []
    for step in range(steps):
        idx = torch.randint(len(y_train), (batch,), generator=gen)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 10 == 9:
            with torch.no_grad():
                accs.append((model(x_test).argmax(-1) == y_test).float().mean().item())
    curves[name], acc[name] = (losses, accs), accs[-1]
    print(f"{name:>15}: mean train loss of the last 10 steps {np.mean(losses[-10:]):.3f}, "
          f"test accuracy {accs[-1]:.3f}")
chance = torch.bincount(y_test).max().item() / len(y_test)
print(f"{'chance':>15}: test accuracy {chance:.3f} (most frequent class)")

fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
for name, (losses, accs) in curves.items():
    axes[0].plot(losses, label=name)
    axes[1].plot(np.arange(10, steps + 1, 10), accs, marker="o", ms=3, label=name)
axes[1].axhline(chance, color="k", ls=":", label="chance")
axes[0].set_xlabel("step")
axes[0].set_ylabel("training cross-entropy (minibatch)")
axes[0].set_yscale("log")
axes[1].set_xlabel("step")
axes[1].set_ylabel("test accuracy")
axes[1].legend()
for ax in axes:
    ax.grid(True, alpha=0.3)
