"""MAD (seed 002): grid masks, the training transform and the voting classifier."""
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from sparsemask.nn.mad import GridMask, MADClassifier, mad_defaults


def test_seed_defaults():
    assert mad_defaults(32) == dict(train_grid=8, test_grid=4, rate=0.75, from_seed=True)
    assert mad_defaults(28) == dict(train_grid=7, test_grid=7, rate=0.75, from_seed=True)
    d = mad_defaults(8)
    assert d["from_seed"] is False and 8 % d["train_grid"] == 0 and d["test_grid"] <= d["train_grid"]
    with pytest.raises(ValueError, match="input_size"):
        mad_defaults(0)
    with pytest.raises(ValueError, match="input_size"):
        mad_defaults(3)


@pytest.mark.parametrize("rate", [0.0, 1 / 3, 0.75, 1.0])
def test_masked_fraction_matches_rate(rate):
    masks = GridMask(grid=4, rate=rate, seed=1).sample(3000, 32, 32)
    frac = masks.float().mean().item()
    # 3000 * 64 independent cells: 4 standard deviations is < 0.005
    assert abs(frac - rate) < 0.005


@pytest.mark.parametrize("size,grid", [((32, 32), 8), ((28, 28), 7), ((10, 13), 4), ((8, 8), 3)])
def test_masks_are_aligned_to_the_grid(size, grid):
    h, w = size
    masks = GridMask(grid=grid, rate=0.5, seed=2).sample(200, h, w)
    assert masks.shape == (200, h, w) and masks.dtype == torch.bool
    rows, cols = -(-h // grid), -(-w // grid)
    for i in range(rows):
        for j in range(cols):
            cell = masks[:, i * grid:(i + 1) * grid, j * grid:(j + 1) * grid].flatten(1)
            # every cell is all masked or all kept, and cells differ between images
            assert torch.equal(cell.all(1), cell.any(1))
    cell_states = masks[:, ::grid, ::grid].flatten(1).float()
    assert 0.35 < cell_states.mean() < 0.65
    assert cell_states.std(0).min() > 0.3  # no cell is stuck


def test_gridmask_fills_masked_cells_only_and_shares_channels():
    x = torch.rand(16, 3, 12, 12)
    out = GridMask(grid=3, rate=0.75, fill=-1.0, seed=3)(x)
    masked = out == -1.0
    assert torch.equal(masked[:, 0], masked[:, 1]) and torch.equal(masked[:, 0], masked[:, 2])
    assert torch.equal(out[~masked], x[~masked])
    assert 0.6 < masked.float().mean() < 0.9


def test_gridmask_single_image_and_seed_reproducibility():
    x = torch.rand(1, 8, 8)
    a = GridMask(grid=2, rate=0.5, seed=7)
    b = GridMask(grid=2, rate=0.5, seed=7)
    outs_a = [a(x) for _ in range(3)]
    outs_b = [b(x) for _ in range(3)]
    assert outs_a[0].shape == (1, 8, 8)
    for oa, ob in zip(outs_a, outs_b):
        assert torch.equal(oa, ob)
    assert not torch.equal(outs_a[0], outs_a[1])  # a fresh mask per call
    a.reseed(7)
    assert torch.equal(a(x), outs_a[0])


def test_collate_masks_images_not_labels():
    x = torch.rand(20, 1, 8, 8) + 1.0  # strictly positive, so masked pixels (0) are visible
    y = torch.arange(20)
    loader = DataLoader(TensorDataset(x, y), batch_size=10, collate_fn=GridMask(2, 0.75, seed=0).collate)
    images, labels = next(iter(loader))
    assert torch.equal(labels, y[:10])
    zero = images == 0
    assert 0.5 < zero.float().mean() < 0.95
    assert torch.equal(images[~zero], x[:10][~zero])


def _majority(labels):
    counts = Counter(labels)
    best = max(counts.values())
    return min(label for label, c in counts.items() if c == best)


def test_vote_is_the_majority_of_the_masked_predictions(digits_data, digits_model):
    _, _, x, _ = digits_data
    x = x[:40]
    mad = MADClassifier(digits_model, grid=2, rate=0.5, n=5, seed=0)
    masks = mad.sample_masks(8, 8, n=5)
    mad.fix_masks(masks)
    with torch.no_grad():
        pred = mad.predict(x)
        per_mask = [digits_model(mad.masker.apply(x, m)).argmax(1) for m in masks]
    expected = [_majority([int(p[i]) for p in per_mask]) for i in range(len(x))]
    assert pred.tolist() == expected
    assert torch.equal(mad.predict(x), pred)  # fixed masks: deterministic


def test_probs_mode_averages_softmax(digits_data, digits_model):
    _, _, x, _ = digits_data
    x = x[:16]
    mad = MADClassifier(digits_model, grid=2, rate=0.5, n=4, combine="probs", seed=0)
    masks = mad.sample_masks(8, 8, n=4)
    mad.fix_masks(masks)
    with torch.no_grad():
        got = mad(x).softmax(1)
        want = torch.stack([digits_model(mad.masker.apply(x, m)).softmax(1) for m in masks]).mean(0)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_voting_wrapper_valid_labels_and_deterministic_under_seed(digits_data, digits_model):
    _, _, x, y = digits_data
    x, y = x[:100], y[:100]
    a = MADClassifier(digits_model, grid=2, rate=0.75, n=5, seed=11)
    b = MADClassifier(digits_model, grid=2, rate=0.75, n=5, seed=11)
    pa, pb = a.predict(x), b.predict(x)
    assert pa.dtype == torch.int64 and pa.shape == (100,)
    assert ((pa >= 0) & (pa < 10)).all()
    assert torch.equal(pa, pb)
    assert not torch.equal(a(x), a(x))  # fresh masks per call: the scores change
    # eval/train mode does not change the wrapper's behaviour
    b.reseed(11)
    b.train()
    assert torch.equal(b.predict(x), pa)
    b.eval()


def test_rate_zero_is_the_plain_model(digits_data, digits_model):
    _, _, x, _ = digits_data
    mad = MADClassifier(digits_model, grid=2, rate=0.0, n=3, seed=0)
    with torch.no_grad():
        assert torch.equal(mad.predict(x), digits_model(x).argmax(1))


def test_vote_passes_a_gradient(digits_data, digits_model):
    _, _, x, y = digits_data
    x = x[:8].clone().requires_grad_(True)
    mad = MADClassifier(digits_model, grid=2, rate=0.5, n=3, seed=0)
    torch.nn.functional.cross_entropy(mad(x), y[:8]).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bad_arguments(digits_model):
    with pytest.raises(ValueError, match="grid"):
        GridMask(grid=0)
    with pytest.raises(ValueError, match="rate"):
        GridMask(rate=1.5)
    with pytest.raises(TypeError, match="fill"):
        GridMask(fill="black")
    with pytest.raises(ValueError, match="seed or generator"):
        GridMask(seed=1, generator=torch.Generator())
    with pytest.raises(TypeError, match="seed"):
        GridMask(seed=1.5)
    with pytest.raises(ValueError, match="GridMask expects"):
        GridMask()(torch.rand(8, 8))
    with pytest.raises(ValueError, match="combine"):
        MADClassifier(digits_model, combine="max")
    with pytest.raises(ValueError, match="n must"):
        MADClassifier(digits_model, n=0)
    with pytest.raises(TypeError, match="model"):
        MADClassifier(lambda x: x)
    mad = MADClassifier(digits_model, grid=2)
    with pytest.raises(TypeError, match="masks"):
        mad.fix_masks(torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="do not match"):
        mad.fix_masks(torch.zeros(2, 7, 7, dtype=torch.bool))(torch.rand(3, 1, 8, 8))
    with pytest.raises(ValueError, match="batch of 3"):
        mad.fix_masks(torch.zeros(2, 4, 8, 8, dtype=torch.bool))(torch.rand(3, 1, 8, 8))
