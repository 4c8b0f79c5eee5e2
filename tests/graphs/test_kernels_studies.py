"""Study registrations of the graph-kernel masks."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest

import structattn.studies.graph_kernels as gk
from structattn.studies import get, run_study
from structattn.testing import relative_error

NAMES = ("performer+tree", "performer+diffusion", "performer+grf")


@pytest.mark.parametrize("name", NAMES)
def test_factories_build_working_operators(name):
    entry = get(name)
    assert not entry.causal
    op = entry.build(dim=8, seed=0, causal=False, length=48)
    rng = np.random.default_rng(0)
    q, k, v = (0.3 * rng.standard_normal((1, 2, 48, 8)) for _ in range(3))
    out, exact = op(q, k, v), op.reference(q, k, v)
    assert out.shape == (1, 2, 48, 8)
    assert op.mask.shape == (48, 48)
    assert relative_error(out, exact) < 0.5


def test_graph_builders():
    tree = gk.random_recursive_tree(100, seed=0)
    assert nx.is_tree(tree) and sorted(tree.nodes) == list(range(100))
    grid = gk.grid_graph_for(48)
    assert grid.number_of_nodes() == 48 and grid.number_of_edges() == 6 * 7 + 8 * 5
    assert gk.GRF_MODULATION[:2] == (1.0, 0.5)
    assert math.isclose(gk.GRF_MODULATION[3], 1 / 48)


def test_grf_reference_is_the_expected_mask_and_error_shrinks_with_walks():
    records = run_study(["performer+grf"], lengths=(64,), causal=False, repeats=1, dim=8,
                        value_dim=8, heads=1, matrix_max_length=0)
    errors = {r["budget_value"]: r["rel_error"] for r in records}
    assert set(errors) == {4, 16, 64}
    assert errors[64] < errors[4]
    op = get("performer+grf").build(dim=8, seed=0, causal=False, length=64, num_walks=4)
    np.testing.assert_allclose(op.reference.mask.to_dense(), op.mask.expected_dense())
