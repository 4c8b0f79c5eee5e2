"""capture(): q, k, v of torch attention equal the ones computed by hand (float64)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from structattn.studies.attention_record import AttentionRecordError, load_record  # noqa: E402
from structattn.studies.capture import AttentionRecord, capture  # noqa: E402


def _layer(batch_first: bool, seed: int = 0) -> nn.TransformerEncoderLayer:
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=batch_first,
                                       dtype=torch.float64)
    with torch.no_grad():
        layer.self_attn.in_proj_bias.normal_()  # nonzero biases, so they are checked too
    return layer.eval()


def _by_hand(layer, x, batch_first):
    """(B, H, L, hd) q, k, v from the layer's weights."""
    if not batch_first:
        x = x.transpose(0, 1)
    attn = layer.self_attn
    W, b = attn.in_proj_weight.detach(), attn.in_proj_bias.detach()
    B, L, E = x.shape
    H = attn.num_heads
    out = []
    for i in range(3):
        y = x @ W[i * E:(i + 1) * E].T + b[i * E:(i + 1) * E]
        out.append(y.reshape(B, L, H, E // H).transpose(1, 2).numpy())
    return out


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("masks", ["none", "padding", "causal", "both"])
def test_transformer_encoder_layer_matches_weights(batch_first, masks):
    layer = _layer(batch_first)
    B, L = 3, 7
    x = torch.randn(B, L, 16, dtype=torch.float64)
    lengths = torch.tensor([7, 5, 3])
    pad = torch.arange(L)[None] >= lengths[:, None]  # True = padding (MHA convention)
    kw = {}
    if masks in ("padding", "both"):
        kw["src_key_padding_mask"] = pad
    if masks in ("causal", "both"):
        kw["src_mask"] = torch.ones(L, L, dtype=torch.bool).triu(1)  # True = masked
        kw["is_causal"] = True
    xin = x if batch_first else x.transpose(0, 1)
    expected_out = layer(xin, **kw)
    record = capture(layer, xin, **kw)
    assert len(record) == 1
    call = record[0]
    assert call.name == "self_attn" and call.source == "multi_head_attention_forward"
    for got, want in zip((call.q, call.k, call.v), _by_hand(layer, x, True), strict=True):
        assert got.shape == (B, 4, L, 4) and got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert call.scale == pytest.approx(0.5)
    causal = np.tril(np.ones((L, L), bool))
    attend = ~pad.numpy()[:, None, None, :]
    if masks == "none":
        assert call.mask is None and not call.causal
    elif masks == "causal":
        assert call.mask is None and call.causal
    elif masks == "padding":
        assert not call.causal and call.mask.shape == (B, 1, L, L)
        np.testing.assert_array_equal(call.mask, np.broadcast_to(attend, (B, 1, L, L)))
    else:
        assert not call.causal
        np.testing.assert_array_equal(call.mask, attend & causal)
    # capture does not change what the model computes
    np.testing.assert_allclose(layer(xin, **kw).detach(), expected_out.detach(), atol=1e-12)


def _softmax_out(call):
    s = np.einsum("bhid,bhjd->bhij", call.q, call.k) * call.scale
    if call.mask is not None:
        s = np.where(call.mask, s, -np.inf)
    if call.causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ call.v


def test_captured_call_reproduces_the_layer_attention():
    layer = _layer(True)
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    pad = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    call = capture(layer, x, src_key_padding_mask=pad)[0]
    ctx = _softmax_out(call)  # (B, H, L, hd)
    attn = layer.self_attn
    y = ctx.transpose(0, 2, 1, 3).reshape(2, 6, 16) @ attn.out_proj.weight.detach().numpy().T
    y = y + attn.out_proj.bias.detach().numpy()
    want, _ = attn(x, x, x, key_padding_mask=pad, need_weights=False)
    np.testing.assert_allclose(y[0], want[0].detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(y[1, :4], want[1, :4].detach().numpy(), atol=1e-12)


def test_multihead_attention_need_weights_and_separate_weights():
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(8, 2, kdim=6, vdim=5, dtype=torch.float64)
    q = torch.randn(4, 1, 8, dtype=torch.float64)  # (L, N, E), not batch-first
    k = torch.randn(5, 1, 6, dtype=torch.float64)
    v = torch.randn(5, 1, 5, dtype=torch.float64)
    call = capture(mha, q, k, v)[0]  # need_weights=True: the path that avoids SDPA
    bias = mha.in_proj_bias.detach().chunk(3)
    want_k = (k[:, 0] @ mha.k_proj_weight.detach().T + bias[1]).reshape(5, 2, 4).transpose(0, 1)
    np.testing.assert_allclose(call.k[0], want_k.numpy(), atol=1e-12)
    assert call.q.shape == (1, 2, 4, 4) and call.v.shape == (1, 2, 5, 4)


class _Direct(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 24, dtype=torch.float64)

    def forward(self, x, mask=None, causal=False):
        B, L, _ = x.shape
        q, k, v = self.proj(x).view(B, L, 3, 2, 4).permute(2, 0, 3, 1, 4)
        k, v = k[:, :1], v[:, :1]  # grouped-query: 2 query heads share one key head
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                              scale=0.3, enable_gqa=True)


class _Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_Direct(), _Direct()])

    def forward(self, x, mask=None):
        return self.blocks[1](self.blocks[0](x.view(*x.shape[:2], 8), mask).transpose(1, 2)
                              .reshape(*x.shape[:2], 8), causal=True)


def test_module_calling_sdpa_directly():
    torch.manual_seed(2)
    model = _Outer()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    mask = torch.rand(2, 1, 5, 5) > 0.3
    mask[..., 0] = True
    record = capture(model, x, mask)
    assert [c.name for c in record] == ["blocks.0", "blocks.1"]
    assert [c.index for c in record] == [0, 1]
    first, second = record
    assert first.scale == 0.3 and first.k.shape == (2, 2, 5, 4)
    np.testing.assert_array_equal(first.k[:, 0], first.k[:, 1])  # GQA repeated
    np.testing.assert_array_equal(first.mask, mask.numpy())
    assert second.causal and second.mask is None
    # the captured call reproduces SDPA's output
    blk = model.blocks[0]
    want = blk(x, mask).detach().numpy()
    np.testing.assert_allclose(_softmax_out(first), want, atol=1e-12)


def test_selection_heads_and_byte_cap():
    model = _Outer()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    assert [c.name for c in capture(model, x, layers="blocks.1")] == ["blocks.1"]
    assert [c.index for c in capture(model, x, layers=[0])] == [0]
    rec = capture(model, x, heads=[1])
    assert rec[0].q.shape == (2, 1, 5, 4) and rec[0].heads == (1,)
    one = capture(model, x)[0].nbytes
    with pytest.warns(UserWarning, match="max_bytes"):
        capped = capture(model, x, max_bytes=one + 10)
    assert len(capped) == 1 and capped.dropped[0]["index"] == 1
    with pytest.raises(ValueError, match="max_bytes"):
        capture(model, x, max_bytes=0)


def test_additive_bias_is_not_a_mask():
    model = _Direct()
    x = torch.randn(1, 5, 8, dtype=torch.float64)
    bias = torch.randn(1, 1, 5, 5, dtype=torch.float64)  # ALiBi-like bias
    rec = capture(model, x, bias)
    assert len(rec) == 0 and "bias" in rec.dropped[0]["reason"]
    additive = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    additive[..., 3:] = float("-inf")
    rec = capture(model, x, additive)
    np.testing.assert_array_equal(rec[0].mask[0, 0], np.arange(5)[None].repeat(5, 0) < 3)


def test_save_load_round_trip(tmp_path):
    model = _Outer()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    mask[1, ..., 4] = False
    rec = capture(model, x, mask, name="outer")
    path = rec.save(tmp_path / "rec.npz")
    back = AttentionRecord.load(path)
    assert back.model == "outer" and len(back) == len(rec)
    for a, b in zip(rec, back, strict=True):
        for key in ("q", "k", "v"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
        assert (a.name, a.index, a.causal, a.scale, a.source) == (
            b.name, b.index, b.causal, b.scale, b.source)
        assert (a.mask is None) == (b.mask is None)
        if a.mask is not None:
            np.testing.assert_array_equal(a.mask, b.mask)
    assert "outer: 2 attention calls" in back.summary()


def test_plain_npz_and_bad_files(tmp_path):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((3, 6, 4)) for _ in range(3))
    np.savez(tmp_path / "plain.npz", q=q, k=k, v=v, causal=np.array(True))
    rec = load_record(tmp_path / "plain.npz")
    assert rec[0].q.shape == (1, 3, 6, 4) and rec[0].causal and rec[0].scale == 0.5
    np.savez(tmp_path / "missing.npz", q=q, k=k)
    with pytest.raises(AttentionRecordError, match="no array 'v'"):
        load_record(tmp_path / "missing.npz")
    np.savez(tmp_path / "rank.npz", q=q[0, 0], k=k, v=v)
    with pytest.raises(AttentionRecordError, match="'q' must have shape"):
        load_record(tmp_path / "rank.npz")
    bad = q.copy()
    bad[0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", q=bad, k=k, v=v)
    with pytest.raises(AttentionRecordError, match="q holds NaN"):
        load_record(tmp_path / "nan.npz")
    np.savez(tmp_path / "mask.npz", q=q, k=k, v=v, mask=rng.standard_normal((6, 6)))
    with pytest.raises(AttentionRecordError, match="mask must be boolean"):
        load_record(tmp_path / "mask.npz")
    with pytest.raises(AttentionRecordError, match="does not exist"):
        load_record(tmp_path / "nope.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(AttentionRecordError, match="not a readable"):
        load_record(tmp_path / "text.npz")


def test_tiny_vit_through_structattn_softmax():
    """TinyViT's exact softmax is structattn.softmax_attention (matmuls, no SDPA)."""
    from structattn.layers.tiny_vit import TinyViT

    torch.manual_seed(0)
    model = TinyViT(8, 2, 16, 2, 2, 10).double().eval()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    record = capture(model, x)
    assert [c.name for c in record] == ["blocks.0", "blocks.1"]
    assert all(c.source == "structattn.softmax_attention" for c in record)
    for call, (q, k, v) in zip(record, model.attention_inputs(x), strict=True):
        for got, want in zip((call.q, call.k, call.v), (q, k, v), strict=True):
            np.testing.assert_array_equal(got, want.numpy())
    assert len(capture(model, x, structattn=False)) == 0
