"""Haar analysis with PyWavelets as the independent oracle: E3 chain, energies, recall."""

from __future__ import annotations

import numpy as np
import pytest
import pywt

from structattn.mra import block_mean, mra_dense_reference
from structattn.mra.haar import (
    best_n_term,
    jensen_gap_map,
    level_energy,
    selection_recall,
    tree_projection,
)

from .test_mra import walk_inputs


def test_wavedec2_approximation_band_is_scaled_block_means():
    E = np.random.default_rng(0).uniform(size=(64, 64))
    for j in (1, 3, 5):
        cA = pywt.wavedec2(E, "haar", mode="periodization", level=j)[0]
        np.testing.assert_allclose(cA, 2**j * block_mean(E, 2**j), rtol=1e-12)


@pytest.mark.parametrize("mode", ["full", "sparse"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_oracle_chain(mode, seed):
    """best-N-term <= tree projection <= MRA (unnormalised, same shift), N = n_b² + k(b²-1)."""
    L, b, bpr = 128, 16, 2
    q, k, v = walk_inputs((2, L), 8, seed=20 + seed)
    ref = mra_dense_reference(q, k, v, block_size=b, blocks_per_row=bpr, mode=mode)
    E, M = ref.exact_kernel, ref.selected
    n, kk = L // b, (L // b) * bpr
    tree = tree_projection(E, M)
    if mode == "full":
        # PyWavelets tree projection == block means off the selection, exact on it
        np.testing.assert_allclose(tree, ref.tree_kernel, rtol=0, atol=1e-12)
        N = n * n + kk * (b * b - 1)
        tree_err = np.linalg.norm(E - tree, axis=(-2, -1))
    else:
        # MRA-2-s keeps exactly the selected blocks: it is its own projection
        np.testing.assert_allclose(ref.kernel, ref.tree_kernel, rtol=0, atol=1e-15)
        N = kk * b * b
        tree_err = np.linalg.norm(E - ref.tree_kernel, axis=(-2, -1))
    best_err = np.linalg.norm(E - best_n_term(E, N), axis=(-2, -1))
    mra_err = np.linalg.norm(E - ref.kernel, axis=(-2, -1))
    assert np.all(best_err <= tree_err + 1e-12)
    assert np.all(tree_err <= mra_err + 1e-12)
    if mode == "full":
        assert np.all(tree_err < mra_err)  # the Jensen gap is strictly positive here


def test_best_n_term_error_is_discarded_coefficient_norm():
    E = np.random.default_rng(1).standard_normal((32, 32))
    arr, _ = pywt.coeffs_to_array(pywt.wavedec2(E, "haar", mode="periodization"))
    mags = np.sort(np.abs(arr).ravel())[::-1]
    for n in (0, 10, 500, 1024):
        err = np.linalg.norm(E - best_n_term(E, n))
        np.testing.assert_allclose(err, np.linalg.norm(mags[n:]), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(best_n_term(E, 1024), E, atol=1e-12)


def test_level_energy_parseval_and_constant_matrix():
    E = np.random.default_rng(2).uniform(size=(3, 64, 64))
    en = level_energy(E)
    assert en.shape == (3, 7)
    np.testing.assert_allclose(en.sum(-1), (E**2).sum(axis=(-2, -1)), rtol=1e-12)
    blocky = np.kron(np.random.default_rng(3).uniform(size=(4, 4)), np.ones((16, 16)))
    en = level_energy(blocky)
    np.testing.assert_allclose(en[1:5], 0.0, atol=1e-20)  # no detail below scale 16


def test_jensen_gap_map():
    q, k, v = walk_inputs((2, 128), 8, seed=4)
    ref = mra_dense_reference(q, k, v, block_size=16, blocks_per_row=2)
    g = jensen_gap_map(ref.scores, 16)
    assert g.shape == (2, 8, 8) and np.all(g <= 1.0) and np.all(g > 0)
    c = ref.shift[..., None, None]
    np.testing.assert_allclose(g, np.exp(ref.block_scores - c) / block_mean(ref.exact_kernel,
                                                                           16), rtol=1e-10)
    flat = jensen_gap_map(np.zeros((32, 32)), 16)
    np.testing.assert_allclose(flat, 1.0, rtol=1e-15)


def test_selection_recall():
    E = np.kron(np.arange(16.0).reshape(4, 4), np.ones((8, 8)))
    top = np.zeros((4, 4), dtype=bool)
    top.ravel()[-3:] = True
    assert selection_recall(E, top) == 1.0
    bottom = np.zeros((4, 4), dtype=bool)
    bottom.ravel()[:3] = True
    assert selection_recall(E, bottom) == 0.0
    q, k, v = walk_inputs((3, 128), 8, seed=5)
    ref = mra_dense_reference(q, k, v, block_size=16, blocks_per_row=2)
    r = selection_recall(ref.exact_kernel, ref.selected)
    assert r.shape == (3,) and np.all((0 <= r) & (r <= 1))


def test_haar_bad_input():
    with pytest.raises(ValueError, match="power of two"):
        best_n_term(np.ones((12, 12)), 3)
    with pytest.raises(ValueError, match=r"n must be an int in \[0, L\*\*2"):
        best_n_term(np.ones((8, 8)), 65)
    with pytest.raises(ValueError, match="selected must have shape"):
        tree_projection(np.ones((8, 8)), np.ones((2, 2, 2), dtype=bool))
