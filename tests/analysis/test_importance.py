"""Oracles for head importance and selection (spec ssta.md §3, items 1, 6, 7)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from structattn.analysis import (  # noqa: E402
    head_gate_importance,
    head_importance,
    map_entropy,
    select_heads,
)
from structattn.layers.tiny_vit import TinyViT  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _setup(n=5):
    torch.manual_seed(0)
    model = TinyViT(8, 2, 16, 2, 4, 10).double()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (n,), generator=g)
    return model, x, y


def _ce(out, y):
    return torch.nn.functional.cross_entropy(out, y, reduction="none")


def _per_example_gate_grads(model, x, y):
    grads = []
    for b in range(x.shape[0]):
        gate = torch.ones(2, 4, dtype=torch.float64, requires_grad=True)
        loss = _ce(model(x[b:b + 1], head_gate=gate), y[b:b + 1]).sum()
        grads.append(torch.autograd.grad(loss, gate)[0])
    return torch.stack(grads)  # (n, layers, heads)


def test_gate_identity_against_autograd():
    model, x, y = _setup()
    tokens, traces = model.trace(x)
    loss = _ce(model.head(model.pooled(tokens)), y).sum()  # sum: per-example gradients
    outs = [tr.head_out for tr in traces]
    grads = torch.autograd.grad(loss, outs)
    ref = _per_example_gate_grads(model, x, y).abs().mean(0)
    for lyr in range(2):
        got = head_gate_importance(outs[lyr], grads[lyr])
        torch.testing.assert_close(got, ref[lyr], rtol=0, atol=1e-10)
        np_got = head_gate_importance(outs[lyr].detach().numpy(), grads[lyr].numpy())
        assert isinstance(np_got, np.ndarray)
        np.testing.assert_allclose(np_got, ref[lyr].numpy(), rtol=1e-12, atol=1e-14)
        f32 = head_gate_importance(outs[lyr].detach().float(), grads[lyr].float())
        np.testing.assert_allclose(f32.numpy(), ref[lyr].numpy(), rtol=1e-4, atol=1e-6)
    imp = head_importance(model, (x, y), _ce, num_layers=2, num_heads=4, batch_size=2)
    torch.testing.assert_close(imp, ref, rtol=0, atol=1e-10)
    # the batch-gradient variant: |d mean-loss / d gate| per batch, averaged over examples
    batch = head_importance(model, (x, y), _ce, num_layers=2, num_heads=4, batch_size=5,
                            per_example=False)
    torch.testing.assert_close(batch, _per_example_gate_grads(model, x, y).mean(0).abs(),
                               rtol=0, atol=1e-10)
    normed = head_importance(model, (x, y), _ce, num_layers=2, num_heads=4,
                             normalize_layers=True)
    torch.testing.assert_close(normed.norm(dim=1), torch.ones(2, dtype=torch.float64))


def test_ablation_and_entropy():
    model, x, y = _setup()
    with torch.no_grad():
        model.blocks[1].proj.to_out.weight[:, 8:12] = 0.0  # head 2 of layer 1 writes nothing
    abl = head_importance(model, (x, y), _ce, num_layers=2, num_heads=4, method="ablation",
                          batch_size=2)
    assert abl[1, 2] == 0.0
    with torch.no_grad():
        gate = torch.ones(2, 4, dtype=torch.float64)
        gate[0, 3] = 0.0
        brute = (_ce(model(x, head_gate=gate), y) - _ce(model(x), y)).mean()
    torch.testing.assert_close(abl[0, 3], brute, rtol=0, atol=1e-12)
    ent = head_importance(model, x, None, num_layers=2, num_heads=4,
                          method="attention_entropy", batch_size=3)
    maps = model.attention_maps(x)
    ref = torch.stack([-map_entropy(m).mean(0) for m in maps])
    torch.testing.assert_close(ent, ref, rtol=0, atol=1e-12)


def test_select_heads_planted_and_ties():
    imp = np.array([[0.1, 0.5, 0.2], [0.3, 0.9, 0.9]])
    assert select_heads(imp).tolist() == [1]  # tie 0.9 / 0.9: lowest index
    assert select_heads(imp, k=3).tolist() == [1, 2, 0]
    assert select_heads(imp, layer=0, k=2).tolist() == [1, 2]
    assert select_heads(torch.tensor(imp), layer=0).tolist() == [1]
    assert select_heads(np.array([0.0, 0.0, 0.0]), layer=None, k=2).tolist() == [0, 1]
    with pytest.raises(ValueError, match="k must"):
        select_heads(imp, k=4)
    with pytest.raises(ValueError, match="layer"):
        select_heads(imp, layer=2)
    with pytest.raises(ValueError, match="NaN"):
        select_heads(np.array([np.nan, 1.0]), layer=None)


def test_bad_inputs():
    model, x, y = _setup(2)
    with pytest.raises(ValueError, match="method"):
        head_importance(model, (x, y), _ce, num_layers=2, num_heads=4, method="taylor")
    with pytest.raises(TypeError, match="loss_fn"):
        head_importance(model, (x, y), None, num_layers=2, num_heads=4)
    with pytest.raises(ValueError, match="per-example"):
        head_importance(model, (x, y), lambda o, t: _ce(o, t).mean(), num_layers=2,
                        num_heads=4)
    with pytest.raises(ValueError, match="first"):
        head_importance(model, (x, y[:1]), _ce, num_layers=2, num_heads=4)
    with pytest.raises(ValueError, match="num_layers"):
        head_importance(model, x, None, num_layers=3, num_heads=4,
                        method="attention_entropy")
    with pytest.raises(ValueError, match="one kind"):
        head_gate_importance(np.ones((2, 3, 4)), np.ones((2, 3, 5)))
