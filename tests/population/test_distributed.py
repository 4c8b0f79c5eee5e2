"""PBT with the population sharded over dask workers equals the single-process loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("distributed")

from structattn.population import train_population, train_population_dask

PRIOR = {"lr": ("loguniform", 1e-3, 1e-1), "shift": ("uniform", -1.0, 1.0)}


def _problem(P: int = 6):
    g = torch.Generator().manual_seed(0)
    params = {"w": torch.randn(P, 5, generator=g, dtype=torch.float64)}
    buffers = {"target": torch.randn(P, 5, generator=g, dtype=torch.float64)}
    hparams = {"lr": np.geomspace(1e-3, 1e-1, P), "shift": np.linspace(-1, 1, P)}
    data = torch.randn(8, 5, generator=g, dtype=torch.float64)

    def member_loss(prm, buf, hp, batch):
        r = prm["w"] - buf["target"] - hp["shift"]
        return (r**2).sum() + ((batch @ prm["w"]) ** 2).mean() * 0.01

    def batches(step):
        return data * (1 + 0.01 * step)

    def fitness(prm, buf, hp):
        with torch.no_grad():
            return -torch.vmap(member_loss, in_dims=(0, 0, 0, None))(
                prm, buf, hp, data).numpy()

    return member_loss, params, hparams, batches, fitness, buffers


@pytest.mark.slow
def test_sharded_pbt_equals_single_process_pbt():
    member_loss, params, hparams, batches, fitness, buffers = _problem()
    kw = dict(steps=9, exploit_every=3, buffers=buffers, bottom_frac=0.34, prior=PRIOR,
              rng=7)
    serial = train_population(member_loss, params, hparams, batches, fitness, **kw)
    spread = train_population_dask(member_loss, params, hparams, batches, fitness,
                                   workers=2, **kw)
    copies = [h["copies"] for h in serial.history]
    assert any(copies), "the test must exercise copies (across shards)"
    assert any(src < 3 <= dst or dst < 3 <= src for c in copies for dst, src in c.items())
    assert [h["copies"] for h in spread.history] == copies
    torch.testing.assert_close(spread.params["w"], serial.params["w"], rtol=0, atol=1e-12)
    torch.testing.assert_close(spread.buffers["target"], serial.buffers["target"])
    for name in hparams:
        np.testing.assert_array_equal(spread.hparams[name], serial.hparams[name])
    np.testing.assert_allclose(spread.fitness, serial.fitness, rtol=0, atol=1e-12)


def test_refactored_loop_is_the_plain_adam_loop():
    """train_population without exploit == P independent vectorized Adam steps."""
    from structattn.population import adam_step

    member_loss, params, hparams, batches, fitness, buffers = _problem(3)
    run = train_population(member_loss, params, hparams, batches, fitness, steps=5,
                           buffers=buffers)
    p, state = dict(params), None
    hpt = {"shift": torch.as_tensor(hparams["shift"])}
    for step in range(5):
        g = torch.vmap(torch.func.grad(member_loss), in_dims=(0, 0, 0, None))(
            p, buffers, hpt, batches(step))
        p, state = adam_step(p, g, state, lr=torch.as_tensor(hparams["lr"]))
    torch.testing.assert_close(run.params["w"], p["w"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="prior"):
        train_population_dask(member_loss, params, hparams, batches, fitness, steps=2,
                              exploit_every=1)
