"""Training on the inversion's views: ``augment_batch`` and ``train(augment=...)``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from structattn.studies._vit_train import train
from structattn.studies.inversion import augment_batch, color_shift, jitter, sample_color_shift


def _batch(n=6, c=2, h=5, w=7, seed=0, dtype=torch.float64):
    return torch.rand((n, c, h, w), generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("limit", [0, 1, 3])
@pytest.mark.parametrize("probability", [0.0, 0.5, 1.0])
def test_augment_batch_is_a_per_image_roll_and_colour_shift(limit, probability):
    x = _batch(n=16)
    before = x.clone()
    out = augment_batch(x, jitter=limit, color_shift=(0.7, 0.4), probability=probability,
                        rng=torch.Generator().manual_seed(3))
    assert torch.equal(x, before)  # the input is not modified
    # replay the documented draws: 2n uniforms, then the colour shifts, then n Bernoullis
    gen = torch.Generator().manual_seed(3)
    u = torch.rand((2, 16), generator=gen, dtype=torch.float64)
    mu, sigma = sample_color_shift(16, 2, mean_width=0.7, log_std_width=0.4, rng=gen,
                                   dtype=x.dtype)
    keep = torch.rand(16, generator=gen, dtype=torch.float64) < probability
    for i in range(16):
        dy, dx = (min(int(np.floor(float(v) * (2 * limit + 1))), 2 * limit) - limit
                  for v in u[:, i])
        assert max(abs(dy), abs(dx)) <= limit
        want = color_shift(jitter(x[i], shifts=(dy, dx)), mu=mu[i], sigma=sigma[i])
        assert torch.equal(out[i], want if keep[i] else x[i])


def test_augment_batch_draws_cover_the_range_and_reproduce():
    x = torch.zeros((4000, 1, 9, 9))
    x[:, 0, 4, 4] = 1.0  # a single bright pixel: its position gives the roll
    gen = torch.Generator().manual_seed(0)
    out = augment_batch(x, jitter=2, color_shift=None, rng=gen)
    pos = out.reshape(4000, 81).argmax(1)
    dy, dx = pos // 9 - 4, pos % 9 - 4
    for d in (dy, dx):
        counts = torch.bincount(d + 2, minlength=5).double()
        assert counts.numel() == 5 and (counts / 4000 - 0.2).abs().max() < 0.03
    assert torch.equal(out.sum((1, 2, 3)), x.sum((1, 2, 3)))  # a roll is a permutation
    again = augment_batch(x, jitter=2, color_shift=None, rng=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    shifted = augment_batch(_batch(n=2000, c=1, h=2, w=2) * 0.0, jitter=0,
                            rng=torch.Generator().manual_seed(1))
    mu = shifted[:, 0, 0, 0]  # sigma · 0 + mu
    assert float(mu.min()) >= -1.0 and float(mu.max()) < 1.0 and float(mu.std()) > 0.5


def test_augment_batch_identity_cases_and_errors():
    x = _batch(dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(augment_batch(x, jitter=0, color_shift=None, rng=gen), x)
    assert torch.equal(augment_batch(x, jitter=2, probability=0.0, rng=gen), x)
    assert augment_batch(x, jitter=1, rng=gen).dtype == torch.float32
    with pytest.raises(TypeError, match="torch tensor"):
        augment_batch(x.numpy(), jitter=1, rng=gen)
    with pytest.raises(ValueError, match=r"\(n, C, H, W\)"):
        augment_batch(x[0], jitter=1, rng=gen)
    with pytest.raises(ValueError, match="probability"):
        augment_batch(x, jitter=1, probability=1.5, rng=gen)
    with pytest.raises(ValueError, match="jitter"):
        augment_batch(x, jitter=-1, rng=gen)
    with pytest.raises(ValueError, match="color_shift"):
        augment_batch(x, jitter=1, color_shift=(1.0,), rng=gen)
    with pytest.raises(TypeError, match="Generator"):
        augment_batch(x, jitter=1, rng=np.random.default_rng(0))


def _train(augment):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(25, 3))
    x = _batch(n=40, c=1, h=5, w=5, dtype=torch.float32)
    y = torch.arange(40) % 3

    def ce(m, xb, idx):
        return nn.functional.cross_entropy(m(xb), y[idx])

    log = train(model, x, ce, epochs=3, seed=5, lr=1e-2, batch_size=8, augment=augment)
    return model, log["losses"]


def test_train_augment_option():
    plain, loss_plain = _train(None)
    ident, loss_ident = _train(lambda xb, gen: xb)
    # the option's own generator leaves batch order and initialisation as without it
    assert loss_plain == loss_ident
    for a, b in zip(plain.parameters(), ident.parameters(), strict=True):
        assert torch.equal(a, b)
    seen = []

    def views(xb, gen):
        assert isinstance(gen, torch.Generator)
        out = augment_batch(xb, jitter=1, rng=gen)
        seen.append(out)
        return out

    aug1, loss1 = _train(views)
    assert len(seen) == 3 * 5 and not torch.equal(seen[0], seen[5])
    aug2, loss2 = _train(lambda xb, gen: augment_batch(xb, jitter=1, rng=gen))
    assert loss1 == loss2 and loss1 != loss_plain  # reproducible, and it did augment
    for a, b in zip(aug1.parameters(), aug2.parameters(), strict=True):
        assert torch.equal(a, b)
