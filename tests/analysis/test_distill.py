"""Oracles for attention_kl and ssta_attention_loss (spec ssta.md §3, items 2, 3, 7)."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from structattn.analysis import attention_kl, ssta_attention_loss  # noqa: E402


def _maps(shape, seed=0):
    s = np.random.default_rng(seed).standard_normal(shape)
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_kl_zero_on_equal_and_nonnegative():
    P = _maps((2, 3, 8, 8))
    assert attention_kl(P, P) == pytest.approx(0.0, abs=1e-15)
    R = _maps((2, 3, 8, 8), seed=1)
    per_row = attention_kl(P, R, reduction="none")
    assert per_row.shape == (2, 3, 8) and np.all(per_row >= 0)
    brute = (P * np.log(P / R)).sum(-1)
    np.testing.assert_allclose(per_row, brute, rtol=1e-12)
    np.testing.assert_allclose(attention_kl(P, R), brute.mean(), rtol=1e-12)
    np.testing.assert_allclose(attention_kl(P, R, reduction="sum"), brute.sum(), rtol=1e-12)
    np.testing.assert_allclose(attention_kl(P, R, direction="reverse"),
                               (R * np.log(R / P)).sum(-1).mean(), rtol=1e-12)


@pytest.mark.parametrize("p,q", [(0.3, 0.6), (0.99, 0.01), (0.5, 0.5), (1e-3, 0.7)])
def test_kl_two_token_closed_form(p, q):
    T = np.array([[[p, 1 - p], [q, 1 - q]]])
    S = np.array([[[q, 1 - q], [p, 1 - p]]])
    row0 = p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    row1 = q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))
    got = attention_kl(T, S, reduction="none")
    np.testing.assert_allclose(got[0], [row0, row1], rtol=1e-12, atol=1e-16)
    sym = attention_kl(T, S, direction="symmetric")
    np.testing.assert_allclose(sym, attention_kl(S, T, direction="symmetric"), rtol=1e-14)
    np.testing.assert_allclose(sym, (row0 + row1) / 2, rtol=1e-12, atol=1e-16)


def test_temperature_logits_masks_and_floor():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((2, 5, 5)) * 3
    B = rng.standard_normal((2, 5, 5)) * 3
    pa = np.exp(A) / np.exp(A).sum(-1, keepdims=True)
    pb = np.exp(B) / np.exp(B).sum(-1, keepdims=True)
    np.testing.assert_allclose(attention_kl(A, B, from_logits=True), attention_kl(pa, pb),
                               rtol=1e-12)
    # temperature on logits == temperature on probabilities; τ² scaling
    t = 2.5
    ref = attention_kl(A / t, B / t, from_logits=True) * t * t
    np.testing.assert_allclose(attention_kl(A, B, from_logits=True, temperature=t), ref,
                               rtol=1e-12)
    np.testing.assert_allclose(attention_kl(pa, pb, temperature=t), ref, rtol=1e-12)
    np.testing.assert_allclose(attention_kl(pa, pb, temperature=t, scale_by_t2=False),
                               ref / t**2, rtol=1e-12)
    big = attention_kl(A, B, from_logits=True, temperature=1e7, scale_by_t2=False)
    assert 0 <= big < 1e-12
    # masked target entries (0) contribute nothing; -inf logits are masked keys
    T = pa.copy()
    T[..., 1] = 0.0
    T /= T.sum(-1, keepdims=True)
    support = np.where(T > 0, T * np.log(np.where(T > 0, T, 1) / pb), 0).sum(-1).mean()
    np.testing.assert_allclose(attention_kl(T, pb), support, rtol=1e-12)
    Am = A.copy()
    Am[..., 1] = -np.inf
    np.testing.assert_allclose(attention_kl(Am, B, from_logits=True), support, rtol=1e-12)
    # a zero in the student where the target has mass costs about p·log(p/floor)
    S = np.array([[[1.0, 0.0]]])
    T2 = np.array([[[0.5, 0.5]]])
    z = 1 + 1e-6
    expected = 0.5 * math.log(0.5 / (1 / z)) + 0.5 * math.log(0.5 / (1e-6 / z))
    np.testing.assert_allclose(attention_kl(T2, S, floor=1e-6), expected, rtol=1e-12)


@pytest.mark.parametrize("direction", ["forward", "reverse", "symmetric"])
def test_kl_gradients_and_parity(direction):
    P, R = _maps((2, 6, 6)), _maps((2, 6, 6), seed=3)
    ref = attention_kl(P, R, direction=direction, block_rows=4)
    got = attention_kl(torch.tensor(P), torch.tensor(R), direction=direction, block_rows=4)
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.item(), ref, rtol=1e-12)
    got32 = attention_kl(torch.tensor(P, dtype=torch.float32),
                         torch.tensor(R, dtype=torch.float32), direction=direction)
    np.testing.assert_allclose(got32.item(), ref, rtol=1e-5)
    A = torch.randn(2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    B = torch.randn(2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    A.requires_grad_(True)
    B.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: attention_kl(a, b, from_logits=True, temperature=1.7,
                                  direction=direction), (A, B))


def test_ssta_loss_oracles():
    P = _maps((2, 4, 9, 9), seed=4)
    assert ssta_attention_loss(P, P, P, teacher_head=1, assistant_head=1,
                               student_heads=(1, 1)) == pytest.approx(0.0, abs=1e-15)
    S, T, A = _maps((2, 4, 9, 9), 5), _maps((2, 3, 9, 9), 6), _maps((2, 2, 9, 9), 7)
    loss, (t0, a0) = ssta_attention_loss(S, T, A, teacher_head=0, assistant_head=1,
                                         weights=(0.5, 2.0), return_terms=True)
    np.testing.assert_allclose(t0, 0.5 * attention_kl(T[:, 0], S[:, 0]), rtol=1e-14)
    np.testing.assert_allclose(a0, 2.0 * attention_kl(A[:, 1], S[:, 1]), rtol=1e-14)
    np.testing.assert_allclose(loss, t0 + a0, rtol=1e-14)
    _, (t1, a1) = ssta_attention_loss(S, T, A, teacher_head=2, assistant_head=1,
                                      weights=(0.5, 2.0), return_terms=True)
    assert a1 == a0 and t1 != t0  # swapping the teacher head changes only its term
    same = np.repeat(S[:, :1], 4, axis=1)  # H identical student heads
    ded = ssta_attention_loss(same, T, A, teacher_head=1, assistant_head=0)
    np.testing.assert_allclose(ssta_attention_loss(same, T, A, teacher_head=1,
                                                   assistant_head=0, assignment="all"),
                               ded, rtol=1e-13)
    np.testing.assert_allclose(ssta_attention_loss(same, T, A, teacher_head=1,
                                                   assistant_head=0, assignment="mean"),
                               ded, rtol=1e-13)
    only_ta = ssta_attention_loss(S, None, A, assistant_head=1)
    np.testing.assert_allclose(only_ta, attention_kl(A[:, 1], S[:, 1]), rtol=1e-14)
    sym = ssta_attention_loss(S, T, None, teacher_head=2, direction="symmetric")
    np.testing.assert_allclose(sym, attention_kl(T[:, 2], S[:, 0], direction="symmetric"))
    St = torch.tensor(S, requires_grad=True)
    lt = ssta_attention_loss(St, torch.tensor(T), torch.tensor(A), teacher_head=0,
                             assistant_head=1, weights=(0.5, 2.0), assignment="all")
    np.testing.assert_allclose(lt.item(), ssta_attention_loss(
        S, T, A, teacher_head=0, assistant_head=1, weights=(0.5, 2.0), assignment="all"),
        rtol=1e-12)
    lt.backward()
    assert St.grad.abs().sum() > 0


def test_bad_inputs():
    P = _maps((2, 3, 4, 4))
    with pytest.raises(ValueError, match="same shape"):
        attention_kl(P, P[:1])
    with pytest.raises(TypeError, match="both"):
        attention_kl(P, torch.tensor(P))
    with pytest.raises(ValueError, match="direction"):
        attention_kl(P, P, direction="backward")
    with pytest.raises(ValueError, match="temperature"):
        attention_kl(P, P, temperature=0.0)
    with pytest.raises(ValueError, match="floor"):
        attention_kl(P, P, floor=0.0)
    with pytest.raises(ValueError, match="reduction"):
        attention_kl(P, P, reduction="batchmean")
    with pytest.raises(ValueError, match="NaN"):
        attention_kl(P * np.nan, P)
    with pytest.raises(ValueError, match="assignment"):
        ssta_attention_loss(P, P, P, assignment="some")
    with pytest.raises(ValueError, match="teacher_head"):
        ssta_attention_loss(P, P, P, teacher_head=3)
    with pytest.raises(ValueError, match="student_heads"):
        ssta_attention_loss(P, P, P, student_heads=(0, 5))
    with pytest.raises(ValueError, match="weights"):
        ssta_attention_loss(P, P, P, weights=(1.0, -1.0))
    with pytest.raises(ValueError, match="give teacher_maps"):
        ssta_attention_loss(P, None, None)
    with pytest.raises(ValueError, match="logits"):
        ssta_attention_loss(P, P, P, assignment="mean", from_logits=True)
