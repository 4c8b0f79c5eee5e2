"""Sparse-graph attention in the study registry."""

from __future__ import annotations

import numpy as np
import pytest

import structattn.studies.graphs as sg
from structattn.graphs import bigbird, hypercube, longformer, sparse_attention, window
from structattn.studies import get, run_study

from ..conftest import convert, to_np

NAMES = ("sparse-hypercube", "sparse-bigbird", "sparse-longformer", "sparse-window")


@pytest.mark.parametrize("name", NAMES)
def test_registered_operators(name, backend):
    entry = get(name)
    assert entry.causal and entry.budgets
    L = 64
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, L, 8)) for _ in range(3))
    args = convert(backend, "float64", q, k, v)
    for causal in (False, True):
        op = entry.build(dim=8, seed=3, causal=causal, backend=backend, length=L)
        assert isinstance(op, sg.SparseGraphAttention) and op.graph.num_nodes == L
        out = op(*args)
        expected = sparse_attention(q, k, v, op.graph, causal=causal)
        np.testing.assert_allclose(to_np(out), expected, atol=1e-13)
        P = to_np(op.matrix(*args[:2]))
        np.testing.assert_allclose(P @ v, expected, atol=1e-13)
        if causal:
            assert np.all(np.triu(P, 1) == 0)


def test_factories_build_the_documented_graphs():
    build = {n: get(n).build for n in NAMES}
    assert build["sparse-hypercube"](dim=8, seed=0, causal=False, length=64,
                                     block_size=4).graph == hypercube(64, block_size=4)
    assert build["sparse-bigbird"](dim=8, seed=5, causal=False, length=64,
                                   num_random=8).graph == bigbird(64, 3, 2, 8, seed=5)
    assert build["sparse-longformer"](dim=8, seed=0, causal=False, length=64,
                                      w=8).graph == longformer(64, 8, 2)
    assert build["sparse-window"](dim=8, seed=0, causal=False, length=64,
                                  w=8).graph == window(64, 8)


def test_run_study_compares_with_exact_softmax():
    records = run_study(list(NAMES), lengths=(32,), dim=8, repeats=1, seeds=(0,))
    assert records and all(r["notes"] == "" for r in records)
    by = {(r["operator"], r["budget_value"], r["causal"]): r for r in records}
    # a window covering the whole sequence is exact softmax attention
    assert by[("sparse-window", 32, False)]["rel_error"] < 1e-12
    assert by[("sparse-window", 8, False)]["rel_error"] > 1e-3
    assert by[("sparse-hypercube", 1, False)]["row_kl"] > 0
