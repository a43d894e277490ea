"""Model builders: seed placements, sparse == dense per architecture, parameters, state_dict, stems, errors."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import sparsemask
from sparsemask import models
from sparsemask.nn import DefectiveConv2d, MaskedBatchNorm2d, defective_layers


def _r18_layer(i):
    return [f"layer{i}.{b}.conv{c}" for b in range(2) for c in (1, 2)]


def _r18_layer_with_shortcut(i):
    names = _r18_layer(i)
    return names[:2] + [f"layer{i}.0.downsample.0"] + names[2:]


def _masked_points(model):
    """Defective convs and BN-output masks (MaskedBatchNorm2d with a mask of its own), model order."""
    return [n for n, m in model.named_modules()
            if isinstance(m, DefectiveConv2d) or (isinstance(m, MaskedBatchNorm2d) and m.source is None)]


# The placements, written out by hand. Default (reading="code"): where the published code
# (tiangeluo/DefectiveCNN, Models/*_drop_012_*.py) puts the masks — ResNet-18 also masks layer2.0's
# projection shortcut; DenseNet-121 masks the BN outputs in front of the 1x1 convs of dense1/2
# and trans1/2 (no conv made defective); SENet-18 masks bn1 (own mask) and bn2 (after conv1)
# of the first 4 SE blocks.
EXPECTED_BOTTOM = {
    "resnet18": ["conv1"] + _r18_layer(1) + _r18_layer_with_shortcut(2),
    "resnet50": ["conv1"] + [f"layer1.{b}.conv2" for b in range(3)] + [f"layer2.{b}.conv2" for b in range(4)],
    "densenet121": [f"dense1.{i}.bn1" for i in range(6)] + ["trans1.bn"] + [f"dense2.{i}.bn1" for i in range(12)]
    + ["trans2.bn"],
    "senet18": [f"layer{i}.{b}.{n}" for i in (1, 2) for b in (0, 1) for n in ("bn1", "conv1")],
    "vgg19": ["features.0", "features.3", "features.7", "features.10"],
    "wide_resnet": ["conv1"] + [f"block1.{u}.conv{c}" for u in range(5) for c in (1, 2)],
    # published resnet32_k4_drop_01_*: stem + layer1's 10 convs; layer1.0's 16 -> 64 shortcut stays dense
    "resnet32x4": ["conv1"] + [f"layer1.{b}.conv{c}" for b in range(5) for c in (1, 2)],
    # published *_c20: ResNet-18's 10 points; the extra layer1.0 shortcut stays dense
    "resnet18_x2": ["conv1"] + _r18_layer(1) + _r18_layer_with_shortcut(2),
    "lenet5": ["conv1"],
    "cw_mnist": ["conv1", "conv2"],
}
EXPECTED_TOP_COUNT = {"resnet18": 10, "resnet50": 9, "densenet121": 41, "senet18": 8, "vgg19": 4, "wide_resnet": 20,
                      "resnet32x4": 20, "resnet18_x2": 10, "lenet5": 1, "cw_mnist": 2}
# The paper text's reading (reading="text"; 000/001 appendix C), where it differs from the code.
EXPECTED_BOTTOM_TEXT = {
    "resnet18": ["conv1"] + _r18_layer(1) + _r18_layer(2),
    "densenet121": ["conv1"] + [f"dense1.{i}.conv2" for i in range(6)] + [f"dense2.{i}.conv2" for i in range(12)],
    "senet18": ["layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "layer1.1.conv2", "layer2.0.conv1",
                "layer2.0.conv2"],
}
EXPECTED_TOP_COUNT_TEXT = {"resnet18": 8, "densenet121": 40, "senet18": 6}


def _params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", list(EXPECTED_BOTTOM))
def test_bottom_placement_names_match_seeds_and_params_unchanged(name):
    torch.manual_seed(0)
    plain = models.build(name)
    torch.manual_seed(0)
    model = models.build(name, defective=dict(keep=0.1, seed=0))
    assert _masked_points(model) == EXPECTED_BOTTOM[name]
    assert len(model.defect_placement["top"]) == EXPECTED_TOP_COUNT[name]
    assert not set(model.defect_placement["top"]) & set(model.defect_placement["bottom"])
    assert _params(model) == _params(plain)
    for n, m in model.named_modules():  # every defective conv followed by BN has it masked
        if isinstance(m, MaskedBatchNorm2d):
            assert (m.source.keep if m.source is not None else m.keep) == 0.1
    # same weights as the standard model: defect() only adds masks
    sd_plain, sd = plain.state_dict(), model.state_dict()
    assert set(sd) - set(sd_plain) == {f"{n}.mask" for n in EXPECTED_BOTTOM[name]}
    assert all(torch.equal(sd[k], sd_plain[k]) for k in sd_plain)


@pytest.mark.parametrize("name", list(EXPECTED_BOTTOM_TEXT))
def test_text_reading_is_an_explicit_option(name):
    model = models.build(name, input_size=16, defective=dict(keep=0.1, seed=0, reading="text"))
    assert _masked_points(model) == defective_layers(model) == EXPECTED_BOTTOM_TEXT[name]
    assert len(model.defect_placement_text["top"]) == EXPECTED_TOP_COUNT_TEXT[name]
    assert model.defect_placement_text["bottom"] != model.defect_placement["bottom"]
    # models whose code and text agree carry the same table under both names
    r50 = models.resnet50(input_size=16)
    assert r50.defect_placement_text == r50.defect_placement


def test_top_placement_resnet18():
    model = models.resnet18(defective=dict(keep=0.3, where="top", seed=0))
    # published resnet_drop_34_*: the 8 convs of layer3-4 and the layer3.0 / layer4.0 shortcuts
    assert defective_layers(model) == _r18_layer_with_shortcut(3) + _r18_layer_with_shortcut(4)
    assert model.layer4[1].conv2.feature_size == (4, 4)
    assert model.layer4[0].downsample[0].feature_size == (4, 4)
    assert isinstance(model.layer4[0].downsample[1], MaskedBatchNorm2d)
    assert model.layer4[0].downsample[1].source is model.layer4[0].downsample[0]
    text = models.resnet18(defective=dict(keep=0.3, where="top", seed=0, reading="text"))
    assert defective_layers(text) == _r18_layer(3) + _r18_layer(4)


def test_resnet50_imagenet_stem_is_not_a_3x3_defective_layer():
    model = models.resnet50(input_size=224)
    assert model.conv1.kernel_size == (7, 7) and isinstance(model.maxpool, nn.MaxPool2d)
    assert model.defect_placement["bottom"][0] == "layer1.0.conv2"
    assert len(model.defect_placement["bottom"]) == 7


def test_resnet18_imagenet_stem_224():
    model = models.resnet18(num_classes=7, input_size=224, defective=dict(keep=0.2, seed=0))
    assert model.conv1.kernel_size == (7, 7) and model.conv1.feature_size == (112, 112)
    assert model.layer2[1].conv2.feature_size == (28, 28)
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 224, 224)).shape == (1, 7)


@pytest.mark.parametrize("name", ["resnet18", "vgg19", "lenet5", "cw_mnist", "wide_resnet"])
def test_grayscale_28x28(name):
    model = models.build(name, in_channels=1, input_size=28, defective=dict(keep=0.5, seed=0))
    assert model.normalize.mean.shape == (1, 1, 1)
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


# Sparse path (C++ CPU kernels, forced) vs dense reference (conv2d * mask), forward and gradients,
# at 16x16 with batch 2 so every architecture fits the test budget. float64: with train-mode BN
# over batch 2 at 2x2 feature maps the deep nets' gradients are ill-conditioned, and float32
# round-off alone (dense vs dense in another summation order) moves them by ~0.5%.
@pytest.mark.parametrize("name,kind", [("resnet18", "neuron"), ("resnet50", "neuron"), ("densenet121", "channel"),
                                       ("senet18", "shared"), ("vgg19", "neuron"), ("wide_resnet", "neuron"),
                                       ("lenet5", "neuron"), ("cw_mnist", "neuron")])
def test_sparse_path_equals_dense_reference(name, kind):
    torch.manual_seed(0)
    size = 16 if name not in ("lenet5", "cw_mnist") else 28
    model = models.build(name, input_size=size, defective=dict(keep=0.3, kind=kind, seed=1)).double()
    ref = copy.deepcopy(model)
    x = torch.rand(2, 3, size, size, dtype=torch.float64)
    with sparsemask.backend("cpu"):
        torch.manual_seed(2)  # same dropout draws in both runs (cw_mnist)
        y = model(x)
        y.square().sum().backward()
    with sparsemask.backend("dense"):
        torch.manual_seed(2)
        y_ref = ref(x)
        y_ref.square().sum().backward()
    torch.testing.assert_close(y, y_ref)
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=lambda m: f"{name} {n}: {m}")


def test_outputs_zero_at_defective_positions_inside_model():
    model = models.resnet18(input_size=16, defective=dict(keep=0.2, seed=0))
    outs = {}
    for n, m in model.named_modules():
        if isinstance(m, MaskedBatchNorm2d):
            m.register_forward_hook(lambda mod, a, o, n=n: outs.__setitem__(n, (mod.source.mask, o)))
    with sparsemask.backend("cpu"):
        model(torch.rand(2, 3, 16, 16))
    assert len(outs) == 10                      # 9 block convs + layer2.0's shortcut
    for n, (mask, out) in outs.items():
        assert bool((out.detach()[:, ~mask] == 0).all()), n
        assert bool((out.detach()[:, mask] != 0).any()), n


def test_state_dict_round_trip_and_loading_other_masks():
    a = models.resnet18(input_size=16, defective=dict(keep=0.3, seed=0))
    b = models.resnet18(input_size=16, defective=dict(keep=0.3, seed=5))
    assert not torch.equal(a.conv1.mask, b.conv1.mask)
    b.load_state_dict(a.state_dict())
    for n in defective_layers(a):
        assert torch.equal(a.get_submodule(n).mask, b.get_submodule(n).mask)
    a.eval(), b.eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad(), sparsemask.backend("cpu"):
        torch.testing.assert_close(a(x), b(x))
    # a standard model's checkpoint has no masks: loading it into a defective model is an error
    with pytest.raises(RuntimeError, match="mask"):
        b.load_state_dict(models.resnet18(input_size=16).state_dict())


def test_widen_multiplies_defective_channels():
    plain = models.resnet18(input_size=16)
    wide = models.resnet18(input_size=16, defective=dict(keep=0.1, widen=2, seed=0))
    assert wide.conv1.out_channels == 128 and wide.layer2[1].conv2.out_channels == 256
    assert wide.layer3[0].conv1.in_channels == 256 and wide.layer3[0].conv1.out_channels == 256
    assert wide.layer3[0].downsample[0].in_channels == 256
    assert _params(wide) > _params(plain)
    assert wide(torch.rand(2, 3, 16, 16)).shape == (2, 10)
    vgg = models.vgg19(input_size=16, defective=dict(keep=0.1, widen=3, seed=0))
    assert [vgg.get_submodule(n).out_channels for n in EXPECTED_BOTTOM["vgg19"]] == [192, 192, 384, 384]
    assert vgg.features[14].in_channels == 384
    with pytest.raises(ValueError, match="concatenates"):
        models.densenet121(input_size=16, defective=dict(keep=0.1, widen=2, reading="text"))
    with pytest.raises(ValueError, match="widen.*no conv"):       # published placement: BN-output masks only
        models.densenet121(input_size=16, defective=dict(keep=0.1, widen=2))


def test_wide_resnet_variants():
    w284 = models.wrn_28_10(input_size=16)
    assert len(w284.block1) == 4 and w284.block3[0].conv1.out_channels == 640
    w = models.wide_resnet(depth=32, width=4)
    assert len(w.block1) == 5 and w.block1[0].conv1.out_channels == 64
    with pytest.raises(ValueError, match="depth"):
        models.wide_resnet(depth=30)


def test_published_structural_variants():
    """resnet32x4 (post-activation, no final BN), resnet18_x2 (c20) and resnet18_dc (dc05/dc09):
    widths and the extra layer1.0 projection; errors name the argument."""
    r = models.resnet32x4(input_size=16)
    assert [len(r.layer1), len(r.layer2), len(r.layer3)] == [5, 5, 5] and not hasattr(r, "layer4")
    assert r.conv1.out_channels == 16 and r.layer1[0].downsample[0].in_channels == 16
    assert r.layer3[4].conv2.out_channels == 256 and r.fc.in_features == 256
    assert not hasattr(r, "bn")  # post-activation: no final BN (the pre-activation wide_resnet has one)
    assert len(models.resnet32x4(input_size=16, depth=8, width=1).layer1) == 1
    x2 = models.resnet18_x2(input_size=16)
    assert [x2.conv1.out_channels] + [getattr(x2, f"layer{i}")[1].conv2.out_channels for i in range(1, 5)] == \
        [128, 128, 256, 256, 512]
    assert x2.layer1[0].downsample[0].kernel_size == (1, 1) and x2.layer1[1].downsample is None
    for keep, narrow in ((0.5, (32, 32, 64)), (0.1, (7, 7, 13))):
        assert models.dc_widths(keep) == narrow + (256, 512)
        dc = models.resnet18_dc(input_size=16, channel_keep=keep)
        assert dc.conv1.out_channels == narrow[0] and dc.layer2[0].conv1.out_channels == narrow[2]
        assert dc.layer1[0].downsample is not None and not defective_layers(dc)
    for bad in (0, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="channel_keep"):
            models.resnet18_dc(channel_keep=bad)
    with pytest.raises(ValueError, match="widths"):
        models.resnet18(widths=(64, 64, 128))
    with pytest.raises(ValueError, match="layer1_projection"):
        models.resnet18(layer1_projection=1)
    with pytest.raises(ValueError, match="depth"):
        models.resnet32x4(depth=30)
    with pytest.raises(ValueError, match="width"):
        models.resnet32x4(width=0)


def test_mnist_pooling_as_published():
    """28 px: VGG-19 pools four times with floor (28 -> 14 -> 7 -> 3 -> 1, no fifth pool),
    DenseNet-121's floor transitions end on a 3x3 map; 32 px: five pools."""
    vgg = models.vgg19(in_channels=1, input_size=28)
    pools = [m for m in vgg.features if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 4 and not any(p.ceil_mode for p in pools) and isinstance(vgg.features[-1], nn.Identity)
    assert sum(isinstance(m, nn.MaxPool2d) for m in models.vgg19(input_size=32).features) == 5
    with torch.no_grad():
        assert vgg.eval().features(torch.rand(1, 1, 28, 28)).shape[2:] == (1, 1)
    maps = []
    dn = models.densenet121(in_channels=1, input_size=28)
    dn.dense4.register_forward_hook(lambda m, a, o: maps.append(tuple(o.shape[2:])))
    with torch.no_grad():
        dn.eval()(torch.rand(1, 1, 28, 28))
    assert maps == [(3, 3)]  # ceil pooling gave 4x4
    with pytest.raises(ValueError, match="input_size"):
        models.densenet121(input_size=4)


def test_normalize_inside_model_and_per_pixel_mean():
    model = models.resnet18(input_size=16)
    data = torch.rand(20, 3, 16, 16)
    model.normalize.fit_(data, per_pixel=True)
    assert model.normalize.mean.shape == (3, 16, 16)
    assert "per-pixel" in repr(model.normalize)
    other = models.resnet18(input_size=16)
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(other.normalize.mean, data.mean(0))


def test_paper_reference_builds_deferred_masks():
    model = models.resnet18(input_size=16, defective=dict(keep=0.3, seed=0, reference="paper"))
    assert all(model.get_submodule(n).defer_mask for n in defective_layers(model))
    model.eval()
    sparse = models.resnet18(input_size=16, defective=dict(keep=0.3, seed=0))
    sparse.load_state_dict(model.state_dict())
    sparse.eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), sparse(x), atol=1e-5, rtol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="unknown architecture 'resnet19'"):
        models.build("resnet19")
    with pytest.raises(TypeError, match="unknown keys"):
        models.resnet18(defective=dict(keep=0.1, drop=0.9))
    with pytest.raises(TypeError, match="'keep'"):
        models.resnet18(defective=dict(where="bottom"))
    with pytest.raises(ValueError, match="keep must be in"):
        models.resnet18(defective=dict(keep=2))
    with pytest.raises(ValueError, match="no layer named 'layer9'"):
        models.resnet18(defective=dict(keep=0.1, where=["layer9"]))
    with pytest.raises(ValueError, match="num_classes"):
        models.resnet18(num_classes=0)
    with pytest.raises(ValueError, match="stem"):
        models.resnet18(stem="tiny")
    model = models.resnet18(input_size=32, defective=dict(keep=0.1, seed=0))
    with pytest.raises(ValueError, match=r"'conv1'.*feature size \(32, 32\) but the input gives \(16, 16\)"):
        model(torch.rand(1, 3, 16, 16))


def test_where_by_block_prefix():
    model = models.resnet18(input_size=16, defective=dict(keep=0.5, where=["layer3"], seed=0))
    names = defective_layers(model)
    assert names[0] == "layer3.0.conv1" and "layer3.0.downsample.0" in names and len(names) == 5
    assert all(isinstance(model.get_submodule(n), DefectiveConv2d) for n in names)


def test_resnet18_width_multiplier_scales_every_stage():
    """``width`` multiplies (stem, layer1..layer4) = (64, 64, 128, 256, 512); the published ×2
    and DC layouts scale the same way."""
    from sparsemask.models import resnet18, resnet18_dc

    model = resnet18(num_classes=10, in_channels=1, input_size=28, width=0.25)
    assert model.conv1.out_channels == 16
    assert [getattr(model, f"layer{i}")[0].conv1.out_channels for i in range(1, 5)] == [16, 32, 64, 128]
    assert model.fc.in_features == 128
    assert resnet18_dc(width=0.5).layer1[0].conv1.out_channels == 16  # ceil(0.5 * 64) * 0.5
    for bad in (0, -1, True, "0.5", float("nan")):
        with pytest.raises(ValueError, match="width"):
            resnet18(width=bad)


def test_experiment_model_options_apply_only_to_the_model_arch():
    """cfg["model"]'s width is ResNet-18's multiplier; a LeNet or WRN source keeps its defaults."""
    from sparsemask.experiments.specs import builder_kwargs

    cfg = {"model": {"arch": "resnet18", "depth": None, "width": 0.25}}
    assert builder_kwargs({"arch": "resnet18"}, cfg) == {"width": 0.25}
    assert builder_kwargs({"arch": "wide_resnet"}, cfg) == {}
    assert builder_kwargs({"arch": "wide_resnet", "model_kwargs": {"depth": 8}}, cfg) == {"depth": 8}
