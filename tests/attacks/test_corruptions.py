"""Corruptions: clipped Gaussian noise (0-255 scale), L2-scaled noise, JPEG, patch shuffle."""
from __future__ import annotations

import pytest
import torch

from sparsemask import attacks as A


def test_gaussian_255_is_clipped_and_seeded(batch):
    x, _ = batch
    mid = torch.full((8, 3, 16, 16), 0.5)
    for sigma in (1, 8, 32):
        out = A.gaussian_noise_255(mid, sigma, seed=0)
        noise = out - mid
        assert noise.abs().max() <= 2 * sigma / 255 + 1e-6
        # the clip at 2σ is hit (the tail of N(0, σ²) exceeds 2σ ~4.6% of the time)
        assert (noise.abs() > 2 * sigma / 255 - 1e-6).double().mean() > 0.02
        # std of N(0, 1) clipped (not truncated) at ±2: sqrt(0.9545 - 4 φ(2) + 4 * 0.0455) = 0.959
        assert noise.std().item() == pytest.approx(0.959 * sigma / 255, rel=0.05)
    torch.testing.assert_close(A.gaussian_noise_255(x, 8, seed=1), A.gaussian_noise_255(x, 8, seed=1))
    assert not torch.equal(A.gaussian_noise_255(x, 8, seed=1), A.gaussian_noise_255(x, 8, seed=2))
    out = A.gaussian_noise_255(x, 32, seed=0)
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(A.gaussian_noise_255(x, 0, seed=0), x)


def test_gaussian_l2_has_the_given_norm():
    mid = torch.full((6, 1, 8, 8), 0.5)
    out = A.gaussian_noise_l2(mid, 0.7, seed=0)
    torch.testing.assert_close((out - mid).flatten(1).norm(dim=1), torch.full((6,), 0.7))
    out = A.gaussian_noise_l2(torch.rand(4, 3, 8, 8), 50.0, seed=0)
    assert out.min() >= 0 and out.max() <= 1


def test_jpeg_quality_orders_the_error(batch):
    x, _ = batch
    rgb = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for img in (x[:8], rgb):
        hi, lo = A.jpeg(img, 95), A.jpeg(img, 10)
        assert hi.shape == img.shape and hi.dtype == img.dtype
        assert hi.min() >= 0 and hi.max() <= 1
        assert (hi - img).abs().mean() < (lo - img).abs().mean()
        torch.testing.assert_close(hi * 255, (hi * 255).round())


def test_patch_shuffle_permutes_patches(batch):
    x, _ = batch
    for k in (2, 4, 8):
        out = A.patch_shuffle(x, k, seed=0)
        p = 8 // k
        def patches(z):
            return z.reshape(z.shape[0], 1, k, p, k, p).permute(0, 2, 4, 1, 3, 5).reshape(z.shape[0], k * k, -1)
        a, b = patches(x), patches(out)
        # same multiset of patches per image: sort patches by their content
        # a generic projection: equal keys <=> equal patches
        w = torch.rand(p * p, generator=torch.Generator().manual_seed(0))
        key = lambda t: t @ w  # noqa: E731
        sa = a.gather(1, key(a).argsort(1)[..., None].expand_as(a))
        sb = b.gather(1, key(b).argsort(1)[..., None].expand_as(b))
        torch.testing.assert_close(sa, sb)
    assert not torch.equal(A.patch_shuffle(x, 4, seed=0), x)
    torch.testing.assert_close(A.patch_shuffle(x, 1, seed=0), x)
    torch.testing.assert_close(A.patch_shuffle(x, 4, seed=3), A.patch_shuffle(x, 4, seed=3))
    # k = image size: a pixel permutation, values preserved per image
    px = A.patch_shuffle(x, 8, seed=0)
    torch.testing.assert_close(px.flatten(1).sort(1).values, x.flatten(1).sort(1).values)


def test_corruption_errors(batch):
    x, _ = batch
    with pytest.raises(ValueError, match="k=3 must divide"):
        A.patch_shuffle(x, 3)
    with pytest.raises(ValueError, match="quality"):
        A.jpeg(x, 0)
    with pytest.raises(ValueError, match="channels"):
        A.jpeg(torch.rand(1, 2, 8, 8), 50)
    with pytest.raises(ValueError, match="sigma"):
        A.gaussian_noise_255(x, -1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        A.gaussian_noise_l2(x * 3, 1.0)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        A.patch_shuffle(x[0], 2)
