"""The operator registry: registration, lookup, errors, built-ins."""

from __future__ import annotations

import numpy as np
import pytest

from structattn.studies import StudyEntry, get, register, registry
from structattn.studies.registry import unregister

BUILTINS = ("performer", "performer-hyperbolic", "performer-iid", "rfa-trig", "linear-elu")


@pytest.fixture
def scratch_name():
    """A registry name removed again after the test."""
    name = "test-scratch-operator"
    yield name
    if name in registry():
        unregister(name)


def test_builtins_registered_with_budgets():
    entries = registry()
    for name in BUILTINS:
        assert isinstance(entries[name], StudyEntry)
    assert entries["performer"].budgets == {"num_features": (32, 128, 512)}
    assert entries["performer-hyperbolic"].budgets == {"num_features": (16, 64, 256)}
    assert entries["performer-iid"].budgets == {"num_features": (32, 128, 512)}
    assert entries["rfa-trig"].budgets == {"num_features": (16, 64, 256)}
    assert dict(entries["linear-elu"].budgets) == {}
    assert entries["linear-elu"].budget_points() == [(None, None)]
    assert entries["performer"].budget_points() == [
        ("num_features", 32), ("num_features", 128), ("num_features", 512)
    ]


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_factories_build_working_operators(name):
    entry = get(name)
    budget = {k: v[0] for k, v in entry.budgets.items()}
    op = entry.build(dim=4, seed=0, causal=True, **budget)
    x = np.random.default_rng(1).standard_normal((1, 6, 4))
    assert op(x, x, x).shape == (1, 6, 4)
    P = op.matrix(x, x)
    assert P.shape == (1, 6, 6)
    np.testing.assert_allclose(np.triu(P[0], 1), 0.0, atol=1e-12)  # causal
    np.testing.assert_allclose(P.sum(-1), 1.0, rtol=1e-10)


def test_seed_is_passed_to_the_feature_map():
    entry = get("performer")
    a = entry.build(dim=4, seed=3, causal=False, num_features=8)
    b = entry.build(dim=4, seed=3, causal=False, num_features=8)
    c = entry.build(dim=4, seed=4, causal=False, num_features=8)
    np.testing.assert_array_equal(a.feature_map.projection, b.feature_map.projection)
    assert not np.array_equal(a.feature_map.projection, c.feature_map.projection)


def test_register_decorator_returns_factory_and_registers(scratch_name):
    def factory(*, dim, seed, causal, rank=2):
        return ("op", dim, seed, causal, rank)

    returned = register(scratch_name, budgets={"rank": [1, 2]}, description="x",
                        causal=False)(factory)
    assert returned is factory
    entry = get(scratch_name)
    assert entry.budgets == {"rank": (1, 2)}  # lists are frozen to tuples
    assert entry.causal is False
    # the factory does not accept backend=, so it is not passed
    assert entry.build(dim=3, seed=1, causal=False, backend="numpy", rank=1) == (
        "op", 3, 1, False, 1
    )


def test_duplicate_name_raises(scratch_name):
    register(scratch_name, budgets={}, description="first")(lambda **kw: None)
    with pytest.raises(ValueError, match="already registered"):
        register(scratch_name, budgets={}, description="second")(lambda **kw: None)
    with pytest.raises(ValueError, match="already registered"):
        register("performer", budgets={}, description="again")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": "a,b"}, ValueError),
        ({"name": ""}, ValueError),
        ({"budgets": {"n": ()}}, ValueError),
        ({"budgets": {"n": 3}}, TypeError),
        ({"budgets": [("n", (1,))]}, TypeError),
        ({"description": " "}, ValueError),
    ],
)
def test_register_validates_arguments(kwargs, error):
    args = {"name": "test-bad", "budgets": {}, "description": "d", **kwargs}
    with pytest.raises(error):
        register(args.pop("name"), **args)
    assert "test-bad" not in registry()


def test_get_unknown_lists_known_names():
    with pytest.raises(KeyError, match="performer-hyperbolic"):
        get("no-such-operator")


def test_registry_returns_a_copy():
    entries = registry()
    entries.pop("performer")
    assert "performer" in registry()
