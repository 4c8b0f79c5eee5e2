"""Oracles of the Plug-In Inversion augmentations (spec plug_in_inversion.md §4.1–4.4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from structattn.studies.inversion import (
    centered_crop,
    color_shift,
    grow_canvas,
    growth_schedule,
    jitter,
    resize_bilinear,
    sample_color_shift,
)


def _img(shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).random(shape).astype(dtype)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_color_shift_identity_and_composition(kind):
    x = _img((4, 3, 5, 6))
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.uniform(-1, 1, (2, 4, 3))
    s1, s2 = np.exp(rng.uniform(-1, 1, (2, 4, 3)))
    conv = torch.as_tensor if kind == "torch" else np.asarray
    X = conv(x)
    same = color_shift(X, mu=conv(np.zeros((4, 3))), sigma=conv(np.ones((4, 3))))
    assert np.array_equal(np.asarray(same), x)
    two = color_shift(color_shift(X, mu=conv(mu1), sigma=conv(s1)), mu=conv(mu2), sigma=conv(s2))
    one = color_shift(X, mu=conv(s2 * mu1 + mu2), sigma=conv(s2 * s1))
    np.testing.assert_allclose(np.asarray(two), np.asarray(one), rtol=0, atol=1e-12)
    # per channel: x'_c = sigma_c x_c + mu_c
    np.testing.assert_allclose(np.asarray(one)[2, 1], (s2 * s1)[2, 1] * x[2, 1]
                               + (s2 * mu1 + mu2)[2, 1], atol=1e-12)


def test_color_shift_errors():
    x = torch.rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match="mu must have shape"):
        color_shift(x, mu=torch.zeros(2, 2), sigma=torch.ones(2, 3))
    with pytest.raises(TypeError, match="sigma must be of the same kind"):
        color_shift(x, mu=torch.zeros(2, 3), sigma=np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"\(\.\.\., C, H, W\)"):
        color_shift(torch.rand(4, 4), mu=torch.zeros(1), sigma=torch.ones(1))


def test_sample_color_shift_ranges_reproducible_and_uniform():
    g = torch.Generator().manual_seed(3)
    mu, sigma = sample_color_shift(50_000, 2, rng=g, dtype=torch.float64)
    assert mu.shape == sigma.shape == (50_000, 2)
    assert mu.min() >= -1 and mu.max() < 1
    log_s = sigma.log()
    assert log_s.min() >= -1 - 1e-12 and log_s.max() < 1 + 1e-12
    for sample in (mu.flatten(), log_s.flatten()):  # n = 1e5 draws each
        assert stats.kstest(sample.numpy(), stats.uniform(loc=-1, scale=2).cdf).pvalue > 1e-3
    mu2, sigma2 = sample_color_shift(50_000, 2, rng=torch.Generator().manual_seed(3))
    assert mu2.dtype == torch.float32
    assert torch.equal(mu2, mu.float()) and torch.equal(sigma2, sigma.float())
    mu3, _ = sample_color_shift(4, 3, mean_width=0.25, log_std_width=0.0,
                                rng=torch.Generator().manual_seed(0))
    assert mu3.abs().max() < 0.25
    _, s3 = sample_color_shift(4, 3, log_std_width=0.0, rng=torch.Generator().manual_seed(0))
    assert torch.equal(s3, torch.ones(4, 3))
    with pytest.raises(TypeError, match=r"rng must be a torch\.Generator"):
        sample_color_shift(2, 3, rng=0)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("shifts", [(0, 0), (2, -3), (-7, 11), (5, 5)])
def test_jitter_is_a_cyclic_roll(kind, shifts):
    x = _img((2, 3, 5, 7))
    X = torch.as_tensor(x) if kind == "torch" else x
    y = np.asarray(jitter(X, shifts=shifts))
    dy, dx = shifts
    i = (np.arange(5)[:, None] - dy) % 5
    j = (np.arange(7)[None, :] - dx) % 7
    assert np.array_equal(y, x[..., i, j])  # y[i, j] = x[i - dy, j - dx]
    back = np.asarray(jitter(jitter(X, shifts=shifts), shifts=(-dy, -dx)))
    assert np.array_equal(back, x)
    assert np.array_equal(np.sort(y.ravel()), np.sort(x.ravel()))  # a permutation


def test_centered_crop_matches_focus():
    x = torch.arange(2 * 9 * 10, dtype=torch.float64).reshape(1, 2, 9, 10)
    c = centered_crop(x, 4)
    assert torch.equal(c, x[..., 9 // 2 - 2:9 // 2 + 2, 10 // 2 - 2:10 // 2 + 2])
    assert torch.equal(centered_crop(x, (3, 5), offset=(1, -1)), x[..., 4 - 1 + 1:7, 5 - 2 - 1:7])
    assert torch.equal(centered_crop(x, 4, offset=(100, -100)), x[..., 5:9, 0:4])  # clamped
    assert torch.equal(centered_crop(x, (9, 10)), x)
    assert np.array_equal(centered_crop(x.numpy(), 4), c.numpy())
    with pytest.raises(ValueError, match="must not exceed"):
        centered_crop(x, 11)


@pytest.mark.parametrize("size", [(16, 16), (3, 5), (7, 2), (21, 13), (1, 1), (8, 9)])
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_resize_equals_torch_bilinear(size, kind):
    x = _img((2, 3, 8, 9), seed=4)
    ref = F.interpolate(torch.as_tensor(x), size=size, mode="bilinear",
                        align_corners=False).numpy()
    X = torch.as_tensor(x) if kind == "torch" else x
    got = np.asarray(resize_bilinear(X, size))
    assert got.shape == ref.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_resize_float32_constant_identity_and_grad():
    x = torch.rand(1, 2, 7, 5)
    ref = F.interpolate(x, size=(11, 3), mode="bilinear", align_corners=False)
    got = resize_bilinear(x, (11, 3))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    const = torch.full((1, 1, 6, 6), 0.3, dtype=torch.float64)
    for s in (2, 6, 13):
        np.testing.assert_allclose(resize_bilinear(const, s).numpy(), 0.3, rtol=0, atol=1e-15)
    assert torch.equal(resize_bilinear(x.double(), (7, 5)), x.double())
    xd = torch.rand(1, 1, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: resize_bilinear(t, (5, 7)), (xd,))


def test_resize_natural_image():
    sklearn = pytest.importorskip("sklearn.datasets")
    img = sklearn.load_sample_images().images[0]  # 427 x 640 x 3 photo, uint8
    assert img.shape == (427, 640, 3) and img.std() > 10  # a real image, not flat
    x = torch.as_tensor(np.array(img), dtype=torch.float64).permute(2, 0, 1)[None] / 255.0
    for size in ((61, 97), (500, 700)):
        ref = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        torch.testing.assert_close(resize_bilinear(x, size), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize(("size", "pad"), [(12, 2), (9, 4), (8, 0), (5, 1)])
def test_grow_canvas_keeps_previous_image_centred(kind, size, pad):
    prev = _img((2, 3, 6, 6), seed=5)
    if kind == "torch":
        out = grow_canvas(torch.as_tensor(prev), size, pad=pad,
                          rng=torch.Generator().manual_seed(0)).numpy()
        inner = resize_bilinear(torch.as_tensor(prev), size - pad).numpy()
    else:
        out = grow_canvas(prev, size, pad=pad, rng=np.random.default_rng(0))
        inner = resize_bilinear(prev, size - pad)
    assert out.shape == (2, 3, size, size)
    o = pad // 2
    assert np.array_equal(out[..., o:o + size - pad, o:o + size - pad], inner)
    border = np.ones((size, size), dtype=bool)
    border[o:o + size - pad, o:o + size - pad] = False
    vals = out[..., border]
    assert vals.size == 2 * 3 * (size**2 - (size - pad) ** 2)
    assert np.all((vals >= 0) & (vals < 1))
    if pad >= 2:  # fresh noise, not a copy of prev
        assert len(np.unique(vals)) == vals.size


def test_grow_canvas_errors():
    with pytest.raises(ValueError, match="pad"):
        grow_canvas(torch.rand(1, 1, 4, 4), 4, pad=4, rng=torch.Generator())
    with pytest.raises(TypeError, match=r"rng must be a torch\.Generator"):
        grow_canvas(torch.rand(1, 1, 4, 4), 6, pad=2, rng=np.random.default_rng(0))


def test_growth_schedule_of_the_authors_code():
    sizes, pad = growth_schedule(224)
    assert sizes == [56, 84, 112, 140, 168, 196, 224] and pad == 14
    assert growth_schedule(224, way=2)[1] == 28 and growth_schedule(224, way=0)[1] == 0
    assert growth_schedule(32) == ([8, 12, 16, 20, 24, 28, 32], 2)
    assert growth_schedule(8) == ([2, 3, 4, 5, 6, 7, 8], 0)
    with pytest.raises(ValueError, match="native_size"):
        growth_schedule(7)
