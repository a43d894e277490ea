"""The mask plan cache never serves a stale plan, whatever path wrote the mask (issue 15,
item 2): writes that bump the version counter and writes that do not (``.data``,
``.numpy()``, inference mode, the untyped storage)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import sparsemask
from sparsemask.plan import mask_plan


def _write_data(mask, new):
    mask.data.copy_(new)


def _write_numpy(mask, new):
    mask.numpy()[...] = new.numpy()


def _write_inference(mask, new):
    with torch.inference_mode():
        mask.copy_(new)


def _write_storage(mask, new):
    mask.untyped_storage().copy_(new.contiguous().untyped_storage())


def _write_view(mask, new):
    with torch.no_grad():
        mask.view(-1)[:] = new.view(-1)


WRITES = [_write_data, _write_numpy, _write_inference, _write_storage, _write_view]


@pytest.mark.parametrize("backend", ["cpu", "triton"])
@pytest.mark.parametrize("write", WRITES, ids=lambda f: f.__name__[7:])
def test_mask_written_in_place_is_replanned(write, backend):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64, generator=g)
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64, generator=g)
    b = torch.randn(5, dtype=torch.float64, generator=g)
    mask = torch.rand(5, 9, 7, generator=g) < 0.5
    new = torch.rand(5, 9, 7, generator=g) < 0.5
    assert not torch.equal(mask, new)
    with sparsemask.backend(backend):
        sparsemask.masked_conv2d(x, w, b, mask, padding=1)  # plans and caches the old mask
        write(mask, new)
        assert torch.equal(mask, new)
        got = sparsemask.masked_conv2d(x, w, b, mask, padding=1)
    torch.testing.assert_close(got, F.conv2d(x, w, b, padding=1) * new, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("write", WRITES, ids=lambda f: f.__name__[7:])
def test_mask_plan_follows_the_contents(write):
    g = torch.Generator().manual_seed(12)
    mask = torch.rand(4, 6, 5, generator=g) < 0.5
    new = torch.rand(4, 6, 5, generator=g) < 0.5
    mask_plan(mask)
    write(mask, new)
    got = mask_plan(mask)
    assert torch.equal(got.pos_count, new.reshape(4, -1).sum(0).int())


def test_defective_layer_mask_written_through_data():
    torch.manual_seed(13)
    layer = sparsemask.nn.DefectiveConv2d(3, 4, 3, padding=1, keep=0.5, feature_size=(6, 6), seed=1).double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    with sparsemask.backend("cpu"):
        layer(x)
        layer.mask.data.copy_(~layer.mask)
        got = layer(x)
    want = F.conv2d(x, layer.weight, layer.bias, padding=1) * layer.mask
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("layout", ["transposed", "strided"])
def test_non_contiguous_mask_written_through_data(layout):
    g = torch.Generator().manual_seed(14)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=g)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=g)
    base = torch.rand(4, 8, 8, generator=g) < 0.5 if layout == "transposed" else torch.rand(4, 8, 16, generator=g) < 0.5
    mask = base.transpose(1, 2) if layout == "transposed" else base[:, :, ::2]
    with sparsemask.backend("cpu"):
        sparsemask.masked_conv2d(x, w, None, mask, padding=1)
        base.data.copy_(~base)
        got = sparsemask.masked_conv2d(x, w, None, mask, padding=1)
    torch.testing.assert_close(got, F.conv2d(x, w, padding=1) * mask, atol=1e-12, rtol=1e-12)
