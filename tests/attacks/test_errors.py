"""Bad arguments raise clear errors naming the argument."""
from __future__ import annotations

import pytest
import torch

from sparsemask import attacks as A

EPS_ATTACKS = [A.FGSM, A.PGD, A.BIM, A.MIFGSM]


@pytest.mark.parametrize("cls", EPS_ATTACKS)
def test_negative_eps(digits_model, cls):
    with pytest.raises(ValueError, match="eps"):
        cls(digits_model, eps=-0.1)
    with pytest.raises(ValueError, match="eps"):
        cls(digits_model, eps=torch.tensor([0.1, -0.1]))
    with pytest.raises(ValueError, match="eps"):
        cls(digits_model, eps=float("nan"))


@pytest.mark.parametrize("cls", EPS_ATTACKS)
def test_unknown_norm(digits_model, cls):
    with pytest.raises(ValueError, match="norm"):
        cls(digits_model, eps=0.1, norm="3")
    with pytest.raises(ValueError, match="norm"):
        cls(digits_model, eps=0.1, norm=True)


def test_norm_not_supported_by_attack(digits_model):
    with pytest.raises(ValueError, match="norm"):
        A.MIFGSM(digits_model, norm="1")
    with pytest.raises(ValueError, match="norm"):
        A.DeepFool(digits_model, norm="1")


def test_norm_aliases(digits_model):
    assert A.PGD(digits_model, norm=float("inf")).norm == "inf"
    assert A.PGD(digits_model, norm="L2").norm == "2"
    assert A.PGD(digits_model, norm=1).norm == "1"


def all_attacks(model):
    return [A.FGSM(model, progress=False), A.PGD(model, steps=1, progress=False),
            A.MIFGSM(model, steps=1, progress=False), A.CW(model, binary_steps=1, steps=1, progress=False),
            A.DeepFool(model, steps=1, progress=False), A.Boundary(model, steps=1, progress=False)]


def test_bad_labels_and_inputs(digits_model, batch):
    x, y = batch
    for attack in all_attacks(digits_model):
        with pytest.raises(ValueError, match="y must have shape"):
            attack(x, y[:-1])
        with pytest.raises(ValueError, match="y must have shape"):
            attack(x, y[:, None])
        with pytest.raises(ValueError, match="targets must have shape"):
            attack(x, y, y[:3])
        with pytest.raises(TypeError, match="y must be an int64"):
            attack(x, y.float())
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            attack(x * 2 - 0.5, y)
        with pytest.raises(TypeError, match="x must be a floating-point"):
            attack((x * 16).long(), y)
        with pytest.raises(ValueError, match="batched"):
            attack(x[0, 0, 0], y[:1])


def test_per_sample_eps_wrong_length(digits_model, batch):
    x, y = batch
    with pytest.raises(ValueError, match=r"shape \[N\]"):
        A.FGSM(digits_model, eps=torch.ones(3), progress=False)(x, y)
    with pytest.raises(ValueError, match="scalar or a 1-D"):
        A.FGSM(digits_model, eps=torch.ones(3, 2))


def test_bad_hyperparameters(digits_model):
    with pytest.raises(TypeError, match="steps"):
        A.PGD(digits_model, steps=2.5)
    with pytest.raises(ValueError, match="step_size"):
        A.PGD(digits_model, step_size=-1.0)
    with pytest.raises(ValueError, match="loss"):
        A.PGD(digits_model, loss="hinge")
    with pytest.raises(ValueError, match="l1_sparsity"):
        A.PGD(digits_model, norm="1", l1_sparsity=0.0)
    with pytest.raises(ValueError, match="seed or generator"):
        A.PGD(digits_model, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="kappa"):
        A.CW(digits_model, kappa=-1.0)
    with pytest.raises(ValueError, match="c must be > 0"):
        A.CW(digits_model, c=0.0)
    with pytest.raises(ValueError, match="binary_steps"):
        A.CW(digits_model, binary_steps=0)
    with pytest.raises(ValueError, match="overshoot"):
        A.DeepFool(digits_model, overshoot=-0.1)
    with pytest.raises(ValueError, match="candidates"):
        A.DeepFool(digits_model, candidates=1)
    with pytest.raises(ValueError, match="adaptation"):
        A.Boundary(digits_model, adaptation=1.0)
    with pytest.raises(TypeError, match="model must be callable"):
        A.FGSM("resnet")
    with pytest.raises(ValueError, match="starting_points"):
        A.Boundary(digits_model, steps=1, progress=False)(torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long),
                                                         starting_points=torch.rand(2, 1, 4, 4))


def test_empty_batch(digits_model):
    x, y = torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)
    assert A.PGD(digits_model, progress=False)(x, y).shape == (0, 1, 8, 8)


@pytest.mark.parametrize("cls", EPS_ATTACKS)
def test_eps_on_the_255_scale_is_caught(cls):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"eps=8 is an L-inf budget.*eps255\(8\)"):
        cls(model, eps=8)
    with pytest.raises(ValueError, match="eps=16"):
        cls(model, eps=torch.tensor([0.1, 16.0]))
    cls(model, eps=3.0, norm="2")  # an L2 budget above 1 is an ordinary one
