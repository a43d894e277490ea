"""Attacks refuse NaN pixels and out-of-range labels; SVHN refuses non-integer labels
(issue 15, item 7)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from sparsemask.attacks import CW, FGSM, PGD, Boundary, DeepFool


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 4))


ATTACKS = [lambda m: FGSM(m, eps=0.1), lambda m: PGD(m, eps=0.1, steps=2), lambda m: DeepFool(m, steps=2),
           lambda m: Boundary(m, steps=2, seed=0), lambda m: CW(m, binary_steps=1, steps=2)]


@pytest.mark.parametrize("make", ATTACKS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_attacks_refuse_non_finite_pixels(make, bad):
    x = torch.rand(3, 3, 2, 2)
    x[1, 0, 0, 1] = bad
    with pytest.raises(ValueError, match=r"\bx\b.*(NaN|finite)"):
        make(_model())(x, torch.tensor([0, 1, 2]))


@pytest.mark.parametrize("make", ATTACKS)
@pytest.mark.parametrize("label", [-1, 4, 100])
def test_attacks_refuse_out_of_range_labels(make, label):
    x = torch.rand(3, 3, 2, 2)
    with pytest.raises(ValueError, match=r"\by\b.*(range|0\.\.|classes)"):
        make(_model())(x, torch.tensor([0, label, 2]))


@pytest.mark.parametrize("make", ATTACKS)
def test_attacks_refuse_out_of_range_targets(make):
    x = torch.rand(3, 3, 2, 2)
    with pytest.raises(ValueError, match=r"targets.*(range|0\.\.|classes)"):
        make(_model())(x, torch.tensor([0, 1, 2]), torch.tensor([1, 7, 0]))


def test_svhn_non_integer_labels(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    from sparsemask.data import CorruptDatasetError
    from sparsemask.data.svhn import load_svhn

    x = np.random.default_rng(0).integers(0, 256, (32, 32, 3, 3), dtype=np.uint8)
    scipy_io.savemat(tmp_path / "train_32x32.mat", {"X": x, "y": np.array([[1.0], [2.5], [10.0]])})
    with pytest.raises(CorruptDatasetError, match="integer"):
        load_svhn(tmp_path, "train")
