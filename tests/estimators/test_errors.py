"""Bad input: clear errors naming the argument, raised before any work."""

from __future__ import annotations

import numpy as np
import pytest

from structattn.estimators import (
    cosformer,
    cosformer_matrix,
    lara,
    pooling_matrix,
    randomized_attention,
    rfa_snis,
)

rng = np.random.default_rng(0)
Q, K, V = rng.standard_normal((3, 1, 8, 4))


def test_lara_num_landmarks_larger_than_length():
    with pytest.raises(ValueError, match=r"num_landmarks must be <= the sequence length.*9"):
        lara(Q, K, V, num_landmarks=9, seed=0)
    with pytest.raises(ValueError, match="num_landmarks must be an integer >= 1"):
        lara(Q, K, V, num_landmarks=0, seed=0)
    with pytest.raises(ValueError, match="num_landmarks"):
        pooling_matrix(8, 9)


def test_lara_alpha_coeff_negative():
    with pytest.raises(ValueError, match=r"alpha_coeff must be >= 0, got -0.5"):
        lara(Q, K, V, num_landmarks=2, seed=0, alpha_coeff=-0.5)


def test_lara_other_parameters():
    with pytest.raises(ValueError, match="mis must be one of"):
        lara(Q, K, V, num_landmarks=2, seed=0, mis="optimal")
    with pytest.raises(ValueError, match="landmarks must be one of"):
        lara(Q, K, V, num_landmarks=2, seed=0, landmarks="pool")
    with pytest.raises(ValueError, match="antithetic"):
        lara(Q, K, V, num_landmarks=2, antithetic=True, deterministic=True)
    with pytest.raises(ValueError, match="perfect square"):
        lara(Q, K, V, num_landmarks=4, seed=0, landmarks="adaptive-2d")
    with pytest.raises(ValueError, match="grid_shape"):
        lara(Q, K, V, num_landmarks=4, seed=0, landmarks="adaptive-2d", grid_shape=(3, 3))
    with pytest.raises(ValueError, match="num_landmarks to be a perfect square"):
        lara(Q, K, V, num_landmarks=3, seed=0, landmarks="adaptive-2d", grid_shape=(2, 4))
    with pytest.raises(ValueError, match=r"noise must have shape \(1, 2, 4\)"):
        lara(Q, K, V, num_landmarks=2, noise=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="alpha_floor must be a finite number > 0"):
        lara(Q, K, V, num_landmarks=2, seed=0, alpha_floor=0.0)
    with pytest.raises(ValueError, match="alpha_floor only applies to mis='opt'"):
        lara(Q, K, V, num_landmarks=2, seed=0, alpha_floor=1e-8, mis="bh")
    with pytest.raises(TypeError, match="seed must be"):
        lara(Q, K, V, num_landmarks=2)  # noisy mode without a seed


def test_mismatched_shapes_every_function():
    cases = [
        (lambda q, k, v: lara(q, k, v, num_landmarks=2, seed=0)),
        (lambda q, k, v: randomized_attention(q, k, v, num_samples=2, seed=0)),
        (lambda q, k, v: rfa_snis(q, k, v, num_samples=4, seed=0)),
        (lambda q, k, v: cosformer(q, k, v)),
    ]
    for fn in cases:
        with pytest.raises(ValueError, match="same feature size d"):
            fn(Q, K[..., :3], V)
        with pytest.raises(ValueError, match="same length L_k"):
            fn(Q, K, V[..., :7, :])
        with pytest.raises(ValueError, match="leading"):
            fn(Q, np.concatenate([K, K]), np.concatenate([V, V]))
        with pytest.raises(TypeError, match="floating dtype"):
            fn(Q.astype(np.int64), K, V)
        bad = Q.copy()
        bad[0, 0, 0] = np.nan
        with pytest.raises(ValueError, match="q contains NaN"):
            fn(bad, K, V)


def test_randomized_attention_parameters():
    with pytest.raises(ValueError, match="num_samples must be an integer >= 1, got 0"):
        randomized_attention(Q, K, V, num_samples=0, seed=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        randomized_attention(Q, K, V, num_samples=1, seed=0, mode="mean")
    with pytest.raises(ValueError, match="noise_scale must be a finite number >= 0"):
        randomized_attention(Q, K, V, num_samples=1, seed=0, noise_scale=-1.0)
    with pytest.raises(ValueError, match="causal=True needs L_q == L_k"):
        randomized_attention(Q[..., :4, :], K, V, num_samples=1, seed=0, causal=True)
    with pytest.raises(ValueError, match=r"components must lie in \[0, 7\]"):
        randomized_attention(Q, K, V, num_samples=1, components=np.full((1, 1, 8), 8),
                             deterministic=True)
    with pytest.raises(ValueError, match="no future key"):
        randomized_attention(Q, K, V, num_samples=1, components=np.full((1, 1, 8), 7),
                             deterministic=True, causal=True)
    with pytest.raises(ValueError, match="only used with mode='one-sample'"):
        randomized_attention(Q, K, V, num_samples=1, components=np.zeros((1, 1, 8)),
                             mode="key-mean", seed=0)
    with pytest.raises(TypeError, match="seed must be"):
        randomized_attention(Q, K, V, num_samples=1)
    with pytest.raises(TypeError, match="causal must be a bool"):
        randomized_attention(Q, K, V, num_samples=1, seed=0, causal="yes")


def test_rfa_snis_and_cosformer_parameters():
    with pytest.raises(ValueError, match="projection must have shape"):
        rfa_snis(Q, K, V, projection=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="not both"):
        rfa_snis(Q, K, V, projection=np.zeros((4, 4)), num_samples=4, seed=0)
    with pytest.raises(TypeError, match="num_samples"):
        rfa_snis(Q, K, V)
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        rfa_snis(Q, K, V, num_samples=4, seed=0, scale=-1.0)
    with pytest.raises(ValueError, match=r"max_length must be >= the sequence length L=8"):
        cosformer(Q, K, V, max_length=7)
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        cosformer_matrix(Q, K, eps=-1.0)
    with pytest.raises(ValueError, match="causal=True needs L_q == L_k"):
        cosformer(Q[..., :3, :], K, V, causal=True)
    with pytest.raises(TypeError, match="backend='torch' requires torch tensors"):
        cosformer(Q, K, V, backend="torch")
