"""Simplex maps: simplex membership, projections, special cases, certificates, gradients."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from structattn.solvers import ConvergenceWarning, entmax, softmax, sparsemax

from ..conftest import convert, to_np

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(20240611)
X = RNG.standard_normal((5, 8)) * 2.0  # rows without ties (continuous draws)
ALPHAS = (1.0, 1.3, 1.5, 2.0, 3.0)


def brute_force_projection(x: np.ndarray) -> np.ndarray:
    """Euclidean projection onto the simplex by enumerating every support (n ≤ 6)."""
    n = x.size
    best, best_dist = None, np.inf
    for size in range(1, n + 1):
        for support in itertools.combinations(range(n), size):
            s = list(support)
            tau = (x[s].sum() - 1.0) / size
            p = np.zeros(n)
            p[s] = x[s] - tau
            if np.all(p >= 0) and np.sum((p - x) ** 2) < best_dist:
                best, best_dist = p, np.sum((p - x) ** 2)
    return best


def entmax_certificate(x: np.ndarray, p: np.ndarray, alpha: float) -> tuple[float, float]:
    """KKT of max <x,p> + H_α(p) over Δ: one τ on the support, (α-1)x ≤ τ off it.

    Returns (spread of τ_i = (α-1)x_i - p_i^{α-1} over the support, worst violation off
    the support).  Computed from p alone (independent of the solver's τ).
    """
    support = p > 0
    tau_i = (alpha - 1.0) * x[support] - p[support] ** (alpha - 1.0)
    tau = tau_i.mean()
    off = (alpha - 1.0) * x[~support] - tau
    return float(np.ptp(tau_i)), float(max(off.max(initial=-np.inf), 0.0))


# ------------------------------------------------------------------ simplex
@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("alpha", ALPHAS)
def test_outputs_on_simplex(backend, dtype, alpha):
    (x,) = convert(backend, dtype, X)
    p = entmax(x, alpha)
    assert type(p) is type(x) and p.dtype == x.dtype and p.shape == x.shape
    p = to_np(p)
    tol = 1e-12 if dtype == "float64" else 1e-5
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=tol)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("alpha", ALPHAS)
def test_float32_matches_float64(backend, alpha):
    (x32,) = convert(backend, "float32", X)
    p64 = entmax(X, alpha)
    np.testing.assert_allclose(to_np(entmax(x32, alpha)), p64, atol=1e-5)


def test_half_precision_is_computed_in_float32_and_cast_back():
    x16 = X.astype(np.float16)
    p = entmax(x16, 1.3)
    assert p.dtype == np.float16
    np.testing.assert_allclose(p.astype(np.float64), entmax(x16.astype(np.float64), 1.3),
                               atol=2e-3)
    pb = sparsemax(torch.as_tensor(X, dtype=torch.bfloat16))
    assert pb.dtype == torch.bfloat16
    np.testing.assert_allclose(pb.double().numpy(), sparsemax(X), atol=2e-2)


# ------------------------------------------------------------- projections
def test_sparsemax_is_euclidean_projection():
    for n in range(1, 7):
        for _ in range(10):
            x = RNG.standard_normal(n) * RNG.choice([0.3, 1.0, 3.0])
            np.testing.assert_allclose(sparsemax(x), brute_force_projection(x), atol=1e-12)


def test_sparsemax_large_offset_is_shift_invariant():
    np.testing.assert_allclose(sparsemax(X + 1e6), sparsemax(X), atol=1e-9)


# ---------------------------------------------------------- special cases
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_alpha_one_and_two_are_softmax_and_sparsemax(backend):
    (x,) = convert(backend, "float64", X)
    np.testing.assert_array_equal(to_np(entmax(x, 1)), to_np(softmax(x)))
    np.testing.assert_array_equal(to_np(entmax(x, 2.0)), to_np(sparsemax(x)))
    ref = np.exp(X) / np.exp(X).sum(-1, keepdims=True)
    np.testing.assert_allclose(to_np(softmax(x)), ref, rtol=1e-13)


def test_alpha_to_one_approaches_softmax_linearly():
    e1 = np.abs(entmax(X, 1.001) - softmax(X)).max()
    e2 = np.abs(entmax(X, 1.0001) - softmax(X)).max()
    assert e1 < 5e-3
    assert 5 < e1 / e2 < 20  # O(α - 1)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_exact_forms_equal_bisection(backend):
    (x,) = convert(backend, "float64", X)
    err15 = np.abs(to_np(entmax(x, 1.5)) - to_np(entmax(x, 1.5, method="bisect"))).max()
    err2 = np.abs(to_np(sparsemax(x)) - to_np(entmax(x, 2.0, method="bisect"))).max()
    assert err15 <= 1e-10 and err2 <= 1e-10, (err15, err2)


# -------------------------------------------------------------- certificates
@pytest.mark.parametrize("alpha", [1.3, 1.5, 2.0, 3.0])
def test_entmax_kkt_certificate(alpha):
    for row in X:
        p = entmax(row, alpha)
        np.testing.assert_allclose(p.sum(), 1.0, atol=1e-13)
        spread, violation = entmax_certificate(row, p, alpha)
        assert spread <= 1e-9 and violation <= 1e-12, (spread, violation)


# --------------------------------------------------------- entmax package
def test_agreement_with_entmax_package():
    ent = pytest.importorskip("entmax")
    x = RNG.standard_normal((50, 12)) * 3.0
    xt = torch.as_tensor(x)
    np.testing.assert_allclose(sparsemax(x), ent.sparsemax(xt, dim=-1).numpy(), atol=1e-6)
    np.testing.assert_allclose(entmax(x, 1.5), ent.entmax15(xt, dim=-1).numpy(), atol=1e-6)
    for alpha in (1.25, 1.5, 2.0, 2.5):
        ref = ent.entmax_bisect(xt, alpha=alpha, dim=-1, n_iter=60).numpy()
        np.testing.assert_allclose(entmax(x, alpha, method="bisect"), ref, atol=1e-6)
    np.testing.assert_allclose(entmax(x, 1.5, axis=0), ent.entmax15(xt, dim=0).numpy(),
                               atol=1e-6)


# -------------------------------------------------------------- backends
@pytest.mark.parametrize("alpha", ALPHAS)
def test_numpy_torch_parity(alpha):
    x3 = RNG.standard_normal((2, 3, 6))
    for axis in (0, 1, -1):
        pn = entmax(x3, alpha, axis=axis)
        pt = entmax(torch.as_tensor(x3), alpha, axis=axis)
        np.testing.assert_allclose(pt.numpy(), pn, atol=1e-14)


@settings(max_examples=40, deadline=None)
@given(
    x=arrays(np.float64, array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5),
             elements=st.floats(-20, 20, allow_nan=False, allow_infinity=False)),
    axis_seed=st.integers(0, 100),
    alpha=st.sampled_from([1.0, 1.2, 1.5, 2.0, 2.7]),
)
def test_hypothesis_shapes_and_axes(x, axis_seed, alpha):
    axis = axis_seed % (2 * x.ndim) - x.ndim
    p = entmax(x, alpha, axis=axis)
    assert p.shape == x.shape
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=axis), 1.0, atol=1e-12)
    moved = entmax(np.moveaxis(x, axis, -1), alpha)
    np.testing.assert_allclose(np.moveaxis(p, axis, -1), moved, atol=1e-15)
    np.testing.assert_allclose(to_np(entmax(torch.as_tensor(x), alpha, axis=axis)), p,
                               atol=1e-13)


# -------------------------------------------------------------- gradients
MAPS = {
    "softmax": softmax,
    "sparsemax": sparsemax,
    "entmax15": lambda x, axis=-1: entmax(x, 1.5, axis=axis),
    "entmax13": lambda x, axis=-1: entmax(x, 1.3, axis=axis),
}
MAP_ALPHA = {"softmax": 1.0, "sparsemax": 2.0, "entmax15": 1.5, "entmax13": 1.3}


def support_margin(x: np.ndarray, p: np.ndarray, alpha: float) -> float:
    """min |(α-1)x_i - τ| over all entries: the distance to a support change."""
    tau = np.mean((alpha - 1.0) * x[p > 0] - p[p > 0] ** (alpha - 1.0))
    return float(np.min(np.abs((alpha - 1.0) * x - tau)))


@pytest.mark.parametrize("name", list(MAPS))
def test_gradcheck_and_gradgradcheck(name):
    f, alpha = MAPS[name], MAP_ALPHA[name]
    x = torch.tensor(X[:3, :6], requires_grad=True)
    if alpha > 1:  # inputs away from support changes (ties are absent: continuous draws)
        for row in X[:3, :6]:
            assert support_margin(row, f(row), alpha) > 1e-3
    kw = {"eps": 1e-6, "atol": 1e-5, "rtol": 1e-3}
    assert torch.autograd.gradcheck(f, (x,), **kw)
    assert torch.autograd.gradgradcheck(f, (x,), **kw)
    xt = torch.tensor(X[:3, :6].T.copy(), requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: f(a, axis=0), (xt,), **kw)


@pytest.mark.parametrize("name", list(MAPS))
def test_jacobian_symmetric_with_null_vector_one(name):
    f = MAPS[name]
    x = X[1, :7]
    J = torch.autograd.functional.jacobian(f, torch.tensor(x)).numpy()
    np.testing.assert_allclose(J, J.T, atol=1e-12)
    np.testing.assert_allclose(J @ np.ones(7), 0.0, atol=1e-12)
    # against central finite differences of the numpy map
    h = 1e-6
    fd = np.stack([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(7)], axis=1)
    np.testing.assert_allclose(J, fd, atol=1e-6)


def test_half_precision_autograd():
    x = torch.tensor(X[:2], dtype=torch.float16, requires_grad=True)
    entmax(x, 1.3).sum().backward()
    assert x.grad.dtype == torch.float16
    assert float(x.grad.abs().max()) < 1e-3  # d(Σp)/dx = 0


# ------------------------------------------------------------- convergence
def test_bisection_warns_when_budget_too_small():
    with pytest.warns(ConvergenceWarning, match="increase max_iter"):
        p = entmax(X, 1.3, max_iter=5)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-12)  # still renormalised


def test_bisection_default_budget_reaches_tolerance_silently():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        entmax(RNG.standard_normal((2, 1000)), 1.3)
        entmax(torch.randn(2, 1000, dtype=torch.float32), 4.0)
        entmax(X, 1.3, max_iter=20, tol=1e-5)


# ------------------------------------------------------------- bad input
@pytest.mark.parametrize("alpha", [0.5, -1.0])
def test_alpha_below_one_rejected(alpha):
    with pytest.raises(ValueError, match="alpha"):
        entmax(X, alpha)


@pytest.mark.parametrize("alpha", [np.nan, np.inf])
def test_non_finite_alpha_rejected(alpha):
    with pytest.raises(ValueError, match="alpha"):
        entmax(X, alpha)


def test_non_real_alpha_rejected():
    with pytest.raises(TypeError, match="alpha"):
        entmax(X, "1.5")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("fn", [softmax, sparsemax, entmax])
def test_non_finite_x_rejected(backend, bad, fn):
    x = X.copy()
    x[1, 2] = bad
    (x,) = convert(backend, "float64", x)
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        fn(x)


@pytest.mark.parametrize("x", [np.arange(4), torch.arange(4)], ids=["numpy", "torch"])
@pytest.mark.parametrize("fn", [softmax, sparsemax, entmax])
def test_integer_dtype_rejected(x, fn):
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        fn(x)


def test_non_array_rejected():
    with pytest.raises(TypeError, match="x must be"):
        softmax([1.0, 2.0])


@pytest.mark.parametrize("axis", [2, -3])
@pytest.mark.parametrize("fn", [softmax, sparsemax, entmax])
def test_axis_out_of_range_rejected(axis, fn):
    with pytest.raises(ValueError, match="axis"):
        fn(X, axis=axis)


def test_zero_length_axis_rejected():
    with pytest.raises(ValueError, match="nonzero size"):
        softmax(np.zeros((3, 0)))


@pytest.mark.parametrize("kwargs", [{"max_iter": 0}, {"tol": 0.0}, {"tol": np.nan},
                                    {"method": "newton"}])
def test_bad_solver_options_rejected(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        entmax(X, 1.3, **kwargs)
