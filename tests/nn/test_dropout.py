"""MC dropout, combining runs (mean / vote), RandomizedInference."""
import copy

import pytest
import torch
from torch import nn

from sparsemask.nn.dropblock import DropBlock2d
from sparsemask.nn.dropout import MCDropout, RandomizedInference, combine_outputs, enable_mc_dropout, vote


def _logits_for(labels, k=4):
    """Logits [N, k] whose argmax is ``labels`` (random values otherwise)."""
    out = torch.randn(len(labels), k)
    out[torch.arange(len(labels)), torch.tensor(labels)] = 10.0
    return out


def test_vote_majority_and_ties_to_the_smaller_label():
    runs = [_logits_for(lab) for lab in ([2, 1, 3], [2, 3, 3], [1, 3, 0], [1, 0, 0])]
    # column 0: 2,2,1,1 -> tie -> 1; column 1: 1,3,3,0 -> 3; column 2: 3,3,0,0 -> tie -> 0
    assert combine_outputs(runs, "vote").argmax(1).tolist() == [1, 3, 0]
    labels = torch.stack([r.argmax(1) for r in runs])
    assert vote(labels, 4).tolist() == [1, 3, 0]
    many = [_logits_for([3]) for _ in range(500)] + [_logits_for([2]) for _ in range(500)]
    assert combine_outputs(many, "vote").argmax(1).tolist() == [2]  # tie-break survives large n
    many.append(_logits_for([3]))
    assert combine_outputs(many, "vote").argmax(1).tolist() == [3]


def test_mean_is_log_of_averaged_probabilities():
    runs = [torch.randn(5, 7) for _ in range(6)]
    got = combine_outputs(runs, "mean")
    torch.testing.assert_close(got.exp(), torch.stack([r.softmax(1) for r in runs]).mean(0))
    torch.testing.assert_close(got.exp().sum(1), torch.ones(5))


def test_vote_is_straight_through_mean():
    runs = [torch.randn(3, 5, requires_grad=True) for _ in range(4)]
    combine_outputs(runs, "vote")[:, 1].sum().backward()
    grads_vote = [r.grad.clone() for r in runs]
    for r in runs:
        r.grad = None
    combine_outputs(runs, "mean")[:, 1].sum().backward()
    for gv, r in zip(grads_vote, runs):
        torch.testing.assert_close(gv, r.grad)


def test_mc_dropout_rate_scaling_and_modes():
    x = torch.ones(200, 500)
    layer = MCDropout(keep=0.8, seed=0).train()
    out = layer(x)
    assert abs((out == 0).float().mean().item() - 0.2) < 0.005
    assert set(torch.unique(out).tolist()) == {0.0, 1.25}
    assert torch.equal(layer.eval()(x), x)
    assert not torch.equal(MCDropout(0.8, mc=True).eval()(x), x)


def test_enable_mc_dropout_replaces_torch_dropout(digits_data):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.25), nn.Linear(32, 10))
    # a nested package layer with an `mc` flag: DropBlock on the logits seen as a 2x5 map
    model.add_module("block", nn.Sequential(nn.Unflatten(1, (1, 2, 5)), DropBlock2d(0.9, 1), nn.Flatten()))
    model.eval()
    x = digits_data[2][:20]
    before = model(x)
    assert enable_mc_dropout(model) is model
    assert isinstance(model[3], MCDropout) and model[3].keep == 0.75 and model[3].mc
    assert model.block[1].mc
    assert not torch.equal(model(x), before)  # dropout active in eval mode now
    enable_mc_dropout(model, False)
    assert torch.equal(model(x), before)


def test_randomized_inference_averages_runs_and_keeps_mode(digits_data, digits_model):
    _, _, x, y = digits_data
    model = copy.deepcopy(digits_model)
    model.head = nn.Sequential(MCDropout(0.7, mc=True, seed=4), model.head)
    for combine in ("mean", "vote"):
        mc = RandomizedInference(model, n=8, combine=combine)
        model.head[0].reseed(4)
        pred = mc.predict(x)
        model.head[0].reseed(4)
        assert torch.equal(mc.predict(x), pred)
        assert (pred == y).float().mean() > 0.8
        assert not model.training  # the wrapper does not switch modes
    model.head[0].reseed(4)
    runs = [model(x[:5]) for _ in range(3)]
    model.head[0].reseed(4)
    torch.testing.assert_close(RandomizedInference(model, n=3)(x[:5]), combine_outputs(runs, "mean"))


def test_bad_arguments():
    with pytest.raises(ValueError, match="combine"):
        combine_outputs([torch.zeros(2, 3)], "median")
    with pytest.raises(ValueError, match="at least one"):
        combine_outputs([], "mean")
    with pytest.raises(ValueError, match=r"\[N, K\]"):
        combine_outputs([torch.zeros(3)], "mean")
    with pytest.raises(ValueError, match="n must"):
        RandomizedInference(nn.Identity(), n=0)
    with pytest.raises(ValueError, match="combine"):
        RandomizedInference(nn.Identity(), combine="probs")
    with pytest.raises(TypeError, match="model"):
        RandomizedInference(lambda x: x)
    with pytest.raises(ValueError, match="keep"):
        MCDropout(keep=0)
    with pytest.raises(TypeError, match="generator"):
        MCDropout(generator=0)


@pytest.mark.cuda
def test_all_randomized_pieces_run_on_cuda_and_reproduce():
    from sparsemask.nn.mad import GridMask, MADClassifier
    from sparsemask.nn.randomization import RandomResizePad
    from sparsemask.nn.spiking import RandomSpiking
    from sparsemask.nn.dropblock import DropBlock2d, SpatialDropout2d

    dev = torch.device("cuda")
    x = torch.rand(4, 3, 16, 16, device=dev)
    makers = [lambda: GridMask(4, 0.75, seed=0), lambda: RandomResizePad(20, 16, p_flip=0.5, seed=0),
              lambda: RandomSpiking(0.8, "mc", seed=0), lambda: DropBlock2d(0.9, 3, mc=True, seed=0),
              lambda: SpatialDropout2d(0.9, mc=True, seed=0), lambda: MCDropout(0.5, mc=True, seed=0)]
    for make in makers:
        a, b = make().eval(), make().eval()
        out = a(x)
        assert out.device.type == "cuda" and torch.equal(out, b(x)) and not torch.equal(out, a(x))
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10)).to(dev)
    mad = MADClassifier(model, grid=4, n=3, seed=0)
    assert mad(x).device.type == "cuda" and mad.predict(x).shape == (4,)
    # a CPU generator drives CUDA tensors too (draws on the CPU, then moved)
    out = RandomSpiking(0.5, "mc", generator=torch.Generator().manual_seed(1)).eval()(x)
    assert out.device.type == "cuda"
