"""Module state of the torch layers: feature-map projections and mask coefficients.

A structattn feature map or mask is an immutable numpy description.  A layer that holds
one registers its arrays as **buffers**, so that

* ``state_dict()`` contains them (``projection``, ``mask_<field>``) and
  ``load_state_dict`` restores them (the feature map / mask is rebuilt from the loaded
  values; this is the one place where a layer reads device memory back to the host);
* ``.to(device)``, ``.to(dtype)``, ``.cuda()``, ``.double()`` move them with the module.

In the forward pass the random projection is taken **from the buffer** (seeded into
the feature map's per-device cache: no host → device copy per step, and
:meth:`RandomFeatureMixin.redraw_projections` changes it in place).  Mask coefficients
are used through the mask's own per-device cache, filled once per device and dtype
(:meth:`structattn.masks.Mask._param_like`); the buffers are their saved/moved copy.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn

from .._array import as_generator
from ..features import FeatureMap, RandomFeatureMap
from ..masks import Mask

__all__ = ["StructuredStateMixin"]


def _mask_array_fields(mask: Mask | None) -> list[str]:
    """Top-level dataclass fields of ``mask`` that hold numpy float arrays."""
    if mask is None or not dataclasses.is_dataclass(mask):
        return []
    return [f.name for f in dataclasses.fields(mask)
            if isinstance(getattr(mask, f.name), np.ndarray)
            and getattr(mask, f.name).dtype.kind == "f"]


class StructuredStateMixin(nn.Module):
    """Registers a feature map's projection and a mask's arrays as buffers.

    Subclasses call :meth:`_init_structured_state` in ``__init__`` and use
    :meth:`_feature_map_for` in ``forward``.
    """

    _fm: FeatureMap
    _mask: Mask | None

    def _init_structured_state(self, feature_map: FeatureMap, mask: Mask | None) -> None:
        object.__setattr__(self, "_redraws", 0)
        self._set_feature_map(feature_map)
        self._set_mask(mask)
        self.register_load_state_dict_post_hook(_StateReload())

    # ----------------------------------------------------------- feature map
    def _set_feature_map(self, feature_map: FeatureMap) -> None:
        if isinstance(feature_map, RandomFeatureMap):
            # a private copy: its per-device cache holds this layer's buffer, which
            # redraws and load_state_dict change in place (the caller's map is untouched)
            feature_map = copy.copy(feature_map)
            object.__setattr__(feature_map, "_cache", {})
        object.__setattr__(self, "_fm", feature_map)
        proj = getattr(feature_map, "projection", None)
        old = self._buffers.get("projection")
        if isinstance(feature_map, RandomFeatureMap):
            t = torch.as_tensor(np.array(proj, dtype=np.float64))
            if old is not None and old.shape == t.shape:
                with torch.no_grad():  # keep the buffer object (device, dtype, compile)
                    old.copy_(t.to(dtype=old.dtype))
            else:
                device = old.device if old is not None else None
                self.register_buffer("projection", t.to(device=device))
        else:
            self.register_buffer("projection", None)

    @property
    def feature_map(self) -> FeatureMap:
        """The feature map ``φ`` (its projection is the ``projection`` buffer).

        A private copy of the map given to the constructor (assigning a map copies it
        too): redraws and loaded state never change the caller's object.
        """
        return self._fm

    @feature_map.setter
    def feature_map(self, value: FeatureMap) -> None:
        if not isinstance(value, FeatureMap):
            raise TypeError(
                f"feature_map must be a structattn FeatureMap, got {type(value).__name__}"
            )
        self._set_feature_map(value)

    def _feature_map_for(self, like: torch.Tensor) -> FeatureMap:
        """The feature map with the projection buffer in its cache for ``like``."""
        fm, proj = self._fm, self._buffers.get("projection")
        if proj is not None:
            compute = like.dtype if like.dtype in (torch.float32, torch.float64) \
                else torch.float32  # half inputs are computed in float32
            fm._cache[(str(like.device), str(compute))] = proj.to(
                device=like.device, dtype=compute)
        return fm

    def redraw_projections(self, seed: Any = None) -> None:
        """Draw fresh random projections (in place: same buffer, device and dtype).

        Parameters
        ----------
        seed : int or numpy.random.Generator, optional
            Source of the new draw.  Default: a deterministic stream of this layer,
            ``SeedSequence([base, n])`` with ``base`` the feature map's int seed (0
            otherwise) and ``n`` the number of redraws so far; never global state.

        Raises
        ------
        TypeError
            If the layer's feature map has no random projection.

        Notes
        -----
        ``O(m·d²)`` for the orthogonal draw (QR per block), one host → device copy.
        Performer redraws every few hundred steps during training.
        """
        fm = self._fm
        if not isinstance(fm, RandomFeatureMap):
            raise TypeError(
                f"redraw_projections needs a random feature map, the layer has "
                f"{type(fm).__name__}"
            )
        if seed is None:
            base = fm.seed if isinstance(fm.seed, (int, np.integer)) else 0
            object.__setattr__(self, "_redraws", self._redraws + 1)
            seed = np.random.default_rng(np.random.SeedSequence([int(base), self._redraws]))
        else:
            seed = as_generator(seed)
        self._set_feature_map(fm.redraw(seed))

    # ------------------------------------------------------------------ mask
    def _set_mask(self, mask: Mask | None) -> None:
        if mask is not None and not isinstance(mask, Mask):
            raise TypeError(f"mask must be a structattn Mask or None, got {type(mask).__name__}")
        for name in list(self._buffers):
            if name.startswith("mask_"):
                del self._buffers[name]
        object.__setattr__(self, "_mask", mask)
        for field in _mask_array_fields(mask):
            value = np.array(getattr(mask, field), dtype=np.float64)
            self.register_buffer(f"mask_{field}", torch.as_tensor(value))

    @property
    def mask(self) -> Mask | None:
        """The structured mask (its arrays are the ``mask_<field>`` buffers)."""
        return self._mask

    @mask.setter
    def mask(self, value: Mask | None) -> None:
        self._set_mask(value)

    # ----------------------------------------------------------- state dict
    def _reload_from_buffers(self) -> None:
        """Rebuild the feature map and mask from the (just loaded) buffers."""
        proj = self._buffers.get("projection")
        fm = self._fm
        if proj is not None and isinstance(fm, RandomFeatureMap):
            W = proj.detach().to("cpu", torch.float64).numpy()
            if not np.array_equal(W, fm.projection):
                object.__setattr__(self, "_fm", dataclasses.replace(
                    fm, seed=None, projection=W))
        mask = self._mask
        changes = {}
        for field in _mask_array_fields(mask):
            buf = self._buffers[f"mask_{field}"]
            value = buf.detach().to("cpu", torch.float64).numpy()
            if not np.array_equal(value, getattr(mask, field)):
                changes[field] = value
        if changes:
            object.__setattr__(self, "_mask", dataclasses.replace(mask, **changes))


class _StateReload:
    """``load_state_dict`` post-hook: rebuild the feature map / mask from the buffers."""

    def __call__(self, module: nn.Module, incompatible_keys: Any) -> None:
        module._reload_from_buffers()
