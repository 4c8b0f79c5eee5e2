"""Chunked-GEMM causal linear attention: chunked == row recurrence == dense reference.

Covers the shared scan core (numpy and torch), the numba chunked kernel and its row
recurrence reference, every chunk size class (1, 2, 7, ``C >= L``, the cost model's),
every causal mask kind (``Causal``, its exclusive variant, ``DecayedCausal``, the
exponential-decay masks), torch gradients, and bit-for-bit prefix consistency.
"""

from __future__ import annotations

import numpy as np
import pytest

from structattn import PositiveRandomFeatures, kernel_attention
from structattn.backends import kernel
from structattn.backends.numba.causal import causal_masked_matmul_recurrence
from structattn.backends.scan import choose_chunk_size
from structattn.masks import Causal, DecayedCausal, ExponentialDecay, SumOfExponentials
from structattn.testing import relative_error

torch = pytest.importorskip("torch")

TOL = {"float64": 1e-12, "float32": 1e-5}
RNG = np.random.default_rng(20240521)
N, L, M, DV = 2, 37, 5, 4
A64, B64 = RNG.uniform(0.0, 1.0, (2, N, L, M))
V64 = RNG.standard_normal((N, L, DV))
MASKS = {  # (gamma, exclusive)
    "causal": (1.0, False),
    "causal-exclusive": (1.0, True),
    "decayed": (0.9, False),
    "decayed-exclusive": (0.7, True),
}


def _dense(A, B, V, gamma, exclusive):
    i = np.arange(A.shape[-2])
    diff = i[:, None] - i[None, :]
    keep = diff > 0 if exclusive else diff >= 0
    Mk = np.where(keep, gamma ** np.maximum(diff, 0), 0.0)
    return (Mk * (A @ np.swapaxes(B, -1, -2))) @ V


def _run(backend, A, B, V, **opts):
    if backend == "torch":
        out = kernel("causal_masked_matmul", "torch")(*(torch.from_numpy(x) for x in (A, B, V)),
                                                      **opts)
        return out.numpy()
    return kernel("causal_masked_matmul", backend)(A, B, V, **opts)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", list(MASKS))
@pytest.mark.parametrize("backend", ["numpy", "numba", "torch"])
def test_chunked_equals_recurrence_equals_dense(backend, kind, dtype):
    gamma, exclusive = MASKS[kind]
    A, B, V = (x.astype(dtype) for x in (A64, B64, V64))
    ref = _dense(A64, B64, V64, gamma, exclusive)
    rec = causal_masked_matmul_recurrence(A, B, V, gamma=gamma, exclusive=exclusive)
    assert rec.dtype == np.dtype(dtype)
    assert relative_error(rec, ref) <= TOL[dtype]
    for chunk in (1, 2, 7, L, 4 * L, None):
        out = _run(backend, A, B, V, gamma=gamma, exclusive=exclusive, chunk_size=chunk)
        assert out.dtype == np.dtype(dtype) and out.shape == ref.shape
        assert relative_error(out, ref) <= TOL[dtype], (chunk, relative_error(out, ref))
        assert relative_error(out, rec) <= TOL[dtype], chunk


def test_float32_long_sequence_within_tolerance():
    """float32 over many chunks (default C, padded last chunk) against float64."""
    rng = np.random.default_rng(1)
    Lg = 1000
    A, B = rng.uniform(0.0, 1.0, (2, 2, Lg, 8))
    V = rng.standard_normal((2, Lg, 6))
    for gamma in (1.0, 0.995):
        ref = _dense(A, B, V, gamma, False)
        f32 = [x.astype(np.float32) for x in (A, B, V)]
        for backend in ("numpy", "numba", "torch"):
            assert relative_error(_run(backend, *f32, gamma=gamma), ref) <= 1e-5, backend


MASK_OBJECTS = {
    "causal": Causal(L),
    "causal-exclusive": Causal(L, exclusive=True),
    "decayed": DecayedCausal(L, 0.9),
    "decayed-exclusive": DecayedCausal(L, 0.7, exclusive=True),
    "exp-decay": ExponentialDecay(L, 0.8),
    "exp-decay-two-sided": ExponentialDecay(L, 0.8, 0.5),
    "sum-of-exp": SumOfExponentials(L, [1.0, -0.5], [0.95, 0.6]),
}


@pytest.mark.parametrize("backend", ["numpy", "numba", "torch"])
@pytest.mark.parametrize("name", list(MASK_OBJECTS))
def test_every_causal_mask_kind(name, backend):
    mask = MASK_OBJECTS[name]
    ref = (mask.to_dense() * (A64 @ np.swapaxes(B64, -1, -2))) @ V64
    for dtype in ("float64", "float32"):
        args = [x.astype(dtype) for x in (A64, B64, V64)]
        if backend == "torch":
            args = [torch.from_numpy(x) for x in args]
        out = mask.masked_matmul(*args, backend=backend)
        out = out.numpy() if backend == "torch" else out
        assert relative_error(out, ref) <= TOL[dtype], (name, dtype)


@pytest.mark.parametrize("backend", ["numpy", "numba", "torch"])
def test_kernel_attention_causal_matches_dense_features(backend):
    rng = np.random.default_rng(2)
    q, k, v = rng.standard_normal((3, 1, 2, 50, 8))
    fm = PositiveRandomFeatures(8, 16, seed=0)
    phi_q, phi_k = fm.queries(q), fm.keys(k, causal=True)
    scores = np.tril(phi_q @ np.swapaxes(phi_k, -1, -2))
    ref = (scores @ v) / scores.sum(-1, keepdims=True)
    args = (q, k, v) if backend != "torch" else tuple(torch.from_numpy(x) for x in (q, k, v))
    out = kernel_attention(*args, fm, causal=True, backend=backend)
    out = out.numpy() if backend == "torch" else out
    assert relative_error(out, ref) <= 1e-10


@pytest.mark.parametrize("backend", ["numpy", "numba", "torch"])
@pytest.mark.parametrize("kind", ["causal", "decayed-exclusive"])
def test_prefix_consistency_bit_for_bit(backend, kind):
    """Row i never depends on later rows: truncating the inputs leaves rows [:i] identical."""
    gamma, exclusive = MASKS[kind]
    rng = np.random.default_rng(3)
    for dtype, Lf, chunk, cuts in (("float32", 60, 7, (23, 50, 8)),
                                   ("float64", 60, 16, (17, 45)),
                                   ("float32", 300, None, (200, 131)),
                                   ("float32", 300, None, (1, 5, 17))):  # shorter than C
        A, B = rng.uniform(0.0, 1.0, (2, 3, Lf, 8)).astype(dtype)
        V = rng.standard_normal((3, Lf, 8)).astype(dtype)
        C = chunk or choose_chunk_size(8, 8, np.dtype(dtype).itemsize)
        full = _run(backend, A, B, V, gamma=gamma, exclusive=exclusive, chunk_size=chunk)
        for i in cuts:
            assert i % C != 0 and (i >= C or chunk is None)
            part = _run(backend, A[..., :i, :], B[..., :i, :], V[..., :i, :], gamma=gamma,
                        exclusive=exclusive, chunk_size=chunk)
            assert np.array_equal(part, full[..., :i, :]), (dtype, chunk, i)


@pytest.mark.parametrize("gamma,exclusive", [(1.0, False), (0.8, True), (0.9, False)])
def test_torch_gradcheck(gamma, exclusive):
    from structattn.backends.torch.causal import causal_masked_matmul

    rng = np.random.default_rng(4)
    A, B = (torch.tensor(x, requires_grad=True) for x in rng.uniform(0.2, 1.0, (2, 2, 9, 3)))
    V = torch.tensor(rng.standard_normal((2, 9, 2)), requires_grad=True)
    for chunk in (1, 4, 20, None):
        def f(a, b, v, chunk=chunk):
            return causal_masked_matmul(a, b, v, gamma=gamma, exclusive=exclusive,
                                        chunk_size=chunk)

        assert torch.autograd.gradcheck(f, (A, B, V))


def test_torch_function_saves_only_inputs():
    """O(L·(m + d_v)) memory: the autograd node keeps A, B, V and nothing per chunk."""
    from structattn.backends.torch.causal import causal_masked_matmul

    A, B = (torch.rand(2, 300, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    V = torch.randn(2, 300, 5, dtype=torch.float64, requires_grad=True)
    out = causal_masked_matmul(A, B, V, gamma=0.9, chunk_size=16)
    saved = out.grad_fn.saved_tensors
    assert len(saved) == 3
    assert sum(t.numel() for t in saved) == A.numel() + B.numel() + V.numel()
    out.sum().backward()
    ref_grads = [t.grad.clone() for t in (A, B, V)]
    for t in (A, B, V):
        t.grad = None
    i = torch.arange(300, dtype=torch.float64)
    diff = i[:, None] - i[None, :]
    Mk = torch.where(diff >= 0, 0.9 ** diff.clamp(min=0), torch.zeros_like(diff))
    ((Mk * (A @ B.transpose(-1, -2))) @ V).sum().backward()
    for g, t in zip(ref_grads, (A, B, V), strict=True):
        assert relative_error(g, t.grad) <= 1e-12


def test_chunk_size_choice_and_validation():
    for m, dv in ((1, 1), (8, 8), (64, 65), (256, 256)):
        for itemsize in (4, 8):
            C = choose_chunk_size(m, dv, itemsize)
            assert 16 <= C <= 128 and C & (C - 1) == 0
    assert choose_chunk_size(64, 65, 4) == 32
    A = np.ones((4, 2))
    for bad in (0, -1):
        with pytest.raises(ValueError, match="chunk_size must be an integer >= 1"):
            kernel("causal_masked_matmul", "numpy")(A, A, A, chunk_size=bad)
    for bad in (1.5, True, "8"):
        with pytest.raises(TypeError, match="chunk_size must be an integer >= 1"):
            kernel("causal_masked_matmul", "numba")(A, A, A, chunk_size=bad)
    with pytest.raises(ValueError, match="method must be one of"):
        kernel("causal_masked_matmul", "numba")(A, A, A, method="rows")


def test_broadcast_batch_dimensions():
    rng = np.random.default_rng(5)
    A = rng.uniform(0.0, 1.0, (3, 1, 20, 4))
    B = rng.uniform(0.0, 1.0, (1, 2, 20, 4))
    V = rng.standard_normal((2, 20, 3))
    ref = _dense(A, B, V, 0.9, False)
    for backend in ("numpy", "numba", "torch"):
        out = _run(backend, A, B, V, gamma=0.9, chunk_size=6)
        assert out.shape == (3, 2, 20, 3)
        assert relative_error(out, ref) <= 1e-12, backend


@pytest.mark.parametrize("backend", ["numpy", "numba", "torch"])
@pytest.mark.parametrize("kind", list(MASKS))
@pytest.mark.parametrize("chunk", [None, 1, 7, 64])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_normalizer_is_bit_for_bit_the_ones_column(backend, kind, chunk, dtype):
    """``normalizer=True`` (ones column built per chunk) == the product with ``[V | 1]``."""
    gamma, exclusive = MASKS[kind]
    A, B, V = (x.astype(dtype) for x in (A64, B64, V64))
    V1 = np.concatenate([V, np.ones_like(V[..., :1])], axis=-1)
    opts = {"gamma": gamma, "exclusive": exclusive, "chunk_size": chunk}
    ref = _run(backend, A, B, V1, **opts)
    run = kernel("causal_masked_matmul", backend)
    if backend == "torch":
        num, den = (t.numpy() for t in run(*(torch.from_numpy(x) for x in (A, B, V)),
                                           normalizer=True, **opts))
    else:
        num, den = run(A, B, V, normalizer=True, **opts)
    assert num.shape == V.shape and den.shape == (*V.shape[:-1], 1)
    assert np.array_equal(num, ref[..., :-1]) and np.array_equal(den, ref[..., -1:])
    dense = _dense(A64, B64, V64, gamma, exclusive)
    assert relative_error(num, dense) < TOL[dtype]


def test_normalizer_recurrence_and_torch_gradients():
    A, B, V = A64, B64, V64
    V1 = np.concatenate([V, np.ones_like(V[..., :1])], axis=-1)
    num, den = kernel("causal_masked_matmul", "numba")(A, B, V, normalizer=True,
                                                       method="recurrence")
    ref = causal_masked_matmul_recurrence(A, B, V1)
    assert np.array_equal(num, ref[..., :-1]) and np.array_equal(den, ref[..., -1:])
    run = kernel("causal_masked_matmul", "torch")
    leaves = [torch.from_numpy(x).requires_grad_() for x in (A, B, V)]
    num, den = run(*leaves, gamma=0.9, normalizer=True)
    (num.sum() + 2 * den.sum()).backward()
    grads = [t.grad.clone() for t in leaves]
    for t in leaves:
        t.grad = None
    v1 = torch.cat([leaves[2], torch.ones_like(leaves[2][..., :1])], -1)
    out = run(leaves[0], leaves[1], v1, gamma=0.9)
    (out[..., :-1].sum() + 2 * out[..., -1:].sum()).backward()
    for g, t in zip(grads, leaves, strict=True):
        assert torch.allclose(g, t.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "numba", "torch"])
def test_kernel_attention_normalizer_path_matches_ones_column(backend):
    """kernel_attention's causal path (no ones-column copy) gives the former bits."""
    from structattn.attention import _safe_divide

    rng = np.random.default_rng(11)
    q, k, v = (rng.standard_normal((2, 3, 45, 8)).astype(np.float32) for _ in range(3))
    phi = PositiveRandomFeatures(8, 16, seed=5)
    for mask in (None, DecayedCausal(45, 0.8, exclusive=True)):
        xs = (q, k, v) if backend != "torch" else tuple(torch.from_numpy(x) for x in (q, k, v))
        out = kernel_attention(*xs, phi, causal=True, mask=mask, backend=backend)
        full = Causal(45) if mask is None else mask
        A, B = phi.attention_features(*xs[:2], causal=True)
        V = xs[2]
        V1 = (np.concatenate([V, np.ones_like(V[..., :1])], -1) if backend != "torch"
              else torch.cat([V, torch.ones_like(V[..., :1])], -1))
        ref = full.masked_matmul(A, B, V1, backend=backend)
        ref = _safe_divide(ref[..., :-1], ref[..., -1:])
        out, ref = (np.asarray(x) for x in (out, ref))
        assert np.array_equal(out, ref)
