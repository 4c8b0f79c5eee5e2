"""FLASH mixed-chunk attention vs its dense operator, GAU, causality, gradients."""

from __future__ import annotations

import copy

import pytest
import torch

from structattn.layers import FLASH, GAU
from structattn.testing import assert_close

D_MODEL, QK = 6, 4


def make_flash(C: int, causal: bool, *, bias: int | None = 3, seed: int = 0,
               dtype=torch.float64, **kw) -> FLASH:
    """A FLASH layer with O(1) random heads (the 0.02 init would make the test weak)."""
    torch.manual_seed(seed)
    layer = FLASH(D_MODEL, chunk_size=C, qk_dim=QK, causal=causal, rel_pos_bias=bias,
                  residual=False, **kw).to(dtype)
    with torch.no_grad():
        layer.gamma.normal_()
        layer.beta.normal_(std=0.5)
        if layer.rel_bias is not None:
            layer.rel_bias.normal_()
    return layer


def x_of(shape, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, D_MODEL, generator=g, dtype=torch.float64).to(dtype)


def explicit_operator(layer: FLASH, x: torch.Tensor) -> torch.Tensor:
    """M_ij entry by entry from the definition (kernels.md §3.2), one batch element."""
    _, _, heads = layer.project(x)
    qq, kq, ql, kl = (h.detach() for h in heads)
    T, C = x.shape[-2], layer.chunk_size
    cq, cl = layer.scales(T)
    M = torch.zeros(T, T, dtype=x.dtype)
    D = layer.rel_pos_bias
    for i in range(T):
        for j in range(T):
            same = i // C == j // C
            if same and (not layer.causal or j <= i):
                b = 0.0 if D is None else float(layer.rel_bias[max(-D, min(D, i - j)) + D])
                M[i, j] += torch.relu(qq[i] @ kq[j] * cq + b) ** 2
            if (j // C < i // C) if layer.causal else True:
                M[i, j] += cl * (ql[i] @ kl[j])
    return M


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("C", [1, 3, 4, 12])
def test_dense_operator_matches_definition(causal, C):
    layer = make_flash(C, causal)
    x = x_of((12,))
    with torch.no_grad():
        assert_close(layer.dense_operator(x), explicit_operator(layer, x), rtol=1e-13,
                     what=f"dense operator C={C} causal={causal}")


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("T,C", [(12, 1), (12, 3), (13, 3), (13, 4), (11, 4), (13, 13),
                                 (7, 10)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_mixed_chunk_equals_dense_operator(causal, T, C, dtype):
    layer = make_flash(C, causal, dtype=dtype)
    x = x_of((2, 3, T), dtype=dtype)  # extra leading dimension
    ref_layer = copy.deepcopy(layer).double()
    x64 = x.double()
    with torch.no_grad():
        got = layer(x)
        ref = ref_layer.forward_with_operator(x64, ref_layer.dense_operator(x64))
    name = "float64" if dtype == torch.float64 else "float32"
    with torch.no_grad():  # both terms are exercised (the relu² term is not all zero)
        _, _, (_, _, ql, kl) = ref_layer.project(x64)
        M = ref_layer.dense_operator(x64)
        lin = ref_layer.scales(T)[1] * (ql @ kl.transpose(-1, -2))
        if not causal:
            assert bool(((M - lin).abs() > 1e-3).any())
    assert got.dtype == dtype and got.shape == x.shape
    assert_close(got, ref, dtype=name, what=f"FLASH T={T} C={C} causal={causal}")


@pytest.mark.parametrize("rel", [None, 2])
def test_chunk_equal_length_causal_is_quadratic_gau(rel):
    T = 11
    layer = make_flash(T, True, bias=rel)
    gau = GAU(D_MODEL, qk_dim=QK, causal=True, scale="length", rel_pos_bias=rel,
              residual=False).double()
    state = layer.state_dict()
    state["gamma"], state["beta"] = state["gamma"][:2], state["beta"][:2]
    gau.load_state_dict(state)
    x = x_of((2, T))
    with torch.no_grad():
        assert_close(layer(x), gau(x), rtol=1e-13, what="FLASH(C=T) vs GAU")
        assert_close(layer(x), layer.quadratic_gau()(x), rtol=1e-13,
                     what="FLASH(C=T) vs quadratic_gau()")
        # the linear term vanishes: the operators agree entry by entry
        assert_close(layer.dense_operator(x), gau.dense_operator(x), rtol=1e-13)


def test_chunk_one_causal_is_linear_plus_diagonal():
    T = 9
    layer = make_flash(1, True, bias=None)
    x = x_of((T,))
    with torch.no_grad():
        _, _, (qq, kq, ql, kl) = layer.project(x)
        cq, cl = layer.scales(T)
        M = torch.diag(torch.relu((qq * kq).sum(-1) * cq) ** 2)
        M = M + torch.tril(ql @ kl.T, diagonal=-1) * cl
        assert_close(layer.dense_operator(x), M, rtol=1e-13)
        assert_close(layer(x), layer.forward_with_operator(x, M), rtol=1e-12)


def test_noncausal_global_sum_includes_own_chunk():
    """Pins the paper's global (not per-chunk) non-causal state (FLASH-pytorch #2)."""
    T, C = 8, 4
    layer = make_flash(C, False, bias=3)
    x = x_of((T,))
    with torch.no_grad():
        _, _, (_, _, ql, kl) = layer.project(x)
        _, cl = layer.scales(T)
        M = layer.dense_operator(x)
        # inside a chunk: quadratic term + linear term; across chunks: linear only
        assert_close(M[:4, 4:], cl * ql[:4] @ kl[4:].T, rtol=1e-13)
        lin = cl * ql[:4] @ kl[:4].T
        assert not torch.allclose(M[:4, :4], lin)
        assert torch.all(M[:4, :4] - lin >= -1e-12)  # relu² part is nonnegative


@pytest.mark.parametrize("rule", ["chunk", "length", 0.3])
def test_linear_scale_rules(rule):
    T, C = 10, 4
    layer = make_flash(C, False, bias=None, linear_scale=rule)
    unit = make_flash(C, False, bias=None, linear_scale=1.0)
    x = x_of((T,))
    expect = {"chunk": 1 / C, "length": 1 / T}.get(rule, rule)
    assert layer.scales(T) == (1 / C, expect)
    with torch.no_grad():
        _, _, (_, _, ql, kl) = unit.project(x)
        diff = layer.dense_operator(x) - unit.dense_operator(x)  # same parameters
        assert_close(diff, (expect - 1.0) * (ql @ kl.T), rtol=1e-12)
    # "length": the operator changes with T for the same tokens (documented)
    long = make_flash(C, False, bias=None, linear_scale="length")
    with torch.no_grad():
        M_long = long.dense_operator(x_of((T + 4,)))
    assert not torch.allclose(M_long[:T, :T], layer.dense_operator(x))


def test_quadratic_scale_float():
    layer = make_flash(4, True, bias=None, quadratic_scale=0.7)
    x = x_of((8,))
    with torch.no_grad():
        _, _, (qq, kq, _, _) = layer.project(x)
        M = layer.dense_operator(x)
        assert_close(M[1, 0], torch.relu(qq[1] @ kq[0] * 0.7) ** 2, rtol=1e-13)


@pytest.mark.parametrize("C", [1, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_causality_bit_identical_across_chunk_boundaries(C, dtype):
    T = 13
    layer = make_flash(C, True, dtype=dtype)
    x = x_of((2, T), dtype=dtype)
    with torch.no_grad():
        y = layer(x)
        for i in (0, C - 1, C, 2 * C - 1, 2 * C, T - 2):
            x2 = x.clone()
            x2[:, i + 1:] = x_of((2, T - i - 1), seed=100 + i, dtype=dtype) * 3
            y2 = layer(x2)
            assert torch.equal(y2[:, :i + 1], y[:, :i + 1]), f"row {i} changed (C={C})"
            assert not torch.equal(y2[:, i + 1:], y[:, i + 1:])


def test_noncausal_depends_on_future():
    layer = make_flash(4, False)
    x = x_of((10,))
    x2 = x.clone()
    x2[-1, 0] += 1  # (a constant shift would vanish in the LayerNorm)
    with torch.no_grad():
        assert not torch.allclose(layer(x)[0], layer(x2)[0])


def test_residual_and_norm_flags():
    torch.manual_seed(0)
    a = FLASH(D_MODEL, chunk_size=3, qk_dim=QK).double()
    b = FLASH(D_MODEL, chunk_size=3, qk_dim=QK, residual=False).double()
    b.load_state_dict(a.state_dict())
    x = x_of((7,))
    with torch.no_grad():
        assert_close(a(x), b(x) + x, rtol=1e-14)
    c = FLASH(D_MODEL, chunk_size=3, qk_dim=QK, norm=False)
    assert isinstance(c.norm, torch.nn.Identity)


@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_float64(causal):
    layer = make_flash(3, causal, bias=2)
    x = x_of((7,)).requires_grad_()
    names = ["gamma", "beta", "rel_bias"]
    params = tuple(getattr(layer, n).detach().clone().requires_grad_() for n in names)

    def f(x, *p):
        return torch.func.functional_call(layer, dict(zip(names, p, strict=True)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params), fast_mode=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    layer = make_flash(4, True)
    x = x_of((2, 13))
    with torch.no_grad():
        ref = layer(x)
        got = copy.deepcopy(layer).to("cuda")(x.to("cuda"))
    assert got.device.type == "cuda"
    assert_close(got.cpu(), ref, rtol=1e-12)
