"""Oracles of the Plug-In Inversion driver (spec plug_in_inversion.md §4.5–4.7)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch import nn

from structattn.studies.inversion import InversionStep, invert_class
from structattn.studies.inversion._driver import _adam_update

N = 8  # native size; step = 1, growth border 0 with way=1


def _linear(classes=3, channels=1, seed=0, scale=0.3):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(channels * N * N, classes)).double()
    with torch.no_grad():
        model[1].weight.mul_(scale / model[1].weight.std())
    return model


_PLAIN = {"native_size": N, "channels": 1, "ensemble": 1, "stages": [N], "jitter": 0,
          "color_shift": None, "way": 0}


@pytest.mark.parametrize("seed", [0, 1])
def test_convex_model_reaches_the_box_constrained_optimum(seed):
    """Linear-softmax classifier, no augmentation: CE is convex in x, L-BFGS-B is global.

    Weights of std 0.05 keep the optimum's target probability near 0.7: with much larger
    weights the gradient decays by orders of magnitude during the run and Adam's second
    moment (beta2 = 0.99) shrinks the steps before the box corner is reached.
    """
    model, target = _linear(seed=seed, scale=0.05), 1
    W = model[1].weight.detach().numpy()
    b = model[1].bias.detach().numpy()

    def ce(v):
        z = W @ v + b
        zmax = z.max()
        lse = zmax + np.log(np.exp(z - zmax).sum())
        p = np.exp(z - lse)
        grad = W.T @ (p - np.eye(len(z))[target])
        return lse - z[target], grad

    ref = minimize(ce, np.full(N * N, 0.5), jac=True, method="L-BFGS-B",
                   bounds=[(0.0, 1.0)] * (N * N))
    probs = []

    def record(step: InversionStep) -> None:
        with torch.no_grad():
            probs.append(float(torch.softmax(model(step.image), -1)[0, target]))

    x = invert_class(model, target, steps=400, callback=record, **_PLAIN)
    final = ce(x.reshape(-1).numpy())[0]
    assert x.shape == (1, N, N) and x.dtype == torch.float64
    assert abs(final - ref.fun) < 1e-3, (final, ref.fun)
    assert len(probs) == 400
    tail = np.diff(probs[-100:])
    assert np.all(tail >= -1e-12)  # non-decreasing over the cosine-annealed tail


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_small_lr_increases_the_target_monotonically(seed):
    """Linear classifier, small lr: every update raises the target logit (the target's
    log-probability for a full classifier; the raw logit when only the target row of W is
    non-zero, so that CE is a decreasing function of that logit alone)."""
    model, target = _linear(classes=4, seed=seed), seed % 4
    logp = []
    invert_class(model, target, steps=150, lr=1e-3, seed=seed, callback=lambda s: logp.append(
        float(torch.log_softmax(model(s.image), -1)[0, target].detach())), **_PLAIN)
    assert np.all(np.diff(logp) > 0)
    with torch.no_grad():
        keep = torch.zeros_like(model[1].weight)
        keep[target] = 1.0
        model[1].weight.mul_(keep)
    logit = []
    invert_class(model, target, steps=150, lr=1e-3, seed=seed, callback=lambda s: logit.append(
        float(model(s.image)[0, target].detach())), **_PLAIN)
    assert np.all(np.diff(logit) > 0)


class _CircularPool(nn.Module):
    """Global average pool of a circular convolution: invariant to cyclic shifts."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 6, 3, padding=1, padding_mode="circular").double()
        self.head = nn.Linear(6, 5).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv(x)).mean(dim=(-2, -1)))


def test_jitter_does_not_change_a_shift_invariant_model():
    model = _CircularPool()
    runs = {}
    for lim in (0, 3):
        losses = []
        x = invert_class(model, [1, 4], native_size=16, channels=2, ensemble=2, steps=6,
                         stages=[6, 10, 16], way=2, jitter=lim, zoom=False, seed=7,
                         callback=lambda s, out=losses: out.append(s.loss.clone()))
        runs[lim] = (torch.stack(losses), x)
    assert runs[0][0].shape == (3 * 6, 2)  # 3 stages x 6 steps, 2 targets
    torch.testing.assert_close(runs[3][0], runs[0][0], rtol=0, atol=1e-10)
    torch.testing.assert_close(runs[3][1], runs[0][1], rtol=0, atol=1e-9)


def test_runs_are_bit_reproducible_and_seeded():
    model = _CircularPool().float()
    kw = {"native_size": 16, "channels": 2, "ensemble": 2, "steps": 2}
    a = invert_class(model, [0, 3], seed=11, **kw)
    b = invert_class(model, [0, 3], seed=11, **kw)
    c = invert_class(model, [0, 3], seed=12, **kw)
    assert a.shape == (2, 2, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    one = invert_class(model, 3, seed=11, **kw)
    assert one.shape == (2, 16, 16)


def test_batched_targets_are_independent_objectives():
    """T targets in one batch: each canvas follows exactly its own single-target run
    (pad 0 so the first canvas is the initial draw; no jitter or colour shift, whose
    draws would sit at other positions of the random stream)."""
    model = _linear(classes=5)
    kw = dict(_PLAIN, steps=30, ensemble=2)
    both = invert_class(model, [2, 4], **kw)
    alone = invert_class(model, 2, **kw)
    torch.testing.assert_close(both[0], alone, rtol=0, atol=1e-12)


def test_adam_update_matches_torch_adam():
    torch.manual_seed(0)
    x = torch.rand(3, 4, dtype=torch.float64)
    y = x.clone().requires_grad_(True)
    opt = torch.optim.Adam([y], lr=0.01, betas=(0.5, 0.99), eps=1e-8, foreach=False)
    m1, m2 = torch.zeros_like(x), torch.zeros_like(x)
    for t in range(1, 6):
        g = torch.randn(3, 4, dtype=torch.float64)
        y.grad = g.clone()
        opt.step()
        _adam_update(x, g, m1, m2, t, 0.01, (0.5, 0.99))
    torch.testing.assert_close(x, y.detach(), rtol=0, atol=1e-15)


def test_model_is_left_unchanged_and_mode_restored():
    model = _linear()
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    invert_class(model, 0, native_size=N, channels=1, ensemble=2, steps=3)
    assert model.training
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters(), strict=True))
    assert all(p.grad is None for p in model.parameters())


def test_invert_class_errors():
    model = _linear(classes=3)
    kw = {"native_size": N, "channels": 1, "steps": 1}
    with pytest.raises(ValueError, match="classes > 3"):
        invert_class(model, 3, **kw)
    with pytest.raises(ValueError, match="target"):
        invert_class(model, -1, **kw)
    with pytest.raises(ValueError, match="target"):
        invert_class(model, [], **kw)
    with pytest.raises(ValueError, match="native_size >= 8"):
        invert_class(model, 0, native_size=4, channels=1)
    with pytest.raises(ValueError, match="stages"):
        invert_class(model, 0, stages=[N + 1], **kw)
    with pytest.raises(ValueError, match="jitter"):
        invert_class(model, 0, jitter=-1, **kw)
    with pytest.raises(ValueError, match="clip"):
        invert_class(model, 0, clip=(1.0, 0.0), **kw)
    with pytest.raises(ValueError, match="color_shift"):
        invert_class(model, 0, color_shift=(1.0,), **kw)
    with pytest.raises(ValueError, match="lr"):
        invert_class(model, 0, lr=0.0, **kw)
