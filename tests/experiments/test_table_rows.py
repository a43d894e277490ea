"""The seed-table rows and adaptive attacks of issue 18: mixed p-Bottom/q-Top models, the
dropout baselines of Table 2, the gray-box source, PGD restarts, and the adaptive-attack
verdicts (computed from the numbers)."""
from __future__ import annotations

import types

import pytest
import torch

from sparsemask.experiments.specs import ModelSpec, model_from_spec, variant_label
from sparsemask.nn import DefectiveConv2d

DATA = types.SimpleNamespace(num_classes=10, in_channels=1, input_size=16)


def test_mixed_bottom_top_model():
    d = [{"keep": 0.3, "where": "bottom"}, {"keep": 0.7, "where": "top"}]
    spec = ModelSpec(arch="resnet18", defective=d, seed=3)
    assert spec.label == "0.3-Bottom, 0.7-Top" == variant_label("resnet18", d)
    model = model_from_spec(spec, {"model": {}}, DATA)
    keeps = {n.split(".")[0]: c.keep for n, c in model.named_modules() if isinstance(c, DefectiveConv2d)}
    assert keeps == {"conv1": 0.3, "layer1": 0.3, "layer2": 0.3, "layer3": 0.7, "layer4": 0.7}
    # The bottom placement's masks are those of the 0.3-Bottom model with the same mask seed.
    single = model_from_spec(ModelSpec(arch="resnet18", defective=d[0], seed=3), {"model": {}}, DATA)
    torch.testing.assert_close(model.conv1.mask, single.conv1.mask)
    assert model(torch.rand(2, 1, 16, 16)).shape == (2, 10)


def test_mixed_rows_in_ablation_specs():
    from sparsemask.experiments import seed001_ablation as abl
    from sparsemask.experiments.config import resolve_config

    cfg = resolve_config("small", abl.DEFAULTS)
    labels = [label for label, _ in abl.target_specs(cfg)]
    assert "0.3-Bottom, 0.7-Top" in labels and "0.3-Bottom, 0.3-Top" in labels
    assert len(abl.model_specs(cfg, 28)) == 1 + sum(len(s) for _, s in abl.target_specs(cfg))


@pytest.mark.parametrize("arch,kw,block", [("resnet18", {}, "layer3"), ("wide_resnet", {"depth": 8, "width": 1}, "block3")])
@pytest.mark.parametrize("kind", ["spatial", "dropblock"])
def test_dropout_baselines_on_the_third_block(arch, kw, block, kind):
    from sparsemask.nn import DropBlock2d, SpatialDropout2d

    spec = ModelSpec(arch=arch, seed=0, model_kwargs=kw, dropout_layer={"kind": kind, "keep": 0.9, "block_size": 3})
    model = model_from_spec(spec, {"model": {}}, DATA)
    layer = getattr(model, block)[1]
    assert isinstance(layer, SpatialDropout2d if kind == "spatial" else DropBlock2d)
    x = torch.rand(4, 1, 16, 16)
    model.eval()
    torch.testing.assert_close(model(x), model(x))  # inactive at test time: a deterministic baseline
    with pytest.raises(ValueError, match="3rd block"):
        model_from_spec(ModelSpec(arch="lenet5", seed=0, dropout_layer={"kind": kind}), {"model": {}}, DATA)


def test_transfer_small_rows_and_graybox_source():
    from sparsemask.experiments import seed001_transfer as tr
    from sparsemask.experiments.config import resolve_config

    cfg = resolve_config("small", tr.DEFAULTS)
    labels = [s.label for s in tr.target_specs(cfg)]
    for row in ("SpatialDropout", "DropBlock", "Label smoothing (ε=0.1)", "Adversarial Training (Madry, PGD-3)"):
        assert row in labels
    assert cfg["ensemble"] == "leave_one_out"
    (src, target), = tr.graybox_specs(cfg)
    assert target.label == "0.1-Bottom" and src["seed"] != target["seed"]
    a = model_from_spec(src, {"model": {}}, DATA)
    b = model_from_spec(target, {"model": {}}, DATA)
    masks = lambda m: [c.mask for c in m.modules() if isinstance(c, DefectiveConv2d)]  # noqa: E731
    assert all(torch.equal(p, q) for p, q in zip(masks(a), masks(b))) and masks(a)
    assert not torch.equal(a.conv1.weight, b.conv1.weight)
    assert tr.model_specs(cfg, 28)[-1] == src


def _toy_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3)).eval()


def test_pgd_restarts_keep_the_best_run():
    from sparsemask.attacks import PGD

    model, x = _toy_model(), torch.rand(64, 1, 4, 4)
    y = model(x).argmax(-1)
    one = PGD(model, eps=0.05, steps=3, seed=1)(x, y)
    torch.testing.assert_close(PGD(model, eps=0.05, steps=3, seed=1, restarts=1)(x, y), one)
    many = PGD(model, eps=0.05, steps=3, seed=1, restarts=4)(x, y)
    assert (many - x).abs().max() <= 0.05 + 1e-6
    fooled = lambda xa: (model(xa).argmax(-1) != y)  # noqa: E731
    assert fooled(many).sum() >= fooled(one).sum()
    assert (fooled(one) & ~fooled(many)).sum() == 0  # a run that fooled is never replaced by one that did not
    with pytest.raises(ValueError, match="random_start"):
        PGD(model, eps=0.05, restarts=2, random_start=False)
    from sparsemask.attacks import make_attack

    assert make_attack(model, {"name": "pgd", "eps255": 8, "restarts": 3}).restarts == 3


def test_adaptive_verdict_from_numbers():
    from sparsemask.experiments.adaptive import adaptive_verdict

    text, nums = adaptive_verdict("MAD", "PGD", 0.8, "EOT-PGD", 0.11, reference=0.10, reference_label="no defense")
    assert nums["vanishes"] and "vanishes" in text and nums["drop"] == pytest.approx(0.69)
    text, nums = adaptive_verdict("MAD", "PGD", 0.8, "EOT-PGD", 0.5, reference=0.10, reference_label="no defense")
    assert nums["vanishes"] is False and "vanishes" not in text and "still leads" in text
    assert adaptive_verdict("x", "a", 0.5, "b", 0.4)[1]["vanishes"] is None
