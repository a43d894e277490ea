"""Mask sampling: ``exact`` (a fixed count per layer tensor, the published code) and ``bernoulli``."""
from __future__ import annotations

import math

import pytest
import torch

import sparsemask
from sparsemask import models
from sparsemask.masks import exact_drop_count, random_mask
from sparsemask.nn import DefectiveConv2d, MaskedBatchNorm2d, defect


@pytest.mark.parametrize("keep", [0.0, 0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
@pytest.mark.parametrize("shape", [(64, 32, 32), (7, 5, 3), (1, 1, 1), (128, 16, 16)])
def test_exact_drops_int_n_times_drop(shape, keep):
    n = math.prod(shape)
    mask = random_mask(*shape, keep, seed=3, sampling="exact")
    assert mask.shape == shape and mask.dtype == torch.bool
    # the published int(n * drop) with drop the decimal 1 - keep (no unit lost to float error)
    drop = round(1 - keep, 10)
    assert int((~mask).sum()) == exact_drop_count(n, keep) == int(round(n * drop, 6) // 1)


def test_exact_count_edge_cases_of_float_error():
    assert exact_drop_count(10, 0.9) == 1          # 10 * (1 - 0.9) = 0.9999999999999998
    assert exact_drop_count(100, 0.7) == 30
    assert exact_drop_count(65536, 0.5) == 32768
    assert exact_drop_count(3, 0.5) == 1            # int(1.5)
    assert exact_drop_count(5, 1.0) == 0 and exact_drop_count(5, 0.0) == 5


@pytest.mark.parametrize("kind,units", [("channel", lambda c, h, w: c), ("shared", lambda c, h, w: h * w)])
def test_exact_other_kinds_count_their_units(kind, units):
    c, h, w = 10, 6, 5
    mask = random_mask(c, h, w, 0.3, kind, seed=1, sampling="exact")
    if kind == "channel":
        per = mask.flatten(1)
        assert bool((per.all(1) | (~per).all(1)).all())
        assert int((~per.all(1)).sum()) == exact_drop_count(units(c, h, w), 0.3)
    else:
        assert bool((mask == mask[:1]).all())
        assert int((~mask[0]).sum()) == exact_drop_count(units(c, h, w), 0.3)


def test_exact_is_seeded_and_uniform_over_positions():
    a = random_mask(8, 6, 6, 0.3, seed=5, sampling="exact")
    assert torch.equal(a, random_mask(8, 6, 6, 0.3, seed=5, sampling="exact"))
    assert not torch.equal(a, random_mask(8, 6, 6, 0.3, seed=6, sampling="exact"))
    # every position equally likely to be dropped: per-position drop frequency over many
    # seeds ~ Binomial(trials, 0.3); 6 sigma bounds
    trials, shape = 2000, (2, 3, 4)
    n = math.prod(shape)
    dropped = torch.zeros(shape)
    for s in range(trials):
        dropped += ~random_mask(*shape, 0.5, seed=s, sampling="exact")
    p = exact_drop_count(n, 0.5) / n
    sd = math.sqrt(trials * p * (1 - p))
    assert float((dropped - trials * p).abs().max()) < 6 * sd


def test_exact_pairs_are_nearly_independent():
    """Within one exact mask two positions are (slightly negatively) correlated, like sampling
    without replacement: P(both dropped) = d(d-1) / (n(n-1))."""
    shape, keep, trials = (4, 5, 5), 0.5, 3000
    n = math.prod(shape)
    d = exact_drop_count(n, keep)
    both = 0
    for s in range(trials):
        flat = ~random_mask(*shape, keep, seed=s, sampling="exact").flatten()
        both += int(flat[0] & flat[1])
    p = d * (d - 1) / (n * (n - 1))
    assert abs(both - trials * p) < 6 * math.sqrt(trials * p * (1 - p))


def test_bernoulli_fraction_and_independence():
    keep = 0.3
    mask = random_mask(64, 32, 32, keep, seed=0, sampling="bernoulli")
    n = mask.numel()
    assert abs(float(mask.float().mean()) - keep) < 6 * math.sqrt(keep * (1 - keep) / n)
    # the count varies from seed to seed (not fixed, unlike exact)
    counts = {int(random_mask(4, 5, 5, keep, seed=s, sampling="bernoulli").sum()) for s in range(20)}
    assert len(counts) > 1
    # neighbouring positions uncorrelated
    f = mask.float().flatten()
    corr = torch.corrcoef(torch.stack([f[:-1], f[1:]]))[0, 1]
    assert abs(float(corr)) < 6 / math.sqrt(n)


def test_layers_of_one_model_get_independent_masks():
    model = models.resnet18(input_size=16, defective=dict(keep=0.5, seed=0))
    masks = [m.mask for m in model.modules() if isinstance(m, DefectiveConv2d)]
    same_shape = [m for m in masks if m.shape == masks[1].shape]
    assert len(same_shape) >= 4
    for i in range(len(same_shape)):
        for j in range(i + 1, len(same_shape)):
            assert not torch.equal(same_shape[i], same_shape[j])
            agree = float((same_shape[i] == same_shape[j]).float().mean())
            assert abs(agree - 0.5) < 0.05                     # independent: agree half the time
    for m in masks:                                             # exact by default in builders/defect
        assert int((~m).sum()) == exact_drop_count(m.numel(), 0.5)


def test_defect_sampling_option_and_default():
    exact = models.senet18(input_size=16, defective=dict(keep=0.7, seed=1))
    bern = models.senet18(input_size=16, defective=dict(keep=0.7, seed=1, sampling="bernoulli"))
    for model, expect_exact in ((exact, True), (bern, False)):
        layers = [m for m in model.modules() if isinstance(m, (DefectiveConv2d, MaskedBatchNorm2d))
                  and getattr(m, "mask", None) is not None]
        assert layers
        for m in layers:
            assert m.sampling == ("exact" if expect_exact else "bernoulli")
            if expect_exact:
                assert int((~m.mask).sum()) == exact_drop_count(m.mask.numel(), 0.7)


def test_unknown_sampling_is_a_clear_error():
    with pytest.raises(ValueError, match="sampling.*'exactly'"):
        random_mask(4, 5, 5, 0.5, sampling="exactly")
    with pytest.raises(ValueError, match="sampling"):
        DefectiveConv2d(3, 4, 3, keep=0.5, feature_size=5, sampling="uniform")
    with pytest.raises(ValueError, match="sampling"):
        models.resnet18(defective=dict(keep=0.5, sampling="poisson"))
    with pytest.raises(ValueError, match="reading"):
        models.resnet18(defective=dict(keep=0.5, reading="paper"))
    assert sparsemask.SAMPLINGS == ("exact", "bernoulli")


def test_defective_conv_keeps_bernoulli_default():
    conv = DefectiveConv2d(3, 4, 3, keep=0.5, feature_size=5, seed=0)
    assert conv.sampling == "bernoulli"
    assert torch.equal(conv.mask, torch.rand((4, 5, 5), generator=torch.Generator().manual_seed(0)) < 0.5)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    defect(model, 0.5, where=["0"], example_input=torch.rand(1, 3, 7, 7), seed=0)
    assert model[0].sampling == "exact"
