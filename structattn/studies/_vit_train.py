"""Small training helpers shared by the TinyViT task studies (ssta-digits, vit-digits)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

__all__ = ["accuracy", "one_thread", "train", "trange"]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch and the BLAS libraries on one thread.

    Tiny models and ``L <= 128`` matrices are much faster on one thread than on two when
    the machine is shared (spinning BLAS threads), and CPU times are then comparable.
    """
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        limits: Any = contextlib.nullcontext()
    else:
        limits = threadpool_limits(limits=1)
    try:
        with limits:
            yield
    finally:
        torch.set_num_threads(prev)


def trange(n: int, progress: bool, desc: str) -> Any:
    """``range(n)``, with a tqdm bar when ``progress``."""
    if progress:
        from tqdm.auto import trange as _trange

        return _trange(n, desc=desc, leave=False)
    return range(n)


def train(
    model: torch.nn.Module,
    x: torch.Tensor,
    loss_fn: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    seed: int,
    lr: float = 1e-2,
    batch_size: int = 32,
    weight_decay: float = 0.01,
    progress: bool = False,
    desc: str = "train",
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """AdamW with a cosine schedule; ``loss_fn(model, x_batch, batch_index)`` -> loss.

    ``augment(x_batch, generator) -> x_batch``, optional, is applied to every batch
    before ``loss_fn`` (e.g. :func:`structattn.studies.inversion.augment_batch`); its
    generator is its own, seeded with ``seed + 1_000_003`` (a stream apart from the batch
    order's), so the batch order and the model's
    initialisation are those of a run without it (``augment=None``, the default,
    changes nothing).

    Returns ``{"seconds": wall time of the loop, "cpu_seconds": its process CPU time
    (the load-independent cost on one thread), "losses": per-epoch mean loss}``.
    Deterministic given ``seed`` (batch order and torch's RNG).
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator().manual_seed(seed + 1_000_003) if augment is not None else None
    n = x.shape[0]
    steps = epochs * ((n + batch_size - 1) // batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                pct_start=0.1, anneal_strategy="cos")
    losses = []
    model.train()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in trange(epochs, progress, desc):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            xb = x[idx] if augment is None else augment(x[idx], aug_gen)
            loss = loss_fn(model, xb, idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * idx.numel()
        losses.append(total / n)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    model.eval()
    return {"seconds": seconds, "cpu_seconds": cpu, "losses": losses}


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model(x)`` against ``y``."""
    model.eval()
    hits = 0
    for i in range(0, x.shape[0], batch_size):
        hits += int((model(x[i:i + batch_size]).argmax(-1) == y[i:i + batch_size]).sum())
    return hits / x.shape[0]


def mean_std(values: list[float]) -> str:
    """``"mean ± std"`` (sample std; ``"mean"`` for one value)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 1:
        return f"{a[0]:.4f}"
    return f"{a.mean():.4f} ± {a.std(ddof=1):.4f}"
