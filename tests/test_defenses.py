"""sparsemask.defenses.defend: each named defense wraps any classifier, is randomized, keeps
shapes (defective models included), leaves the model unchanged; errors."""
from __future__ import annotations

import copy

import pytest
import torch

from sparsemask import models, nn as snn
from sparsemask.defenses import DEFENSES, defend, resize_pad_sizes
from sparsemask.robustness import is_randomized


@pytest.fixture(scope="module")
def defective():
    torch.manual_seed(0)
    return models.build("lenet5", num_classes=10, in_channels=1, input_size=16,
                        defective={"keep": 0.5, "seed": 1}).eval()


@pytest.mark.parametrize("name", DEFENSES)
def test_each_defense_wraps_a_defective_model(defective, name):
    before = copy.deepcopy(defective.state_dict())
    x = torch.rand(4, 1, 16, 16)
    wrapped = defend(defective, name, input_size=16, seed=0, mad_votes=3, spiking_runs=3)
    assert wrapped(x).shape == (4, 10) and not wrapped.training
    assert is_randomized(wrapped, x) == (name != "none")
    # the same seed draws the same randomness; the model passed in is unchanged (spiking uses a copy)
    again = defend(defective, name, input_size=16, seed=0, mad_votes=3, spiking_runs=3)
    torch.testing.assert_close(again(x), defend(defective, name, input_size=16, seed=0, mad_votes=3,
                                                spiking_runs=3)(x))
    assert defective.state_dict().keys() == before.keys()


def test_settings_reach_the_wrappers(defective):
    mad = defend(defective, "mad", input_size=16, mad_votes=7, mad_grid=2, mad_rate=0.5)
    assert isinstance(mad, snn.MADClassifier) and (mad.n, mad.grid, mad.rate) == (7, 2, 0.5)
    assert defend(defective, "mad", input_size=28).grid == snn.mad_defaults(28)["test_grid"]
    rp = defend(defective, "resize-pad", input_size=16, resize_draws=4)
    assert isinstance(rp, snn.RandomizedInference) and rp.n == 4
    layer = rp.model[0]
    assert (layer.min_size, layer.out_size) == resize_pad_sizes(16) == (14, 16)
    spiking = defend(defective, "spiking", input_size=16, spiking_p=0.6, spiking_runs=4, spiking_combine="mc")
    spikes = [m for m in spiking.modules() if isinstance(m, snn.RandomSpiking)]
    assert len(spikes) == 1 and (spikes[0].p, spikes[0].n, spikes[0].mode) == (0.6, 4, "mc")


def test_resize_pad_sizes():
    assert resize_pad_sizes(299, resize_max=331) == (299, 331)  # the seed's setting
    assert resize_pad_sizes(28) == (25, 28)
    assert resize_pad_sizes(2) == (1, 2)
    assert resize_pad_sizes(28, resize_min=20, resize_max=32) == (20, 32)


def test_errors(defective):
    with pytest.raises(ValueError, match="unknown defense 'jpeg'.*none, mad, resize-pad, spiking"):
        defend(defective, "jpeg", input_size=16)
    with pytest.raises(ValueError, match="spiking_combine"):
        defend(defective, "spiking", input_size=16, spiking_combine="mean")
    with pytest.raises(ValueError, match="min_size must be < out_size"):
        defend(defective, "resize-pad", input_size=16, resize_min=16)
