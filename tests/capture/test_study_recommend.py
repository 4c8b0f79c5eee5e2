"""The study on captured attention, and recommend() on its records."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from structattn.attention import softmax_attention  # noqa: E402
from structattn.cli import main  # noqa: E402
from structattn.studies import Sweep, get, run_study  # noqa: E402
from structattn.studies.attention_record import AttentionRecordError  # noqa: E402
from structattn.studies.capture import capture  # noqa: E402
from structattn.studies.captured_inputs import captured_groups  # noqa: E402
from structattn.studies.recommend import pareto_front, recommend  # noqa: E402

OPS = ("exact", "uniform", "performer", "sparse-window")


def _sdpa(q, k, v, mask=None, causal=False, scale=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                          scale=scale)


def _arrays(seed=0, shape=(2, 3, 40, 8)):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) * 0.8 for _ in range(3)]


def _head_error(out, exact):
    num = np.linalg.norm(out - exact, axis=(-2, -1))
    return float(np.mean(num / np.linalg.norm(exact, axis=(-2, -1))))


def _by_hand(q, k, v, causal, record):
    """The record's errors recomputed by building the operator on the arrays directly."""
    exact = softmax_attention(q, k, v, causal=causal, backend="numpy")
    budget = {} if record["budget_name"] is None else {record["budget_name"]:
                                                       record["budget_value"]}
    op = get(record["operator"]).build(dim=q.shape[-1], seed=record["seed"], causal=causal,
                                       length=q.shape[-2], **budget)
    return _head_error(np.asarray(op(q, k, v)), exact)


def _study(path, **kw):
    return run_study(sweep=Sweep(inputs=str(path), operators=OPS, timing="none", **kw))


def test_study_on_record_equals_study_on_arrays(tmp_path):
    q, k, v = _arrays()
    tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))
    rec = capture(_sdpa, tq, tk, tv, scale=0.2)  # a non-default scale: folded into q
    rec.save(tmp_path / "rec.npz")
    qs = q * 0.2 * np.sqrt(8)  # the same scores with the default scale
    np.savez(tmp_path / "plain.npz", q=qs, k=k, v=v)
    captured, plain = _study(tmp_path / "rec.npz"), _study(tmp_path / "plain.npz")
    assert len(captured) == len(plain) == 1 + 1 + 3 + len(get("sparse-window").budget_points())
    flat = [a.reshape(1, 6, 40, 8) for a in (qs, k, v)]
    for a, b in zip(captured, plain, strict=True):
        assert (a["operator"], a["budget_value"]) == (b["operator"], b["budget_value"])
        assert a["inputs"] == "captured" and a["length"] == 40 and a["heads"] == 6
        assert a["head_error"] == pytest.approx(b["head_error"], rel=1e-12, abs=1e-14)
        assert a["uniform_error"] == pytest.approx(b["uniform_error"], rel=1e-12)
        assert a["head_error"] == pytest.approx(_by_hand(*flat, False, a), rel=1e-9, abs=1e-12)
    assert captured[0]["operator"] == "exact" and captured[0]["head_error"] < 1e-12
    uniform = softmax_attention(*flat, backend="numpy") * 0 + flat[2].mean(-2, keepdims=True)
    exact = softmax_attention(*flat, backend="numpy")
    assert captured[0]["uniform_error"] == pytest.approx(_head_error(uniform, exact), rel=1e-9)


def test_masks_and_causal_flags_are_respected(tmp_path):
    q, k, v = (torch.from_numpy(a) for a in _arrays(1))
    mask = torch.ones(2, 1, 40, 40, dtype=torch.bool)
    mask[1, ..., 30:] = False  # key padding of the second sequence
    capture(_sdpa, q, k, v, mask).save(tmp_path / "pad.npz")
    groups, skipped = captured_groups(tmp_path / "pad.npz")
    assert not skipped and [(g["length"], g["heads"], g["causal"]) for g in groups] == [
        (40, 3, False), (30, 3, False)]
    np.testing.assert_array_equal(groups[1]["q"][0], q[1, :, :30].numpy() * 1.0)
    records = _study(tmp_path / "pad.npz")
    assert sorted({r["length"] for r in records}) == [30, 40]
    trimmed = [a[1:2, :, :30].numpy() for a in (q, k, v)]
    for r in records:
        if r["length"] == 30 and r["head_error"] is not None:
            assert r["head_error"] == pytest.approx(_by_hand(*trimmed, False, r), rel=1e-9,
                                                    abs=1e-12)
    # causal: the study runs the causal form only (and skips operators without one)
    capture(_sdpa, q, k, v, causal=True).save(tmp_path / "causal.npz")
    records = _study(tmp_path / "causal.npz")
    assert records and all(r["causal"] for r in records)
    exact_row = next(r for r in records if r["operator"] == "performer")
    flat = [a.reshape(1, 6, 40, 8).numpy() for a in (q, k, v)]
    assert exact_row["head_error"] == pytest.approx(_by_hand(*flat, True, exact_row), rel=1e-9)
    # causal plus key padding: trimmed, still causal
    capture(_sdpa, q, k, v, mask & torch.ones(40, 40, dtype=torch.bool).tril()).save(
        tmp_path / "both.npz")
    groups, _ = captured_groups(tmp_path / "both.npz")
    assert [(g["length"], g["causal"]) for g in groups] == [(40, True), (30, True)]


def test_unsupported_masks_and_bad_files(tmp_path):
    q, k, v = (torch.from_numpy(a) for a in _arrays(2))
    band = (torch.arange(40)[:, None] - torch.arange(40)[None]).abs() <= 3  # sliding window
    capture(_sdpa, q, k, v, band).save(tmp_path / "band.npz")
    with pytest.raises(AttentionRecordError, match="neither key padding nor causal"):
        Sweep(inputs=str(tmp_path / "band.npz")).check_inputs()
    mixed = torch.ones(2, 1, 40, 40, dtype=torch.bool)
    mixed[1] = band
    capture(_sdpa, q, k, v, mixed).save(tmp_path / "mixed.npz")
    with pytest.warns(UserWarning, match="1 batch element"):
        records = _study(tmp_path / "mixed.npz")
    assert {r["heads"] for r in records} == {3}
    np.savez(tmp_path / "nan.npz", q=np.full((4, 8), np.nan), k=np.ones((4, 8)),
             v=np.ones((4, 8)))
    with pytest.raises(AttentionRecordError, match="q holds NaN"):
        Sweep(inputs=str(tmp_path / "nan.npz")).check_inputs()
    with pytest.raises(ValueError, match="inputs must be one of"):
        Sweep(inputs="minilmm")


def test_cli_study_and_recommend(tmp_path, capsys):
    q, k, v = (torch.from_numpy(a) for a in _arrays(3))
    path = capture(_sdpa, q, k, v).save(tmp_path / "rec.npz")
    assert main(["study", "--inputs", str(path), "--operators", "exact,uniform,performer",
                 "--no-report", "--no-timing", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "L=40 (captured)" in out and "uniform" in out
    assert main(["recommend", "--inputs", str(path), "--operators", "exact,uniform,performer",
                 "--cost", "flops", "--max-error", "0.5", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Pareto front" in out and "recommended" in out
    assert "structattn study --inputs" in out
    assert main(["recommend", "--inputs", str(tmp_path / "none.npz")]) == 2
    assert "existing .npz" in capsys.readouterr().err
    assert main(["recommend", "--inputs", str(path), "--max-error", "0.1",
                 "--max-cost", "0.5"]) == 2


def _planted(op, budget, error, time):
    return {"operator": op, "budget_name": None if budget is None else "rank",
            "budget_value": budget, "head_error": error, "uniform_error": 0.5,
            "time_s": time, "exact_time_s": 1.0, "length": 64, "causal": False}


PLANTED = [
    _planted("exact", None, 0.0, 1.0),
    _planted("uniform", None, 0.5, 0.01),
    _planted("a", 8, 0.30, 0.10),
    _planted("a", 32, 0.10, 0.30),
    _planted("b", 8, 0.35, 0.20),   # dominated by a/8
    _planted("b", 32, 0.05, 0.50),
    _planted("c", 8, 0.12, 0.25),   # between a/8 and a/32: on the front
    _planted("d", 8, None, 0.05),   # failed operator: no error
]


def test_recommend_on_planted_records():
    rec = recommend(PLANTED)
    names = [(p["operator"], p["budget_value"]) for p in rec.front]
    assert names == [("uniform", None), ("a", 8), ("c", 8), ("a", 32), ("b", 32),
                     ("exact", None)]
    assert rec.choice is None
    rec = recommend(PLANTED, max_error=0.11)
    assert (rec.choice["operator"], rec.choice["budget_value"]) == ("a", 32)
    assert rec.choice["cost"] == pytest.approx(0.3)
    assert [p["operator"] for p in rec.feasible] == ["a", "b", "exact"]
    rec = recommend(PLANTED, max_cost=0.26)
    assert (rec.choice["operator"], rec.choice["budget_value"]) == ("c", 8)
    assert "recommended" in str(rec) and "get('c').build" in str(rec)
    assert recommend(PLANTED, max_error=0.0).choice["operator"] == "exact"
    assert recommend(PLANTED, max_cost=0.001).choice is None
    # a cheap point worse than uniform attention (error 0.6 >= 0.5) is never chosen
    worse = recommend([*PLANTED, _planted("e", 8, 0.6, 0.001)], max_cost=0.05)
    assert worse.choice is None and worse.front[0]["operator"] == "e"
    assert "! e" in str(worse)
    # several inputs: errors and cost ratios are averaged per operator x budget
    more = [dict(r, length=128, head_error=None if r["head_error"] is None else
                 r["head_error"] + 0.1) for r in PLANTED]
    avg = recommend(PLANTED + more, max_error=0.2).choice
    assert (avg["operator"], avg["budget_value"]) == ("c", 8)  # mean error 0.17, cost 0.25
    assert avg["error"] == pytest.approx(0.17)
    with pytest.raises(ValueError, match="not both"):
        recommend(PLANTED, max_error=0.1, max_cost=0.5)
    with pytest.raises(ValueError, match="max_error must be"):
        recommend(PLANTED, max_error=-1)
    with pytest.raises(ValueError, match="cost must be one of"):
        recommend(PLANTED, cost="energy")
    assert pareto_front([{"cost": 1, "error": 1}, {"cost": 1, "error": 0.5}]) == [
        {"cost": 1, "error": 0.5}]
