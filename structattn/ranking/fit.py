"""Learning free dual-encoder embeddings against a teacher's score matrix (torch)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .._array import as_generator, is_torch, validate_float_array
from ._common import check_choice, check_int, check_positive, to_numpy
from .losses import listwise_kl, margin_mse, softmax_ce

__all__ = ["FitResult", "fit_free_embeddings"]

LOSSES = ("listwise_kl", "margin_mse", "softmax_ce", "mse")


@dataclasses.dataclass
class FitResult:
    """What :func:`fit_free_embeddings` returns.

    Attributes
    ----------
    phi : array (..., n, d)
        Query embeddings (same kind, dtype and device as the teacher's scores).
    psi : array (..., m, d)
        Document embeddings.
    losses : numpy.ndarray
        Training loss after each optimizer step.
    """

    phi: Any
    psi: Any
    losses: np.ndarray


def _loss_fn(name: str, positives: Any, temperature: float, margin_kwargs: dict) -> Any:
    if name == "listwise_kl":
        return lambda s, t: listwise_kl(s, t, temperature=temperature)
    if name == "margin_mse":
        return lambda s, t: margin_mse(s, t, positive_index=positives, **margin_kwargs)
    if name == "softmax_ce":
        return lambda s, t: softmax_ce(s, positive_index=positives, temperature=temperature)
    return lambda s, t: ((s - t) ** 2).mean()


def fit_free_embeddings(
    S_teacher: Any,
    d: int,
    *,
    loss: str = "listwise_kl",
    steps: int = 200,
    lr: float = 1.0,
    seed: int = 0,
    optimizer: str = "lbfgs",
    temperature: float = 1.0,
    positives: Any = None,
    init_scale: float = 0.1,
    margin_kwargs: dict | None = None,
) -> FitResult:
    """Fit free embeddings ``Φ (..., n, d)``, ``Ψ (..., m, d)`` so that ``Φ Ψᵀ`` mimics a teacher.

    Every query's list is all ``m`` documents.  The losses:

    * ``"listwise_kl"``: :func:`listwise_kl` between ``softmax(S_teacher/τ)`` and
      ``softmax(ΦΨᵀ/τ)`` — reproduces score *distributions* (needs
      ``d >= de_capacity(S_teacher, target="softmax")`` to reach zero);
    * ``"margin_mse"``: :func:`margin_mse` with the positive at ``positives``;
    * ``"softmax_ce"``: one-hot :func:`softmax_ce` on ``positives`` (teacher scores unused);
    * ``"mse"``: plain squared error on the scores.

    Parameters
    ----------
    S_teacher : array (..., n, m)
        Teacher scores (numpy or torch; computation is in torch with the same dtype).
    d : int
        Embedding dimension.
    loss : {"listwise_kl", "margin_mse", "softmax_ce", "mse"}
    steps : int
        Optimizer steps (L-BFGS steps run up to 20 function evaluations each).
    lr : float
        Learning rate (1.0 suits L-BFGS with its line search; use about 0.01–0.1 with Adam).
    seed : int
        Seeds the Gaussian initialisation ``init_scale · N(0, 1)``.
    optimizer : {"lbfgs", "adam"}
        Full-batch L-BFGS (strong-Wolfe line search) or Adam.
    temperature : float
        ``τ`` of the KL and CE losses.
    positives : int array (..., n), optional
        Positive document per query for ``"margin_mse"`` / ``"softmax_ce"``; default the
        teacher's top document.
    init_scale : float
    margin_kwargs : dict, optional
        Extra keywords for :func:`margin_mse` (``pool``, ``one_sided``, ...).

    Returns
    -------
    FitResult

    Notes
    -----
    Each step costs ``O(n · m · d)``; memory ``O(n · m)`` (the full score matrix — this is
    a capacity probe for small matrices, not a training loop for large corpora).
    """
    import torch

    validate_float_array(S_teacher, "S_teacher", min_ndim=2)
    d = check_int(d, "d")
    steps = check_int(steps, "steps")
    check_choice(loss, "loss", LOSSES)
    check_choice(optimizer, "optimizer", ("lbfgs", "adam"))
    lr = check_positive(lr, "lr")
    tau = check_positive(temperature, "temperature")
    scale = check_positive(init_scale, "init_scale")
    rng = as_generator(seed)
    dtype = torch.float64 if str(S_teacher.dtype).endswith("float64") else torch.float32
    device = S_teacher.device if is_torch(S_teacher) else torch.device("cpu")
    T = torch.as_tensor(to_numpy(S_teacher), dtype=dtype, device=device)
    n, m = T.shape[-2:]
    if positives is None:
        pos = torch.argmax(T, dim=-1)
    else:
        pos_np = to_numpy(positives)
        if pos_np.dtype.kind not in "iu" or pos_np.shape[-1:] != (n,):
            raise ValueError(f"positives must be an integer array of shape (..., {n}), got "
                             f"{pos_np.dtype} {pos_np.shape}")
        pos = torch.as_tensor(pos_np.astype(np.int64), device=device)
    phi = torch.tensor(scale * rng.standard_normal((*T.shape[:-2], n, d)), dtype=dtype,
                       device=device, requires_grad=True)
    psi = torch.tensor(scale * rng.standard_normal((*T.shape[:-2], m, d)), dtype=dtype,
                       device=device, requires_grad=True)
    fn = _loss_fn(loss, pos, tau, dict(margin_kwargs or {}))
    history: list[float] = []

    def closure() -> Any:
        opt.zero_grad()
        value = fn(phi @ psi.transpose(-1, -2), T)
        value.backward()
        return value

    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS([phi, psi], lr=lr, max_iter=20, history_size=50,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                                tolerance_change=1e-15)
    else:
        opt = torch.optim.Adam([phi, psi], lr=lr)
    for _ in range(steps):
        value = opt.step(closure)
        history.append(float(value.detach()))
    phi_out, psi_out = phi.detach(), psi.detach()
    if not is_torch(S_teacher):
        phi_out, psi_out = phi_out.cpu().numpy(), psi_out.cpu().numpy()
    return FitResult(phi_out, psi_out, np.asarray(history))
