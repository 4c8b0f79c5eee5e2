"""Real images for the task-level studies: scikit-learn's bundled digits.

scikit-learn ships the UCI optical-recognition digits inside its wheel (1,797 grey-scale
8×8 images of the digits 0–9, 16 intensity levels), so the task studies train on real
images without any download.  :func:`load_digits_split` returns a deterministic,
stratified train/test split as numpy arrays or torch tensors.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["DIGITS_CLASSES", "DIGITS_SIZE", "DigitsSplit", "load_digits_split"]

#: Number of classes and the image side of the bundled digits.
DIGITS_CLASSES = 10
DIGITS_SIZE = 8


@dataclasses.dataclass(frozen=True)
class DigitsSplit:
    """A train/test split of the digits.

    Attributes
    ----------
    x_train, x_test : array, shape (n, 1, 8, 8)
        Images scaled to [0, 1] (the raw 0–16 intensities divided by 16).
    y_train, y_test : array, shape (n,)
        Integer labels 0–9.
    seed : int
        The seed of the split.
    """

    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any
    seed: int

    def __repr__(self) -> str:
        return (f"DigitsSplit(train={len(self.y_train)}, test={len(self.y_test)}, "
                f"seed={self.seed})")


def load_digits_split(
    seed: int = 0,
    *,
    test_fraction: float = 0.25,
    as_torch: bool = True,
    dtype: Any = None,
) -> DigitsSplit:
    """The bundled digits, split into stratified train and test sets.

    Parameters
    ----------
    seed : int
        Seed of the split (a permutation inside each class); the same seed gives the
        same split on every machine.
    test_fraction : float
        Fraction of each class held out for testing, in (0, 1).
    as_torch : bool
        Return torch tensors (float images, int64 labels) instead of numpy arrays.
    dtype : numpy or torch dtype, optional
        Image dtype (default float32).

    Returns
    -------
    DigitsSplit
        Images shaped ``(n, 1, 8, 8)`` in [0, 1]; with the default fraction, 1,347
        training and 450 test images.

    Raises
    ------
    ImportError
        If scikit-learn is not installed (``pip install 'structattn[studies]'``).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not (isinstance(test_fraction, (int, float)) and 0.0 < float(test_fraction) < 1.0):
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - scikit-learn is in the studies extra
        raise ImportError(
            "the digits studies need scikit-learn: pip install 'structattn[studies]'"
        ) from exc
    data = load_digits()
    images = np.asarray(data.images, dtype=np.float64) / 16.0
    labels = np.asarray(data.target, dtype=np.int64)
    rng = np.random.default_rng(int(seed))
    train_idx, test_idx = [], []
    for c in range(DIGITS_CLASSES):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(idx.size)]
        n_test = round(float(test_fraction) * idx.size)
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    train = np.sort(np.concatenate(train_idx))
    test = np.sort(np.concatenate(test_idx))
    x = images[:, None, :, :]
    if as_torch:
        import torch

        tdtype = torch.float32 if dtype is None else dtype
        return DigitsSplit(
            torch.as_tensor(x[train], dtype=tdtype), torch.as_tensor(labels[train]),
            torch.as_tensor(x[test], dtype=tdtype), torch.as_tensor(labels[test]), int(seed),
        )
    ndtype = np.float32 if dtype is None else dtype
    return DigitsSplit(x[train].astype(ndtype), labels[train], x[test].astype(ndtype),
                       labels[test], int(seed))
