"""torch ``flex_attention`` with a block-sparse mask: the block-sparse baseline on the CPU.

``flex_attention`` runs eagerly on the CPU too, but then it is a reference implementation
that materializes the scores (slower than SDPA's math path); its block-sparse speed comes
only from ``torch.compile``, whose inductor backend generates C++ for the CPU and builds it
with the system compiler (``gcc``/``g++``; a few tens of seconds for the first call of
every shape, reported separately as the compile time).  :func:`flex_available` says
whether compiling works here (no compiler, no compiled flex row).
"""

from __future__ import annotations

import time
from typing import Any

BLOCK = 128  # flex_attention's default block size (a query block x key block tile)


def flex_available() -> tuple[bool, str]:
    """(True, "") if ``torch.compile(flex_attention)`` runs on this machine."""
    try:
        import torch
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        L = 256
        q = torch.randn(1, 1, L, 16)
        bm = create_block_mask(lambda b, h, i, j: i >= j, None, None, L, L, device="cpu")
        torch.compile(flex_attention)(q, q, q, block_mask=bm)
    except Exception as e:  # a missing compiler raises from inductor
        return False, f"{type(e).__name__}: {str(e)[:200]}"
    return True, ""


def flex_sparse(mask_bool: Any, block: int = BLOCK) -> tuple[Any, dict[str, Any]]:
    """A compiled ``flex_attention`` call restricted to ``mask_bool`` (L x L, True = attend).

    Returns ``(fn, info)``: ``fn(q, k, v)`` on ``(1, 1, L, d)`` float32 tensors, and
    ``info`` with the block mask's sparsity and the time to build it.  The mask is read
    inside the kernel from the dense boolean tensor (``mask_mod``); blocks with no allowed
    entry are skipped.
    """
    import torch
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    A = torch.as_tensor(mask_bool, dtype=torch.bool)
    L = A.shape[-1]

    def mask_mod(b, h, q_idx, kv_idx):
        return A[q_idx, kv_idx]

    t0 = time.perf_counter()
    bm = create_block_mask(mask_mod, None, None, L, L, device="cpu", BLOCK_SIZE=block)
    build_s = time.perf_counter() - t0
    compiled = torch.compile(flex_attention)

    def fn(q, k, v):
        with torch.no_grad():
            return compiled(q, k, v, block_mask=bm)

    return fn, {"block_build_s": build_s, "block_sparsity": float(bm.sparsity()) / 100.0,
                "block": block}
