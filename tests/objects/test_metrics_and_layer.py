"""Ranking metrics on hand-built distance matrices; the SlotAttention reference layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from structattn import ranking
from structattn.layers.slot_attention import SlotAttention
from structattn.objects import hits_at_k, inverted_attention, mrr

from ..conftest import to_np


def test_metrics_are_the_ranking_ones():
    assert hits_at_k is ranking.hits_at_k and mrr is ranking.mrr


def test_metrics_hand_built_distances():
    # row 0: true distance smallest -> rank 1; row 1: two smaller -> rank 3;
    # row 2: tie with another entry -> the true pair comes first (rank 1)
    D = np.array([[0.1, 0.5, 0.7],
                  [0.2, 0.9, 0.3],
                  [0.4, 0.4, 0.4]])
    assert mrr(D, lower_is_better=True) == pytest.approx((1 + 1 / 3 + 1) / 3)
    np.testing.assert_allclose(mrr(D, lower_is_better=True, reduction="none"), [1, 1 / 3, 1])
    assert hits_at_k(D, 1, lower_is_better=True) == pytest.approx(2 / 3)
    assert hits_at_k(D, 3, lower_is_better=True) == pytest.approx(1.0)


def test_metrics_match_authors_lexsort():
    """The C-SWM/HOWM eval loop: prepend the true distance, stable lexsort, rank of index 0."""
    rng = np.random.default_rng(0)
    D = rng.integers(0, 4, size=(30, 30)).astype(float)  # many ties
    aug = np.concatenate([np.diag(D)[:, None], D], axis=1)
    ranks = np.array([int(np.flatnonzero(np.lexsort((np.arange(31), row)) == 0)[0]) + 1
                      for row in aug])
    assert mrr(D, lower_is_better=True) == pytest.approx(np.mean(1.0 / ranks))
    for k in (1, 5):
        assert hits_at_k(D, k, lower_is_better=True) == pytest.approx(np.mean(ranks <= k))


# ----------------------------------------------------------------- SlotAttention layer
def _layer(seed=0, **kw):
    torch.manual_seed(seed)
    return SlotAttention(8, 3, **kw).double()


def test_slot_attention_reference_loop():
    m = _layer(iterations=2, input_dim=5)
    x = torch.randn(2, 7, 5, dtype=torch.float64)
    s0 = m.initial_slots((2,), generator=torch.Generator().manual_seed(1))
    out, w = m(x, slots=s0, return_weights=True)
    # the same computation written out with the dense inverted-attention formula
    xk = m.norm_inputs(x)
    k, v = m.to_k(xk), m.to_v(xk)
    s = s0
    for _ in range(2):
        q = m.to_q(m.norm_slots(s))
        A = torch.softmax(k @ q.transpose(-1, -2) / np.sqrt(8), dim=-1) + 1e-8
        A = A / A.sum(-2, keepdim=True)
        s = m.gru((A.transpose(-1, -2) @ v).reshape(-1, 8), s.reshape(-1, 8)).reshape(2, 3, 8)
        s = s + m.mlp(m.norm_mlp(s))
    torch.testing.assert_close(out, s, atol=1e-12, rtol=0)
    torch.testing.assert_close(w, A, atol=1e-12, rtol=0)
    assert out.shape == (2, 3, 8) and w.shape == (2, 7, 3)


def test_slot_attention_dense_operator():
    m = _layer(3, iterations=1)
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    s0 = m.initial_slots((2,), generator=torch.Generator().manual_seed(2))
    At = m.dense_operator(x, s0)
    torch.testing.assert_close(At.sum(-1), torch.ones(2, 3, dtype=torch.float64))
    U = At @ m.to_v(m.norm_inputs(x))  # the first step's update, then GRU + MLP
    s = m.gru(U.reshape(-1, 8), s0.reshape(-1, 8)).reshape(2, 3, 8)
    torch.testing.assert_close(m(x, slots=s0), s + m.mlp(m.norm_mlp(s)), atol=1e-12, rtol=0)


def test_slot_attention_permutation_properties():
    m = _layer(1)
    x = torch.randn(4, 9, 8, dtype=torch.float64)
    s0 = m.initial_slots((4,), generator=torch.Generator().manual_seed(0))
    out = m(x, slots=s0)
    ps, pi = torch.randperm(3), torch.randperm(9)
    torch.testing.assert_close(m(x, slots=s0[:, ps]), out[:, ps], atol=1e-12, rtol=0)
    torch.testing.assert_close(m(x[:, pi], slots=s0), out, atol=1e-12, rtol=0)


def test_slot_attention_seeded_batch_dims_and_grad():
    m = _layer(2)
    x = torch.randn(2, 3, 6, 8, dtype=torch.float64, requires_grad=True)
    a = m(x, generator=torch.Generator().manual_seed(5))
    b = m(x, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert a.shape == (2, 3, 3, 8)
    a.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert m.to_q.weight.grad is not None


def test_slot_attention_gradcheck_attention_step():
    q, k, v = (torch.randn(s, dtype=torch.float64, requires_grad=True)
               for s in ((3, 4), (5, 4), (5, 2)))
    assert torch.autograd.gradcheck(
        lambda a, b, c: inverted_attention(a, b, c, scale=0.5), (q, k, v))


def test_slot_attention_errors():
    m = _layer()
    with pytest.raises(ValueError, match="num_slots"):
        SlotAttention(8, 0)
    with pytest.raises(ValueError, match="inputs must have shape"):
        m(torch.randn(2, 5, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match="slots must have shape"):
        m(torch.randn(2, 5, 8, dtype=torch.float64), slots=torch.randn(2, 4, 8,
                                                                        dtype=torch.float64))
    with pytest.raises(TypeError, match="dtype"):
        m(torch.randn(2, 5, 8))
    assert to_np(m(torch.randn(1, 5, 8, dtype=torch.float64),
                   generator=torch.Generator().manual_seed(0))).shape == (1, 3, 8)
