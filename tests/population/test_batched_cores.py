"""The batched math cores of population_map: draws, FAVOR+ and softmax cores, auto rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from structattn import PositiveRandomFeatures, kernel_attention, softmax_attention
from structattn.features import orthogonal_gaussian
from structattn.masks import DecayedCausal
from structattn.population import LOOP_ABOVE, _draws, _favor, population_map
from structattn.population._favor import favor_population
from structattn.population._softmax import softmax_population


def _qkv(kind="numpy", shape=(2, 40, 6), seed=0, grad=False):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(shape) * 0.7 for _ in range(3)]
    if kind == "torch":
        xs = [torch.from_numpy(x).requires_grad_(grad) for x in xs]
    return xs


def _np(x):
    return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@pytest.mark.parametrize(("m", "d"), [(128, 32), (8, 6), (16, 6), (5, 7)])
def test_orthogonal_draws_equal_single_draws(m, d):
    seeds = [0, 3, 11]
    W = _draws.orthogonal_draws(m, d, seeds)
    for p, s in enumerate(seeds):
        np.testing.assert_array_equal(W[p], orthogonal_gaussian(m, d, s))


def test_feature_map_cache_equals_direct_construction():
    _draws.clear_cache()
    maps = _draws.feature_maps(PositiveRandomFeatures, 6, 16, [1, 2, 1], [None, 0.3, None],
                               {"orthogonal": True})
    assert maps[0] is maps[2]  # one draw per (seed, scale)
    for phi, s, t in zip(maps, [1, 2, 1], [None, 0.3, None], strict=True):
        ref = PositiveRandomFeatures(6, 16, seed=s, scale=t)
        np.testing.assert_array_equal(phi.projection, ref.projection)
        assert phi.temperature == ref.temperature and not phi.projection.flags.writeable
    again = _draws.feature_maps(PositiveRandomFeatures, 6, 16, [2], [0.3],
                                {"orthogonal": True})
    assert again[0] is maps[1]


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("mode", ["plain", "causal", "decay", "hyperbolic"])
def test_favor_core_blocks_equal_loop(kind, mode, monkeypatch):
    # a tiny block size forces several member blocks (and the in-place passes)
    monkeypatch.setattr(_favor, "BLOCK_BYTES", 1)
    q, k, v = _qkv(kind)
    seeds, gammas = [0, 1, 2], [0.8, 0.95, 1.0]
    maps = [PositiveRandomFeatures(6, 8, seed=s, scale=0.3 + 0.1 * s,
                                   hyperbolic=mode == "hyperbolic") for s in seeds]
    out = favor_population(q, k, v, maps, causal=mode == "causal",
                           gammas=gammas if mode == "decay" else None)
    for p, phi in enumerate(maps):
        mask = DecayedCausal(40, gammas[p]) if mode == "decay" else None
        ref = kernel_attention(q, k, v, phi, mask=mask, causal=mode == "causal")
        np.testing.assert_allclose(_np(out[p]), _np(ref), rtol=0, atol=1e-12)


def test_favor_core_float32_and_gradients():
    q, k, v = (x.astype(np.float32) for x in _qkv())
    maps = [PositiveRandomFeatures(6, 8, seed=s) for s in range(3)]
    out = favor_population(q, k, v, maps, causal=True)
    assert out.dtype == np.float32
    for p, phi in enumerate(maps):
        np.testing.assert_allclose(out[p], kernel_attention(q, k, v, phi, causal=True),
                                   rtol=0, atol=1e-5)
    qt, kt, vt = _qkv("torch", grad=True)
    out = favor_population(qt, kt, vt, maps, gammas=[0.9, 0.99, 1.0])
    out.square().sum().backward()
    grads = [x.grad.clone() for x in (qt, kt, vt)]
    for x in (qt, kt, vt):
        x.grad = None
    loop = torch.stack([kernel_attention(qt, kt, vt, phi, mask=DecayedCausal(40, g))
                        for phi, g in zip(maps, [0.9, 0.99, 1.0], strict=True)])
    loop.square().sum().backward()
    for g, x in zip(grads, (qt, kt, vt), strict=True):
        torch.testing.assert_close(g, x.grad, rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("causal", [False, True])
def test_softmax_core_equals_loop(kind, causal, monkeypatch):
    monkeypatch.setattr(_favor, "BLOCK_BYTES", 1)
    q, k, v = _qkv(kind, grad=kind == "torch")
    scales = [0.05, 0.3, 2.0]
    out = softmax_population(q, k, v, scales, causal=causal)
    for p, s in enumerate(scales):
        ref = softmax_attention(q, k, v, scale=s, causal=causal)
        np.testing.assert_allclose(_np(out[p]), _np(ref), rtol=0, atol=1e-12)
    if kind == "torch":
        out.sum().backward()
        assert torch.isfinite(q.grad).all()
    with pytest.raises(ValueError):
        softmax_population(q, k, v, [0.1, -1.0])


def test_torch_cpu_no_grad_runs_numpy_core_and_stays_torch():
    q, k, v = _qkv("torch")
    with torch.no_grad():
        out = population_map("performer", {"seed": [0, 1]}, q, k, v, num_features=8,
                             backend="torch")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    ref = population_map("performer", {"seed": [0, 1]}, *(_np(x) for x in (q, k, v)),
                         num_features=8)
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-12)


def test_auto_loops_on_long_inputs_for_random_features():
    q, k, v = _qkv(shape=(1, LOOP_ABOVE + 1, 4))
    out, info = population_map("performer", {"seed": [0, 1]}, q, k, v, num_features=4,
                               return_info=True)
    assert not info.vectorized and "auto: L = " in info.reason
    vec, info = population_map("performer", {"seed": [0, 1]}, q, k, v, num_features=4,
                               vectorize=True, return_info=True)
    assert info.vectorized
    np.testing.assert_allclose(out, vec, rtol=0, atol=1e-12)
    _, info = population_map("exact", {"scale": [0.1, 0.2]}, q[..., :64, :], k[..., :64, :],
                             v[..., :64, :], return_info=True)
    assert info.vectorized


def test_cores_refuse_mixed_maps_and_route_empty_inputs():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="one dim"):
        favor_population(q, k, v, [PositiveRandomFeatures(6, 8, seed=0),
                                    PositiveRandomFeatures(6, 16, seed=1)])
    with pytest.raises(ValueError, match="L_q == L_k"):
        favor_population(q[..., :5, :], k, v, [PositiveRandomFeatures(6, 8, seed=0)],
                         causal=True)
    empty = q[..., :0, :]
    for name, grid in (("performer", {"seed": [0, 1]}), ("exact", {"scale": [0.1, 0.2]})):
        out = population_map(name, grid, empty, k, v, num_features=8) if name != "exact" \
            else population_map(name, grid, empty, k, v)
        assert out.shape == (2, 2, 0, 6)


def test_stacked_features_with_a_structured_mask_use_the_generic_feature_path():
    """The fused numba feature kernels serve only the base projection: a stacked map
    (per-member projections) under a mask must not be routed to them."""
    from structattn.masks import Toeplitz
    from structattn.population import population_map

    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 64, 8)).astype(np.float32) for _ in range(3))
    mask = Toeplitz(np.exp(-0.1 * np.abs(np.arange(-63, 64))))
    grid = {"seed": [0, 1, 2]}
    batched = population_map("performer", grid, q, k, v, mask=mask, vectorize=True)
    looped = population_map("performer", grid, q, k, v, mask=mask, vectorize=False)
    np.testing.assert_allclose(batched, looped, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("mode", ["causal", "decay"])
@pytest.mark.parametrize("dense_max", [0, 10**6])
def test_favor_causal_dense_and_scan_paths_equal_loop(kind, mode, dense_max, monkeypatch):
    # dense_max = 0: the chunked scan; 10**6: the dense (φ_q φ_kᵀ ⊙ D_p) [V | 1] path
    monkeypatch.setattr(_favor, "DENSE_CAUSAL_MAX", dense_max)
    monkeypatch.setattr(_favor, "BLOCK_BYTES", 1)  # several member blocks
    q, k, v = _qkv(kind, shape=(2, 3, 70, 5), seed=4)  # two batch dims, > one chunk
    gammas = [0.6, 0.97, 1.0]
    maps = [PositiveRandomFeatures(5, 12, seed=s, scale=0.2 + 0.1 * s) for s in range(3)]
    out = favor_population(q, k, v, maps, causal=True,
                           gammas=gammas if mode == "decay" else None)
    assert tuple(out.shape) == (3, 2, 3, 70, 5)
    for p, phi in enumerate(maps):
        mask = DecayedCausal(70, gammas[p]) if mode == "decay" else None
        ref = kernel_attention(q, k, v, phi, mask=mask, causal=mode == "causal")
        np.testing.assert_allclose(_np(out[p]), _np(ref), rtol=0, atol=1e-12)


def test_dense_causal_matrices_are_cached_and_exact():
    g = np.array([0.5, 0.9])
    like = np.zeros(1, dtype=np.float32)
    D = _favor._causal_matrices(6, g, like)
    assert D.dtype == np.float32 and D.shape == (2, 6, 6)
    assert _favor._causal_matrices(6, g.copy(), like) is D  # keyed by value, not identity
    for p, gamma in enumerate(g):
        np.testing.assert_allclose(D[p], DecayedCausal(6, gamma).to_dense(), rtol=1e-7)
    np.testing.assert_array_equal(_favor._causal_matrices(4, None, like),
                                  np.tril(np.ones((4, 4))))


def test_favor_core_torch_cpu_fast_path_float32_matches_loop():
    # the vectorized FAVOR+ core at the benchmark's small problem shape (dense causal
    # path, transposed query features), float32, against the loop of single calls
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((1, 128, 32)).astype(np.float32) * 0.5 for _ in range(3))
    for grid, fixed in (({"seed": [0, 1, 2]}, {}), ({"gamma": [0.9, 0.99, 1.0]}, {"seed": 0})):
        for kind in ("numpy", "torch"):
            xs = (q, k, v) if kind == "numpy" else tuple(torch.from_numpy(x) for x in (q, k, v))
            with torch.no_grad():
                vec = population_map("performer", grid, *xs, num_features=64, vectorize=True,
                                     **fixed)
                loop = population_map("performer", grid, *xs, num_features=64,
                                      vectorize=False, **fixed)
            assert vec.dtype == loop.dtype
            np.testing.assert_allclose(_np(vec), _np(loop), rtol=0, atol=2e-5)
