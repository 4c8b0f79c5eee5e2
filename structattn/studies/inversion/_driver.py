"""The Plug-In Inversion driver: progressive growth, augmented ensemble, plain CE."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from ..._validate import check_bool, check_int, check_real
from ._augment import _uniform_shift, grow_canvas, resize_bilinear
from ._augment import color_shift as _color_shift
from ._augment import jitter as _jitter
from ._augment import sample_color_shift as _sample_color_shift

__all__ = ["InversionStep", "growth_schedule", "invert_class"]

#: Border left to fresh noise at each growth, indexed by ``way`` (``step = N // 8``).
_WAYS = 4


def growth_schedule(native_size: int, *, way: int = 1) -> tuple[list[int], int]:
    """The authors' Centering + Zoom schedule for a network of input side ``native_size``.

    ``step = native_size // 8``; the canvas sides are ``2·step, 3·step, …`` up to
    ``native_size`` (7 stages for ``native_size = 224``: 56, 84, …, 224; for a side
    that is not a multiple of 8 the last stage is the largest multiple of ``step``);
    the border of fresh noise at each growth is ``pad = (0, step // 2, step, 0)[way]``
    (the released runs use ``way = 1``).

    Returns
    -------
    sizes : list of int
    pad : int
    """
    native_size = check_int(native_size, "native_size", minimum=8)
    way = check_int(way, "way", minimum=0, maximum=_WAYS - 1)
    step = native_size // 8
    return list(range(2 * step, native_size + 1, step)), (0, step // 2, step, 0)[way]


class InversionStep(NamedTuple):
    """What :func:`invert_class` passes to its ``callback`` after every update.

    Attributes
    ----------
    stage : int
        Index of the growth stage.
    size : int
        Canvas side of the stage.
    step : int
        Update index inside the stage (0-based).
    lr : float
        Learning rate used for this update.
    loss : torch.Tensor, shape (T,)
        Per-target ensemble cross-entropy *before* the update.
    image : torch.Tensor, shape (T, C, size, size)
        The canvas after the update and the clip: a detached view of the live canvas
        (later updates change it; ``.clone()`` it to keep it, never modify it).
    """

    stage: int
    size: int
    step: int
    lr: float
    loss: torch.Tensor
    image: torch.Tensor


def _adam_update(x: torch.Tensor, grad: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor,
                 t: int, lr: float, betas: tuple[float, float], eps: float = 1e-8) -> None:
    """One in-place Adam step, the arithmetic of ``torch.optim.Adam`` (no weight decay)."""
    m1.lerp_(grad, 1.0 - betas[0])
    m2.mul_(betas[1]).addcmul_(grad, grad, value=1.0 - betas[1])
    bias1, bias2 = 1.0 - betas[0] ** t, 1.0 - betas[1] ** t
    denom = (m2.sqrt() / math.sqrt(bias2)).add_(eps)
    x.addcdiv_(m1, denom, value=-lr / bias1)


def _targets(target: Any) -> tuple[list[int], bool]:
    if isinstance(target, torch.Tensor):
        target = target.tolist()
    if isinstance(target, Sequence) and not isinstance(target, str):
        if len(target) == 0:
            raise ValueError("target must be a class index or a non-empty sequence of them")
        return [check_int(t, "target", minimum=0) for t in target], True
    return [check_int(target, "target", minimum=0)], False


def invert_class(
    model: Callable[[torch.Tensor], torch.Tensor],
    target: int | Sequence[int],
    *,
    native_size: int,
    channels: int = 3,
    ensemble: int = 8,
    stages: Sequence[int] | None = None,
    steps: int = 400,
    lr: float = 0.01,
    betas: tuple[float, float] = (0.5, 0.99),
    jitter: int | None = None,
    way: int = 1,
    zoom: bool = True,
    color_shift: tuple[float, float] | None = (1.0, 1.0),
    clip: tuple[float, float] = (0.0, 1.0),
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
    callback: Callable[[InversionStep], None] | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Plug-In Inversion of ``model`` for class ``target`` (Ghiasi et al., ICML 2022).

    Minimises the plain cross-entropy of an augmented ensemble (no other term)::

        for size in stages:                                  # Centering + Zoom
            x = grow_canvas(x, size, pad)                    # fresh Adam, cosine lr
            for i in range(steps):
                v = jitter(x, (dy, dx))                      # one draw per step
                v = color_shift(repeat(v, ensemble), mu, sigma)   # per copy, channel
                v = resize_bilinear(v, native_size)          # zoom (if zoom)
                loss = mean_b CE(model(normalize(v)), target)
                x = clip(Adam(x, ∇loss))

    Parameters
    ----------
    model : callable
        Any differentiable classifier ``(n, channels, s, s) -> (n, classes)`` logits
        (``s = native_size`` with ``zoom=True``, else the canvas side).  Its weights
        are not changed (only ``∂loss/∂x`` is computed); an ``nn.Module`` is put in
        eval mode for the run and restored afterwards.
    target : int or sequence of int
        Class index, or T of them inverted *together* in one batch: the objectives are
        summed, so each canvas receives exactly its own gradient and Adam (elementwise)
        updates each independently; the T canvases share the jitter draw of each step.
    native_size : int
        The network's input side ``N``.
    channels : int, default 3
    ensemble : int, default 8
        ``B``, augmented copies per step (the authors' "batch size").
    stages : sequence of int, optional
        Canvas sides; default :func:`growth_schedule` (``2·step, …, N``, ``step = N//8``).
    steps : int, default 400
        Adam updates per stage, lr cosine-annealed from ``lr`` to 0 (the authors' loop
        runs a 401st iteration at lr 0, which changes nothing and is skipped).
    lr : float, default 0.01
    betas : (float, float), default (0.5, 0.99)
        Adam betas (eps 1e-8).
    jitter : int, optional
        Roll limit ``J``: ``(dy, dx) ~ U{-J..J}²`` each step.  Default ``N // 7`` (the
        authors' 32 pixels at ``N = 224``); 0 turns jitter off.
    way : int, default 1
        Growth border ``pad = (0, step//2, step, 0)[way]`` (see :func:`growth_schedule`).
    zoom : bool, default True
        Upsample each copy to ``native_size`` before the model (the authors'
        transformer wrapper); False feeds the canvas at its own size.
    color_shift : (float, float) or None, default (1.0, 1.0)
        Half-widths ``(a, b)`` of ``mu ~ U(-a, a)`` and ``log sigma ~ U(-b, b)``;
        None turns the colour shift off.
    clip : (float, float), default (0, 1)
        Box the canvas is clipped to after every update.
    normalize : callable, optional
        Applied to the augmented batch just before ``model`` (e.g. ImageNet mean/std).
    seed : int, default 0
        Seeds the one ``torch.Generator`` behind every random draw (initial canvas,
        growth noise, jitter, colour shifts): runs are bit-reproducible on CPU.
    callback : callable, optional
        Called with an :class:`InversionStep` after every update.
    dtype : torch dtype, optional
        Canvas dtype; default the dtype of the model's first parameter (float32 if none).
    progress : bool, default False
        Show a tqdm bar over all updates.

    Returns
    -------
    torch.Tensor, shape (channels, S, S) for an int target, (T, channels, S, S) for a
    sequence, with ``S = stages[-1]``; values in ``clip``.

    Notes
    -----
    Cost: ``len(stages) · steps`` forward and backward passes of ``T · ensemble``
    images.  Random draws per step, in order: 2 uniforms for the jitter (drawn even
    when ``jitter=0``, so runs with and without jitter see the same colour shifts), then
    ``2·T·B·C`` for the colour shifts; per stage ``T·C·size²`` for the new canvas.
    """
    targets, many = _targets(target)
    native_size = check_int(native_size, "native_size")
    channels = check_int(channels, "channels")
    ensemble = check_int(ensemble, "ensemble")
    steps = check_int(steps, "steps")
    lr = check_real(lr, "lr", minimum=0.0, strict_minimum=True)
    if not (isinstance(betas, Sequence) and len(betas) == 2):
        raise ValueError(f"betas must be a pair of floats in [0, 1), got {betas!r}")
    betas = tuple(check_real(b, "betas", minimum=0.0, maximum=1.0) for b in betas)
    way = check_int(way, "way", minimum=0, maximum=_WAYS - 1)
    zoom = check_bool(zoom, "zoom")
    seed = check_int(seed, "seed", minimum=0)
    if stages is None:
        if native_size < 8:
            raise ValueError(f"the default stages need native_size >= 8 (step = "
                             f"native_size // 8), got {native_size}; pass stages")
        sizes, pad = growth_schedule(native_size, way=way)
    else:
        if isinstance(stages, (str, int)) or len(stages) == 0:
            raise ValueError(f"stages must be a non-empty sequence of canvas sides, "
                             f"got {stages!r}")
        sizes = [check_int(s, "stages", maximum=native_size if zoom else None)
                 for s in stages]
        step = native_size // 8
        pad = (0, step // 2, step, 0)[way]
    if min(sizes) <= pad:
        raise ValueError(f"every stage must exceed the growth border pad = {pad}, got "
                         f"stages {sizes}")
    limit = native_size // 7 if jitter is None else check_int(jitter, "jitter", minimum=0)
    if color_shift is not None:
        if not (isinstance(color_shift, Sequence) and len(color_shift) == 2):
            raise ValueError(f"color_shift must be None or a pair (mean_width, "
                             f"log_std_width), got {color_shift!r}")
        widths = tuple(check_real(w, "color_shift", minimum=0.0) for w in color_shift)
    if not (isinstance(clip, Sequence) and len(clip) == 2 and clip[0] < clip[1]):
        raise ValueError(f"clip must be a pair (low, high) with low < high, got {clip!r}")
    lo, hi = float(clip[0]), float(clip[1])

    params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
    if dtype is None:
        dtype = params[0].dtype if params else torch.float32
    device = params[0].device if params else torch.device("cpu")
    gen = torch.Generator().manual_seed(seed)  # CPU generator: draws do not depend on device
    T, B, C = len(targets), ensemble, channels
    labels = torch.tensor(targets, device=device).repeat_interleave(B)

    was_training = isinstance(model, torch.nn.Module) and model.training
    if isinstance(model, torch.nn.Module):
        model.eval()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(sizes) * steps, desc="inversion", leave=False)
    try:
        x = torch.rand((T, C, native_size, native_size), generator=gen, dtype=dtype)
        x = x.to(device)
        for stage, size in enumerate(sizes):
            x = grow_canvas(x.detach().cpu(), size, pad=pad, rng=gen).to(device)
            x.requires_grad_(True)
            m1 = torch.zeros_like(x)  # fresh Adam state per stage
            m2 = torch.zeros_like(x)
            for i in range(steps):
                rate = 0.5 * lr * (1.0 + math.cos(math.pi * i / steps))
                u = torch.rand(2, generator=gen, dtype=torch.float64).tolist()
                view = _jitter(x, shifts=(_uniform_shift(u[0], limit),
                                          _uniform_shift(u[1], limit)))
                view = view[:, None].expand(T, B, C, size, size).reshape(T * B, C, size, size)
                if color_shift is not None:
                    mu, sigma = _sample_color_shift(T * B, C, mean_width=widths[0],
                                                    log_std_width=widths[1], rng=gen,
                                                    dtype=dtype, device=device)
                    view = _color_shift(view, mu=mu, sigma=sigma)
                if zoom and size != native_size:
                    view = resize_bilinear(view, native_size)
                if normalize is not None:
                    view = normalize(view)
                logits = model(view)
                if (not isinstance(logits, torch.Tensor) or logits.ndim != 2
                        or logits.shape[0] != T * B or logits.shape[1] <= max(targets)):
                    got = (tuple(logits.shape) if isinstance(logits, torch.Tensor)
                           else type(logits).__name__)
                    raise ValueError(f"model must return logits of shape (n, classes) with "
                                     f"n = {T * B} and classes > {max(targets)}, got {got}")
                per_target = torch.nn.functional.cross_entropy(
                    logits, labels, reduction="none").reshape(T, B).mean(1)
                (grad,) = torch.autograd.grad(per_target.sum(), x)
                with torch.no_grad():
                    _adam_update(x, grad, m1, m2, i + 1, rate, betas)
                    x.clamp_(lo, hi)
                if callback is not None:
                    callback(InversionStep(stage, size, i, rate, per_target.detach(),
                                           x.detach()))
                if bar is not None:
                    bar.update()
    finally:
        if bar is not None:
            bar.close()
        if was_training:
            model.train()
    out = x.detach()
    return out if many else out[0]

