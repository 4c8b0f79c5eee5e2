"""The registry of attention approximations that the study runner sweeps.

An approximation is registered by name with its *budget* parameters (the knobs that
trade cost for accuracy, e.g. the number of random features) and a factory that builds
an operator object with ``__call__(q, k, v)`` and ``matrix(q, k)`` (see
:class:`~structattn.attention.FeatureMapAttention`)::

    from structattn.studies import register

    @register("my-method", budgets={"rank": (8, 32)}, description="low-rank sketch")
    def _my_method(*, dim, seed, causal, rank=16):
        return MyOperator(dim=dim, rank=rank, seed=seed, causal=causal)

Any module can add entries; :mod:`structattn.studies.builtin` registers the feature-map
methods of :mod:`structattn.features`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = ["StudyEntry", "default_operators", "get", "register", "registry", "unregister"]

Factory = Callable[..., Any]


@dataclass(frozen=True)
class StudyEntry:
    """One registered approximation.

    Attributes
    ----------
    name : str
        Registry key (no commas or whitespace, so it can be listed on a command line).
    factory : callable
        ``factory(*, dim, seed, causal, **budget) -> operator``; may also accept
        ``backend=`` (it is then passed the runner's backend).
    budgets : Mapping[str, tuple]
        Budget parameter name → the values a sweep visits.  Empty: one configuration.
        With several names, each is swept on its own, the others left at the factory's
        defaults.
    description : str
        One line shown in tables.
    causal : bool
        Whether the method supports causal attention (False: skipped in causal sweeps).
    default : bool
        Whether the default sweep (``operators=None``; ``structattn study`` without
        ``--operators``) includes it.  False for methods whose CPU cost alone would take
        the default run past its time budget; ``operators="all"`` includes them.
    """

    name: str
    factory: Factory
    budgets: Mapping[str, tuple]
    description: str
    causal: bool = True
    default: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.budgets, MappingProxyType):
            object.__setattr__(self, "budgets", MappingProxyType(dict(self.budgets)))

    def __reduce__(self) -> tuple:
        # picklable (tasks carry their entry to dask workers); the factory is pickled
        # by reference, or by value under cloudpickle
        return (StudyEntry, (self.name, self.factory, dict(self.budgets), self.description,
                             self.causal, self.default))

    def budget_points(self) -> list[tuple[str | None, Any]]:
        """The ``(budget_name, budget_value)`` pairs of a sweep; ``[(None, None)]`` if none."""
        if not self.budgets:
            return [(None, None)]
        return [(name, value) for name, values in self.budgets.items() for value in values]

    def build(
        self,
        *,
        dim: int,
        seed: int,
        causal: bool,
        backend: str = "auto",
        length: int | None = None,
        **budget: Any,
    ) -> Any:
        """Call the factory; ``backend`` and ``length`` are passed only if it accepts them.

        Factories of masked operators take ``length`` (the mask is ``L x L``).
        """
        kwargs: dict[str, Any] = {"dim": dim, "seed": seed, "causal": causal, **budget}
        for name, value in (("backend", backend), ("length", length)):
            if _accepts(self.factory, name):
                kwargs[name] = value
        return self.factory(**kwargs)


_REGISTRY: dict[str, StudyEntry] = {}


def _accepts(func: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _validate(
    name: Any, budgets: Any, description: Any, causal: Any
) -> MappingProxyType:
    if not isinstance(name, str) or not name or any(c in name for c in ", \t\n"):
        raise ValueError(
            f"name must be a non-empty string without commas or whitespace, got {name!r}"
        )
    if name in _REGISTRY:
        raise ValueError(f"an operator named {name!r} is already registered")
    if not isinstance(description, str) or not description.strip():
        raise ValueError(f"description of {name!r} must be a non-empty string")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {causal!r}")
    if not isinstance(budgets, Mapping):
        raise TypeError(
            f"budgets must be a dict of parameter name -> tuple of values, got "
            f"{type(budgets).__name__}"
        )
    frozen: dict[str, tuple] = {}
    for key, values in budgets.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"budget names must be identifiers, got {key!r}")
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise TypeError(f"budgets[{key!r}] must be a tuple of values, got {values!r}")
        values = tuple(values)
        if not values:
            raise ValueError(f"budgets[{key!r}] is empty; give at least one value")
        frozen[key] = values
    return MappingProxyType(frozen)


def register(
    name: str,
    *,
    budgets: Mapping[str, tuple],
    description: str,
    causal: bool = True,
    default: bool = True,
) -> Callable[[Factory], Factory]:
    """Decorator registering an operator factory under ``name``.

    Parameters
    ----------
    name : str
        Unique key, without commas or whitespace.
    budgets : dict of str -> tuple
        Budget parameter name → values swept by :func:`~structattn.studies.run_study`;
        each is passed to the factory as a keyword.  ``{}`` for a method without budget.
    description : str
        One line describing the method.
    causal : bool, default True
        False when the method cannot do causal attention (skipped in causal sweeps).
    default : bool, default True
        False keeps the method out of the default sweep (it still runs when named, or
        with ``operators="all"``); for methods too slow on a CPU for the default run.

    Returns
    -------
    callable
        The decorator; it returns the factory unchanged.

    Raises
    ------
    ValueError
        If ``name`` is taken or malformed, or a budget has no values.
    """
    frozen = _validate(name, budgets, description, causal)
    if not isinstance(default, bool):
        raise TypeError(f"default must be a bool, got {default!r}")

    def decorator(factory: Factory) -> Factory:
        if not callable(factory):
            raise TypeError(f"register({name!r}) must decorate a callable factory")
        if name in _REGISTRY:
            raise ValueError(f"an operator named {name!r} is already registered")
        _REGISTRY[name] = StudyEntry(name, factory, frozen, description.strip(), causal,
                                     default)
        return factory

    return decorator


def unregister(name: str) -> StudyEntry:
    """Remove and return the entry ``name`` (tests, interactive experiments)."""
    entry = get(name)
    del _REGISTRY[name]
    return entry


def registry() -> dict[str, StudyEntry]:
    """A copy of the registry: name → :class:`StudyEntry`, in registration order."""
    return dict(_REGISTRY)


def default_operators() -> list[str]:
    """Names of the default sweep: every entry registered with ``default=True``."""
    return [name for name, entry in _REGISTRY.items() if entry.default]


def get(name: str) -> StudyEntry:
    """The entry registered as ``name``.

    Raises
    ------
    KeyError
        If no such entry exists; the message lists the registered names.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        known = ", ".join(_REGISTRY) or "(none)"
        raise KeyError(f"unknown operator {name!r}; registered operators: {known}") from None
