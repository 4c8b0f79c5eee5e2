"""Stacked parameters, per-member Adam (unit-lr trick), VectorizedLinear."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from structattn.population import VectorizedLinear, adam_step, stack_params, unstack_params


def test_stack_unstack_roundtrip_numpy_and_modules():
    members = [{"w": np.full((2, 3), p, float), "b": np.arange(3.0) + p} for p in range(4)]
    st = stack_params(members)
    assert st["w"].shape == (4, 2, 3)
    back = unstack_params(st)
    for a, b in zip(members, back, strict=True):
        np.testing.assert_array_equal(a["w"], b["w"])
    mods = [nn.Linear(3, 2) for _ in range(3)]
    st = stack_params(mods)
    assert st["weight"].shape == (3, 2, 3)
    torch.testing.assert_close(st["bias"][1], mods[1].bias.detach())
    with pytest.raises(ValueError, match="at least one"):
        stack_params([])
    with pytest.raises(ValueError, match="different shapes"):
        stack_params([{"w": np.zeros(2)}, {"w": np.zeros(3)}])


@pytest.mark.parametrize("P", [1, 4])
def test_unit_lr_adam_equals_separate_adams(P):
    torch.manual_seed(0)
    lrs = torch.logspace(-3, -1, P, dtype=torch.float64)
    init = torch.randn(P, 5, dtype=torch.float64)
    targets = torch.randn(P, 5, dtype=torch.float64)

    def loss(w, t):
        return ((w - t) ** 2 * torch.arange(1, 6)).sum() + (w**4).sum() * 0.1

    solo = []
    for p in range(P):
        w = init[p].clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=float(lrs[p]))
        for _ in range(100):
            opt.zero_grad()
            loss(w, targets[p]).backward()
            opt.step()
        solo.append(w.detach())
    params, state = {"w": init.clone().requires_grad_(True)}, None
    for _ in range(100):
        g = torch.func.vmap(torch.func.grad(loss))(params["w"], targets)
        params, state = adam_step(params, {"w": g}, state, lr=lrs if P > 1 else float(lrs[0]))
    assert state["t"] == 100
    torch.testing.assert_close(params["w"].detach(), torch.stack(solo), rtol=0, atol=1e-12)


def test_adam_numpy_matches_torch_and_rejects_bad_input():
    rng = np.random.default_rng(1)
    p, g = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    lr = np.array([0.1, 0.01, 0.001])
    a, state_a = adam_step({"x": p}, {"x": g}, None, lr=lr)
    b, state_b = adam_step({"x": torch.from_numpy(p)}, {"x": torch.from_numpy(g)}, None,
                      lr=torch.from_numpy(lr))
    np.testing.assert_allclose(a["x"], b["x"].numpy(), atol=1e-15)
    assert state_a["t"] == state_b["t"] == 1
    # first Adam step: lr_p · g / (|g| + eps) per member
    np.testing.assert_allclose(p - a["x"], lr[:, None] * g / (np.abs(g) + 1e-8), rtol=1e-12)
    with pytest.raises(ValueError, match="lr must"):
        adam_step({"x": p}, {"x": g}, None, lr=np.ones(2))
    with pytest.raises(ValueError, match="betas"):
        adam_step({"x": p}, {"x": g}, None, lr=0.1, betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="keys"):
        adam_step({"x": p}, {"y": g}, None, lr=0.1)


def test_vectorized_linear_sum_not_mean():
    torch.manual_seed(0)
    P, B = 3, 7
    layer = VectorizedLinear(P, 4, 2, dtype=torch.float64)
    x = torch.randn(P, B, 4, dtype=torch.float64)
    y = torch.randn(P, B, 2, dtype=torch.float64)
    per_member = ((layer(x) - y) ** 2).mean(dim=(1, 2))
    (P * per_member.mean()).backward()
    g_sum = layer.weight.grad.clone()
    layer.weight.grad = None
    per_member = ((layer(x) - y) ** 2).mean(dim=(1, 2))
    per_member.mean().backward()
    g_mean = layer.weight.grad.clone()
    for p in range(P):
        solo = nn.Linear(4, 2, dtype=torch.float64)
        with torch.no_grad():
            solo.weight.copy_(layer.weight[p].T)
            solo.bias.copy_(layer.bias[p, 0])
        ((solo(x[p]) - y[p]) ** 2).mean().backward()
        torch.testing.assert_close(g_sum[p], solo.weight.grad.T, rtol=0, atol=1e-12)
        torch.testing.assert_close(g_mean[p] * P, solo.weight.grad.T, rtol=0, atol=1e-12)
    bound = 4**-0.5
    assert layer.weight.abs().max() <= bound and layer.weight[0].std() > 0.1 * bound
    assert not torch.equal(layer.weight[0], layer.weight[1])
    assert layer(torch.randn(P, 2, 5, 4, dtype=torch.float64)).shape == (P, 2, 5, 2)
    with pytest.raises(ValueError, match="x must have shape"):
        layer(torch.randn(P + 1, 4, dtype=torch.float64))
