"""Oracles for the attention-pattern metrics (spec ssta.md §3, items 4, 5, 7)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from structattn.analysis import (  # noqa: E402
    head_deviation,
    head_similarity,
    map_entropy,
    mean_attention_distance,
    patch_coordinates,
)


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _maps(shape, seed=0, peaked=1.0):
    rng = np.random.default_rng(seed)
    s = peaked * rng.standard_normal(shape)
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _brute_distance(P, g, n_prefix=1):
    """Double loop over rows and columns on the unit square."""
    gh, gw = g
    coords = [((i % gw) / max(gw - 1, 1), (i // gw) / max(gh - 1, 1)) for i in range(gh * gw)]
    Pg = P[n_prefix:, n_prefix:]
    out = 0.0
    for i in range(gh * gw):
        s = Pg[i].sum()
        if s == 0:
            continue
        for j in range(gh * gw):
            out += Pg[i, j] / s * math.dist(coords[i], coords[j])
    return out / (gh * gw)


@pytest.mark.parametrize("g", [(4, 4), (3, 5)])
def test_distance_identity_uniform_and_brute_force(g):
    L = 1 + g[0] * g[1]
    assert mean_attention_distance(np.eye(L), grid=g) == pytest.approx(0.0, abs=1e-15)
    U = np.full((L, L), 1.0 / L)
    pts = patch_coordinates(g)
    pairwise = np.mean([math.dist(a, b) for a, b in itertools.product(pts, pts)])
    np.testing.assert_allclose(mean_attention_distance(U, grid=g), pairwise, rtol=1e-12)
    P = _maps((2, 3, L, L), seed=1)
    got = mean_attention_distance(P, grid=g, block_rows=5)
    assert got.shape == (2, 3)
    for b, h in np.ndindex(2, 3):
        np.testing.assert_allclose(got[b, h], _brute_distance(P[b, h], g), rtol=1e-12)


def test_distance_right_neighbour_is_one_grid_step():
    g = 5
    P = np.zeros((g * g, g * g))
    for i in range(g * g):
        P[i, i + 1 if i % g < g - 1 else i - 1] = 1.0  # right neighbour (left at the edge)
    d = mean_attention_distance(P, grid=(g, g), num_prefix_tokens=0)
    np.testing.assert_allclose(d, 1.0 / (g - 1), rtol=1e-14)
    np.testing.assert_allclose(mean_attention_distance(P, grid=(g, g), num_prefix_tokens=0,
                                                       pixels=2.0), 2.0, rtol=1e-14)


def test_distance_grid_symmetry_and_prefix_invariance():
    g = 4
    rng = np.random.default_rng(3)
    P = _maps((g * g, g * g), seed=2)
    idx = np.arange(g * g).reshape(g, g)
    for perm in (np.rot90(idx).ravel(), idx.T.ravel(), idx[::-1].ravel()):
        Q = P[np.ix_(perm, perm)]
        np.testing.assert_allclose(mean_attention_distance(Q, grid=g, num_prefix_tokens=0),
                                   mean_attention_distance(P, grid=g, num_prefix_tokens=0),
                                   rtol=1e-12)
    # appending CLS rows/columns (random mass) leaves the value unchanged
    W = np.zeros((g * g + 2, g * g + 2))
    W[2:, 2:] = P * rng.uniform(0.2, 1.0, size=(g * g, 1))
    W[:, :2] = rng.uniform(size=(g * g + 2, 2))
    W /= W.sum(-1, keepdims=True)
    np.testing.assert_allclose(mean_attention_distance(W, grid=g, num_prefix_tokens=2),
                               mean_attention_distance(P, grid=g, num_prefix_tokens=0),
                               rtol=1e-12)


def test_distance_one_dimensional_sequence():
    L = 9
    P = _maps((L, L), seed=4)
    brute = np.mean([sum(P[i, j] * abs(i - j) / (L - 1) for j in range(L)) for i in range(L)])
    np.testing.assert_allclose(mean_attention_distance(P, grid=(1, L), num_prefix_tokens=0),
                               brute, rtol=1e-12)


def test_entropy_uniform_one_hot_and_normalized():
    L = 7
    np.testing.assert_allclose(map_entropy(np.full((3, L, L), 1.0 / L)), np.log(L), rtol=1e-14)
    assert np.all(map_entropy(np.eye(L)[None]) == 0)
    np.testing.assert_allclose(map_entropy(np.full((L, L), 1.0 / L), normalized=True), 1.0)
    P = _maps((2, L, L), seed=5)
    brute = -(P * np.log(P)).sum(-1).mean(-1)
    np.testing.assert_allclose(map_entropy(P, block_rows=2), brute, rtol=1e-13)


def test_head_deviation():
    P = _maps((4, 10, 10), seed=6)
    assert head_deviation(np.stack([P[0]] * 3), num_prefix_tokens=1) == pytest.approx(0.0)
    two = P[:2]
    brute = np.abs(two[0, 1:, 1:] - two[1, 1:, 1:]).mean() / 2  # std of two values: |a-b|/2
    np.testing.assert_allclose(head_deviation(two, block_rows=3), brute, rtol=1e-12)
    np.testing.assert_allclose(head_deviation(P, num_prefix_tokens=0),
                               P.std(axis=0).mean(), rtol=1e-12)


def test_js_similarity_bounds_and_brute_force():
    L = 6
    P = _maps((3, L, L), seed=7)
    S = head_similarity(P, metric="js", block_rows=4)
    np.testing.assert_allclose(np.diag(S), 0.0, atol=1e-15)
    np.testing.assert_allclose(S, S.T, rtol=1e-13)
    a, b = P[0], P[2]
    m = (a + b) / 2
    brute = np.mean(0.5 * (a * np.log(a / m)).sum(-1) + 0.5 * (b * np.log(b / m)).sum(-1))
    np.testing.assert_allclose(S[0, 2], brute, rtol=1e-12)
    disjoint = np.zeros((2, 2, 4))
    disjoint[0, :, :2] = 0.5
    disjoint[1, :, 2:] = 0.5
    disjoint = np.concatenate([disjoint, np.zeros((2, 2, 4))], axis=1)
    disjoint[:, 2:, :] = 0.25
    js = head_similarity(disjoint, metric="js")
    np.testing.assert_allclose(js[0, 1], 0.5 * math.log(2), rtol=1e-14)  # 2 of 4 rows disjoint
    kl = head_similarity(P, metric="kl")
    np.testing.assert_allclose(kl[0, 2], np.mean((a * np.log(a / b)).sum(-1)), rtol=1e-12)
    assert np.all(kl >= -1e-15) and not np.allclose(kl, kl.T)


def test_cka_invariances():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((3, 12, 5))
    P = _maps((3, 12, 12), seed=9)
    S = head_similarity(P, metric="cka", features=X)
    np.testing.assert_allclose(np.diag(S), 1.0, rtol=1e-13)
    Q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    Y = X.copy()
    Y[1] = 3.7 * X[1] @ Q  # orthogonal transform and isotropic scaling of head 1
    np.testing.assert_allclose(head_similarity(P, metric="cka", features=Y), S, rtol=1e-12)
    Xc = X - X.mean(1, keepdims=True)
    brute = (np.linalg.norm(Xc[2].T @ Xc[0]) ** 2
             / (np.linalg.norm(Xc[0].T @ Xc[0]) * np.linalg.norm(Xc[2].T @ Xc[2])))
    np.testing.assert_allclose(S[0, 2], brute, rtol=1e-12)
    np.testing.assert_allclose(np.diag(head_similarity(P, metric="cka")), 1.0, rtol=1e-13)


FUNCS = {
    "entropy": lambda P: map_entropy(P, block_rows=3),
    "distance": lambda P: mean_attention_distance(
        P, grid=(3, 3) if P.shape[-1] == 10 else (2, 2), block_rows=4),
    "deviation": lambda P: head_deviation(P, block_rows=4),
    "js": lambda P: head_similarity(P, metric="js", block_rows=4),
    "kl": lambda P: head_similarity(P, metric="kl"),
    "cka": lambda P: head_similarity(P, metric="cka"),
}


@pytest.mark.parametrize("name", list(FUNCS))
def test_numpy_torch_parity_batching_and_gradients(name):
    f = FUNCS[name]
    P = _maps((2, 3, 10, 10), seed=10)
    ref = f(P)
    assert isinstance(ref, np.ndarray) and ref.dtype == np.float64
    Pt = torch.tensor(P, requires_grad=True)
    got = f(Pt)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    np.testing.assert_allclose(got.detach().numpy(), ref, rtol=1e-12, atol=1e-14)
    got32 = f(torch.tensor(P, dtype=torch.float32))
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(f(P.astype(np.float32)), ref, rtol=1e-5, atol=1e-6)
    for b in range(2):  # leading dimensions are independent maps
        np.testing.assert_allclose(f(P[b]), ref[b], rtol=1e-13, atol=1e-15)
    got.sum().backward()
    assert Pt.grad is not None and torch.isfinite(Pt.grad).all()
    Ps = torch.tensor(_maps((2, 5, 5), seed=11) * 0.5 + 0.05, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: f(p).sum(), (Ps,))


def test_bad_inputs():
    P = _maps((2, 10, 10))
    with pytest.raises(ValueError, match="grid"):
        mean_attention_distance(P, grid=(4, 4))
    with pytest.raises(ValueError, match="grid"):
        mean_attention_distance(P, grid=(3, -3))
    with pytest.raises(ValueError, match="num_prefix_tokens"):
        mean_attention_distance(P, grid=(3, 3), num_prefix_tokens=10)
    with pytest.raises(ValueError, match="square"):
        map_entropy(P[..., :4])
    with pytest.raises(ValueError, match="metric"):
        head_similarity(P, metric="cos")
    with pytest.raises(ValueError, match="features"):
        head_similarity(P, metric="js", features=P)
    with pytest.raises(ValueError, match="features"):
        head_similarity(P, metric="cka", features=P[:, :4])
    with pytest.raises(ValueError, match="NaN"):
        map_entropy(np.full((3, 3), np.nan))
    with pytest.raises(TypeError, match="P"):
        map_entropy([[1.0]])
    with pytest.raises(ValueError, match="block_rows"):
        map_entropy(P, block_rows=0)
    with pytest.raises(ValueError, match="pixels"):
        patch_coordinates((2, 2), pixels=-1.0)
