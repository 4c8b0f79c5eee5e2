"""PBT exploit/explore, DvD diversity and CEM against their definitions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from structattn.population import (
    cem_update,
    dvd_diversity,
    pbt_explore,
    pbt_truncation,
    sample_prior,
)


@pytest.mark.parametrize("P", range(2, 7))
def test_truncation_brute_force_with_ties(P):
    for frac in (0.3, 0.5):
        n = math.floor(frac * P)
        if not 0 < n <= P / 2:
            with pytest.raises(ValueError, match="bottom_frac"):
                pbt_truncation(np.zeros(P), bottom_frac=frac, rng=0)
            continue
        for f in itertools.product(range(3), repeat=P):
            f = np.asarray(f, dtype=float)
            out = pbt_truncation(f, bottom_frac=frac, rng=1)
            tau = np.sort(f)[n]
            assert set(out) == {p for p in range(P) if f[p] < tau}
            assert all(f[s] >= tau and s not in out for s in out.values())
            assert len(out) <= n
            assert out == pbt_truncation(f, bottom_frac=frac, rng=1)  # seeded


def test_truncation_sources_uniform_and_errors():
    f = np.array([0.0, 1.0, 2.0, 3.0])
    counts = np.zeros(4)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        counts[pbt_truncation(f, bottom_frac=0.25, rng=rng)[0]] += 1
    assert counts[0] == 0 and np.all(np.abs(counts[1:] / 2000 - 1 / 3) < 0.05)
    for bad in (0.0, 0.1, 0.75, 1.0):
        with pytest.raises(ValueError, match="bottom_frac"):
            pbt_truncation(f, bottom_frac=bad)
    with pytest.raises(ValueError, match="NaN"):
        pbt_truncation([0.0, np.nan, 1.0, 2.0], bottom_frac=0.25)


PRIOR = {"lr": ("loguniform", 3e-5, 3e-3), "temp": ("uniform", 0.5, 2.0),
         "delay": ("choice", [1, 2, 3, 4, 5])}


def test_explore_resamples_within_prior():
    h = sample_prior(PRIOR, 8, rng=0)
    assert np.all((h["lr"] >= 3e-5) & (h["lr"] <= 3e-3))
    lr_log = np.log(sample_prior(PRIOR, 4000, rng=1)["lr"])
    assert abs(lr_log.mean() - np.log(3e-5 * 3e-3) / 2) < 0.1  # log-uniform: mean of logs
    targets = {0: 5, 3: 6}
    new = pbt_explore(h, targets, prior=PRIOR, rng=2)
    for name in PRIOR:
        untouched = [p for p in range(8) if p not in targets]
        np.testing.assert_array_equal(new[name][untouched], h[name][untouched])
    for t in targets:
        assert 3e-5 <= new["lr"][t] <= 3e-3 and 0.5 <= new["temp"][t] <= 2.0
        assert new["delay"][t] in (1, 2, 3, 4, 5)
        assert new["lr"][t] != h["lr"][t]
    assert h["lr"][0] != new["lr"][0]  # input not modified in place: compare copies
    np.testing.assert_array_equal(pbt_explore(h, targets, prior=PRIOR, rng=2)["lr"], new["lr"])


def test_explore_perturb_from_source_clipped():
    h = {"lr": np.array([1e-3, 2e-3, 3e-3, 1e-4])}
    new = pbt_explore(h, {0: 2, 1: 3}, prior={"lr": ("loguniform", 3e-5, 3e-3)},
                      perturb=(0.8, 1.2), rng=0)
    assert new["lr"][0] in (pytest.approx(2.4e-3), pytest.approx(3e-3))  # 3.6e-3 clipped
    assert new["lr"][1] in (pytest.approx(0.8e-4), pytest.approx(1.2e-4))
    with pytest.raises(ValueError, match="prior= to resample"):
        pbt_explore(h, [0])


def test_dvd_diversity_closed_form_and_properties():
    rng = np.random.default_rng(0)
    e = rng.standard_normal((2, 3))
    sq = np.sum((e[0] - e[1]) ** 2)
    c = np.exp(-sq / (2 * 1.7))
    assert dvd_diversity(e, scale=1.7) == pytest.approx(-np.log(1 - c**2), rel=1e-12)
    E = rng.standard_normal((5, 2, 3))
    flat = E.reshape(5, -1)
    D = np.sum((flat[:, None] - flat[None]) ** 2, axis=-1)
    direct = -np.linalg.slogdet(np.exp(-D / 2.0))[1]
    assert dvd_diversity(E) == pytest.approx(direct, rel=1e-10)
    assert dvd_diversity(E[::-1]) == pytest.approx(direct, rel=1e-10)
    assert dvd_diversity(E + 3.0) == pytest.approx(direct, rel=1e-10)
    same = np.stack([flat[0], flat[0], flat[1]])
    assert dvd_diversity(same) == math.inf
    t = torch.from_numpy(same)
    assert torch.isinf(dvd_diversity(t)) and not torch.isnan(dvd_diversity(t))
    x = torch.from_numpy(flat).requires_grad_(True)
    torch.autograd.gradcheck(lambda z: dvd_diversity(z, scale=2.0), (x,))
    with pytest.raises(ValueError, match="scale"):
        dvd_diversity(flat, scale=0.0)


def test_cem_update_hand_computed():
    mean, var = np.array([0.0, 1.0]), np.array([1.0, 1.0])
    elites = np.array([[1.0, 2.0], [3.0, 0.0], [2.0, 1.0]])
    fitness = np.array([5.0, 1.0, 3.0])  # ranking: row 0, row 2, row 1
    w = np.log(4 / np.array([1.0, 2.0, 3.0]))
    w /= w.sum()
    ranked = elites[[0, 2, 1]]
    m, v, noise = cem_update(mean, var, elites, fitness, noise=0.1)
    np.testing.assert_allclose(m, w @ ranked)
    np.testing.assert_allclose(v, w @ (ranked - mean) ** 2 / 3 + 0.1)
    assert noise == pytest.approx(0.95 * 0.1 + 0.05 * 1e-5)
    _, v2, _ = cem_update(mean, var, elites, fitness, noise=0.1, biased=False)
    np.testing.assert_allclose(v2, w @ (ranked - mean) ** 2 + 0.1)
    with pytest.raises(ValueError, match="fitness must have shape"):
        cem_update(mean, var, elites, fitness[:2], noise=0.1)
