"""Supports (graph, blocks, MRA selection, LSH), the budget rule and the study entries."""

from __future__ import annotations

import numpy as np
import pytest

from structattn.graphs import window
from structattn.hybrid import (
    BlockPattern,
    Support,
    as_support,
    dense_work,
    hybrid_work,
    lsh_support,
    mra_support,
    split_budget,
)
from structattn.mra import select_blocks


def test_graph_and_bool_supports_round_trip():
    g = window(10, 2)
    sup = as_support(g, 10, 3)
    assert sup.num_heads == 1 and sup.nnz == g.nnz
    np.testing.assert_array_equal(sup.to_dense()[0], g.to_dense())
    dense = np.random.default_rng(0).random((3, 10, 10)) < 0.3
    np.testing.assert_array_equal(as_support(dense, 10, 3).to_dense(), dense)
    causal = sup.causal().to_dense()[0]
    np.testing.assert_array_equal(causal, g.to_dense() & np.tri(10, dtype=bool))


def test_block_pattern_expands_blocks_with_a_partial_last_block():
    blocks = np.array([[True, False, False], [False, False, True], [True, True, False]])
    dense = BlockPattern(blocks, 4).to_support(10).to_dense()[0]
    expect = np.kron(blocks, np.ones((4, 4), dtype=bool))[:10, :10]
    np.testing.assert_array_equal(dense, expect)
    with pytest.raises(ValueError, match="n_b=2"):
        BlockPattern(blocks, 4).to_support(8)
    with pytest.raises(ValueError, match="power of two"):
        BlockPattern(blocks, 3)


def test_mra_support_is_the_mra_selection():
    rng = np.random.default_rng(1)
    q, k = rng.standard_normal((2, 2, 32, 4))
    pat = mra_support(q, k, block_size=8, blocks_per_row=2)
    qb = q.reshape(2, 4, 8, 4).mean(2)
    kb = k.reshape(2, 4, 8, 4).mean(2)
    sel = select_blocks(qb @ kb.transpose(0, 2, 1) / 2.0, 8)
    np.testing.assert_array_equal(pat.blocks, sel.mask)
    assert as_support(pat, 32, 2).to_dense().sum() == 2 * 8 * 64
    with pytest.raises(ValueError, match="blocks_per_row"):
        mra_support(q, k, block_size=8, blocks_per_row=5)


def test_lsh_support_has_exactly_r_keys_and_groups_buckets():
    rng = np.random.default_rng(2)
    q = rng.standard_normal((3, 40, 6))
    sup = lsh_support(q, q, 7, seed=0)
    assert sup.num_heads == 3
    np.testing.assert_array_equal(np.diff(sup.indptr, axis=1), 7)
    assert np.array_equal(sup.to_dense(), lsh_support(q, q, 7, seed=0).to_dense())
    # with shared queries and keys every token's bucket-mates come first: self included
    # whenever its bucket holds at most r tokens
    assert sup.to_dense()[:, np.arange(40), np.arange(40)].mean() > 0.5
    with pytest.raises(ValueError, match="keys_per_row"):
        lsh_support(q, q, 41)


def test_union_and_errors():
    a = as_support(window(8, 0), 8, 1)
    b = as_support(np.eye(8, k=3, dtype=bool), 8, 1)
    u = a.union(b).to_dense()[0]
    np.testing.assert_array_equal(u, np.eye(8, dtype=bool) | np.eye(8, k=3, dtype=bool))
    per_head = np.zeros((2, 8, 8), dtype=bool)
    per_head[1, 0, 7] = True
    u2 = a.union(per_head)
    assert u2.num_heads == 2 and u2.to_dense()[1, 0, 7] and not u2.to_dense()[0, 0, 7]
    with pytest.raises(TypeError, match="support must be"):
        as_support(3.0, 8, 1)
    with pytest.raises(ValueError, match="L=9"):
        as_support(window(8, 1), 9, 1)
    assert isinstance(as_support(None, 5, 2), Support) and as_support(None, 5, 2).nnz == 0


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("share", [0.0, 0.2, 0.5])
def test_split_budget_stays_within_the_work(fraction, share):
    L, d = 512, 32
    r, m = split_budget(fraction, L, d, feature_share=share)
    assert 1 <= r <= L and (m == 0) == (share == 0)
    assert hybrid_work(L, d, d, L * r, m) <= fraction * dense_work(L, d, d) * (1 + 1e-12)
    # the next key per row would exceed it (the budget is used)
    assert hybrid_work(L, d, d, L * (r + 1), m) > fraction * dense_work(L, d, d) or r == L


def test_split_budget_errors():
    with pytest.raises(ValueError, match="work_fraction"):
        split_budget(0.0, 10, 4)
    with pytest.raises(ValueError, match="feature_share"):
        split_budget(0.5, 10, 4, feature_share=1.0)


def test_study_entries_build_and_run():
    from structattn.studies import get
    from structattn.studies import hybrid as study  # registers the entries

    rng = np.random.default_rng(3)
    q, k, v = rng.standard_normal((3, 2, 64, 8))
    for kind in study.KINDS:
        entry = get(f"hybrid-{kind}")
        assert entry.causal == (kind == "window")
        op = entry.build(dim=8, seed=0, causal=False, length=64, work_fraction=0.25)
        y = op(q, k, v)
        np.testing.assert_allclose(y, op.matrix(q, k) @ v, rtol=1e-10, atol=1e-12)
        sup = op.support(q, k)
        assert sup.to_dense()[:, :, [0, 63]].all()  # global keys
    win = get("hybrid-window").build(dim=8, seed=0, causal=True, length=64, work_fraction=0.1)
    y = win(q, k, v)
    v2 = v.copy()
    v2[:, 40:] += 1.0  # future values do not change earlier rows
    np.testing.assert_allclose(win(q, k, v2)[:, :40], y[:, :40], rtol=1e-12, atol=1e-12)
    sparse = study.sparse_part_operator("window", length=64, dim=8, work_fraction=0.25)
    from structattn import softmax_attention

    S = sparse.support(q, k).to_dense()[0]
    np.testing.assert_allclose(sparse(q, k, v), softmax_attention(q, k, v, mask=S),
                               rtol=1e-10, atol=1e-12)
