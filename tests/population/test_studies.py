"""The pbt-attention and pbt-digits task studies (quick mode) and the training loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from structattn.population.train import train_population
from structattn.studies.tasks import get_task


def test_train_population_pbt_copies_and_explores():
    # members minimize (w - 3)²; lr decides progress, so PBT must copy the fast ones
    def loss(params, buffers, hp, batch):
        return ((params["w"] - batch) ** 2).sum()

    P = 8
    hp = {"lr": np.geomspace(1e-4, 1e-1, P)}
    params = {"w": torch.zeros(P, 2, dtype=torch.float64)}

    def fitness(prm, buf, h):
        return -((prm["w"] - 3.0) ** 2).sum(-1).numpy()

    prior = {"lr": ("loguniform", 1e-4, 1e-1)}
    for functorch_grad in (True, False):
        run = train_population(loss, params, hp, lambda s: torch.tensor(3.0, dtype=torch.float64),
                               fitness, steps=40, exploit_every=10, bottom_frac=0.25,
                               prior=prior, rng=0, functorch_grad=functorch_grad)
        assert len(run.history) == 4 and run.history[0]["copies"]
        for h in run.history[:-1]:
            for t, s in h["copies"].items():
                assert h["fitness"][s] > h["fitness"][t]
        assert np.all((run.hparams["lr"] >= 1e-4) & (run.hparams["lr"] <= 1e-1))
        ind = train_population(loss, params, hp, lambda s: torch.tensor(3.0, dtype=torch.float64),
                               fitness, steps=40, functorch_grad=functorch_grad)
        assert np.median(run.fitness) > np.median(ind.fitness)  # PBT lifts the median
    with pytest.raises(ValueError, match="prior"):
        train_population(loss, params, hp, lambda s: 3.0, fitness, steps=1, exploit_every=1)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pbt-attention", "pbt-digits"])
def test_task_quick(name):
    res = get_task(name).run(seeds=(0,), quick=True, out_dir=None, progress=False)
    assert res.records and "|" in res.summary
    for r in res.records:
        values = [v for k, v in r.items() if isinstance(v, float)]
        assert all(np.isfinite(values))
