"""Consistent multi-layer attention: analytic case, certificates, solver agreement, gradients."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.optimize import minimize

from structattn.solvers import ConvergenceWarning, consistent_attention

from ..conftest import to_np

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(20240612)
INSTANCES = [  # (shapes fine → coarse, pools)
    ([(4, 4), (2, 2)], [2]),
    ([(2, 6, 6), (2, 2, 2)], [3]),
    ([(3, 8, 8), (3, 4, 4), (3, 2, 2)], [2, 2]),
    ([(12, 12), (6, 6), (3, 3), (1, 1)], [2, 2, 3]),
]


def pool(x: np.ndarray, s: int) -> np.ndarray:
    *b, h, w = x.shape
    return x.reshape(*b, h // s, s, w // s, s).sum(axis=(-3, -1))


def up(x: np.ndarray, s: int) -> np.ndarray:
    return np.repeat(np.repeat(x, s, axis=-2), s, axis=-1)


def grid_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=(-2, -1), keepdims=True))
    return e / e.sum(axis=(-2, -1), keepdims=True)


def draw(shapes, scale=1.0):
    return [RNG.standard_normal(s) * scale for s in shapes]


def assert_on_simplex(maps):
    for p in maps:
        p = to_np(p)
        assert np.all(p >= 0)
        np.testing.assert_allclose(p.sum(axis=(-2, -1)), 1.0, atol=1e-13)


# ------------------------------------------------------------------ analytic case
@pytest.mark.parametrize("method", ["closed_form", "dual_gd", "newton"])
def test_analytic_two_layer_case(method):
    # θ₁ = 0 ⇒ LSEpool(θ₁) = log 4 everywhere ⇒ p₂ = softmax(½ log w) = √w / Σ√w.
    w = np.array([[1.0, 2.0], [3.0, 4.0]])
    res = consistent_attention([np.zeros((4, 4)), np.log(w)], [2], method=method)
    assert res.converged
    p1, p2 = res.maps
    expected = np.sqrt(w) / np.sqrt(w).sum()
    np.testing.assert_allclose(p2, expected, atol=1e-10)
    np.testing.assert_allclose(p2.ravel(), [0.162700, 0.230093, 0.281805, 0.325401], atol=5e-7)
    # each fine window is uniform and carries the coarse mass
    np.testing.assert_allclose(p1, up(expected, 2) / 4.0, atol=1e-10)
    lam = 0.5 * (np.log(4.0) - np.log(w))
    np.testing.assert_allclose(res.duals[0], lam - lam.mean(), atol=1e-8)


def test_already_consistent_scores_give_unconstrained_softmax():
    th1 = RNG.standard_normal((6, 6))
    th2 = np.log(pool(np.exp(th1), 3))  # LSEpool(θ₁) = θ₂
    res = consistent_attention([th1, th2], [3])
    np.testing.assert_allclose(res.maps[0], grid_softmax(th1), atol=1e-14)
    np.testing.assert_allclose(res.maps[1], grid_softmax(th2), atol=1e-14)
    np.testing.assert_allclose(res.duals[0], 0.0, atol=1e-13)


# ------------------------------------------------------------------ certificates
@pytest.mark.parametrize("shapes,pools", INSTANCES)
def test_closed_form_certificates(shapes, pools):
    scores = draw(shapes, 2.0)
    res = consistent_attention(scores, pools)
    assert res.converged and res.n_iter == 0
    assert res.feasibility < 1e-12
    assert abs(res.gap) < 1e-10
    assert_on_simplex(res.maps)
    # stationarity: each map is the softmax of its shifted score θ_j + λ_{j-1} - up(λ_j)
    for j, th in enumerate(scores):
        shifted = th.copy()
        if j > 0:
            shifted = shifted + res.duals[j - 1]
        if j < len(pools):
            shifted = shifted - up(res.duals[j], pools[j])
        np.testing.assert_allclose(res.maps[j], grid_softmax(shifted), atol=1e-13)
    for lam in res.duals:
        np.testing.assert_allclose(lam.mean(axis=(-2, -1)), 0.0, atol=1e-13)


# ------------------------------------------------------------------ solver agreement
@pytest.mark.parametrize("shapes,pools", INSTANCES)
@pytest.mark.parametrize("method", ["dual_gd", "newton"])
def test_iterative_solvers_match_closed_form(shapes, pools, method):
    scores = draw(shapes)
    ref = consistent_attention(scores, pools)
    res = consistent_attention(scores, pools, method=method, tol=1e-12, max_iter=5000)
    assert res.converged, (res.feasibility, res.gap)  # residuals first
    assert res.feasibility <= 1e-12 and res.gap <= 1e-11
    assert res.n_iter >= 1
    assert_on_simplex(res.maps)
    for p, q in zip(res.maps, ref.maps, strict=True):
        np.testing.assert_allclose(p, q, atol=1e-10)
    for a, b in zip(res.duals, ref.duals, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_agrees_with_slsqp_on_primal():
    th1, th2 = RNG.standard_normal((4, 4)), RNG.standard_normal((2, 2))

    def neg_obj(x):
        p1 = np.clip(x.reshape(4, 4), 1e-300, None)
        p2 = pool(p1, 2)
        val = np.sum(th1 * p1 - p1 * np.log(p1)) + np.sum(th2 * p2 - p2 * np.log(p2))
        grad = th1 - np.log(p1) - 1.0 + up(th2 - np.log(p2) - 1.0, 2)
        return -val, -grad.ravel()

    sol = minimize(
        neg_obj,
        np.full(16, 1 / 16),
        jac=True,
        method="SLSQP",
        bounds=[(1e-12, 1.0)] * 16,
        constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1.0, "jac": lambda x: np.ones(16)}],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    assert sol.success
    res = consistent_attention([th1, th2], [2])
    np.testing.assert_allclose(res.maps[0].ravel(), sol.x, atol=1e-6)
    np.testing.assert_allclose(res.maps[1], pool(sol.x.reshape(4, 4), 2), atol=1e-6)


# ------------------------------------------------------------------ gauge
@pytest.mark.parametrize("method", ["closed_form", "dual_gd", "newton"])
def test_gauge_invariance(method):
    shapes, pools = INSTANCES[2]
    scores = draw(shapes)
    res = consistent_attention(scores, pools, method=method)
    shifted_scores = [s + c for s, c in zip(scores, (3.0, -1.5, 7.0), strict=True)]
    res2 = consistent_attention(shifted_scores, pools, method=method)
    for p, q in zip(res.maps, res2.maps, strict=True):
        np.testing.assert_allclose(p, q, atol=1e-10)
    # shifting each λ_j by a constant leaves every reparameterized map unchanged
    duals = [lam + c for lam, c in zip(res.duals, (2.5, -4.0), strict=True)]
    for j, th in enumerate(scores):
        shifted = th + (duals[j - 1] if j > 0 else 0.0)
        if j < len(pools):
            shifted = shifted - up(duals[j], pools[j])
        np.testing.assert_allclose(grid_softmax(shifted), res.maps[j], atol=1e-10)


def test_single_layer_is_softmax():
    th = RNG.standard_normal((2, 3, 5))
    res = consistent_attention([th], [])
    np.testing.assert_allclose(res.maps[0], grid_softmax(th), atol=1e-15)
    assert res.duals == () and res.converged


# ------------------------------------------------------------------ convergence reporting
def test_unconverged_warns_or_raises():
    scores = draw(INSTANCES[2][0], 3.0)
    with pytest.warns(ConvergenceWarning, match="feasibility"):
        res = consistent_attention(scores, [2, 2], method="dual_gd", max_iter=3)
    assert not res.converged and res.n_iter == 3 and res.feasibility > 1e-10
    with pytest.raises(RuntimeError, match="max_iter"):
        consistent_attention(scores, [2, 2], method="dual_gd", max_iter=3, strict=True)


# ------------------------------------------------------------------ torch
def test_torch_matches_numpy_and_keeps_dtype():
    shapes, pools = INSTANCES[2]
    scores = draw(shapes)
    ref = consistent_attention(scores, pools)
    for dtype, atol in ((torch.float64, 1e-13), (torch.float32, 1e-6)):
        ts = [torch.as_tensor(s, dtype=dtype) for s in scores]
        for method in ("closed_form", "newton"):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                res = consistent_attention(ts, pools, method=method)
            assert all(isinstance(p, torch.Tensor) and p.dtype == dtype for p in res.maps)
            assert all(lam.dtype == dtype for lam in res.duals)
            for p, q in zip(res.maps, ref.maps, strict=True):
                np.testing.assert_allclose(to_np(p), q, atol=atol)


def test_gradcheck_closed_form():
    shapes, pools = [(1, 4, 4), (1, 2, 2), (1, 1, 1)], [2, 2]
    inputs = [torch.tensor(s, dtype=torch.float64, requires_grad=True) for s in draw(shapes)]

    def f(*th):
        res = consistent_attention(list(th), pools)
        return tuple(res.maps) + tuple(res.duals)

    assert torch.autograd.gradcheck(f, tuple(inputs), eps=1e-6, atol=1e-5, rtol=1e-3)

    # envelope theorem: ∂(optimal value)/∂θ_j = p_j
    def value(*th):
        res = consistent_attention(list(th), pools)
        return sum((t * p - p * torch.log(p)).sum() for t, p in zip(th, res.maps, strict=True))

    grads = torch.autograd.grad(value(*inputs), inputs)
    res = consistent_attention([x.detach() for x in inputs], pools)
    for g, p in zip(grads, res.maps, strict=True):
        torch.testing.assert_close(g, p, atol=1e-12, rtol=0)


def test_unrolled_dual_gd_gradient_matches_closed_form():
    shapes, pools = [(6, 6), (3, 3)], [2]
    raw = draw(shapes)
    w = [torch.tensor(RNG.standard_normal(s)) for s in shapes]

    def grads(method):
        th = [torch.tensor(s, requires_grad=True) for s in raw]
        res = consistent_attention(
            th, pools, method=method, tol=1e-12, max_iter=5000, grad="unroll"
        )
        assert res.converged
        loss = sum((wj * p).sum() for wj, p in zip(w, res.maps, strict=True))
        return torch.autograd.grad(loss, th)

    for a, b in zip(grads("dual_gd"), grads("closed_form"), strict=True):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=0)


GRAD_MODES = [  # (method, grad) pairs that are differentiable on torch tensors
    ("closed_form", "auto"),
    ("closed_form", "implicit"),
    ("newton", "implicit"),
    ("dual_gd", "implicit"),
    ("newton", "unroll"),
    ("dual_gd", "unroll"),
]


def _loss_grads(raw, pools, weights, method, grad):
    """Gradient of a loss that touches every map and every (gauge-fixed) dual."""
    th = [torch.tensor(s, requires_grad=True) for s in raw]
    res = consistent_attention(th, pools, method=method, grad=grad, tol=1e-12, max_iter=5000)
    assert res.converged, (res.feasibility, res.gap)
    outs = list(res.maps) + list(res.duals)
    loss = sum((w * o).sum() + 0.1 * (o**3).sum() for w, o in zip(weights, outs, strict=True))
    return torch.autograd.grad(loss, th)


@pytest.mark.parametrize("shapes,pools", INSTANCES[:3])
def test_implicit_unrolled_and_closed_form_gradients_agree(shapes, pools):
    raw = draw(shapes)
    dual_shapes = shapes[1:]
    weights = [torch.tensor(RNG.standard_normal(s)) for s in list(shapes) + list(dual_shapes)]
    ref = _loss_grads(raw, pools, weights, "closed_form", "auto")
    for method, grad in GRAD_MODES[1:]:
        got = _loss_grads(raw, pools, weights, method, grad)
        for a, b in zip(got, ref, strict=True):
            torch.testing.assert_close(a, b, atol=1e-8, rtol=0, msg=f"{method}/{grad}")


def test_auto_grad_is_implicit_for_dual_solvers():
    raw = draw([(4, 4), (2, 2)])
    th = [torch.tensor(s, requires_grad=True) for s in raw]
    res = consistent_attention(th, [2], method="newton")
    assert type(res.maps[0].grad_fn).__name__.startswith("ImplicitConsistent")
    res = consistent_attention(th, [2], method="newton", grad="unroll")
    assert not type(res.maps[0].grad_fn).__name__.startswith("ImplicitConsistent")
    with torch.no_grad():  # no autograd wanted: plain tensors back
        res = consistent_attention(th, [2], method="newton")
    assert res.maps[0].grad_fn is None


@pytest.mark.parametrize("method,grad", GRAD_MODES)
def test_gradcheck_every_differentiable_mode(method, grad):
    shapes, pools = [(1, 4, 4), (1, 2, 2), (1, 1, 1)], [2, 2]
    inputs = tuple(torch.tensor(s, requires_grad=True) for s in draw(shapes))

    def f(*th):
        res = consistent_attention(
            list(th), pools, method=method, grad=grad, tol=1e-12, max_iter=5000
        )
        assert res.converged
        return tuple(res.maps) + tuple(res.duals)

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)


def test_gradgradcheck_closed_form():
    shapes, pools = [(1, 4, 4), (1, 2, 2)], [2]
    inputs = tuple(torch.tensor(s, requires_grad=True) for s in draw(shapes))

    def f(*th):
        res = consistent_attention(list(th), pools)
        return tuple(res.maps) + tuple(res.duals)

    assert torch.autograd.gradgradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)


def test_rejects_bad_grad_and_witness_options():
    scores = [np.zeros((4, 4)), np.zeros((2, 2))]
    with pytest.raises(ValueError, match="grad must be one of"):
        consistent_attention(scores, [2], grad="adjoint")
    with pytest.raises(ValueError, match="not defined for method='witness'"):
        consistent_attention(
            scores, [2], method="witness", witness=np.zeros((2, 2)), grad="implicit"
        )
    with pytest.raises(ValueError, match="needs witness="):
        consistent_attention(scores, [2], method="witness")
    with pytest.raises(ValueError, match="only used with method='witness'"):
        consistent_attention(scores, [2], witness=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"witness\[0\] must broadcast to the shape \(2, 2\)"):
        consistent_attention(scores, [2], method="witness", witness=np.zeros((4, 4)))
    with pytest.raises(TypeError, match=r"witness\[0\] must have the same dtype as scores\[0\]"):
        consistent_attention(scores, [2], method="witness", witness=np.zeros((2, 2), np.float32))
    three = [np.zeros((8, 8)), np.zeros((4, 4)), np.zeros((2, 2))]
    with pytest.raises(ValueError, match="serves two layers only"):
        consistent_attention(three, [2, 2], method="witness", witness=np.zeros((4, 4)))


# ------------------------------------------------------------------ witness mode (§2.6)
def _official_marginals(th1, th2, lam, s):
    """The released code's reparameterized coarse marginals, written out literally."""
    p1, p2 = grid_softmax(th1), grid_softmax(th2)
    a = pool(p1, s) * np.exp(-lam)
    b = p2 * np.exp(lam)
    return a / a.sum(axis=(-2, -1), keepdims=True), b / b.sum(axis=(-2, -1), keepdims=True)


def _kl(p, q):
    return np.sum(p * (np.log(p) - np.log(q)), axis=(-2, -1))


@pytest.mark.parametrize("shapes,pools", INSTANCES)
def test_witness_at_optimal_duals_has_zero_kl(shapes, pools):
    scores = draw(shapes, 2.0)
    ref = consistent_attention(scores, pools)
    res = consistent_attention(scores, pools, method="witness", witness=list(ref.duals))
    assert res.method == "witness" and res.n_iter == 0
    assert len(res.kl) == len(res.l1) == len(res.marginals) == len(pools)
    for kl, l1 in zip(res.kl, res.l1, strict=True):
        assert np.max(np.abs(kl)) < 1e-10 and np.max(l1) < 1e-10
    assert res.converged and res.feasibility < 1e-12 and abs(res.gap) < 1e-10
    for p, q in zip(res.maps, ref.maps, strict=True):
        np.testing.assert_allclose(p, q, atol=1e-12)


def test_witness_reproduces_official_marginals_kl_and_l1():
    th1, th2 = RNG.standard_normal((3, 8, 8)), RNG.standard_normal((3, 4, 4))
    lam = RNG.standard_normal((4, 4))  # one λ shared by the whole batch
    res = consistent_attention([th1, th2], [2], method="witness", witness=lam)
    a, b = _official_marginals(th1, th2, lam, 2)
    q, r = res.marginals[0]
    np.testing.assert_allclose(q, a, atol=1e-14)
    np.testing.assert_allclose(r, b, atol=1e-14)
    np.testing.assert_allclose(res.kl[0], _kl(b, a), atol=1e-13)
    np.testing.assert_allclose(res.l1[0], np.abs(a - b).sum(axis=(-2, -1)), atol=1e-14)
    assert res.kl[0].shape == (3,) and np.all(res.kl[0] > 0)
    # the marginals are those of the reparameterized maps softmax(θ̃_j(λ))
    np.testing.assert_allclose(res.maps[0], grid_softmax(th1 - up(lam, 2)), atol=1e-14)
    np.testing.assert_allclose(res.maps[1], grid_softmax(th2 + lam), atol=1e-14)
    np.testing.assert_allclose(q, pool(res.maps[0], 2), atol=1e-14)
    np.testing.assert_allclose(res.duals[0], lam - lam.mean(), atol=1e-14)
    assert not res.converged and res.feasibility > 1e-3


def test_witness_ones_init_is_a_no_op_and_gauge_invariant():
    th1, th2 = RNG.standard_normal((8, 8)), RNG.standard_normal((4, 4))
    zero = consistent_attention([th1, th2], [2], method="witness", witness=np.zeros((4, 4)))
    ones = consistent_attention([th1, th2], [2], method="witness", witness=np.ones((4, 4)))
    np.testing.assert_allclose(ones.kl[0], zero.kl[0], atol=1e-14)
    # λ = 0: the plain softmax maps, whose pooled fine map disagrees with the coarse one
    np.testing.assert_allclose(zero.maps[0], grid_softmax(th1), atol=1e-15)
    np.testing.assert_allclose(
        zero.kl[0], _kl(grid_softmax(th2), pool(grid_softmax(th1), 2)), atol=1e-14
    )
    lam = RNG.standard_normal((4, 4))
    a = consistent_attention([th1, th2], [2], method="witness", witness=lam)
    b = consistent_attention([th1, th2], [2], method="witness", witness=lam - 5.0)
    np.testing.assert_allclose(a.kl[0], b.kl[0], atol=1e-13)
    for p, q in zip(a.maps, b.maps, strict=True):
        np.testing.assert_allclose(p, q, atol=1e-14)


def test_zero_witness_kl_characterizes_the_optimal_duals():
    # two layers: KL(p₂(λ) ‖ A p₁(λ)) = 0 ⇔ ∇g(λ) = 0 ⇔ λ = λ* + c, so training the
    # penalty to zero recovers the consistent maps of the convex layer
    th1, th2 = RNG.standard_normal((6, 6)), RNG.standard_normal((3, 3))
    ref = consistent_attention([th1, th2], [2])

    def kl(x):
        res = consistent_attention([th1, th2], [2], method="witness", witness=x.reshape(3, 3))
        return float(res.kl[0])

    sol = minimize(kl, np.zeros(9), method="BFGS", options={"gtol": 1e-12, "maxiter": 2000})
    assert sol.fun < 1e-14
    res = consistent_attention([th1, th2], [2], method="witness", witness=sol.x.reshape(3, 3))
    for p, q in zip(res.maps, ref.maps, strict=True):
        np.testing.assert_allclose(p, q, atol=1e-6)
    np.testing.assert_allclose(res.duals[0], ref.duals[0], atol=1e-5)


def test_witness_gradients_are_ordinary_autograd():
    th1, th2 = RNG.standard_normal((2, 4, 4)), RNG.standard_normal((2, 2, 2))
    lam = RNG.standard_normal((2, 2))
    inputs = tuple(torch.tensor(x, requires_grad=True) for x in (th1, th2, lam))

    def f(t1, t2, w):
        res = consistent_attention([t1, t2], [2], method="witness", witness=w)
        return (*res.maps, res.kl[0], res.l1[0], *res.marginals[0])

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)
    # at λ* the penalty is stationary in λ (KL ≥ 0 with minimum 0)
    ref = consistent_attention([torch.tensor(th1), torch.tensor(th2)], [2])
    w = ref.duals[0][0].clone().requires_grad_(True)  # λ* of the first image
    res = consistent_attention(
        [torch.tensor(th1[:1]), torch.tensor(th2[:1])], [2], method="witness", witness=w
    )
    (gw,) = torch.autograd.grad(res.kl[0].sum(), w)
    assert float(gw.abs().max()) < 1e-10


# ------------------------------------------------------------------ cvxpy (exact conic)
def test_agrees_with_cvxpy_clarabel():
    cp = pytest.importorskip("cvxpy")
    if "CLARABEL" not in cp.installed_solvers():
        pytest.skip("cvxpy without the Clarabel solver")
    shapes, pools = [(4, 4), (2, 2), (1, 1)], [2, 2]
    scores = draw(shapes)
    # fine-grid pooling matrices A_j acting on row-major flattened maps
    mats = []
    for (h, w), s in zip(shapes[:-1], pools, strict=True):
        A = np.zeros(((h // s) * (w // s), h * w))
        for i in range(h):
            for j in range(w):
                A[(i // s) * (w // s) + j // s, i * w + j] = 1.0
        mats.append(A)
    ps = [cp.Variable(h * w) for h, w in shapes]
    objective = sum(th.ravel() @ p + cp.sum(cp.entr(p)) for th, p in zip(scores, ps, strict=True))
    cons = [cp.sum(ps[0]) == 1]
    cons += [A @ ps[j] == ps[j + 1] for j, A in enumerate(mats)]
    prob = cp.Problem(cp.Maximize(objective), cons)
    # tight conic tolerances: the defaults (1e-8 on the gap) give maps only to ~1e-5
    tight = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10}
    prob.solve(solver="CLARABEL", **tight)
    assert prob.status == "optimal"
    res = consistent_attention(scores, pools)
    for p, var, shape in zip(res.maps, ps, shapes, strict=True):
        np.testing.assert_allclose(p, var.value.reshape(shape), atol=1e-6)
    # optimal value = g(λ*) (strong duality)
    value = sum(np.sum(th * p - p * np.log(p)) for th, p in zip(scores, res.maps, strict=True))
    np.testing.assert_allclose(prob.value, value, atol=1e-6)


# ------------------------------------------------------------------ bad input
def test_rejects_non_integer_pool():
    with pytest.raises(TypeError, match=r"pools\[0\] must be a positive int"):
        consistent_attention([np.zeros((4, 4)), np.zeros((2, 2))], [2.0])


def test_rejects_pool_not_dividing_shape():
    with pytest.raises(ValueError, match=r"pools\[0\] = 2 does not divide the grid \(5, 4\)"):
        consistent_attention([np.zeros((5, 4)), np.zeros((2, 2))], [2])
    with pytest.raises(ValueError, match=r"scores\[1\] has grid \(4, 4\)"):
        consistent_attention([np.zeros((4, 4)), np.zeros((4, 4))], [2])


def test_rejects_non_finite_scores():
    th2 = np.zeros((2, 2))
    th2[0, 1] = np.nan
    with pytest.raises(ValueError, match=r"scores\[1\] contains NaN or Inf"):
        consistent_attention([np.zeros((4, 4)), th2], [2])


def test_rejects_wrong_number_of_pools():
    with pytest.raises(ValueError, match="3 score maps need 2 pools, got 1"):
        consistent_attention([np.zeros((8, 8)), np.zeros((4, 4)), np.zeros((2, 2))], [2])


# ------------------------------------------------- Woodbury Newton, second order
def test_woodbury_newton_step_matches_dense_step():
    from structattn.solvers import consistent as c

    for lib in ("numpy", "torch"):
        raw = draw([(3, 8, 8), (3, 4, 4)])
        lam = [RNG.standard_normal((3, 4, 4)) * 0.5]
        if lib == "torch":
            raw, lam = [torch.tensor(x) for x in raw], [torch.tensor(x) for x in lam]
        maps = [c._softmax2(t) for t in c._shifted(raw, [2], lam)]
        rhs = c._flatten(c._grad(maps, [2]))
        assert c._use_woodbury(maps, [2])
        wood = c._newton_solve(maps, [2], [16], rhs)
        dense = np.linalg.solve(to_np(c._hessian(maps, [2], [16])), to_np(rhs)[..., None])
        np.testing.assert_allclose(to_np(wood), dense[..., 0], atol=1e-12, rtol=0)


def test_two_layer_newton_scales_to_large_grids():
    import time

    raw = draw([(256, 256), (128, 128)])
    t0 = time.perf_counter()
    res = consistent_attention(raw, [2], method="newton")
    elapsed = time.perf_counter() - t0
    assert res.converged, (res.feasibility, res.gap)
    assert elapsed < 2.0, elapsed
    ref = consistent_attention(raw, [2])
    for a, b in zip(res.maps, ref.maps, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-10, rtol=0)


GRADGRAD_MODES = [*GRAD_MODES, ("witness", "auto")]


@pytest.mark.parametrize("layers", [2, 3])
@pytest.mark.parametrize("method,grad", GRADGRAD_MODES)
def test_gradgradcheck_every_differentiable_mode(method, grad, layers):
    shapes, pools = [(1, 4, 4), (1, 2, 2), (1, 1, 1)][:layers], [2, 2][: layers - 1]
    # mild scores keep the unrolled iteration counts (and the check's cost) small
    inputs = tuple(torch.tensor(s, requires_grad=True) for s in draw(shapes, scale=0.5))
    witness = [torch.tensor(RNG.standard_normal(s)) for s in shapes[1:]]

    def f(*th):
        if method == "witness":
            res = consistent_attention(list(th), pools, method="witness", witness=witness)
            return tuple(res.maps) + tuple(res.kl) + tuple(res.l1)
        res = consistent_attention(
            list(th), pools, method=method, grad=grad, tol=1e-12, max_iter=5000
        )
        assert res.converged
        return tuple(res.maps) + tuple(res.duals)

    assert torch.autograd.gradgradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)
