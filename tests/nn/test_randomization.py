"""Randomization layer (seed 004): resize + pad patterns, fixed and ensemble patterns."""
import pytest
import torch

from sparsemask.nn.dropout import RandomizedInference
from sparsemask.nn.randomization import Pattern, PatternEnsemble, RandomResizePad, randomization_defense

FILL = -1.0


def _bbox(img):
    """(top, left, height, width) of the non-fill region of a [C, H, W] image."""
    inside = (img != FILL).any(0)
    rows, cols = inside.any(1).nonzero().flatten(), inside.any(0).nonzero().flatten()
    return int(rows[0]), int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def test_every_pattern_has_the_right_size_and_placement():
    layer = RandomResizePad(out_size=12, min_size=8, fill=FILL)
    x = torch.rand(2, 3, 8, 8) + 0.5  # never equal to FILL
    patterns = list(layer.patterns())
    assert len(patterns) == len(set(patterns)) == layer.num_patterns() == 25 + 16 + 9 + 4
    for p in patterns:
        out = layer.apply(x, p)
        assert out.shape == (2, 3, 12, 12)
        for img in out:
            assert _bbox(img) == (p.top, p.left, p.size, p.size)
            region = img[:, p.top:p.top + p.size, p.left:p.left + p.size]
            assert (region != FILL).all()
        if p.size == 8:  # no resize: the image itself, shifted
            assert torch.equal(out[:, :, p.top:p.top + 8, p.left:p.left + 8], x)


def test_flip_and_nearest_resize():
    layer = RandomResizePad(out_size=10, min_size=4)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    flipped = layer.apply(x, Pattern(4, 1, 2, True))
    assert torch.equal(flipped[..., 1:5, 2:6], x.flip(-1))
    doubled = layer.apply(x, Pattern(8, 0, 0))
    assert torch.equal(doubled[..., :8, :8], x.repeat_interleave(2, -2).repeat_interleave(2, -1))
    assert (doubled[..., 8:, :] == 0).all() and (doubled[..., :, 8:] == 0).all()


def test_seed_paper_patterns():
    layer = RandomResizePad(331, 299)
    assert layer.num_patterns() == 12528  # the seed's count for 299 -> [299, 331) -> 331
    assert layer.single_pattern() == Pattern(299, 16, 16)
    ens = layer.ensemble_patterns()
    assert len(ens) == 21
    assert sorted({p.size for p in ens}) == [299, 307, 315, 323, 331]
    assert [p for p in ens if p.size == 331] == [Pattern(331, 0, 0)]
    for size in (299, 307, 315, 323):
        rem = 331 - size
        assert {(p.top, p.left) for p in ens if p.size == size} == {
            (0, 0), (0, rem), (rem, 0), (rem, rem), (rem // 2, rem // 2)}
    small = RandomResizePad(32, 28)
    assert len(small.ensemble_patterns()) == 20  # size 31 has no distinct centre
    assert small.single_pattern() == Pattern(28, 2, 2)


def test_random_patterns_stay_in_range_and_vary():
    layer = RandomResizePad(out_size=32, min_size=28, fill=FILL, seed=0)
    x = torch.rand(400, 1, 28, 28) + 0.5
    out = layer(x)
    assert out.shape == (400, 1, 32, 32)
    boxes = [_bbox(img) for img in out]
    sizes = [b[2] for b in boxes]
    assert set(sizes) == {28, 29, 30, 31}  # [min_size, out_size): 32 never drawn
    for top, left, h, w in boxes:
        assert h == w and 0 <= top <= 32 - h and 0 <= left <= 32 - w
    tops_28 = {b[0] for b in boxes if b[2] == 28}
    assert tops_28 == {0, 1, 2, 3, 4}  # both ends of the padding range are reachable
    batch_layer = RandomResizePad(32, 28, fill=FILL, per_image=False, seed=0)
    assert len({_bbox(img) for img in batch_layer(x[:20])}) == 1


def test_fixed_pattern_and_seeds_reproduce():
    x = torch.rand(6, 3, 28, 28)
    layer = RandomResizePad(32, 28, p_flip=0.5, seed=3)
    same_seed = RandomResizePad(32, 28, p_flip=0.5, seed=3)
    first = layer(x)
    assert torch.equal(first, same_seed(x))
    assert not torch.equal(layer(x), first)  # fresh patterns per call
    layer.reseed(3)
    assert torch.equal(layer(x), first)

    pattern = layer.sample_patterns(1)[0]
    layer.fix_pattern(pattern)
    assert layer.fixed_pattern == pattern
    a, b = layer(x), layer(x)
    assert torch.equal(a, b) and torch.equal(a, layer.apply(x, pattern))
    layer.train()
    assert torch.equal(layer(x), a)  # train/eval mode makes no difference
    layer.release_pattern()
    assert layer.fixed_pattern is None and not torch.equal(layer(x), layer(x))


def test_gradients_flow_through_every_mode():
    layer = RandomResizePad(12, 8, mode="bilinear", seed=0)
    x = torch.rand(3, 2, 8, 8, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad.abs().sum() > 0


def test_pattern_ensemble_and_n_pattern_defense(digits_data, digits_model):
    _, _, x, _ = digits_data
    x = x[:60]
    layer = RandomResizePad(10, 8)
    # the digits model takes 8x8 inputs: scale the padded 10x10 images back to 8x8
    crop = torch.nn.Sequential(torch.nn.Upsample(size=(8, 8), mode="nearest"), digits_model)
    ens = PatternEnsemble(crop, layer)
    assert len(ens.patterns) == len(layer.ensemble_patterns())
    with torch.no_grad():
        out = ens(x)
        want = torch.stack([crop(layer.apply(x, p)).softmax(1) for p in ens.patterns]).mean(0)
    torch.testing.assert_close(out.softmax(1), want, atol=1e-6, rtol=1e-5)
    assert torch.equal(ens(x), ens(x))

    defended = randomization_defense(crop, 10, 8, n=5, seed=0)
    assert isinstance(defended, RandomizedInference) and isinstance(defended.model[0], RandomResizePad)
    pred = defended.predict(x)
    assert ((pred >= 0) & (pred < 10)).all()
    defended.model[0].reseed(0)
    assert torch.equal(defended.predict(x), pred)


def test_bad_arguments():
    with pytest.raises(ValueError, match="min_size must be < out_size"):
        RandomResizePad(32, 32)
    with pytest.raises(ValueError, match="out_size"):
        RandomResizePad(0, 0)
    with pytest.raises(ValueError, match="p_flip"):
        RandomResizePad(32, 28, p_flip=2)
    with pytest.raises(ValueError, match="mode"):
        RandomResizePad(32, 28, mode="lanczos")
    layer = RandomResizePad(32, 28)
    with pytest.raises(ValueError, match="size must be in"):
        layer.fix_pattern((33, 0, 0))
    with pytest.raises(ValueError, match="offsets"):
        layer.fix_pattern((30, 3, 0))
    with pytest.raises(TypeError, match="pattern"):
        layer.apply(torch.rand(1, 1, 28, 28), 30)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        layer(torch.rand(28, 28))
    with pytest.raises(TypeError, match="RandomResizePad"):
        PatternEnsemble(torch.nn.Identity(), "layer")
    with pytest.raises(ValueError, match="combine"):
        PatternEnsemble(torch.nn.Identity(), layer, combine="max")
    with pytest.raises(ValueError, match="empty"):
        PatternEnsemble(torch.nn.Identity(), layer, patterns=[])
