"""
Analysing the attention heads of a tiny vision transformer
==========================================================

:mod:`structattn.analysis` measures what attention heads do: how spread out their maps
are (:func:`~structattn.analysis.map_entropy`), how far on the image they look
(:func:`~structattn.analysis.mean_attention_distance`) and how much the model needs each
of them (:func:`~structattn.analysis.head_importance`, by gradient or ablation).

The model is :class:`~structattn.layers.tiny_vit.TinyViT` — 2 layers of 4 heads on the
2 x 2 patches of scikit-learn's real 8 x 8 handwritten digits
(:func:`structattn.studies.digits.load_digits_split`), trained here for a few seconds.
"""

# %%
# Training the model
# ------------------

import matplotlib.pyplot as plt
import numpy as np
import torch

from structattn.analysis import head_importance, map_entropy, mean_attention_distance
from structattn.layers.tiny_vit import TinyViT
from structattn.studies.digits import load_digits_split

torch.set_num_threads(1)  # a tiny model: threads cost more than they save
split = load_digits_split(seed=0)
x_train, y_train, x_test, y_test = split.x_train, split.y_train, split.x_test, split.y_test

depth, heads = 2, 4
torch.manual_seed(0)
model = TinyViT(8, 2, 32, depth, heads, 10)  # 16 patches + CLS, exact softmax attention
opt = torch.optim.Adam(model.parameters(), lr=3e-3)
gen = torch.Generator().manual_seed(0)
for _ in range(150):
    idx = torch.randint(len(y_train), (128,), generator=gen)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
    opt.step()
model.eval()
with torch.no_grad():
    logits, maps = model(x_test, return_attention=True)
acc = (logits.argmax(-1) == y_test).float().mean().item()
chance = torch.bincount(y_test).max().item() / len(y_test)
print(f"test accuracy {acc:.3f} (chance: {chance:.3f}); maps per layer: {tuple(maps[0].shape)}")

# %%
# Entropy and distance of every head
# ----------------------------------
#
# Normalized entropy is 1 for uniform rows and 0 for one-hot rows; the mean attention
# distance is in units of the image side (patch centres in the unit square), CLS
# excluded.  Both are averaged over the test images and the query rows.

P = [m.double().numpy() for m in maps]  # (B, H, 17, 17) per layer
entropy = np.array([np.asarray(map_entropy(p, normalized=True)).mean(axis=0) for p in P])
distance = np.array([np.asarray(mean_attention_distance(p, grid=(4, 4))).mean(axis=0)
                     for p in P])
for layer in range(depth):
    print(f"layer {layer}: normalized entropy {np.round(entropy[layer], 3)}, "
          f"mean distance {np.round(distance[layer], 3)}")

# %%
# Head importance
# ---------------
#
# Ablation importance: the increase of the test loss when one head is switched off
# (``head_gate`` set to 0 for that head).  A head with importance near zero could be
# pruned at no cost on this data.


def loss_fn(out, y):
    return torch.nn.functional.cross_entropy(out, y, reduction="none")


importance = head_importance(model, (x_test, y_test), loss_fn, num_layers=depth,
                             num_heads=heads, method="ablation")
print("loss increase when a head is removed:\n", np.round(importance.numpy(), 3))

fig, axes = plt.subplots(1, 4, figsize=(14, 3.4), layout="constrained")
for ax, (name, values) in zip(axes[:3], (("normalized entropy", entropy),
                                         ("mean attention distance", distance),
                                         ("ablation importance", importance.numpy())),
                          strict=False):
    im = ax.imshow(values, cmap="viridis")
    ax.set_title(name, fontsize=10)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_yticks(range(depth))
    fig.colorbar(im, ax=ax, shrink=0.7)
    for (i, j), val in np.ndenumerate(values):
        ax.text(j, i, f"{val:.2f}", ha="center", va="center", color="w", fontsize=8)
# where the CLS token of the most important last-layer head looks, for one test digit
h = int(np.argmax(importance.numpy()[-1]))
axes[3].imshow(x_test[0, 0], cmap="gray_r", extent=(0, 8, 8, 0))
axes[3].imshow(P[-1][0, h, 0, 1:].reshape(4, 4), cmap="magma", alpha=0.6, extent=(0, 8, 8, 0))
axes[3].set_title(f"CLS attention, layer {depth - 1} head {h}\n(digit {int(y_test[0])})",
                  fontsize=10)
axes[3].axis("off")
