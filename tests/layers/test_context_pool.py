"""ContextPool: row-stochastic pooling, limits, banded truncation bound, causality."""

from __future__ import annotations

import pytest
import torch

from structattn.layers import ContextPool, gaussian_pooling, gaussian_pooling_matrix
from structattn.testing import assert_close

D = 5


def make_pool(*, sigma_logit: float = 1.0, seed: int = 0, dtype=torch.float64,
              **kw) -> ContextPool:
    """Predictors with O(1) random weights; ``sigma_logit`` sets the mean support."""
    torch.manual_seed(seed)
    pool = ContextPool(D, **kw).to(dtype)
    with torch.no_grad():
        pool.predictor.weight.normal_(std=0.5)
        pool.predictor.bias.copy_(torch.tensor([0.0, sigma_logit]))
    return pool


def x_of(shape, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, D, generator=g, dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("truncation", [None, 2.0, 4.0])
def test_rows_sum_to_one_and_nonnegative(causal, truncation):
    pool = make_pool(causal=causal, truncation=truncation, max_sigma=3.0)
    P = pool.pooling_matrix(x_of((2, 30))).detach()
    assert torch.all(P >= 0)
    assert_close(P.sum(-1), torch.ones(2, 30, dtype=P.dtype), rtol=1e-14)
    if causal:
        assert torch.all(torch.triu(P, diagonal=1) == 0)


def test_pooling_matrix_matches_definition():
    pool = make_pool(max_sigma=3.0, truncation=None)
    x = x_of((12,))
    with torch.no_grad():
        h = torch.nn.functional.pad(x.T[None], (1, 1))
        a, r = pool.predictor(h)[0]
        m, sigma = torch.sigmoid(a), 3.0 * torch.sigmoid(r)
        i = torch.arange(12.0, dtype=torch.float64)
        W = m[None, :] * torch.exp(-((i[:, None] - i[None, :]) ** 2) / (2 * sigma[:, None] ** 2))
        assert_close(pool.pooling_matrix(x), W / W.sum(-1, keepdim=True), rtol=1e-13)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("truncation", [None, 1.0, 3.0])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_equals_operator(causal, truncation, dtype):
    pool = make_pool(causal=causal, truncation=truncation, max_sigma=2.5, dtype=dtype,
                     kernel_size=4 if causal else 3)
    x = x_of((2, 3, 17), dtype=dtype)  # extra leading dimension
    with torch.no_grad():
        got = pool(x)
        ref = pool.double().pooling_matrix(x.double()) @ x.double()
    assert got.dtype == dtype and got.shape == x.shape
    assert_close(got, ref, dtype="float64" if dtype == torch.float64 else "float32")


def test_band_wider_than_sequence_equals_dense():
    pool = make_pool(max_sigma=4.0, truncation=5.0)  # w = 20 > T - 1
    x = x_of((9,))
    with torch.no_grad():
        dense = pool.pooling_matrix(x, banded=False)
        assert_close(pool(x), dense @ x, rtol=1e-13)


@pytest.mark.parametrize("causal", [False, True])
def test_sigma_to_zero_is_identity(causal):
    pool = make_pool(sigma_logit=-60.0, causal=causal, max_sigma=3.0)  # sigma ~ 3e-26
    with torch.no_grad():
        pool.predictor.weight.zero_()
    x = x_of((2, 11))
    with torch.no_grad():
        assert torch.equal(pool.pooling_matrix(x), torch.eye(11, dtype=x.dtype).expand(2, 11, 11))
        assert torch.equal(pool(x), x)
    # sigma exactly 0 (underflow) stays the identity, not 0/0
    P = gaussian_pooling_matrix(torch.zeros(1, 6, dtype=torch.float64),
                                torch.zeros(1, 6, dtype=torch.float64), causal=causal)
    assert torch.equal(P[0], torch.eye(6, dtype=torch.float64))


def test_uniform_weights_infinite_sigma_give_global_mean():
    pool = make_pool(sigma_logit=40.0, max_sigma=1e7, truncation=None)
    with torch.no_grad():
        pool.predictor.weight.zero_()  # m_j = 1/2 for all j
    x = x_of((2, 10))
    with torch.no_grad():
        y = pool(x)
    assert_close(y, x.mean(-2, keepdim=True).expand_as(x), rtol=1e-10)


@pytest.mark.parametrize("k", [2.0, 3.0, 4.0])
@pytest.mark.parametrize("causal", [False, True])
def test_banded_vs_dense_within_tail_bound(k, causal):
    pool = make_pool(sigma_logit=3.0, max_sigma=3.0, truncation=k, causal=causal,
                     kernel_size=2 if causal else 3)
    x = x_of((2, 60))
    with torch.no_grad():
        Pb = pool.pooling_matrix(x)
        Pd = pool.pooling_matrix(x, banded=False)
        bound = pool.tail_bound(x)
        row_err = (Pb - Pd).abs().sum(-1)
        out_err = (pool(x) - Pd @ x).abs().amax(-1)
    eps = 1e-13  # rounding of the two computations
    assert torch.all(row_err <= bound * (1 + 1e-9) + eps), (row_err / bound).max()
    assert torch.all(out_err <= (bound * (1 + 1e-9) + eps) * x.abs().amax())
    # the truncation is real (w < T) and the bound is tight: within 10x on the worst row
    assert pool.half_width < 59 and float(row_err.max()) > 0
    assert float((row_err / bound).max()) > 0.1


def test_causality_bit_identical():
    pool = make_pool(causal=True, kernel_size=3, max_sigma=2.0, truncation=3.0)
    x = x_of((2, 20))
    with torch.no_grad():
        y = pool(x)
        for i in (0, 5, 13, 18):
            x2 = x.clone()
            x2[:, i + 1:] = x_of((2, 19 - i), seed=50 + i) * 4
            assert torch.equal(pool(x2)[:, :i + 1], y[:, :i + 1])


def test_noncausal_window_is_two_sided():
    pool = make_pool(max_sigma=2.0)
    P = pool.pooling_matrix(x_of((10,))).detach()
    assert float(torch.triu(P, diagonal=1).sum()) > 0


@pytest.mark.parametrize("half_width", [None, 2])
@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_weights_sigma_and_x(half_width, causal):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    log_m = torch.nn.functional.logsigmoid(
        torch.randn(2, 7, generator=g, dtype=torch.float64)).requires_grad_()
    sigma = (0.5 + torch.rand(2, 7, generator=g, dtype=torch.float64)).requires_grad_()

    def f(x, log_m, sigma):
        return gaussian_pooling(x, log_m, sigma, half_width=half_width, causal=causal)

    assert torch.autograd.gradcheck(f, (x, log_m, sigma))


def test_gradcheck_module():
    pool = make_pool(max_sigma=2.0, truncation=2.0)
    x = x_of((8,)).requires_grad_()
    w = pool.predictor.weight.detach().clone().requires_grad_()

    def f(x, w):
        return torch.func.functional_call(pool, {"predictor.weight": w}, (x,))

    assert torch.autograd.gradcheck(f, (x, w), fast_mode=True)
