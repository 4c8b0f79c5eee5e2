"""Metrics: hand-built rankings, ties, blocked == dense, HOWM Hits@k/MRR, trec_eval agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest

from structattn.ranking import (
    hits_at_k,
    mrr,
    mrr_at_k,
    ndcg_at_k,
    rank_of,
    recall_at_k,
    top_k,
)

from ..conftest import to_np, torch


def test_hand_built_rr_recall_ndcg():
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]])
    rel = np.array([[0, 0, 1, 0, 0]])
    assert rank_of(scores, rel)[0] == 3
    assert mrr_at_k(scores, rel, k=10) == pytest.approx(1 / 3)
    assert mrr_at_k(scores, rel, k=2) == 0.0
    assert mrr_at_k(scores, positives=np.array([2]), k=3) == pytest.approx(1 / 3)
    assert recall_at_k(scores, np.ones((1, 5), dtype=bool), k=2) == pytest.approx(2 / 5)
    gains = np.array([[2, 1, 0]])
    assert ndcg_at_k(np.array([[3.0, 2.0, 1.0]]), gains, k=3) == pytest.approx(1.0)
    reversed_ = ndcg_at_k(np.array([[1.0, 2.0, 3.0]]), gains, k=3)
    ref = (0 + 1 / math.log2(3) + 2 / 2) / (2 + 1 / math.log2(3))
    assert reversed_ == pytest.approx(ref, rel=1e-14)
    exp2 = ndcg_at_k(np.array([[1.0, 2.0, 3.0]]), gains, k=3, gain="exp2")
    assert exp2 == pytest.approx((0 + 1 / math.log2(3) + 3 / 2) / (3 + 1 / math.log2(3)))


def test_ties_and_empty_queries():
    scores = np.array([[1.0, 2.0, 2.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    rel = np.array([[0, 0, 0, 1, 0], [0, 0, 0, 0, 0]])
    # ties broken by the lower document index: docs 1, 2 come before doc 3
    np.testing.assert_array_equal(rank_of(scores, rel), [3, 0])
    # positive-first (HOWM): doc 3 ranks first among the tied
    np.testing.assert_array_equal(rank_of(scores, rel, ties="positive_first"), [1, 0])
    np.testing.assert_array_equal(top_k(scores, 3)[1][0], [1, 2, 3])
    per_query = mrr_at_k(scores, rel, reduction="none")
    assert per_query[0] == pytest.approx(1 / 3) and np.isnan(per_query[1])
    assert mrr_at_k(scores, rel) == pytest.approx(1 / 3)  # the empty query is excluded
    assert np.isnan(mrr_at_k(scores[1:], rel[1:]))
    # the first relevant document in ranking order (several relevant, one tied pair)
    rel2 = np.array([[1, 0, 1, 1, 0]])
    assert rank_of(scores[:1], rel2)[0] == 2
    assert recall_at_k(scores[:1], rel2, k=2) == pytest.approx(1 / 3)


@pytest.mark.parametrize("block", [1, 7, 64])
def test_blocked_equals_dense(block):
    rng = np.random.default_rng(0)
    phi, psi = rng.standard_normal((2, 9, 5)), rng.standard_normal((45, 5))
    S = phi @ psi.T
    S[0, 0, :] = np.round(S[0, 0, :])  # some ties
    rel = rng.random((2, 9, 45)) < 0.1
    pos = rng.integers(0, 45, size=(2, 9))
    dense_order = np.argsort(-S, axis=-1, kind="stable")
    ranks = np.argsort(dense_order, axis=-1) + 1  # rank of every document
    first = np.where(rel.any(-1), np.where(rel, ranks, 10**9).min(-1), 0)
    np.testing.assert_array_equal(rank_of(S, rel, block=block), first)
    np.testing.assert_array_equal(rank_of(S, positives=pos, block=block),
                                  np.take_along_axis(ranks, pos[..., None], -1)[..., 0])
    np.testing.assert_array_equal(top_k(S, 6, block=block)[1], dense_order[..., :6])
    for args in ((S, rel), (S,)):
        kw = {} if len(args) == 2 else {"positives": pos}
        for f in (mrr_at_k, recall_at_k, ndcg_at_k):
            kk = {"k": 10}
            np.testing.assert_allclose(f(*args, block=block, **kk, **kw),
                                       f(*args, block=10**6, **kk, **kw), rtol=1e-14)
    # embeddings scored block by block give the dense ranks (tie-free part: batch 1)
    np.testing.assert_array_equal(rank_of((phi[1], psi), positives=pos[1], block=block),
                                  rank_of(S[1], positives=pos[1]))
    np.testing.assert_array_equal(top_k((phi, psi), 4, block=block)[1][1],
                                  dense_order[1, :, :4])


def test_batch_broadcast_and_torch():
    rng = np.random.default_rng(1)
    S = rng.standard_normal((3, 6, 8))
    rel = rng.random((6, 8)) < 0.3
    rel[:, 0] = True
    got = mrr_at_k(S, rel, reduction="none")
    assert got.shape == (3, 6)
    for b in range(3):
        np.testing.assert_allclose(got[b], mrr_at_k(S[b], rel, reduction="none"))
    St = torch.tensor(S)
    rt = rank_of(St, torch.tensor(rel))
    assert isinstance(rt, torch.Tensor) and rt.dtype == torch.int64
    np.testing.assert_array_equal(to_np(rt), rank_of(S, rel))
    assert mrr_at_k(St, torch.tensor(rel)) == pytest.approx(mrr_at_k(S, rel))


def _cswm_reference(dist):
    """The HOWM / C-SWM eval.py ranking: prepend the true distance, stable lexsort."""
    diag = np.diag(dist)[:, None]
    aug = np.concatenate([diag, dist], axis=1)
    idx = np.stack([np.lexsort((np.arange(len(row)), row)) for row in aug])
    ranks = (idx == 0).argmax(1) + 1
    return {k: float((ranks <= k).mean()) for k in (1, 5, 10)}, float((1.0 / ranks).mean())


def test_hits_and_mrr_match_cswm_code():
    rng = np.random.default_rng(2)
    dist = rng.integers(0, 6, size=(40, 40)).astype(np.float64)  # many ties
    hits, ref_mrr = _cswm_reference(dist)
    for k, v in hits.items():
        assert hits_at_k(dist, k, lower_is_better=True, block=9) == pytest.approx(v, abs=1e-15)
    assert mrr(dist, lower_is_better=True) == pytest.approx(ref_mrr, abs=1e-15)
    assert mrr(torch.tensor(-dist)) == pytest.approx(ref_mrr, abs=1e-15)
    # hand-built: the positive ranked 1st and 3rd
    d = np.array([[0.0, 1.0, 2.0], [0.5, 0.9, 0.1]])
    np.testing.assert_allclose(mrr(d, lower_is_better=True, reduction="none"), [1.0, 1 / 3])
    assert hits_at_k(d, 1, lower_is_better=True) == 0.5
    assert hits_at_k(d, 2, positives=np.array([0, 2]), lower_is_better=True) == 1.0


def test_metric_errors():
    S = np.zeros((3, 4))
    with pytest.raises(ValueError, match="exactly one"):
        mrr_at_k(S)
    with pytest.raises(ValueError, match="shape"):
        mrr_at_k(S, np.ones((3, 5)))
    with pytest.raises(ValueError, match="positives must be document indices"):
        mrr_at_k(S, positives=np.array([0, 1, 4]))
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(S, np.ones((3, 4)), k=0)
    with pytest.raises(ValueError, match="n <= m"):
        mrr(np.zeros((5, 4)))
    with pytest.raises(ValueError, match="NaN"):
        mrr_at_k(np.full((3, 4), np.nan), np.ones((3, 4)))
    with pytest.raises(ValueError, match="gain"):
        ndcg_at_k(S, np.ones((3, 4)), k=2, gain="log")


def test_against_trec_eval():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = np.random.default_rng(3)
    n, m = 50, 40
    S = rng.standard_normal((n, m))  # tie-free
    gains = rng.integers(0, 3, size=(n, m)) * (rng.random((n, m)) < 0.2)
    gains[:, 0] = np.maximum(gains[:, 0], 1)  # every query has a relevant document
    qrels = {f"q{i}": {f"d{j}": int(gains[i, j]) for j in range(m)} for i in range(n)}
    run = {f"q{i}": {f"d{j}": float(S[i, j]) for j in range(m)} for i in range(n)}
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank", "ndcg_cut_10", "recall_10"})
    res = ev.evaluate(run)
    ndcg = np.mean([res[f"q{i}"]["ndcg_cut_10"] for i in range(n)])
    recall = np.mean([res[f"q{i}"]["recall_10"] for i in range(n)])
    assert ndcg_at_k(S, gains, k=10) == pytest.approx(ndcg, abs=1e-12)
    assert recall_at_k(S, gains, k=10) == pytest.approx(recall, abs=1e-12)
    # trec_eval's recip_rank has no cut-off: compare with k = m
    rr = np.mean([res[f"q{i}"]["recip_rank"] for i in range(n)])
    assert mrr_at_k(S, gains, k=m) == pytest.approx(rr, abs=1e-12)


def test_against_ranx():
    ranx = pytest.importorskip("ranx")
    rng = np.random.default_rng(4)
    n, m = 50, 30
    S = rng.standard_normal((n, m))
    gains = rng.integers(0, 3, size=(n, m)) * (rng.random((n, m)) < 0.25)
    gains[:, 1] = np.maximum(gains[:, 1], 1)
    qrels = ranx.Qrels({f"q{i}": {f"d{j}": int(gains[i, j]) for j in range(m) if gains[i, j]}
                        for i in range(n)})
    run = ranx.Run({f"q{i}": {f"d{j}": float(S[i, j]) for j in range(m)} for i in range(n)})
    res = ranx.evaluate(qrels, run, ["mrr@10", "ndcg@10", "recall@10"])
    assert mrr_at_k(S, gains, k=10) == pytest.approx(res["mrr@10"], abs=1e-12)
    assert ndcg_at_k(S, gains, k=10) == pytest.approx(res["ndcg@10"], abs=1e-12)
    assert recall_at_k(S, gains, k=10) == pytest.approx(res["recall@10"], abs=1e-12)
