"""DropBlock and SpatialDropout (seed 001's dropout baselines)."""
import pytest
import torch
import torch.nn.functional as F

from sparsemask.nn.dropblock import DropBlock2d, SpatialDropout2d


def _opening(dropped: torch.Tensor, bs: int) -> torch.Tensor:
    """Union of all bs x bs squares lying entirely inside ``dropped`` [N, C, H, W] (bool)."""
    full = -F.max_pool2d(-dropped.float(), bs, stride=1)  # 1 where a whole block is dropped
    return F.max_pool2d(F.pad(full, (bs - 1,) * 4), bs, stride=1) > 0


@pytest.mark.parametrize("block_size", [1, 2, 3, 5])
def test_drops_whole_blocks_of_the_right_size(block_size):
    layer = DropBlock2d(keep=0.8, block_size=block_size, seed=0).train()
    x = torch.randn(8, 6, 13, 11)
    layer(x)
    dropped = ~layer.last_mask
    assert dropped.any()
    # the dropped set is exactly a union of block_size x block_size squares inside the map
    assert torch.equal(_opening(dropped, block_size), dropped)
    if block_size > 1:  # and not of bigger squares only: some single blocks are visible
        assert not torch.equal(_opening(dropped, block_size + 1), dropped)


def test_isolated_blocks_are_exactly_block_size_squares():
    layer = DropBlock2d(keep=0.995, block_size=3, seed=1).train()
    layer(torch.randn(64, 4, 16, 16))
    dropped = ~layer.last_mask
    sizes = dropped.flatten(2).sum(-1)
    # maps with exactly one block: 9 dropped units forming a 3x3 square
    single = (sizes == 9).nonzero()
    assert len(single) > 5
    for n, c in single.tolist():
        rows, cols = dropped[n, c].nonzero().unbind(1)
        assert rows.max() - rows.min() == 2 and cols.max() - cols.min() == 2


def test_drop_rate_and_rescaling():
    layer = DropBlock2d(keep=0.9, block_size=3, seed=2).train()
    x = torch.ones(32, 16, 16, 16)
    out = layer(x)
    mask = layer.last_mask
    frac = 1 - mask.float().mean().item()
    # gamma targets 1 - keep; overlapping blocks make the real rate a little lower
    assert 0.07 < frac < 0.105
    scale = mask.numel() / mask.sum()
    torch.testing.assert_close(out, mask.float() * scale)
    torch.testing.assert_close(out.sum(), torch.tensor(float(x.numel())))  # mean preserved
    # independent per image and channel
    assert not torch.equal(mask[0, 0], mask[0, 1]) and not torch.equal(mask[0, 0], mask[1, 0])
    plain = DropBlock2d(keep=0.9, block_size=3, rescale=False, seed=2).train()
    assert torch.equal(plain(x), plain.last_mask.float())


def test_eval_mode_and_mc():
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(DropBlock2d(0.5, 3).eval()(x), x)
    assert not torch.equal(DropBlock2d(0.5, 3, mc=True, seed=0).eval()(x), x)
    assert torch.equal(SpatialDropout2d(0.5).eval()(x), x)
    assert not torch.equal(SpatialDropout2d(0.5, mc=True, seed=0).eval()(x), x)


def test_block_larger_than_map_is_clipped_and_seeds_reproduce():
    layer = DropBlock2d(keep=0.5, block_size=7, seed=3).train()
    x = torch.randn(16, 4, 4, 5)
    out = layer(x)
    dropped = ~layer.last_mask
    assert torch.equal(_opening(dropped, 4), dropped)  # 4x4 blocks: the map's smaller side
    assert torch.equal(DropBlock2d(keep=0.5, block_size=7, seed=3).train()(x), out)


def test_spatial_dropout_drops_whole_channels():
    layer = SpatialDropout2d(keep=0.9, seed=0).train()
    x = torch.rand(64, 32, 5, 5) + 0.1
    out = layer(x)
    zero = (out == 0).flatten(2)
    assert torch.equal(zero.all(-1), zero.any(-1))  # channels are dropped whole
    kept = ~zero.any(-1)
    torch.testing.assert_close(out[kept], x[kept] / 0.9)
    assert abs(1 - kept.float().mean().item() - 0.1) < 0.03


def test_bad_arguments():
    with pytest.raises(ValueError, match="keep"):
        DropBlock2d(keep=0.0)
    with pytest.raises(ValueError, match="keep"):
        DropBlock2d(keep=1.1)
    with pytest.raises(ValueError, match="block_size"):
        DropBlock2d(block_size=0)
    with pytest.raises(ValueError, match="feature maps"):
        DropBlock2d().train()(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="keep"):
        SpatialDropout2d(keep=-0.1)
    with pytest.raises(ValueError, match="feature maps"):
        SpatialDropout2d()(torch.rand(3, 8))
