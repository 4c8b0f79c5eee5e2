"""Capacity oracles: planted ranks, the row-shift (softmax) rank, Eckart–Young, free fits."""

from __future__ import annotations

import numpy as np
import pytest

from structattn.ranking import (
    best_de_fit,
    de_capacity,
    de_fit_errors,
    de_scores,
    fit_free_embeddings,
    mrr_at_k,
)

from ..conftest import convert, to_np, torch

BACKENDS = ("numpy", "torch")


def _softmax(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _planted(r, n=20, m=30, seed=0, ones_column=False):
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((n, r))
    V = rng.standard_normal((m, r))
    if ones_column:
        V[:, 0] = 1.0
    return U @ V.T


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_de_scores_matches_dense(backend, dtype):
    rng = np.random.default_rng(1)
    phi, psi = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((3, 7, 4))
    a, b = convert(backend, dtype, phi, psi)
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(to_np(de_scores(a, b, temperature=2.0)),
                               phi @ np.swapaxes(psi, -1, -2) / 2.0, atol=tol, rtol=tol)
    cos = to_np(de_scores(a, b, normalize=True))
    ref = (phi / np.linalg.norm(phi, axis=-1, keepdims=True)) @ np.swapaxes(
        psi / np.linalg.norm(psi, axis=-1, keepdims=True), -1, -2)
    np.testing.assert_allclose(cos, ref, atol=tol, rtol=tol)


def test_de_scores_errors():
    with pytest.raises(ValueError, match="embedding size d"):
        de_scores(np.ones((3, 4)), np.ones((5, 3)))
    with pytest.raises(ValueError, match="temperature"):
        de_scores(np.ones((3, 4)), np.ones((5, 4)), temperature=0.0)
    with pytest.raises(ValueError, match="target"):
        de_capacity(np.ones((3, 4)), target="logits")


@pytest.mark.parametrize("r", [1, 3, 7])
def test_capacity_of_planted_rank(r):
    S = _planted(r)
    assert de_capacity(S) == r
    assert de_capacity(S, target="softmax") == r
    # a per-query shift adds one to the exact rank, nothing to the softmax rank
    c = np.random.default_rng(5).standard_normal((20, 1))
    assert de_capacity(S + c) == r + 1
    assert de_capacity(S + c, target="softmax") == r
    # all-ones document direction in the row space: softmax needs one dimension less
    S1 = _planted(r, ones_column=True)
    assert de_capacity(S1) == r
    assert de_capacity(S1, target="softmax") == r - 1


def test_capacity_batched_and_torch():
    S = np.stack([_planted(2), _planted(5, seed=3)])
    np.testing.assert_array_equal(de_capacity(S), [2, 5])
    (St,) = convert("torch", "float32", S)
    np.testing.assert_array_equal(de_capacity(St), [2, 5])
    assert de_capacity(np.zeros((4, 6)), target="softmax") == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_best_fit_exact_at_capacity(backend):
    S = _planted(4)
    (St,) = convert(backend, "float64", S)
    phi, psi = best_de_fit(St, 4)
    assert tuple(phi.shape) == (20, 4) and tuple(psi.shape) == (30, 4)
    np.testing.assert_allclose(to_np(phi @ psi.T), S, atol=1e-10)
    S1 = _planted(4, ones_column=True) + np.random.default_rng(2).standard_normal((20, 1))
    (S1t,) = convert(backend, "float64", S1)
    phi, psi = best_de_fit(S1t, 3, target="softmax")
    np.testing.assert_allclose(_softmax(to_np(phi @ psi.T)), _softmax(S1), atol=1e-12)
    # more dimensions than min(n, m): zero columns
    phi, psi = best_de_fit(St[:3, :5], 8)
    assert tuple(phi.shape) == (3, 8)
    np.testing.assert_allclose(to_np(phi @ psi.T), S[:3, :5], atol=1e-10)


@pytest.mark.parametrize("target", ["scores", "softmax"])
def test_eckart_young(target):
    rng = np.random.default_rng(3)
    S = rng.standard_normal((2, 12, 9))
    T = S - S.mean(-1, keepdims=True) if target == "softmax" else S
    sv = np.linalg.svd(T, compute_uv=False)
    errs = de_fit_errors(S, target=target)
    for d in (1, 3, 8):
        phi, psi = best_de_fit(S, d, target=target)
        err = np.linalg.norm(phi @ np.swapaxes(psi, -1, -2) - T, axis=(-2, -1))
        # (the softmax target has rank 8: its d = 8 error is round-off, hence the atol)
        np.testing.assert_allclose(err, np.sqrt((sv[:, d:] ** 2).sum(-1)), rtol=1e-10,
                                   atol=1e-13)
        np.testing.assert_allclose(errs[:, d], err / np.linalg.norm(T, axis=(-2, -1)),
                                   rtol=1e-10, atol=1e-13)
        # no random rank-d DE does better than the truncated SVD
        for seed in range(3):
            g = np.random.default_rng(seed)
            P, Q = g.standard_normal((12, d)), g.standard_normal((9, d))
            assert np.linalg.norm(P @ Q.T - T[0]) >= err[0]
    assert errs[0, 0] == pytest.approx(1.0)
    assert np.all(np.diff(errs, axis=-1) <= 1e-15)


def test_best_fit_torch_gradient():
    rng = np.random.default_rng(4)
    S = torch.tensor(rng.standard_normal((6, 5)), requires_grad=True)
    phi, psi = best_de_fit(S, 2)
    (phi @ psi.T).sum().backward()
    assert S.grad is not None and torch.isfinite(S.grad).all()


def test_free_fit_reaches_teacher_at_softmax_capacity():
    rng = np.random.default_rng(0)
    S = rng.standard_normal((20, 30))
    d = de_capacity(S, target="softmax")
    assert d == 20
    fit = fit_free_embeddings(S, d, loss="listwise_kl", steps=20, seed=0)
    assert fit.losses[-1] < 1e-6
    student = fit.phi @ fit.psi.T
    top = S.argmax(-1)
    assert mrr_at_k(student, positives=top, k=10) == mrr_at_k(S, positives=top, k=10) == 1.0
    np.testing.assert_array_equal(np.argsort(-student, -1)[:, :10], np.argsort(-S, -1)[:, :10])


@pytest.mark.parametrize("loss", ["margin_mse", "softmax_ce", "mse"])
def test_free_fit_other_losses_decrease(loss):
    S = np.random.default_rng(1).standard_normal((8, 10))
    fit = fit_free_embeddings(S, 4, loss=loss, steps=30, optimizer="adam", lr=0.05, seed=1)
    assert fit.losses[-1] < fit.losses[0]
    again = fit_free_embeddings(S, 4, loss=loss, steps=30, optimizer="adam", lr=0.05, seed=1)
    np.testing.assert_array_equal(fit.phi, again.phi)  # deterministic given the seed
