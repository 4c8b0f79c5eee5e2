"""TinyViT: every attention choice against its dense reference, gates, swapping, training."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from structattn import (  # noqa: E402
    FeatureMapAttention,
    GridRPE,
    PositiveRandomFeatures,
    Ripple,
    SoftmaxAttention,
)
from structattn.graphs import hypercube  # noqa: E402
from structattn.layers.tiny_vit import GatedUnitSpec, TinyViT  # noqa: E402
from structattn.mra import MRAAttention  # noqa: E402
from structattn.studies.graphs import SparseGraphAttention  # noqa: E402

GRID = (4, 4)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one torch thread is much faster than two on a shared machine."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _prf(m: int = 32) -> PositiveRandomFeatures:
    return PositiveRandomFeatures(8, m, seed=0)


def _attentions() -> dict[str, tuple[object, str]]:
    grid_mask = GridRPE(GRID, function=lambda a, b: -0.5 * (abs(a) + abs(b)), log=True,
                        num_special=1)
    return {
        "softmax": (SoftmaxAttention(), "cls"),
        "performer": (FeatureMapAttention(_prf()), "cls"),
        "performer-gridrpe": (FeatureMapAttention(_prf(), mask=grid_mask), "cls"),
        "performer-ripple": (FeatureMapAttention(_prf(), mask=Ripple(GRID, [1.0, 0.5, 0.2])),
                             "mean"),
        "mra": (MRAAttention(block_size=4, blocks_per_row=2), "cls"),
        "hypercube": (SparseGraphAttention(hypercube(17)), "cls"),
        "flash": (GatedUnitSpec(chunk_size=8), "cls"),
        "gau": (GatedUnitSpec(kind="gau"), "cls"),
    }


def _model(attention, pool="cls", dtype=torch.float64, seed=0) -> TinyViT:
    torch.manual_seed(seed)
    model = TinyViT(8, 2, 16, 2, 2, 10, attention, pool=pool).to(dtype)
    for block in model.blocks:  # FLASH/GAU init their gammas at std 0.02: make them matter
        if block.unit is not None:
            with torch.no_grad():
                block.unit.gamma.normal_(0.0, 1.0)
    return model


def _images(n=3, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g, dtype=dtype)


@pytest.mark.parametrize("name", list(_attentions()))
def test_logits_match_dense_reference_float64(name):
    attention, pool = _attentions()[name]
    model = _model(attention, pool)
    x = _images()
    fast, traces = model.trace(x)
    ref, ref_traces = model.trace(x, dense=True, return_attention=True)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-10)
    for a, b in zip(traces, ref_traces, strict=True):  # per layer, the attention sub-block itself
        assert a.head_out.abs().max() > 1e-3  # the block is not trivially zero
        torch.testing.assert_close(a.head_out, b.head_out, rtol=0, atol=1e-10)
    logits, maps = model(x, return_attention=True)
    torch.testing.assert_close(logits, model(x, dense=True), rtol=0, atol=1e-10)
    assert len(maps) == model.depth
    assert maps[0].shape == (3, model.gate_heads, model.seq_len, model.seq_len)
    if not isinstance(attention, GatedUnitSpec):
        torch.testing.assert_close(maps[0].sum(-1), torch.ones_like(maps[0][..., 0]))


@pytest.mark.parametrize("name", ["performer", "mra", "hypercube", "flash"])
def test_float32_matches_float64(name):
    attention, pool = _attentions()[name]
    m64 = _model(attention, pool)
    m32 = _model(attention, pool, dtype=torch.float32)
    m32.load_state_dict(m64.state_dict())
    x = _images()
    torch.testing.assert_close(m32(x.float()).double(), m64(x), rtol=1e-4, atol=1e-4)


def test_softmax_model_matches_torch_sdpa():
    model = _model(SoftmaxAttention())
    x = _images()
    _, traces = model.trace(x, return_attention=True)
    for tr in traces:
        ref = torch.nn.functional.scaled_dot_product_attention(tr.q, tr.k, tr.v)
        torch.testing.assert_close(tr.head_out, ref, rtol=0, atol=1e-12)
        p = torch.softmax(tr.q @ tr.k.transpose(-1, -2) / np.sqrt(8), dim=-1)
        torch.testing.assert_close(tr.attention, p, rtol=0, atol=1e-12)


def test_set_attention_keeps_weights_and_performer_approaches_softmax():
    model = _model(SoftmaxAttention())
    x = _images(8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    exact = model(x)
    model.set_attention(FeatureMapAttention(PositiveRandomFeatures(8, 4096, seed=0)))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    approx = model(x)
    model.set_attention(FeatureMapAttention(PositiveRandomFeatures(8, 4, seed=0)))
    few = model(x)
    err_many = (approx - exact).norm() / exact.norm()
    err_few = (few - exact).norm() / exact.norm()
    assert err_many < 0.05 and err_many < err_few
    model.set_attention(SoftmaxAttention())
    torch.testing.assert_close(model(x), exact, rtol=0, atol=0)
    model.set_attention([MRAAttention(block_size=4, num_blocks=25), SoftmaxAttention()])
    torch.testing.assert_close(model(x), exact, rtol=0, atol=1e-12)  # all blocks: exact


def test_gate_zero_equals_zeroed_output_projection_columns():
    model = _model(SoftmaxAttention())
    x = _images()
    gate = torch.ones(2, 2, dtype=torch.float64)
    gate[0, 1] = 0.0
    gated = model(x, head_gate=gate)
    with torch.no_grad():
        model.blocks[0].proj.to_out.weight[:, 8:] = 0.0
    torch.testing.assert_close(gated, model(x), rtol=0, atol=1e-12)
    model.head_gate[0, 1] = 0.0  # the buffer is the default gate
    torch.testing.assert_close(model(x), gated, rtol=0, atol=1e-12)


def test_gate_gradient_is_head_output_inner_product():
    model = _model(SoftmaxAttention())
    x = _images()
    y = torch.tensor([1, 2, 3])
    gate = torch.ones(2, 2, dtype=torch.float64, requires_grad=True)
    tokens, traces = model.trace(x, head_gate=gate)
    loss = torch.nn.functional.cross_entropy(model.head(model.pooled(tokens)), y)
    outs = [tr.head_out for tr in traces]
    grads = torch.autograd.grad(loss, [gate, *outs])
    closed = torch.stack([(o * g).sum(dim=(0, 2, 3)) for o, g in zip(outs, grads[1:], strict=True)])
    # d loss / d gate = sum over tokens of <O, dL/d(gated O)>; dL/dO = gate * that = that
    torch.testing.assert_close(grads[0], closed, rtol=0, atol=1e-12)


def test_attention_inputs_and_patch_mask():
    model = _model(SoftmaxAttention())
    x = _images()
    qkv = model.attention_inputs(x)
    assert len(qkv) == 2 and all(t.shape == (3, 2, 17, 8) for t in qkv[0])
    assert not qkv[0][0].requires_grad
    maps = model.attention_maps(x)
    torch.testing.assert_close(maps[1], SoftmaxAttention().matrix(*qkv[1][:2]))
    mask = torch.zeros(3, 16, dtype=torch.bool)
    torch.testing.assert_close(model.forward_tokens(x, patch_mask=mask), model.trace(x)[0])
    mask[:, 3] = True
    x2 = x.clone()
    x2[:, :, 0:2, 6:8] = 0.7  # patch 3 (row 0, column 3) changed but masked: no effect
    torch.testing.assert_close(model.forward_tokens(x, patch_mask=mask),
                               model.forward_tokens(x2, patch_mask=mask), rtol=0, atol=0)
    flash = _model(GatedUnitSpec())
    with pytest.raises(ValueError, match="no \\(q, k, v\\)"):
        flash.attention_inputs(x)


def test_trains_on_digits_loss_decreases():
    from structattn.studies.digits import load_digits_split

    data = load_digits_split(0)
    for attention in (SoftmaxAttention(), FeatureMapAttention(_prf(16)), GatedUnitSpec()):
        torch.manual_seed(0)
        model = TinyViT(8, 2, 16, 1, 2, 10, attention)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        x, y = data.x_train[:128], data.y_train[:128]
        with torch.no_grad():
            first = torch.nn.functional.cross_entropy(model(x), y).item()
        for _ in range(60):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            last = torch.nn.functional.cross_entropy(model(x), y).item()
        assert last < 0.7 * first, (type(attention).__name__, first, last)


def test_learnable_mask_parameters_are_trained():
    coeffs = torch.nn.Parameter(torch.zeros(7, 7, dtype=torch.float64))
    mask = GridRPE(GRID, coeffs, log=True, num_special=1)
    model = TinyViT(8, 2, 16, 1, 2, 10, FeatureMapAttention(_prf(), mask=mask),
                    attention_parameters=[coeffs]).double()
    assert any(p is coeffs for p in model.parameters())
    loss = model(_images()).square().sum()
    loss.backward()
    assert coeffs.grad is not None and coeffs.grad.abs().sum() > 0
    with pytest.raises(TypeError, match="Parameter"):
        TinyViT(8, 2, 16, 1, 2, 10, attention_parameters=[torch.zeros(3)])


def test_bad_inputs():
    with pytest.raises(ValueError, match="patch_size"):
        TinyViT(8, 3, 16, 1, 2, 10)
    with pytest.raises(ValueError, match="heads"):
        TinyViT(8, 2, 15, 1, 2, 10)
    with pytest.raises(TypeError, match="attention"):
        TinyViT(8, 2, 16, 1, 2, 10, attention="softmax")
    with pytest.raises(ValueError, match=r"feature_map\.dim"):
        TinyViT(8, 2, 16, 1, 2, 10, FeatureMapAttention(PositiveRandomFeatures(4, 8, seed=0)))
    with pytest.raises(ValueError, match="depth"):
        TinyViT(8, 2, 16, 2, 2, 10, [SoftmaxAttention()])
    with pytest.raises(ValueError, match="pool"):
        TinyViT(8, 2, 16, 1, 2, 10, pool="max")
    model = TinyViT(8, 2, 16, 1, 2, 10)
    with pytest.raises(ValueError, match="shape"):
        model(torch.rand(2, 1, 6, 6))
    with pytest.raises(TypeError, match="dtype"):
        model(torch.rand(2, 1, 8, 8, dtype=torch.float64))
    # NaN images are refused inside structattn.debug() or with check_finite=True; the
    # default forward performs no data-dependent (host-synchronizing) check
    import structattn

    with structattn.debug(), pytest.raises(ValueError, match="NaN"):
        model(torch.full((2, 1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="NaN"):
        TinyViT(8, 2, 16, 1, 2, 10, check_finite=True)(torch.full((2, 1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="head_gate"):
        model(torch.rand(2, 1, 8, 8), head_gate=torch.ones(2, 2))
    with pytest.raises(ValueError, match="FLASH/GAU"):
        model.set_attention(GatedUnitSpec())
    flash = TinyViT(8, 2, 16, 1, 2, 10, GatedUnitSpec())
    assert flash.head_gate.shape == (1, 1)
    with pytest.raises(ValueError, match="FLASH/GAU"):
        flash.set_attention(SoftmaxAttention())
    flash.set_attention(GatedUnitSpec(chunk_size=4))  # same weights, other chunking
    with pytest.raises(ValueError, match="do not match"):
        flash.set_attention(GatedUnitSpec(qk_dim=8))


def test_batched_gates_give_per_example_gradients():
    model = _model(SoftmaxAttention())
    x = _images(3)
    y = torch.tensor([4, 5, 6])
    gate = torch.ones(3, 2, 2, dtype=torch.float64, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(model(x, head_gate=gate), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, gate)
    for b in range(3):
        g1 = torch.ones(2, 2, dtype=torch.float64, requires_grad=True)
        lb = torch.nn.functional.cross_entropy(model(x[b:b + 1], head_gate=g1), y[b:b + 1])
        torch.testing.assert_close(grad[b], torch.autograd.grad(lb, g1)[0], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="head_gate"):
        model(x, head_gate=torch.ones(2, 2, 2, dtype=torch.float64))
