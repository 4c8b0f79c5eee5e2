"""Kernels: symmetry/PSD, backend parity, closed forms against Monte Carlo and wide networks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from structattn.eigen import (
    arccos,
    empirical_ntk,
    exponential,
    kernel_matmul,
    nngp,
    nngp_features,
    ntk,
    polynomial,
    rbf,
)
from structattn.testing import assert_close

from ..conftest import convert, to_np

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(7)
X = RNG.standard_normal((40, 3))
Y = RNG.standard_normal((25, 3))

CLOSED = {
    "rbf": rbf(1.3, amplitude=2.0),
    "polynomial": polynomial(3, eta=0.5, nu=1.5),
    "exponential": exponential(math.sqrt(3.0)),
    "arccos0": arccos(0),
    "arccos1": arccos(1),
    "nngp-relu": nngp(3, "relu"),
    "nngp-erf": nngp(2, "erf"),
    "ntk": ntk(2),
}


def _loop_rbf(A, B, ell, amp):
    out = np.empty((len(A), len(B)))
    for i, a in enumerate(A):
        for j, b in enumerate(B):
            out[i, j] = amp * math.exp(-np.sum((a - b) ** 2) / (2 * ell**2))
    return out


@pytest.mark.parametrize("name", sorted(CLOSED))
def test_symmetric_psd(name):
    K = CLOSED[name](X)
    assert K.shape == (40, 40)
    np.testing.assert_allclose(K, K.T, rtol=0, atol=1e-12 * np.abs(K).max())
    lam = np.linalg.eigvalsh((K + K.T) / 2)
    assert lam.min() >= -1e-10 * np.trace(K)
    # angle kernels evaluate acos(cos θ) at cos θ = 1 - O(ε) on the diagonal, where acos
    # has infinite condition number: the block's diagonal is exact only to O(√ε)
    rtol = 1e-7 if name.startswith(("arccos", "nngp", "ntk")) else 1e-12
    np.testing.assert_allclose(CLOSED[name].diag(X), np.diag(K), rtol=rtol)


@pytest.mark.parametrize("name", sorted(CLOSED))
def test_backends_agree(name, dtype):
    kern = CLOSED[name]
    ref = kern(X, Y)
    for backend in ("numpy", "torch"):
        Xb, Yb = convert(backend, dtype, X, Y)
        out = kern(Xb, Yb)
        assert type(out) is type(Xb) and str(out.dtype).endswith(dtype)
        assert_close(to_np(out), ref, dtype=dtype)


def test_rbf_matches_loops():
    assert_close(rbf(1.3, amplitude=2.0)(X, Y), _loop_rbf(X, Y, 1.3, 2.0), dtype="float64")


def test_torch_kernels_differentiable():
    Xt = torch.tensor(X[:6], dtype=torch.float64, requires_grad=True)
    Yt = torch.tensor(Y[:5], dtype=torch.float64)
    for name in ("rbf", "exponential", "polynomial", "nngp-erf", "ntk"):
        kern = CLOSED[name]
        assert torch.autograd.gradcheck(lambda a, kern=kern: kern(a, Yt), (Xt,)), name


def test_polynomial_rank_and_exponential_conjugation():
    assert polynomial(4, nu=1.5).rank(1) == 5
    assert polynomial(2, nu=0.0).rank(3) == 6
    tau = 2.5
    conj = np.exp(np.sum(X**2, 1) / (2 * tau))
    K_rbf = rbf(math.sqrt(tau))(X)
    assert_close(exponential(tau)(X), conj[:, None] * K_rbf * conj[None, :], dtype="float64")


@pytest.mark.parametrize("order", [0, 1])
def test_arccos_monte_carlo(order):
    S = 200_000
    F = arccos(order, num_features=S, seed=3).features(X[:15])
    K = arccos(order)(X[:15])
    err = np.abs(F @ F.T - K).max() / np.abs(K).max()
    assert err <= 5 / math.sqrt(S)


def test_arccos_relu_is_nngp_building_block():
    # one ReLU layer without bias: Σ¹ = σ_w² · arccos1 applied to x·σ_w/√d
    d = X.shape[1]
    K1 = nngp(1, "relu", sigma_w2=2.0, sigma_b2=0.0)(X)
    assert_close(K1, 2.0 * arccos(1)(X * math.sqrt(2.0 / d)), dtype="float64")


@pytest.mark.parametrize(("activation", "depth", "width", "nets", "tol"), [
    ("relu", 1, 4096, 4, 0.03),  # unbiased: standard error ~ 1/sqrt(width·nets) ≈ 0.8 %
    ("erf", 1, 4096, 4, 0.03),
    ("relu", 2, 2048, 2, 0.06),  # plus O(1/width) finite-width bias
    ("erf", 2, 2048, 2, 0.06),
])
def test_nngp_against_wide_random_networks(activation, depth, width, nets, tol):
    Xs = X[:12]
    exact = nngp(depth, activation)(Xs)
    mc = nngp_features(depth, activation, width=width, num_nets=nets, seed=11)(Xs)
    assert np.linalg.norm(mc - exact) / np.linalg.norm(exact) < tol


def _ntk_mlp(d, width, depth, sigma_w2, sigma_b2, seed):
    """NTK-parametrised ReLU MLP: h = σ_w W x/√fan_in + σ_b b, standard normal params."""
    g = torch.Generator().manual_seed(seed)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            sizes = [d] + [width] * depth + [1]
            self.W = torch.nn.ParameterList(
                [torch.nn.Parameter(torch.randn(a, b, generator=g, dtype=torch.float64))
                 for a, b in itertools.pairwise(sizes)])
            self.b = torch.nn.ParameterList(
                [torch.nn.Parameter(torch.randn(b, generator=g, dtype=torch.float64))
                 for b in sizes[1:]])
            self.fan_in = sizes[:-1]

        def forward(self, x):
            h = x
            for i, (W, b) in enumerate(zip(self.W, self.b, strict=True)):
                if i:
                    h = torch.relu(h)
                h = math.sqrt(sigma_w2 / self.fan_in[i]) * h @ W + math.sqrt(sigma_b2) * b
            return h[:, 0]

    return Net()


def test_ntk_recursion_against_wide_network():
    Xs = X[:8]
    model = _ntk_mlp(3, 2048, 1, 2.0, 1.0, seed=5)
    emp = empirical_ntk(model)(Xs)
    exact = ntk(1)(Xs)
    assert np.linalg.norm(emp - exact) / np.linalg.norm(exact) < 0.05


def test_empirical_ntk_exact_and_sketch():
    model = _ntk_mlp(3, 64, 2, 2.0, 1.0, seed=2)
    Xt = torch.tensor(X[:10])
    # exact: J Jᵀ against explicit per-sample autograd Jacobians
    rows = []
    for x in Xt:
        model.zero_grad()
        model(x[None])[0].backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    J = torch.stack(rows)
    exact = empirical_ntk(model)(Xt)
    assert isinstance(exact, torch.Tensor)
    assert_close(exact, (J @ J.T).detach(), dtype="float64")
    assert_close(empirical_ntk(model)(X[:10]), (J @ J.T).numpy(), dtype="float64")
    # sketch: unbiased, error shrinking like 1/sqrt(S)
    ref = (J @ J.T).numpy()
    errs = []
    for S in (64, 1024):
        sk = empirical_ntk(model, sketch=S, seed=1)(X[:10])
        errs.append(np.linalg.norm(sk - ref) / np.linalg.norm(ref))
    assert errs[1] < errs[0] / 2 and errs[1] < 0.15


def test_kernel_matmul_blocks():
    V = RNG.standard_normal((25, 4))
    kern = rbf(0.7)
    assert_close(kernel_matmul(kern, X, Y, V, block=7), kern(X, Y) @ V, dtype="float64")


# --------------------------------------------------------------------------- bad input
def test_bad_kernel_inputs():
    with pytest.raises(ValueError, match="same dimension"):
        rbf()(X, Y[:, :2])
    with pytest.raises(ValueError, match="NaN or Inf"):
        rbf()(np.array([[0.0], [np.nan]]))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        rbf()(np.zeros(5))
    with pytest.raises(ValueError, match="2-D array"):
        rbf()(np.zeros((2, 3, 4)))
    with pytest.raises(TypeError, match="floating dtype"):
        rbf()(np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(TypeError, match="both"):
        rbf()(X, torch.tensor(Y))
    with pytest.raises(ValueError, match="lengthscale"):
        rbf(lengthscale=0.0)
    with pytest.raises(ValueError, match="order"):
        arccos(2)
    with pytest.raises(ValueError, match="activation"):
        nngp(2, "tanh")
    with pytest.raises(ValueError, match="tau"):
        exponential(-1.0)
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        empirical_ntk(lambda x: x)
