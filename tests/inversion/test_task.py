"""The ``inversion-digits`` task study, quick mode (TinyViT with swapped attentions)."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from structattn.studies.tasks import run_task, task_registry


def test_inversion_digits_quick(tmp_path):
    assert "inversion-digits" in task_registry()
    result = run_task("inversion-digits", quick=True, out_dir=tmp_path)
    models = {r["model"] for r in result.records}
    assert models == {"mlp", "vit-softmax", "vit-performer", "vit-mra", "mlp (seed+1)",
                      "vit-softmax (seed+1)", "mlp (seed+2)", "vit-softmax (seed+2)"}
    assert len(result.records) == 8 * 10
    # the exact models are inverted at three seeds of the same trained model
    for name in ("mlp", "vit-softmax"):
        seeds = {r["inversion_seed"] for r in result.records
                 if r["model"] == name or r["model"].startswith(f"{name} (seed+")}
        assert seeds == {0, 1, 2}
    for r in result.records:
        assert 0.0 <= r["p_target"] <= 1.0 and 0.0 <= r["judge_p_target"] <= 1.0
        assert 0 <= r["judge_pred"] < 10 and r["class"] in range(10)
        # the nine jitter rolls include the image itself
        assert r["p_target_roll_min"] <= r["p_target"] + 1e-12
        assert r["p_target_roll_min"] <= r["p_target_roll_mean"] <= 1.0
        if r["model"] in ("mlp", "vit-softmax"):
            assert r["corr_exact"] is None
        else:
            assert -1.0 <= r["corr_exact"] <= 1.0 and math.isfinite(r["corr_exact"])
    assert [p.name for p in result.figures] == ["inversion_digits_seed0.png"]
    assert (tmp_path / "inversion_digits_seed0.png").stat().st_size > 1000
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["native_size"] == 8 and meta["quick"] is True
    # the spec's jitter (N // 7 = 1) and classifiers trained on the inversion's views
    assert meta["jitter"] == 1 and meta["train_augment"] == 1.0 and meta["lr"] == 0.08
    assert "| vit-mra |" in result.summary and "Judge test accuracy" in result.summary
    assert meta["inversion_seeds"] == 3 and meta["target"] == 0.99
    assert "- vit-softmax: target p >= 0.99 met for " in result.summary
    assert "of 30 (inversion seeds [0, 1, 2])" in result.summary
