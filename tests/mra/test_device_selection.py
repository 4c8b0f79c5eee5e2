"""The torch path selects its blocks on the device (issue 14): same blocks as the host."""

from __future__ import annotations

import numpy as np
import pytest

from structattn.mra import select_blocks
from structattn.mra.selection import select_flat_torch

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("seed", range(6))
def test_device_selection_equals_host(seed):
    """Ties (rounded scores), priors, padded block rows and every budget: identical."""
    rng = np.random.default_rng(seed)
    for _ in range(25):
        n = int(rng.integers(1, 9))
        s = rng.standard_normal((3, n, n))
        if seed % 2 == 0:
            s = np.round(s)  # many ties: the flat-index tie break decides
        valid = rng.random((3, n)) > 0.3 if seed % 3 else None
        k = int(rng.integers(1, n * n + 1))
        pf, pd = int(rng.integers(0, 3)), int(rng.integers(0, 4))
        host = select_blocks(s, k, prior_first=pf, prior_diag=pd, block_valid=valid).flat()
        for dtype in (torch.float64, torch.float32):
            st = torch.tensor(s, dtype=dtype)
            sh = select_blocks(st, k, prior_first=pf, prior_diag=pd,
                               block_valid=valid).flat()  # same float64 reading
            dev = select_flat_torch(st, None if valid is None else torch.tensor(valid), k,
                                    pf, pd)
            assert dev.dtype == torch.int64 and tuple(dev.shape) == (3, k)
            np.testing.assert_array_equal(dev.numpy(), sh)
        np.testing.assert_array_equal(
            select_flat_torch(torch.tensor(s), None if valid is None else torch.tensor(valid),
                              k, pf, pd).numpy(), host)


def test_torch_output_equals_numpy_with_padding():
    """End to end: torch (device selection) == numpy (host selection), L not a multiple
    of b, a key mask and priors; float64."""
    from structattn.mra import mra_attention

    rng = np.random.default_rng(7)
    q, k, v = (rng.standard_normal((2, 3, 75, 8)) for _ in range(3))
    km = rng.random((2, 1, 75)) > 0.2
    kw = dict(block_size=8, blocks_per_row=3, prior_first=1, prior_diag=2)
    for mode in ("full", "sparse"):
        y_np = mra_attention(q, k, v, mode=mode, key_mask=km, backend="numpy", **kw)
        y_t = mra_attention(*(torch.tensor(a) for a in (q, k, v)), mode=mode,
                            key_mask=torch.tensor(km), **kw)
        np.testing.assert_allclose(y_t.numpy(), y_np, rtol=0, atol=1e-12)
