"""The Plug-In Inversion augmentations: colour shift, jitter, centred crop, zoom, growth.

Pure tensor operations on images ``(..., C, H, W)``.  ``color_shift``, ``jitter``,
``centered_crop``, ``resize_bilinear`` and ``grow_canvas`` take numpy arrays or torch
tensors (results of the same kind; torch autograd flows through them);
``sample_color_shift`` draws from a seeded torch.Generator; ``augment_batch`` (torch)
draws a jitter and a colour shift per image, to train classifiers on the same views.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..._array import describe_array, is_numpy, is_torch
from ..._validate import check_int, check_real

__all__ = [
    "augment_batch",
    "centered_crop",
    "color_shift",
    "grow_canvas",
    "jitter",
    "resize_bilinear",
    "sample_color_shift",
]


def _check_image(x: Any, name: str = "x") -> Any:
    if not (is_numpy(x) or is_torch(x)):
        raise TypeError(f"{name} must be a numpy array or a torch tensor of shape "
                        f"(..., C, H, W), got {describe_array(x)}")
    floating = x.dtype.is_floating_point if is_torch(x) else np.issubdtype(x.dtype, np.floating)
    if not floating:
        raise TypeError(f"{name} must have a floating dtype, got {describe_array(x)}")
    if x.ndim < 3:
        raise ValueError(f"{name} must have shape (..., C, H, W) (at least 3 dimensions), "
                         f"got {describe_array(x)}")
    return x


def _size_pair(size: Any, name: str) -> tuple[int, int]:
    if isinstance(size, Sequence) and not isinstance(size, str):
        if len(size) != 2:
            raise ValueError(f"{name} must be an int or a pair (height, width), got {size!r}")
        return check_int(size[0], name), check_int(size[1], name)
    s = check_int(size, name)
    return s, s


def _int_pair(value: Any, name: str) -> tuple[int, int]:
    if not (isinstance(value, Sequence) and len(value) == 2):
        raise ValueError(f"{name} must be a pair of integers (dy, dx), got {value!r}")
    return (check_int(value[0], name, minimum=None), check_int(value[1], name, minimum=None))


def color_shift(x: Any, *, mu: Any, sigma: Any) -> Any:
    """Per-channel affine colour shift ``x'_c = sigma_c · x_c + mu_c``.

    Parameters
    ----------
    x : array or tensor, shape (..., C, H, W)
    mu, sigma : array or tensor (same kind as ``x``), shape (..., C)
        Broadcast against the leading dimensions of ``x`` (e.g. ``(B, C)`` for a batch
        of B images, one shift per image and channel).

    Returns
    -------
    array or tensor, shape of the broadcast (..., C, H, W)

    Notes
    -----
    ``mu = 0, sigma = 1`` is the identity; two shifts compose to one with
    ``sigma = sigma2·sigma1, mu = sigma2·mu1 + mu2``.  Cost ``O(C·H·W)`` per image.
    """
    _check_image(x)
    for name, p in (("mu", mu), ("sigma", sigma)):
        if is_torch(x) != is_torch(p) or not (is_numpy(p) or is_torch(p)):
            raise TypeError(f"{name} must be of the same kind as x ({describe_array(x)}), "
                            f"got {describe_array(p)}")
        if p.ndim < 1 or p.shape[-1] != x.shape[-3]:
            raise ValueError(f"{name} must have shape (..., C) with C = {x.shape[-3]} "
                             f"channels of x, got {describe_array(p)}")
    return sigma[..., None, None] * x + mu[..., None, None]


def sample_color_shift(
    batch: int,
    channels: int,
    *,
    mean_width: float = 1.0,
    log_std_width: float = 1.0,
    rng: Any,
    dtype: Any = None,
    device: Any = None,
) -> tuple[Any, Any]:
    """Draw the colour shifts of one step: ``mu ~ U(-a, a)``, ``log sigma ~ U(-b, b)``.

    Parameters
    ----------
    batch, channels : int
        One shift per copy and channel.
    mean_width, log_std_width : float, default 1.0
        Half-widths ``a`` and ``b`` (the authors' ``mean=1, std=1``).
    rng : torch.Generator
        The only source of randomness (``mu`` is drawn first, then ``log sigma``, as
        ``2·batch·channels`` float64 uniforms).
    dtype : torch dtype, optional
        Output dtype (default float32).  The draws are made in float64 and rounded, so
        float32 and float64 runs see the same shifts.
    device : torch device, optional

    Returns
    -------
    mu, sigma : torch.Tensor, shape (batch, channels)
        ``mu ∈ [-a, a)``, ``log sigma ∈ [-b, b)``.
    """
    import torch

    batch = check_int(batch, "batch")
    channels = check_int(channels, "channels")
    a = check_real(mean_width, "mean_width", minimum=0.0)
    b = check_real(log_std_width, "log_std_width", minimum=0.0)
    if not isinstance(rng, torch.Generator):
        raise TypeError(f"rng must be a torch.Generator (e.g. torch.Generator()."
                        f"manual_seed(0)), got {type(rng).__name__}")
    u = torch.rand((2, batch, channels), generator=rng, dtype=torch.float64,
                   device=rng.device)
    mu = (2.0 * u[0] - 1.0) * a
    sigma = torch.exp((2.0 * u[1] - 1.0) * b)
    out_dtype = torch.float32 if dtype is None else dtype
    return mu.to(device=device, dtype=out_dtype), sigma.to(device=device, dtype=out_dtype)


def jitter(x: Any, *, shifts: Sequence[int]) -> Any:
    """Cyclic roll of the image by ``shifts = (dy, dx)`` pixels (``torch.roll`` on H, W).

    Parameters
    ----------
    x : array or tensor, shape (..., C, H, W)
    shifts : (int, int)
        Rows and columns; positive values move the content down / right.

    Returns
    -------
    array or tensor, shape (..., C, H, W)
        A permutation of the pixels: ``jitter(jitter(x, s), -s) == x`` exactly.
    """
    _check_image(x)
    dy, dx = _int_pair(shifts, "shifts")
    if is_torch(x):
        import torch

        return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    return np.roll(x, shift=(dy, dx), axis=(-2, -1))


def centered_crop(x: Any, size: int | tuple[int, int], *,
                  offset: tuple[int, int] = (0, 0)) -> Any:
    """The ``size`` crop around the centre of ``x``, moved by ``offset`` and clamped.

    The top-left corner is ``clamp(H//2 - h//2 + dy, 0, H - h)`` (and the same for the
    columns), as in the authors' ``Focus`` augmentation (there ``offset`` is drawn from
    ``U(-std, std)``; the released script uses ``std = 0``).

    Parameters
    ----------
    x : array or tensor, shape (..., C, H, W)
    size : int or (int, int)
        Crop height and width, at most ``(H, W)``.
    offset : (int, int), default (0, 0)

    Returns
    -------
    array or tensor, shape (..., C, h, w)
        A view of ``x``.
    """
    _check_image(x)
    h, w = _size_pair(size, "size")
    H, W = x.shape[-2], x.shape[-1]
    if h > H or w > W:
        raise ValueError(f"size {(h, w)} must not exceed the image size {(H, W)}")
    dy, dx = _int_pair(offset, "offset")
    top = min(max(H // 2 - h // 2 + dy, 0), H - h)
    left = min(max(W // 2 - w // 2 + dx, 0), W - w)
    return x[..., top:top + h, left:left + w]


def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` linear-interpolation weights of torch's bilinear, align_corners=False."""
    scale = n_in / n_out
    src = np.maximum(scale * (np.arange(n_out) + 0.5) - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i0 = np.minimum(i0, n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = np.clip(src - i0, 0.0, 1.0)
    R = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(R, (rows, i0), 1.0 - lam)
    np.add.at(R, (rows, i1), lam)
    return R


def resize_bilinear(x: Any, size: int | tuple[int, int]) -> Any:
    """Bilinear resize, equal to ``F.interpolate(x, size, mode="bilinear", align_corners=False)``.

    Computed as ``R_h x R_wᵀ`` with the two ``(out, in)`` interpolation matrices (each
    row has at most two non-zeros summing to one), so it runs on numpy arrays and torch
    tensors alike, with autograd.  No antialiasing when downsampling (as torch's
    default).

    Parameters
    ----------
    x : array or tensor, shape (..., C, H, W)
    size : int or (int, int)
        Output height and width.

    Returns
    -------
    array or tensor, shape (..., C, h, w)

    Notes
    -----
    Cost ``O(h·H·W + h·w·W)`` per channel (dense matrix products; the images of this
    study are at most a few dozen pixels wide).  A constant image stays constant;
    resizing to the same size is the identity.
    """
    _check_image(x)
    h, w = _size_pair(size, "size")
    H, W = x.shape[-2], x.shape[-1]
    Rh, Rw = _interp_matrix(H, h), _interp_matrix(W, w)
    if is_torch(x):
        import torch

        Rh = torch.as_tensor(Rh, dtype=x.dtype, device=x.device)
        Rw = torch.as_tensor(Rw, dtype=x.dtype, device=x.device)
        return Rh @ x @ Rw.T
    return (Rh.astype(x.dtype) @ x @ Rw.T.astype(x.dtype)).astype(x.dtype, copy=False)


def grow_canvas(prev: Any, size: int, *, pad: int, rng: Any) -> Any:
    """A new ``U[0, 1)`` canvas of side ``size`` with ``prev`` zoomed into its centre.

    ``prev`` is resized (:func:`resize_bilinear`) to ``size - pad`` and pasted at offset
    ``pad // 2`` in both directions (the authors' ``new_init``): the image grows outward
    from the centre while its content is zoomed.

    Parameters
    ----------
    prev : array or tensor, shape (..., C, h, w)
    size : int
        Side of the new canvas.
    pad : int
        ``0 <= pad < size``; the border left to fresh noise.
    rng : torch.Generator (torch ``prev``) or numpy.random.Generator (numpy ``prev``)
        Draws the ``prod(prev.shape[:-2])·size²`` uniforms of the canvas.

    Returns
    -------
    array or tensor, shape (..., C, size, size)
        Not connected to ``prev``'s autograd graph.
    """
    _check_image(prev, "prev")
    size = check_int(size, "size")
    pad = check_int(pad, "pad", minimum=0, maximum=size - 1)
    inner, off = size - pad, pad // 2
    shape = (*prev.shape[:-2], size, size)
    if is_torch(prev):
        import torch

        if not isinstance(rng, torch.Generator):
            raise TypeError(f"rng must be a torch.Generator for a torch prev, got "
                            f"{type(rng).__name__}")
        with torch.no_grad():
            canvas = torch.rand(shape, generator=rng, dtype=prev.dtype, device=rng.device)
            canvas = canvas.to(prev.device)
            canvas[..., off:off + inner, off:off + inner] = resize_bilinear(prev, inner)
        return canvas
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator for a numpy prev, got "
                        f"{type(rng).__name__}")
    canvas = rng.random(shape).astype(prev.dtype)
    canvas[..., off:off + inner, off:off + inner] = resize_bilinear(prev, inner)
    return canvas


def _uniform_shift(u: float, limit: int) -> int:
    """Map a uniform ``u ∈ [0, 1)`` to an integer in ``{-limit, …, limit}``."""
    return min(math.floor(u * (2 * limit + 1)), 2 * limit) - limit


def augment_batch(
    x: Any,
    *,
    jitter: int,
    color_shift: tuple[float, float] | None = (1.0, 1.0),
    probability: float = 1.0,
    rng: Any,
) -> Any:
    """The inversion's augmentations drawn per image, for training a classifier on them.

    Each image ``n`` of the batch, with probability ``probability`` (else left as is), is
    rolled cyclically by its own ``(dy, dx) ~ U{-J..J}²`` (:func:`jitter`) and then
    colour-shifted with its own ``mu ~ U(-a, a)``, ``log sigma ~ U(-b, b)`` per channel
    (:func:`color_shift`) — the distributions :func:`invert_class` draws from, so a
    classifier trained on them sees the inversion's views in training.

    Parameters
    ----------
    x : torch.Tensor, shape (n, C, H, W)
    jitter : int
        Roll limit ``J`` (0: no roll).
    color_shift : (float, float) or None, default (1.0, 1.0)
        Half-widths ``(a, b)`` as in :func:`sample_color_shift`; None: no colour shift.
    probability : float, default 1.0
        Chance that an image is augmented (one Bernoulli draw per image).
    rng : torch.Generator
        The only source of randomness: ``2n`` float64 uniforms for the rolls, then
        ``2·n·C`` for the colour shifts, then ``n`` for the Bernoulli draws.

    Returns
    -------
    torch.Tensor, shape (n, C, H, W)
        Augmented copy; ``x`` is not modified.  Image ``n`` equals
        ``color_shift(jitter(x[n], shifts=(dy_n, dx_n)), mu_n, sigma_n)`` exactly when
        augmented and ``x[n]`` otherwise.

    Notes
    -----
    Cost ``O(n·C·H·W)`` (one gather and one affine map).
    """
    import torch

    if not is_torch(x):
        raise TypeError(f"x must be a torch tensor of shape (n, C, H, W), got "
                        f"{describe_array(x)}")
    _check_image(x)
    if x.ndim != 4:
        raise ValueError(f"x must have shape (n, C, H, W), got {describe_array(x)}")
    limit = check_int(jitter, "jitter", minimum=0)
    p = check_real(probability, "probability", minimum=0.0, maximum=1.0)
    if not isinstance(rng, torch.Generator):
        raise TypeError(f"rng must be a torch.Generator (e.g. torch.Generator()."
                        f"manual_seed(0)), got {type(rng).__name__}")
    n, C, H, W = x.shape
    u = torch.rand((2, n), generator=rng, dtype=torch.float64, device=rng.device)
    shifts = (torch.clamp(torch.floor(u * (2 * limit + 1)), max=2 * limit) - limit).long()
    shifts = shifts.to(x.device)
    rows = (torch.arange(H, device=x.device)[None, :] - shifts[0][:, None]) % H  # (n, H)
    cols = (torch.arange(W, device=x.device)[None, :] - shifts[1][:, None]) % W  # (n, W)
    out = x.gather(-2, rows[:, None, :, None].expand(n, C, H, W))
    out = out.gather(-1, cols[:, None, None, :].expand(n, C, H, W))
    if color_shift is not None:
        if not (isinstance(color_shift, Sequence) and len(color_shift) == 2):
            raise ValueError(f"color_shift must be None or a pair (mean_width, "
                             f"log_std_width), got {color_shift!r}")
        mu, sigma = sample_color_shift(n, C, mean_width=color_shift[0],
                                       log_std_width=color_shift[1], rng=rng,
                                       dtype=x.dtype, device=x.device)
        out = sigma[..., None, None] * out + mu[..., None, None]
    keep = torch.rand(n, generator=rng, dtype=torch.float64, device=rng.device) < p
    return torch.where(keep.to(x.device)[:, None, None, None], out, x)
