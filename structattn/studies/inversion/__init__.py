"""Plug-In Inversion: class inversion of any differentiable classifier by augmentations.

Ghiasi, Kazemi, Reich, Zhu, Goldblum, Goldstein, "Plug-In Inversion: Model-Agnostic
Inversion for Vision with Data Augmentations", ICML 2022.  An image is optimised for
plain cross-entropy of a target class under a fixed augmentation stack — jitter
(:func:`jitter`), an ensemble of colour-shifted copies (:func:`color_shift`,
:func:`sample_color_shift`) and a progressive Centering + Zoom schedule
(:func:`grow_canvas`, :func:`resize_bilinear`, :func:`growth_schedule`) — with no
hand-tuned regulariser.  :func:`invert_class` is the driver; the defaults are the
schedule of the authors' code (``docs/inversion.rst`` and the spec
``plug_in_inversion.md``).  In structattn it is a study tool: invert a TinyViT with exact
attention and with an approximate attention swapped in, and compare
(task ``inversion-digits``).  :func:`augment_batch` draws the same augmentations per
image, to train a classifier on the views the inversion shows it.

Torch only (the augmentations also accept numpy arrays).
"""

from ._augment import (
    augment_batch,
    centered_crop,
    color_shift,
    grow_canvas,
    jitter,
    resize_bilinear,
    sample_color_shift,
)
from ._driver import InversionStep, growth_schedule, invert_class

__all__ = [
    "InversionStep",
    "augment_batch",
    "centered_crop",
    "color_shift",
    "grow_canvas",
    "growth_schedule",
    "invert_class",
    "jitter",
    "resize_bilinear",
    "sample_color_shift",
]
