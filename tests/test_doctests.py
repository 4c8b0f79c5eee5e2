"""Run every docstring ``Examples`` section in ``structattn`` as a doctest.

Each module under ``structattn/`` is imported and handed to :mod:`doctest` with fixed numpy
print options (numpy's default ``precision=8``, ``suppress=True``, no legacy mode),
``NORMALIZE_WHITESPACE`` and ``ELLIPSIS``.  Modules whose optional dependencies are not
installed are skipped (the skip names the missing module); a module without examples
yields no test.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil

import numpy as np
import pytest

import structattn

OPTIONFLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def _module_names() -> list[str]:
    names = [structattn.__name__]
    for info in pkgutil.walk_packages(structattn.__path__, prefix="structattn."):
        if info.name.endswith("__main__"):
            continue  # importing it would run the command line
        names.append(info.name)
    return sorted(names)


def _has_examples(name: str) -> bool:
    """Whether the module's source holds a doctest prompt (cheap, avoids importing)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return False
    with open(spec.origin, encoding="utf-8") as fh:
        return ">>> " in fh.read()


MODULES = [name for name in _module_names() if _has_examples(name)]


@pytest.fixture
def _print_options():
    saved = np.get_printoptions()
    np.set_printoptions(precision=8, suppress=True, legacy=False)
    try:
        yield
    finally:
        np.set_printoptions(**saved)


def test_modules_with_examples_are_collected():
    # the collection itself must find the documented modules (guards a silent empty run)
    assert "structattn.attention" in MODULES
    assert "structattn.masks.ripple" in MODULES
    assert len(MODULES) >= 20


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, _print_options):
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:  # optional dependency (numba, dask, ...) missing
        if exc.name is not None and not exc.name.startswith("structattn"):
            pytest.skip(f"optional dependency {exc.name!r} is not installed")
        raise
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    tests = [t for t in finder.find(module, name) if t.examples]
    # only the module's own objects (re-exports are tested in the module that defines them)
    tests = [t for t in tests if t.filename == module.__file__]
    assert tests, f"{name} has '>>> ' in its source but doctest found no examples"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
