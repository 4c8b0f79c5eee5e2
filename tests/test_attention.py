"""softmax_attention, kernel_attention and attention_matrix against loop references."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from structattn import (
    Causal,
    DecayedCausal,
    Dense,
    EluFeatures,
    FeatureMapAttention,
    LowRank,
    NormalizerWarning,
    PositiveRandomFeatures,
    ReluFeatures,
    SoftmaxAttention,
    TrigonometricRandomFeatures,
    attention_matrix,
    kernel_attention,
    softmax_attention,
)
from structattn.testing import assert_close

from .conftest import convert, to_np

torch = pytest.importorskip("torch")
RNG = np.random.default_rng(2024)


def loop_softmax(q, k, v, mask=None, scale=None):
    """Independent reference: per-row loops in float64 with log-sum-exp."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    out = np.zeros((*q.shape[:-1], v.shape[-1]))
    for idx in np.ndindex(*q.shape[:-2]):
        for i in range(q.shape[-2]):
            w = np.array([q[idx][i] @ k[idx][j] * scale for j in range(k.shape[-2])])
            m = np.ones_like(w) if mask is None else np.asarray(mask, dtype=float)[i]
            kept = m != 0
            if not kept.any():
                continue
            e = m * np.exp(np.where(kept, w, -np.inf) - w[kept].max())
            out[idx][i] = e @ v[idx] / e.sum()
    return out


def dense_kernel(fq, fk, v, mask=None):
    A = fq @ np.swapaxes(fk, -1, -2)
    if mask is not None:
        A = A * mask
    den = A.sum(-1, keepdims=True)
    return np.divide(A @ v, den, out=np.zeros(A.shape[:-1] + v.shape[-1:]), where=den != 0)


def tril(L, gamma=1.0, exclusive=False):
    i = np.arange(L)
    d = i[:, None] - i[None, :]
    return np.where(d > 0 if exclusive else d >= 0, gamma ** np.maximum(d, 0), 0.0)


# ---------------------------------------------------------------- softmax reference
MASKS = {
    "none": (None, None),
    "causal": ("causal", tril(9)),
    "decayed": (DecayedCausal(9, 0.7), tril(9, 0.7)),
    "exclusive": (Causal(9, exclusive=True), tril(9, exclusive=True)),
    "bool": ((b := RNG.uniform(size=(9, 9)) > 0.5), b.astype(float)),
    "dense": (Dense(d := RNG.uniform(0, 2, (9, 9))), d),
}


@pytest.mark.parametrize("name", list(MASKS))
def test_softmax_attention_matches_loop_reference(backend, dtype, name):
    q, k, v = RNG.standard_normal((3, 2, 3, 9, 5))
    mask, dense = MASKS[name]
    kwargs = {"causal": True} if isinstance(mask, str) else {"mask": mask}
    if isinstance(mask, np.ndarray):
        kwargs = {"mask": convert(backend, "bool", mask)[0]}
    out = softmax_attention(*convert(backend, dtype, q, k, v), backend=backend, **kwargs)
    assert out.dtype == convert(backend, dtype, q)[0].dtype
    assert_close(out, loop_softmax(q, k, v, dense), what=name)
    assert np.all(np.isfinite(to_np(out)))


def test_softmax_attention_adversarial_scores(backend):
    """Scores of size ~1e3 in both signs: stabilized by the row max over kept keys."""
    q, k, v = RNG.standard_normal((3, 11, 4))
    q = q * 40
    mask = tril(11)
    mask[5] = 0  # an empty row
    out = softmax_attention(*convert(backend, "float64", q, k, v), mask=Dense(mask),
                            backend=backend)
    assert_close(out, loop_softmax(q, k, v, mask), what="adversarial")
    assert np.all(to_np(out)[5] == 0)


def test_empty_rows_give_zeros_and_finite_gradients():
    mask = np.ones((6, 6))
    mask[2] = 0
    q, k, v = (torch.tensor(RNG.standard_normal((6, 3)), requires_grad=True) for _ in range(3))
    phi = PositiveRandomFeatures(3, 8, seed=0)
    for out in (softmax_attention(q, k, v, mask=Dense(mask)),
                kernel_attention(q, k, v, phi, mask=Dense(mask))):
        assert torch.all(out[2] == 0) and torch.all(torch.isfinite(out))
        grads = torch.autograd.grad(out.sum(), (q, k, v))
        assert all(torch.all(torch.isfinite(g)) for g in grads)


# ----------------------------------------------------------------- kernel attention
FEATURES = {
    "prf": PositiveRandomFeatures(5, 16, seed=1),
    "prf-hyperbolic": PositiveRandomFeatures(5, 8, seed=1, hyperbolic=True),
    "elu": EluFeatures(),
    "relu": ReluFeatures(eps=1e-2),
}
KMASKS = {
    "none": (None, None),
    "causal": (Causal(13), tril(13)),
    "decayed-exclusive": (DecayedCausal(13, 0.8, exclusive=True), tril(13, 0.8, True)),
    "lowrank*causal": (
        LowRank(u := RNG.uniform(0.5, 1, (13, 2)), w := RNG.uniform(0.5, 1, (13, 2)))
        * Causal(13),
        (u @ w.T) * tril(13),
    ),
    "dense": (Dense(d2 := RNG.uniform(0.1, 1, (13, 13))), d2),
}


@pytest.mark.parametrize("fname", list(FEATURES))
@pytest.mark.parametrize("mname", list(KMASKS))
def test_kernel_attention_matches_dense_reference(backend, dtype, fname, mname):
    phi = FEATURES[fname]
    mask, dense = KMASKS[mname]
    q, k, v = RNG.standard_normal((3, 2, 2, 13, 5))
    causal_keys = mname in ("causal", "decayed-exclusive", "lowrank*causal")
    expected = dense_kernel(phi.queries(q), phi.keys(k, causal=causal_keys), v, dense)
    # the raw (unstabilized) features define the same attention
    raw = dense_kernel(phi(q), phi(k), v, dense)
    exclusive_first_row = mname == "decayed-exclusive"
    if exclusive_first_row:  # row 0 has no key: zero output by definition
        expected[..., 0, :] = 0
        raw[..., 0, :] = 0
    assert_close(raw, expected, dtype="float64", what="raw vs stabilized")
    out = kernel_attention(*convert(backend, dtype, q, k, v), phi, mask=mask, backend=backend)
    assert_close(out, expected, what=f"{fname}/{mname}")


@pytest.mark.parametrize("L", [1, 2, 37, 300])
def test_causal_kernel_attention_lengths(backend, dtype, L):
    phi = PositiveRandomFeatures(8, 16, seed=2)
    q, k, v = RNG.standard_normal((3, 2, L, 8))
    expected = dense_kernel(phi.queries(q), phi.keys(k, causal=True), v, tril(L))
    out = kernel_attention(*convert(backend, dtype, q, k, v), phi, causal=True, backend=backend)
    assert_close(out, expected, what=f"L={L}")
    assert_close(to_np(attention_matrix(*convert(backend, dtype, q, k), feature_map=phi,
                                        causal=True, backend=backend)) @ v,
                 expected, dtype=dtype, what="attention_matrix")


@pytest.mark.parametrize(
    "phi",
    [PositiveRandomFeatures(6, 16, seed=3), TrigonometricRandomFeatures(6, 16, seed=3),
     EluFeatures()],
    ids=["prf", "trig", "elu"],
)
def test_causality_is_bit_identical(backend, dtype, phi):
    """Perturbing keys/values/queries after position i leaves rows <= i bit-identical."""
    L, i = 40, 17
    q, k, v = RNG.standard_normal((3, 2, L, 6))
    q2, k2, v2 = q.copy(), k.copy(), v.copy()
    k2[:, i + 1:] += 2 * RNG.standard_normal(k2[:, i + 1:].shape)
    v2[:, i + 1:] -= 3.0
    q2[:, i + 1:] *= 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NormalizerWarning)
        a = to_np(kernel_attention(*convert(backend, dtype, q, k, v), phi, causal=True,
                                   backend=backend))
        b = to_np(kernel_attention(*convert(backend, dtype, q2, k2, v2), phi, causal=True,
                                   backend=backend))
    np.testing.assert_array_equal(a[:, : i + 1], b[:, : i + 1])
    assert not np.array_equal(a[:, i + 1:], b[:, i + 1:])


def test_causal_softmax_is_bit_identical(backend):
    L, i = 30, 9
    q, k, v = RNG.standard_normal((3, L, 4))
    k2, v2 = k.copy(), v.copy()
    k2[i + 1:] *= 7
    v2[i + 1:] += 1
    a = to_np(softmax_attention(*convert(backend, "float64", q, k, v), causal=True,
                                backend=backend))
    b = to_np(softmax_attention(*convert(backend, "float64", q, k2, v2), causal=True,
                                backend=backend))
    np.testing.assert_array_equal(a[: i + 1], b[: i + 1])


def test_kernel_attention_approximates_softmax_with_many_features():
    q, k, v = RNG.standard_normal((3, 2, 24, 8)) * 0.5
    exact = softmax_attention(q, k, v)
    for causal in (False, True):
        exact = softmax_attention(q, k, v, causal=causal)
        approx = kernel_attention(q, k, v, PositiveRandomFeatures(8, 8192, seed=0),
                                  causal=causal)
        assert_close(approx, exact, rtol=0.03, what=f"m=8192 causal={causal}")


def test_torch_gradcheck_kernel_and_softmax_attention():
    q, k, v = (torch.tensor(RNG.standard_normal((2, 10, 4)), requires_grad=True)
               for _ in range(3))
    phi = PositiveRandomFeatures(4, 6, seed=0)
    for causal in (False, True):
        assert torch.autograd.gradcheck(
            lambda a, b, c, causal=causal: kernel_attention(a, b, c, phi, causal=causal),
            (q, k, v), fast_mode=True)
        assert torch.autograd.gradcheck(
            lambda a, b, c, causal=causal: softmax_attention(a, b, c, causal=causal), (q, k, v),
            fast_mode=True)
    mask = DecayedCausal(10, 0.9)
    assert torch.autograd.gradcheck(
        lambda a, b, c: kernel_attention(a, b, c, phi, mask=mask), (q, k, v), fast_mode=True)
    # one full (slow-mode) Jacobian check of the causal path on a tiny problem
    small = [t[:1, :5].detach().requires_grad_(True) for t in (q, k, v)]
    assert torch.autograd.gradcheck(
        lambda a, b, c: kernel_attention(a, b, c, phi, causal=True), small)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    L=st.integers(1, 20),
    Lk=st.integers(1, 20),
    d=st.integers(1, 6),
    dv=st.integers(1, 4),
    causal=st.booleans(),
    use_torch=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_hypothesis_shapes(batch, L, Lk, d, dv, causal, use_torch, seed):
    if causal:
        Lk = L
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((*batch, L, d))
    k = rng.standard_normal((*batch, Lk, d))
    v = rng.standard_normal((*batch, Lk, dv))
    backend = "torch" if use_torch else "numba"
    qb, kb, vb = convert(backend, "float64", q, k, v)
    phi = PositiveRandomFeatures(d, 5, seed=seed)
    out = kernel_attention(qb, kb, vb, phi, causal=causal)
    assert tuple(out.shape) == (*batch, L, dv)
    P = to_np(attention_matrix(qb, kb, feature_map=phi, causal=causal))
    assert_close(out, P @ v, dtype="float64", what="kernel vs matrix")
    np.testing.assert_allclose(P.sum(-1), 1.0, rtol=1e-12)
    sm = softmax_attention(qb, kb, vb, causal=causal)
    assert_close(sm, loop_softmax(q, k, v, tril(L) if causal else None), what="softmax")
    ones = softmax_attention(qb, kb, convert(backend, "float64", np.ones_like(v))[0],
                             causal=causal)
    np.testing.assert_allclose(to_np(ones), 1.0, rtol=1e-12)


def test_operator_objects():
    q, k, v = RNG.standard_normal((3, 2, 7, 4))
    op = FeatureMapAttention(PositiveRandomFeatures(4, 8, seed=0), causal=True)
    assert_close(op(q, k, v), op.matrix(q, k) @ v, what="FeatureMapAttention")
    ex = SoftmaxAttention(causal=True)
    assert_close(ex(q, k, v), ex.matrix(q, k) @ v, what="SoftmaxAttention")


def test_trig_negative_normalizers_are_reported():
    q, k, v = RNG.standard_normal((3, 64, 8)) * 2
    with pytest.warns(NormalizerWarning, match="normalizer"):
        kernel_attention(q, k, v, TrigonometricRandomFeatures(8, 2, seed=0))


def test_output_kind_device_dtype_follow_input():
    q, k, v = (torch.randn(2, 5, 3, dtype=torch.float32) for _ in range(3))
    out = kernel_attention(q, k, v, EluFeatures(), causal=True)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert out.device == q.device
    out_np = softmax_attention(*(np.ones((4, 2), dtype=np.float32) for _ in range(3)))
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.float32


# ------------------------------------------------------------------------- bad input
def _qkv(L=5, Lk=5, d=3, dv=2):
    return RNG.standard_normal((L, d)), RNG.standard_normal((Lk, d)), RNG.standard_normal((Lk, dv))


PHI = PositiveRandomFeatures(3, 4, seed=0)


@pytest.mark.parametrize("fn", ["softmax", "kernel"])
class TestBadInput:
    def call(self, fn, q, k, v, **kw):
        if fn == "softmax":
            return softmax_attention(q, k, v, **kw)
        return kernel_attention(q, k, v, PHI, **kw)

    def test_feature_size_mismatch(self, fn):
        q, k, v = _qkv()
        with pytest.raises(ValueError, match="q and k must have the same feature size d"):
            self.call(fn, q, k[:, :2], v)

    def test_key_value_length_mismatch(self, fn):
        q, k, v = _qkv()
        with pytest.raises(ValueError, match="k and v must have the same length L_k"):
            self.call(fn, q, k, v[:4])

    def test_batch_mismatch(self, fn):
        q, k, v = _qkv()
        with pytest.raises(ValueError, match=r"k must have the same leading \(batch, head\)"):
            self.call(fn, q[None], np.stack([k, k]), np.stack([v, v]))

    def test_dtype_mismatch(self, fn):
        q, k, v = _qkv()
        with pytest.raises(TypeError, match="k must have the same dtype as q"):
            self.call(fn, q, k.astype(np.float32), v)

    def test_integer_dtype(self, fn):
        q, k, v = _qkv()
        with pytest.raises(TypeError, match="q must have a floating dtype"):
            self.call(fn, q.astype(np.int64), k, v)

    def test_numpy_torch_mix(self, fn):
        q, k, v = _qkv()
        with pytest.raises(TypeError, match="both be numpy arrays or both torch tensors"):
            self.call(fn, q, torch.tensor(k), v)

    def test_device_mismatch(self, fn):
        q, k, v = (torch.tensor(a) for a in _qkv())
        with pytest.raises(ValueError, match="k must be on the same device as q"):
            self.call(fn, q, k.to("meta"), v, check_finite=False)

    @pytest.mark.parametrize("bad", [np.nan, np.inf])
    def test_non_finite(self, fn, bad):
        q, k, v = _qkv()
        v[2, 1] = bad
        with pytest.raises(ValueError, match="v contains NaN or Inf"):
            self.call(fn, q, k, v)

    def test_mask_size_mismatch(self, fn):
        with pytest.raises(ValueError, match=r"mask has shape \(4, 4\) but the attention is "
                                             r"L_q x L_k = 5 x 5"):
            self.call(fn, *_qkv(), mask=Causal(4))

    def test_float_mask_array_rejected(self, fn):
        with pytest.raises(TypeError, match="mask arrays must be boolean"):
            self.call(fn, *_qkv(), mask=np.ones((5, 5)))

    def test_unknown_backend(self, fn):
        with pytest.raises(ValueError, match="backend must be one of"):
            self.call(fn, *_qkv(), backend="cuda")

    def test_backend_kind_mismatch(self, fn):
        with pytest.raises(TypeError, match="backend='torch' requires torch tensors"):
            self.call(fn, *_qkv(), backend="torch")

    def test_causal_rectangular_is_bottom_right(self, fn):
        # L_q != L_k is allowed since issue 14: bottom-right aligned (tests/torch/)
        from structattn.masks import BottomRightCausal

        q, k, v = _qkv(L=4, Lk=6)
        got = self.call(fn, q, k, v, causal=True)
        ref = self.call(fn, q, k, v, mask=BottomRightCausal(4, 6))
        np.testing.assert_allclose(got, ref, rtol=1e-12)

    def test_one_dimensional_input(self, fn):
        q, k, v = _qkv()
        with pytest.raises(ValueError, match="q must have at least 2 dimensions"):
            self.call(fn, q[0], k, v)


def test_scale_errors():
    with pytest.raises(ValueError, match="scale must be a finite number"):
        softmax_attention(*_qkv(), scale=float("nan"))
    with pytest.raises(TypeError, match="scale must be a real number"):
        softmax_attention(*_qkv(), scale="0.5")
    q, k, _ = _qkv()
    with pytest.raises(ValueError, match="scale must be None when feature_map is given"):
        attention_matrix(q, k, feature_map=PHI, scale=0.3)


def test_feature_map_type_and_dim_errors():
    with pytest.raises(TypeError, match="feature_map must be a structattn FeatureMap"):
        kernel_attention(*_qkv(), feature_map=lambda x: x)
    with pytest.raises(ValueError, match="must equal the feature map's dim=4"):
        kernel_attention(*_qkv(), PositiveRandomFeatures(4, 4, seed=0))


def test_check_finite_can_be_disabled():
    q, k, v = _qkv()
    v[0, 0] = np.nan
    out = softmax_attention(q, k, v, check_finite=False)
    assert np.isnan(out[:, 0]).all()


def test_large_head_dim_float32_causal_features_do_not_underflow(backend):
    """Causal positive features stay representable at d = 256 in float32."""
    d, L = 256, 24
    q, k, v = RNG.standard_normal((3, L, d))
    phi = PositiveRandomFeatures(d, 32, seed=0)
    ref = kernel_attention(q, k, v, phi, causal=True, backend="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("error", NormalizerWarning)
        out = kernel_attention(*convert(backend, "float32", q, k, v), phi, causal=True,
                               backend=backend)
    assert_close(out, ref, what="d=256 float32 causal")


def test_underflowed_normalizers_are_reported():
    """Zero normalizers on non-empty mask rows warn instead of returning silent zeros."""
    q = np.zeros((4, 2))
    k = np.zeros((4, 2))
    k[2:] = 1e3  # keys 0, 1 have zero relu features: causal rows 0, 1 see nothing else
    v = np.ones((4, 1))
    with pytest.warns(NormalizerWarning, match="2 attention row"):
        out = kernel_attention(q + 1.0, k, v, ReluFeatures(), causal=True)
    assert np.all(out[:2] == 0)
    # an exclusive causal mask's empty first row is not reported
    with warnings.catch_warnings():
        warnings.simplefilter("error", NormalizerWarning)
        kernel_attention(q + 1, k + 1, v, ReluFeatures(), mask=Causal(4, exclusive=True))
