"""Loss oracles: zeros, shift invariance, closed forms (light-splade, binary KL), gradients."""

from __future__ import annotations

import numpy as np
import pytest

from structattn.ranking import listwise_kl, margin_mse, softmax_ce

from ..conftest import convert, to_np, torch

BACKENDS = ("numpy", "torch")


def _data(seed=0, shape=(4, 6)):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape), rng.standard_normal(shape)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pool", ["mean", "max", "lse"])
def test_zero_and_shift_invariance(backend, pool):
    s, t = _data()
    (S, T) = convert(backend, "float64", s, t)
    assert float(margin_mse(S, S, pool=pool)) == pytest.approx(0.0, abs=1e-15)
    assert float(listwise_kl(S, S)) == pytest.approx(0.0, abs=1e-15)
    shift = np.random.default_rng(9).standard_normal((4, 1))
    (Sh, Th) = convert(backend, "float64", s + shift, t - 2 * shift)
    for f in (lambda a, b: margin_mse(a, b, pool=pool),
              lambda a, b: listwise_kl(a, b, temperature=0.7)):
        np.testing.assert_allclose(float(f(Sh, Th)), float(f(S, T)), rtol=1e-12)
    np.testing.assert_allclose(float(softmax_ce(Sh)), float(softmax_ce(S)), rtol=1e-12)


def test_margin_mse_closed_forms():
    s, t = _data(1, (5, 4))
    ds, dt = s[:, :1] - s[:, 1:], t[:, :1] - t[:, 1:]
    e = (ds - dt) ** 2
    np.testing.assert_allclose(margin_mse(s, t), e.mean(), rtol=1e-13)
    np.testing.assert_allclose(margin_mse(s, t, pool="max", reduction="none"), e.max(-1),
                               rtol=1e-13)
    np.testing.assert_allclose(margin_mse(s, t, pool="lse", lse_temperature=0.3,
                                          reduction="none"),
                               0.3 * np.log(np.exp(e / 0.3).mean(-1)), rtol=1e-12)
    lse = margin_mse(s, t, pool="lse", lse_temperature=1e-3, reduction="none")
    np.testing.assert_allclose(lse, e.max(-1), atol=2e-3)  # -> max as tau -> 0
    assert np.all(lse >= e.mean(-1)) and np.all(lse <= e.max(-1) + 1e-15)
    # k = 1: the light-splade triplet formula MSE(s+ - s-, t+ - t-)
    np.testing.assert_allclose(margin_mse(s[:, :2], t[:, :2]),
                               np.mean(((s[:, 0] - s[:, 1]) - (t[:, 0] - t[:, 1])) ** 2),
                               rtol=1e-13)
    # positive elsewhere: the same as moving it to the front
    np.testing.assert_allclose(margin_mse(s[:, ::-1], t[:, ::-1], positive_index=3),
                               margin_mse(s[:, [0, 3, 2, 1]], t[:, [0, 3, 2, 1]]), rtol=1e-13)
    one = np.maximum(0.0, dt - ds) ** 2
    np.testing.assert_allclose(margin_mse(s, t, one_sided=True), one.mean(), rtol=1e-13)
    # one-sided is 0 whenever every student margin is at least the teacher's
    wide = t.copy()
    wide[:, 0] += 10.0
    assert float(margin_mse(wide, t, one_sided=True)) == 0.0
    assert float(margin_mse(wide, t)) > 0.0


def test_listwise_kl_closed_forms():
    s, t = _data(2, (7, 2))
    p, q = _sigmoid(t[:, 0] - t[:, 1]), _sigmoid(s[:, 0] - s[:, 1])
    binary = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
    np.testing.assert_allclose(listwise_kl(s, t, reduction="none"), binary, rtol=1e-12)
    rev = q * np.log(q / p) + (1 - q) * np.log((1 - q) / (1 - p))
    np.testing.assert_allclose(listwise_kl(s, t, direction="student||teacher",
                                           reduction="none"), rev, rtol=1e-12)
    tau = 2.5
    np.testing.assert_allclose(listwise_kl(s, t, temperature=tau, scale_by_t2=True),
                               tau**2 * listwise_kl(s / tau, t / tau), rtol=1e-12)
    assert float(listwise_kl(s, t, reduction="sum")) == pytest.approx(binary.sum(), rel=1e-12)


def test_softmax_ce_closed_form_and_in_batch():
    s, _ = _data(3, (5, 5))
    lse = np.log(np.exp(s).sum(-1))
    np.testing.assert_allclose(softmax_ce(s, reduction="none"), lse - s[:, 0], rtol=1e-12)
    diag = softmax_ce(s, positive_index=np.arange(5), temperature=0.5, reduction="none")
    np.testing.assert_allclose(diag, np.log(np.exp(s / 0.5).sum(-1)) - np.diag(s) / 0.5,
                               rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_numpy_torch_parity(dtype):
    s, t = _data(4, (2, 3, 5))
    tol = 1e-12 if dtype == "float64" else 1e-5
    for f in (lambda a, b: margin_mse(a, b, pool="lse", one_sided=True, reduction="none"),
              lambda a, b: listwise_kl(a, b, temperature=0.5, reduction="none"),
              lambda a, b: softmax_ce(a, positive_index=2, reduction="none")):
        ref = f(*convert("numpy", dtype, s, t))
        got = f(*convert("torch", dtype, s, t))
        assert got.dtype == getattr(torch, dtype)
        np.testing.assert_allclose(to_np(got), ref, rtol=tol, atol=tol)


def test_gradients_gradcheck():
    s, t = _data(5, (3, 4))
    S = torch.tensor(s, requires_grad=True)
    T = torch.tensor(t, requires_grad=True)
    fns = [
        lambda a, b: margin_mse(a, b),
        lambda a, b: margin_mse(a, b, pool="lse", lse_temperature=0.5),
        lambda a, b: listwise_kl(a, b, temperature=0.7),
        lambda a, b: listwise_kl(a, b, direction="student||teacher"),
        lambda a, b: softmax_ce(a, positive_index=np.array([0, 2, 3])) + 0 * b.sum(),
    ]
    for f in fns:
        assert torch.autograd.gradcheck(f, (S, T))
    # closed-form gradients: margin-MSE w.r.t. the student, KL w.r.t. student logits
    S.grad = None
    margin_mse(S, T, reduction="sum").backward()
    diff = (s[:, :1] - s[:, 1:]) - (t[:, :1] - t[:, 1:])
    g = np.zeros_like(s)
    g[:, 0] = 2 * diff.sum(-1) / 3
    g[:, 1:] = -2 * diff / 3
    np.testing.assert_allclose(S.grad.numpy(), g, rtol=1e-12)
    S.grad = None
    listwise_kl(S, T.detach(), reduction="sum").backward()
    ps = np.exp(s) / np.exp(s).sum(-1, keepdims=True)
    pt = np.exp(t) / np.exp(t).sum(-1, keepdims=True)
    np.testing.assert_allclose(S.grad.numpy(), ps - pt, rtol=1e-12, atol=1e-15)


def test_loss_errors():
    s, t = _data()
    with pytest.raises(ValueError, match="pool"):
        margin_mse(s, t, pool="median")
    with pytest.raises(ValueError, match="positive_index"):
        margin_mse(s, t, positive_index=6)
    with pytest.raises(ValueError, match="same candidates"):
        listwise_kl(s, t[:, :3])
    with pytest.raises(ValueError, match="direction"):
        listwise_kl(s, t, direction="both")
    with pytest.raises(ValueError, match="at least 2 candidates"):
        softmax_ce(s[:, :1])
    with pytest.raises(TypeError, match="numpy arrays or both torch"):
        listwise_kl(s, torch.tensor(t))
