"""Seeds' augmentation (pad + random crop + flip) and per-pixel mean normalisation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sparsemask.data import PixelMeanNormalize, RandomCropFlip, load_dataset, seed_augmentation


def _crops(padded, h, w):
    """Every h x w crop of a padded image [C, H+2p, W+2p], and their flips."""
    out = []
    for oy in range(padded.shape[1] - h + 1):
        for ox in range(padded.shape[2] - w + 1):
            c = padded[:, oy:oy + h, ox:ox + w]
            out += [c, c.flip(-1)]
    return out


def test_crop_flip_outputs_are_crops_of_the_padded_image():
    x = torch.rand(16, 3, 9, 7) + 0.1  # never zero, so the zero padding is visible
    aug = RandomCropFlip(pad=2, flip=True, seed=5)
    y = aug(x)
    assert y.shape == x.shape
    for i in range(len(x)):
        candidates = _crops(F.pad(x[i], (2, 2, 2, 2)), 9, 7)
        assert any(torch.equal(y[i], c) for c in candidates)
    # Not everything left in place: offsets and flips vary across the batch.
    assert sum(torch.equal(y[i], x[i]) for i in range(len(x))) < len(x) // 2


def test_crop_flip_is_seeded_and_single_images_work():
    x = torch.rand(8, 1, 8, 8)
    a, b = RandomCropFlip(pad=4, seed=1), RandomCropFlip(pad=4, seed=1)
    assert torch.equal(a(x), b(x))
    assert not torch.equal(RandomCropFlip(pad=4, seed=2)(x), RandomCropFlip(pad=4, seed=1)(x))
    assert a(x[0]).shape == (1, 8, 8)
    a.reseed(1)
    b.reseed(1)
    assert torch.equal(a(x), b(x))


def test_flip_only_flips_about_half():
    x = torch.rand(2000, 1, 4, 4)
    y = RandomCropFlip(pad=0, flip=True, seed=0)(x)
    flipped = torch.tensor([torch.equal(y[i], x[i].flip(-1)) for i in range(len(x))])
    kept = torch.tensor([torch.equal(y[i], x[i]) for i in range(len(x))])
    assert bool((flipped | kept).all())
    assert 0.45 < flipped.float().mean().item() < 0.55


def test_crop_flip_bad_args():
    with pytest.raises(ValueError, match="pad"):
        RandomCropFlip(pad=-1)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        RandomCropFlip()(torch.rand(4, 4))


def test_dataset_transform_applies_in_batch_and_getitem():
    ds = load_dataset("digits", augment=RandomCropFlip(pad=1, flip=False, seed=0))
    x_aug, _ = ds.batch(torch.arange(32))
    x_raw, _ = ds.batch(torch.arange(32), transform=False)
    assert not torch.equal(x_aug, x_raw)
    assert ds[0][0].shape == (1, 8, 8)
    assert seed_augmentation("cifar10").pad == 4 and seed_augmentation("fashion-mnist").pad == 0
    assert seed_augmentation("digits") is None


def test_pixel_mean_normalize():
    mean = torch.rand(3, 5, 5)
    m = PixelMeanNormalize(mean)
    x = torch.rand(2, 3, 5, 5)
    torch.testing.assert_close(m(x), x - mean)
    assert "mean" in m.state_dict() and "mean_shape=(3, 5, 5)" in repr(m)
    with pytest.raises(ValueError, match="mean"):
        PixelMeanNormalize(torch.rand(5, 5))
