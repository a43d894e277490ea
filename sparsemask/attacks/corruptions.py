"""Input corruptions of the seeds: clipped Gaussian noise (000/001), L2-scaled Gaussian noise
and JPEG (003), k×k patch shuffle (000/001). Inputs [N, C, H, W] in [0, 1]; outputs too."""
from __future__ import annotations

import io
from typing import Optional

import numpy as np
import torch

from ._common import check_nonneg, flat_norm, make_generator, randn_like


def _check_images(x: torch.Tensor, name: str = "x"):
    if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x) or x.dim() != 4:
        raise ValueError(f"{name} must be a float tensor [N, C, H, W], got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{name} must have values in [0, 1]")


def gaussian_noise_255(x: torch.Tensor, sigma: float, *, seed: Optional[int] = None,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Seeds 000/001: i.i.d. N(0, sigma²) noise on the 0-255 scale, clipped to [-2σ, 2σ], added
    to every pixel; the result is clipped to [0, 1]. sigma ∈ {1, 2, 4, …, 32} in the papers.

    x [N, C, H, W] in [0, 1] -> [N, C, H, W] in [0, 1].
    """
    _check_images(x)
    check_nonneg("sigma", sigma)
    s = sigma / 255.0
    noise = (randn_like(x, make_generator(seed, generator)) * s).clamp(-2 * s, 2 * s)
    return (x + noise).clamp(0, 1)


def gaussian_noise_l2(x: torch.Tensor, l2: float, *, seed: Optional[int] = None,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Seed 003: Gaussian noise rescaled to L2 norm ``l2`` per image, added, clipped to [0, 1].

    x [N, C, H, W] in [0, 1] -> [N, C, H, W] in [0, 1].
    """
    _check_images(x)
    check_nonneg("l2", l2)
    noise = randn_like(x, make_generator(seed, generator))
    noise = noise / flat_norm(noise, "2").clamp_min(1e-12) * l2
    return (x + noise).clamp(0, 1)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG-compress each image at ``quality`` (1-95+, Pillow) and decode it (seed 003: 10-100).

    x [N, C, H, W] in [0, 1], C = 1 (grayscale) or 3 (RGB) -> same shape, dtype and device,
    values on the 1/255 grid.
    """
    from PIL import Image

    _check_images(x)
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an int in [1, 100], got {quality!r}")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"jpeg needs 1 or 3 channels, got {x.shape[1]}")
    arr = (x.detach().cpu().permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    out = np.empty_like(arr)
    for i, img in enumerate(arr):
        pil = Image.fromarray(img[..., 0] if x.shape[1] == 1 else img, mode="L" if x.shape[1] == 1 else "RGB")
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=quality)
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert(pil.mode))
        out[i] = dec[..., None] if x.shape[1] == 1 else dec
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype) / 255.0


def patch_shuffle(x: torch.Tensor, k: int, *, seed: Optional[int] = None,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Seeds 000/001: split each image into a k×k grid of patches and relocate them at random
    (an independent permutation per image). Keeps local texture, destroys shape.

    x [N, C, H, W] with H and W divisible by k -> [N, C, H, W]; k = 1 returns a copy.
    """
    _check_images(x)
    check_nonneg("k", k, integer=True, positive=True)
    n, c, h, w = x.shape
    if h % k or w % k:
        raise ValueError(f"k={k} must divide the image size {h}x{w}")
    ph, pw = h // k, w // k
    patches = x.reshape(n, c, k, ph, k, pw).permute(0, 2, 4, 1, 3, 5).reshape(n, k * k, c, ph, pw)
    g = make_generator(seed, generator)
    perm = torch.stack([torch.randperm(k * k, generator=g) for _ in range(n)]).to(x.device)
    patches = patches.gather(1, perm.view(n, k * k, 1, 1, 1).expand_as(patches))
    return patches.reshape(n, k, k, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w).clone()
