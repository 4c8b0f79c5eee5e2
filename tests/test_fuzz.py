"""Fuzz suite over the public entry points (issue 13; the table is docs/reliability.rst).

Every case ends either in a *named error at the API boundary* — a ``TypeError`` /
``ValueError`` (or ``FloatingPointError``) raised from structattn's own code, whose
message names an argument — or in a result that satisfies the method's invariant:

* finite, of the documented shape, on the input's kind and dtype;
* methods with non-negative weights: every row inside the convex hull of the value rows
  (to rounding), or an exactly-zero row reported by a ``NormalizerWarning``;
* attention matrices: non-negative rows summing to 1 (or 0 for reported rows);
* simplex maps: non-negative, summing to 1, finite gradients;
* torch: finite forward ⇒ finite gradients;
* inputs are never mutated, read-only and non-contiguous inputs are accepted.

Hypothesis runs a bounded number of examples per entry point with ``deadline=None``;
the whole file runs in well under two minutes on two cores.
"""

from __future__ import annotations

import importlib
import inspect
import os
import traceback
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import structattn as sa
from structattn import eigen, estimators, graphs, layers, masks, mra, solvers

PACKAGE_DIR = os.path.dirname(sa.__file__)
EXAMPLES = int(os.environ.get("STRUCTATTN_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck), database=None)
NAMED = (TypeError, ValueError, FloatingPointError)


# ------------------------------------------------------------------ the registry
@dataclass(frozen=True)
class Entry:
    """An attention-like entry point ``f(q, k, v)``."""

    call: Callable[[Any, Any, Any], Any]
    convex: bool = True  # non-negative weights: rows in the hull of v
    self_attention: bool = False  # needs L_q == L_k
    torch_ok: bool = True
    # rows whose normalizer underflowed are recomputed (numpy; torch inside debug()):
    # no zero row is accepted, warned or not
    recomputed: bool = False


def _prf(d: int) -> sa.PositiveRandomFeatures:
    return sa.PositiveRandomFeatures(dim=max(d, 1), num_features=8, seed=0)


ATTENTION: dict[str, Entry] = {
    "softmax_attention": Entry(lambda q, k, v: sa.softmax_attention(q, k, v)),
    "softmax_attention(causal)": Entry(
        lambda q, k, v: sa.softmax_attention(q, k, v, causal=True), self_attention=True),
    "SoftmaxAttention": Entry(lambda q, k, v: sa.SoftmaxAttention()(q, k, v)),
    "kernel_attention(PRF)": Entry(
        lambda q, k, v: sa.kernel_attention(q, k, v, _prf(q.shape[-1])), recomputed=True),
    "kernel_attention(PRF, causal)": Entry(
        lambda q, k, v: sa.kernel_attention(q, k, v, _prf(q.shape[-1]), causal=True),
        recomputed=True,
        self_attention=True),
    "FeatureMapAttention(hyperbolic PRF)": Entry(lambda q, k, v: sa.FeatureMapAttention(
        sa.PositiveRandomFeatures(dim=max(q.shape[-1], 1), num_features=4, seed=1,
                                  hyperbolic=True))(q, k, v)),
    "kernel_attention(Elu)": Entry(lambda q, k, v: sa.kernel_attention(q, k, v,
                                                                       sa.EluFeatures())),
    "kernel_attention(Relu, causal)": Entry(
        lambda q, k, v: sa.kernel_attention(q, k, v, sa.ReluFeatures(), causal=True),
        self_attention=True),
    "kernel_attention(Trig)": Entry(lambda q, k, v: sa.kernel_attention(
        q, k, v, sa.TrigonometricRandomFeatures(dim=max(q.shape[-1], 1), num_features=4,
                                                seed=0)), convex=False),
    "cosformer": Entry(lambda q, k, v: estimators.cosformer(q, k, v)),
    "CosformerAttention(causal)": Entry(
        lambda q, k, v: estimators.CosformerAttention(causal=True)(q, k, v),
        self_attention=True),
    "randomized_attention": Entry(lambda q, k, v: estimators.randomized_attention(
        q, k, v, num_samples=3, seed=0), convex=False),
    "lara": Entry(lambda q, k, v: estimators.lara(
        q, k, v, num_landmarks=1, seed=0), convex=False),
    "rfa_snis": Entry(lambda q, k, v: estimators.rfa_snis(q, k, v, num_samples=4, seed=0)),
    "mra_attention": Entry(lambda q, k, v: mra.mra_attention(
        q, k, v, block_size=2, blocks_per_row=1), self_attention=True),
    "sparse_attention": Entry(lambda q, k, v: graphs.sparse_attention(
        q, k, v, graphs.window(q.shape[-2], 1)), self_attention=True),
    "vars_attention": Entry(lambda q, k, v: solvers.vars_attention(q, k, v), convex=False),
}

#: simplex maps on a score array ``x``
SIMPLEX: dict[str, Callable[[Any], Any]] = {
    "softmax": solvers.softmax,
    "sparsemax": solvers.sparsemax,
    "entmax(1.5)": lambda x: solvers.entmax(x, 1.5),
    "entmax(1.3)": lambda x: solvers.entmax(x, 1.3),
}

#: every public name, and where the fuzz suite exercises it (or why it does not)
COVERED_ELSEWHERE = {
    # masks: fuzzed by test_masks_fuzz (construction + products) below
    **{n: "masks" for n in masks.__all__},
    # feature maps: through kernel attention above and test_feature_maps_fuzz
    **{n: "features" for n in ("EluFeatures", "FeatureMap", "PositiveRandomFeatures",
                                "RandomFeatureMap", "ReluFeatures",
                                "TrigonometricRandomFeatures", "gaussian_projection",
                                "orthogonal_gaussian")},
    "attention_matrix": "test_attention_matrix_fuzz",
    "NormalizerWarning": "the warning the invariants accept",
    "BACKENDS": "constant (backend names)",
    "__version__": "constant",
    "masks": "the masks subpackage",
    "StructureWarning": "warning class",
    # solvers
    "ConsistentAttentionResult": "result type of consistent_attention",
    "LassoResult": "result type of lasso",
    "ConvergenceWarning": "warning class",
    "consistent_attention": "test_consistent_attention_fuzz",
    "lasso": "test_lasso_fuzz",
    "soft_threshold": "test_soft_threshold_fuzz",
    "entmax": "SIMPLEX", "softmax": "SIMPLEX", "sparsemax": "SIMPLEX",
    "vars_attention": "ATTENTION",
}


def _public_names() -> dict[str, str]:
    """``{qualified name: module}`` of every entry of every public ``__all__``."""
    out = {}
    for mod in ("structattn", "structattn.masks", "structattn.mra", "structattn.estimators",
                "structattn.graphs", "structattn.eigen", "structattn.solvers",
                "structattn.layers"):
        for name in importlib.import_module(mod).__all__:
            out[f"{mod}.{name}"] = mod
    return out


#: names exercised by the generic argument fuzz (test_public_callables_refuse_garbage)
GARBAGE_ARGS = (None, "x", -1, 1.5, float("nan"), float("inf"), True, [1, 2],
                np.array([1, 2, 3]), np.zeros((2, 2), dtype=np.complex128))


def test_every_public_name_is_accounted_for():
    """Each name of each public ``__all__`` is fuzzed here or listed with its reason."""
    attention_targets = {"softmax_attention", "SoftmaxAttention", "kernel_attention",
                         "FeatureMapAttention", "cosformer", "CosformerAttention",
                         "randomized_attention", "lara", "rfa_snis", "mra_attention",
                         "sparse_attention", "vars_attention"}
    missing = []
    for qual in _public_names():
        name = qual.rsplit(".", 1)[1]
        if name in attention_targets or name in COVERED_ELSEWHERE:
            continue
        obj = getattr(importlib.import_module(qual.rsplit(".", 1)[0]), name)
        if callable(obj) or isinstance(obj, (tuple, dict, str, float, int, ModuleType)):
            continue  # generic garbage-argument fuzz below, a constant or a submodule
        missing.append(qual)
    assert not missing, missing


# ------------------------------------------------------------------ input strategy
MAGNITUDES = (0.0, 1e-310, 1e-40, 1e-3, 1.0, 30.0, 1e3, 1e30, 1e150)


@st.composite
def attention_inputs(draw: Any, self_attention: bool) -> dict[str, Any]:
    """A case: mostly valid inputs at every magnitude, one kind of bad input in ~40 %.

    Hypothesis draws the seed; the case is built from it with fixed probabilities
    (hypothesis' own choices crowd towards its "simplest" values).
    """
    seed = draw(st.integers(0, 2**32 - 1))
    r = np.random.default_rng(seed)
    bad = r.choice(["none"] * 6 + ["dtype", "special", "shape", "layout"])
    L_q = int(r.integers(1, 6))
    case = dict(
        batch=[(), (1,), (2,), (2, 1)][r.integers(4)], L_q=L_q,
        L_k=L_q if self_attention else int(r.integers(1, 6)),
        d=int(r.integers(1, 5)), d_v=int(r.integers(1, 4)),
        dtype=["float64", "float32"][r.integers(2)], mag=float(r.choice(MAGNITUDES)),
        special=None, layout="plain", kind=["numpy", "numpy", "torch"][r.integers(3)],
        seed=seed,
    )
    if bad == "dtype":
        case["dtype"] = ["float16", "int64", "complex128", "mixed"][r.integers(4)]
    elif bad == "special":
        case["special"] = ["nan", "inf", "-inf"][r.integers(3)]
    elif bad == "shape":
        key = ["L_q", "L_k", "d", "d_v"][r.integers(4)]
        case[key] = 0
        if self_attention and key in ("L_q", "L_k"):
            case["L_q"] = case["L_k"] = 0
    elif bad == "layout":
        case["layout"] = ["readonly", "strided"][r.integers(2)]
    return case


def _make(case: dict[str, Any]) -> tuple[Any, Any, Any]:
    rng = np.random.default_rng(case["seed"])
    b, d, dv = case["batch"], case["d"], case["d_v"]
    q = rng.standard_normal((*b, case["L_q"], d)) * case["mag"]
    k = rng.standard_normal((*b, case["L_k"], d)) * case["mag"]
    v = rng.standard_normal((*b, case["L_k"], dv))
    if case["special"] and q.size:
        q.reshape(-1)[rng.integers(q.size)] = float(case["special"])
    arrays = []
    for i, a in enumerate((q, k, v)):
        dt = case["dtype"]
        if dt == "mixed":
            dt = "float32" if i == 1 else "float64"
        with np.errstate(over="ignore", invalid="ignore"):
            a = a.astype(dt) if dt != "int64" else np.round(np.nan_to_num(a)).astype(dt)
        if case["layout"] == "strided":
            a = np.repeat(a, 2, axis=-1)[..., ::2]  # a non-contiguous view
        elif case["layout"] == "readonly":
            a = a.copy()
            a.setflags(write=False)
        if case["kind"] == "torch":
            a = torch.from_numpy(np.array(a))
            if a.is_floating_point() and a.dtype in (torch.float32, torch.float64):
                a.requires_grad_(True)
        arrays.append(a)
    return tuple(arrays)


def _snapshot(arrays: tuple[Any, ...]) -> list[np.ndarray]:
    return [np.array(a.detach().numpy() if isinstance(a, torch.Tensor) else a, copy=True)
            for a in arrays]


def _assert_named_boundary_error(err: BaseException) -> None:
    """Raised by structattn itself (not deep inside numpy/scipy/numba), with a message."""
    assert isinstance(err, NAMED), f"{type(err).__name__}: {err}"
    frames = traceback.extract_tb(err.__traceback__)
    assert frames and frames[-1].filename.startswith(PACKAGE_DIR), (
        f"error raised outside structattn ({frames[-1].filename}:{frames[-1].lineno}): "
        f"{type(err).__name__}: {err}"
    )
    assert str(err), "an error without a message"


def _np(x: Any) -> np.ndarray:
    return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _check_attention_result(out: Any, q: Any, v: Any, entry: Entry, warned: bool,
                            host_checks: bool) -> None:
    assert type(out) is type(q)
    assert out.dtype == q.dtype
    assert tuple(out.shape) == (*q.shape[:-1], v.shape[-1])
    o, vv = _np(out).astype(np.float64), _np(v).astype(np.float64)
    assert np.all(np.isfinite(o)), "finite inputs gave a non-finite result"
    if not entry.convex or vv.shape[-2] == 0:
        return
    lo = vv.min(axis=-2, keepdims=True)
    hi = vv.max(axis=-2, keepdims=True)
    tol = (1e-4 if q.dtype in (np.float32, torch.float32) else 1e-8) * (1 + abs(vv).max())
    inside = np.all((o >= lo - tol) & (o <= hi + tol), axis=-1)
    zero = np.all(o == 0, axis=-1)
    if entry.recomputed and host_checks:
        assert not warned, "an underflowed row was not recomputed"
        bad = ~inside  # underflowed rows are recomputed, never zeroed
    else:
        bad = ~(inside | (zero & warned))
    if isinstance(q, torch.Tensor) and not host_checks:
        bad &= ~zero  # torch reports zero rows only inside structattn.debug()
    assert not bad.any(), f"{int(bad.sum())} row(s) outside the convex hull of v"


def _run_attention(entry: Entry, case: dict[str, Any]) -> None:
    q, k, v = _make(case)
    before = _snapshot((q, k, v))
    # torch checks NaN/Inf only inside structattn.debug() (no host sync by default)
    # (nor overflow of the float range: inputs beyond ~sqrt(max) run inside debug() too)
    out_of_range = case["mag"] >= (1e15 if case["dtype"] in ("float32", "mixed") else 1e150)
    checks = (sa.debug() if (case["special"] or out_of_range) and case["kind"] == "torch"
              else nullcontext())
    with warnings.catch_warnings(record=True) as caught, checks:
        warnings.simplefilter("always")
        try:
            out = entry.call(q, k, v)
        except NAMED as err:
            _assert_named_boundary_error(err)
            out = None
    for a, b in zip(_snapshot((q, k, v)), before, strict=True):
        np.testing.assert_array_equal(a, b)  # inputs never mutated
    if out is None:
        return
    warned = any(issubclass(w.category, sa.NormalizerWarning) for w in caught)
    host_checks = not isinstance(q, torch.Tensor) or not isinstance(checks, nullcontext)
    _check_attention_result(out, q, v, entry, warned, host_checks)
    if isinstance(out, torch.Tensor) and out.requires_grad:
        g = torch.autograd.grad(out.square().sum(), [t for t in (q, k, v) if t.requires_grad],
                                allow_unused=True)
        for t in g:
            assert t is None or torch.isfinite(t).all(), "finite forward, non-finite gradient"


@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_attention_entry_points_fuzz(name):
    entry = ATTENTION[name]

    @FUZZ
    @given(attention_inputs(entry.self_attention))
    def run(case):
        _run_attention(entry, case)

    run()


@FUZZ
@given(attention_inputs(False), st.sampled_from([None, "prf", "elu"]))
def test_attention_matrix_fuzz(case, fmap):
    q, k, _ = _make(case)
    before = _snapshot((q, k))
    phi = {None: None, "prf": _prf(q.shape[-1]) if q.ndim else None,
           "elu": sa.EluFeatures()}[fmap]
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        try:
            P = sa.attention_matrix(q, k, feature_map=phi)
        except NAMED as err:
            _assert_named_boundary_error(err)
            return
    for a, b in zip(_snapshot((q, k)), before, strict=True):
        np.testing.assert_array_equal(a, b)
    p = _np(P).astype(np.float64)
    assert tuple(P.shape) == (*q.shape[:-1], k.shape[-2])
    assert np.all(np.isfinite(p)) and np.all(p >= 0)
    s = p.sum(axis=-1)
    tol = 1e-4 if q.dtype in (np.float32, torch.float32) else 1e-10
    assert np.all((abs(s - 1) < tol) | (s == 0))


# ------------------------------------------------------------------ simplex maps
@FUZZ
@given(st.integers(1, 6), st.sampled_from(["float32", "float64", "float16", "int64"]),
       st.sampled_from((1e-300, 1e-30, 1.0, 1e3, 1e30, 1e200, 1e300)),
       st.sampled_from(sorted(SIMPLEX)), st.sampled_from(["numpy", "torch"]),
       st.integers(0, 2**16))
def test_simplex_maps_fuzz(n, dtype, mag, name, kind, seed):
    x = np.random.default_rng(seed).standard_normal((2, n)) * mag
    with np.errstate(over="ignore"):
        x = x.astype(dtype) if dtype != "int64" else np.round(np.clip(x, -1e9, 1e9)).astype(dtype)
    if kind == "torch":
        x = torch.from_numpy(x)
        if x.is_floating_point():
            x.requires_grad_(True)
    if not np.all(np.isfinite(_np(x).astype(np.float64))):
        with pytest.raises(ValueError, match="NaN or Inf"):
            SIMPLEX[name](x)
        return
    before = _snapshot((x,))
    try:
        p = SIMPLEX[name](x)
    except NAMED as err:
        _assert_named_boundary_error(err)
        return
    np.testing.assert_array_equal(_snapshot((x,))[0], before[0])
    pp = _np(p).astype(np.float64)
    assert np.all(np.isfinite(pp)) and np.all(pp >= 0)
    np.testing.assert_allclose(pp.sum(-1), 1.0, atol=1e-2 if dtype == "float16" else 1e-5)
    if isinstance(p, torch.Tensor) and p.requires_grad:
        (g,) = torch.autograd.grad((p * torch.arange(n, dtype=p.dtype)).sum(), [x])
        assert torch.isfinite(g).all()


# ------------------------------------------------------------------ masks
@FUZZ
@given(st.integers(0, 5), st.sampled_from(["float64", "float32", "int64", "bool", "complex"]),
       st.sampled_from([None, "nan", "neg"]), st.integers(0, 2**16))
def test_masks_fuzz(L, dtype, special, seed):
    rng = np.random.default_rng(seed)
    raw = rng.random((L, L)) + 0.1
    if special == "nan" and raw.size:
        raw[0, 0] = np.nan
    if special == "neg" and raw.size:
        raw[0, 0] = -1.0
    arr = {"bool": raw > 0.5, "int64": (np.nan_to_num(raw) * 3).astype(np.int64),
           "complex": raw.astype(np.complex128)}.get(dtype, raw.astype(dtype)
                                                      if dtype in ("float64", "float32")
                                                      else raw)
    builders = {
        "Dense": lambda: masks.Dense(arr),
        "Toeplitz": lambda: masks.Toeplitz(np.concatenate([arr[0], arr[0][1:]])
                                           if L else np.zeros(0)),
        "LowRank": lambda: masks.LowRank(arr, arr),
        "Causal": lambda: masks.Causal(L),
        "Full": lambda: masks.Full(L),
        "ExponentialDecay": lambda: masks.ExponentialDecay(L, float(raw.flat[0]) if raw.size
                                                           else 0.5),
    }
    for name, build in builders.items():
        before = np.array(arr, copy=True)
        try:
            m = build()
        except NAMED as err:
            _assert_named_boundary_error(err)
            continue
        np.testing.assert_array_equal(arr, before)
        dense = m.to_dense()
        assert dense.shape == (L, L) and np.all(np.isfinite(dense)), name
        X = rng.standard_normal((L, 2))
        tol = 1e-5 * (1 + abs(dense).max(initial=0) * L)
        np.testing.assert_allclose(m.matmat(X), dense @ X, atol=tol, err_msg=name)


# ------------------------------------------------------------------ other solvers
@FUZZ
@given(st.sampled_from([(4, 4), (8, 8)]), st.sampled_from([1.0, 30.0, 1e3]),
       st.sampled_from(["closed_form", "newton", "dual_gd"]), st.integers(0, 2**16))
def test_consistent_attention_fuzz(shape, mag, method, seed):
    rng = np.random.default_rng(seed)
    th = [rng.standard_normal(shape) * mag, rng.standard_normal((shape[0] // 2,) * 2) * mag]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", solvers.ConvergenceWarning)
        res = solvers.consistent_attention(th, [2], method=method, max_iter=200)
    for p in res.maps:
        assert np.all(np.isfinite(p)) and np.all(p >= 0)
        np.testing.assert_allclose(p.sum(axis=(-2, -1)), 1.0, atol=1e-8)


@FUZZ
@given(st.integers(1, 5), st.integers(1, 4), st.sampled_from([0.0, 0.1, 10.0, -1.0, np.nan]),
       st.sampled_from([1.0, 1e-200, 1e150]), st.integers(0, 2**16))
def test_lasso_fuzz(n, k, lam, mag, seed):
    rng = np.random.default_rng(seed)
    D, X = rng.standard_normal((n, k)), rng.standard_normal((n, 2)) * mag
    try:
        res = solvers.lasso(D, X, lam, max_iter=50, warn=False, backend="numpy")
    except NAMED as err:
        _assert_named_boundary_error(err)
        return
    assert np.all(np.isfinite(res.Z))


@FUZZ
@given(st.sampled_from([np.float64, np.float32]), st.sampled_from([0.0, 0.5, -1.0, np.nan]),
       st.integers(0, 2**16))
def test_soft_threshold_fuzz(dtype, lam, seed):
    x = np.random.default_rng(seed).standard_normal(5).astype(dtype)
    try:
        y = solvers.soft_threshold(x, lam)
    except NAMED as err:
        _assert_named_boundary_error(err)
        return
    assert np.all(np.abs(_np(y)) <= np.abs(x) + 1e-7)


# ------------------------------------------------------------------ generic garbage
def _public_callables() -> list[tuple[str, Callable]]:
    out = []
    for qual, mod in _public_names().items():
        name = qual.rsplit(".", 1)[1]
        obj = getattr(importlib.import_module(mod), name)
        if name.startswith("_") or not callable(obj) or name in COVERED_ELSEWHERE:
            continue
        if isinstance(obj, type) and issubclass(obj, BaseException):
            continue
        if name in {"FeatureMap", "Mask", "Kernel"}:  # abstract bases
            continue
        if _required_positional(obj) != 1:
            continue  # multi-argument entry points: fuzzed by the specific tests above
        out.append((qual, obj))
    return out


def _required_positional(fn: Callable) -> int:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return -1
    return sum(p.default is inspect.Parameter.empty
               and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
               for p in sig.parameters.values())


@pytest.mark.parametrize(("qual", "fn"), _public_callables(),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_public_callables_refuse_garbage(qual, fn):
    """A garbage first argument is a named error at the boundary, never a deep one."""
    for bad in GARBAGE_ARGS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn(bad)
        except NAMED as err:
            _assert_named_boundary_error(err)
        except NotImplementedError:
            pass


def test_layers_refuse_garbage_input():
    for layer in (layers.ContextPool(4), layers.KernelAttention(4, 2, sa.EluFeatures())):
        for bad in (np.ones((2, 3, 4)), torch.ones(2, 3, 4, dtype=torch.int64),
                    torch.ones(2, 3, 5), torch.full((2, 3, 4), float("nan"))):
            with sa.debug():
                try:
                    layer(bad)
                except NAMED as err:
                    _assert_named_boundary_error(err)
                else:  # pragma: no cover - every case above is invalid
                    raise AssertionError(f"{type(layer).__name__} accepted {bad!r}")


def test_eigen_attention_fuzz_small():
    rng = np.random.default_rng(0)
    for mag in (1e-300, 1.0, 3.0, 1e3):
        q, k, v = rng.standard_normal((3, 1, 6, 2)) * [[[mag]], [[mag]], [[1.0]]]
        try:
            with warnings.catch_warnings(record=True):  # documented normalizer warnings
                warnings.simplefilter("always")
                out = eigen.EigenAttention(2, clip_rank=True)(q, k, v)
        except NAMED as err:
            _assert_named_boundary_error(err)
            continue
        assert np.all(np.isfinite(out))
