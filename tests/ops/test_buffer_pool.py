"""The CPU buffer pool of the ops' large outputs (csrc/cpu/buffer_pool.h): outputs come back
from it across calls, reused memory never leaks old values into a result, and the pool's
limit comes from SPARSEMASK_CPU_POOL_MB."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import sparsemask
from sparsemask.plan import cpu_pool_info, cpu_pool_release

# Large enough (N*C*H*W*4 bytes >= 1 MiB) that the op's output is pooled.
N, C, K, HW = 16, 16, 32, 32


def _case(seed=0, dtype=torch.float64, fmt=torch.channels_last):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N, C, HW, HW, generator=g, dtype=torch.float64).to(dtype).contiguous(memory_format=fmt)
    w = (torch.randn(K, C, 3, 3, generator=g, dtype=torch.float64) * 0.1).to(dtype)
    mask = torch.rand(K, HW, HW, generator=g) < 0.2
    return x, w, mask


def _sparse(x, w, mask):
    with sparsemask.backend("cpu"):
        return sparsemask.masked_conv2d(x, w, None, mask, padding=1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("fmt", [torch.channels_last, torch.contiguous_format], ids=["channels_last", "nchw"])
def test_outputs_are_reused_and_poisoned_memory_never_shows(dtype, fmt):
    """The forward writes every output element: channels_last rows zeroed as they are
    written (no zero-fill pass), other layouts zeroed first — checked on a reused block
    full of NaN."""
    x, w, mask = _case(dtype=dtype, fmt=fmt)
    ref = F.conv2d(x.double(), w.double(), padding=1).masked_fill(~mask, 0).to(dtype)
    out = _sparse(x, w, mask)
    assert out.untyped_storage().nbytes() >= 1 << 20
    ptr = out.data_ptr()
    out.fill_(float("nan"))  # what the next call finds in the reused block
    del out
    hits = cpu_pool_info().hits
    again = _sparse(x, w, mask)
    assert cpu_pool_info().hits > hits
    assert again.data_ptr() == ptr, "the freed block of the same size should be handed out again"
    assert not again.isnan().any()
    torch.testing.assert_close(again, ref, atol=0.05 if dtype == torch.bfloat16 else 1e-7, rtol=0.02)


@pytest.mark.parametrize("fmt", [torch.channels_last, torch.contiguous_format], ids=["channels_last", "nchw"])
def test_poisoned_memory_never_shows_at_odd_sizes(fmt):
    """Zeroing row by row covers the tails too: N not a multiple of the image block,
    H_out*W_out (900) not a multiple of the position chunk (64)."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(13, C, 30, 30, generator=g, dtype=torch.float64).contiguous(memory_format=fmt)
    w = torch.randn(K, C, 3, 3, generator=g, dtype=torch.float64) * 0.1
    mask = torch.rand(K, 30, 30, generator=g) < 0.1
    ref = F.conv2d(x, w, padding=1).masked_fill(~mask, 0)
    for _ in range(2):
        out = _sparse(x, w, mask)
        torch.testing.assert_close(out, ref)
        out.fill_(float("nan"))
        del out


def test_grad_input_from_reused_memory_is_exact():
    x, w, mask = _case(1)
    go = torch.randn(N, K, HW, HW, dtype=x.dtype).contiguous(memory_format=torch.channels_last)
    xr = x.clone().requires_grad_()
    (F.conv2d(xr, w, padding=1).masked_fill(~mask, 0) * go).sum().backward()
    for _ in range(2):
        xs = x.clone().requires_grad_()
        (_sparse(xs, w, mask) * go).sum().backward()
        torch.testing.assert_close(xs.grad, xr.grad)
        xs.grad.fill_(float("nan"))  # poison the block before it returns to the pool
        del xs


def test_live_outputs_never_share_memory_and_resize_works():
    x, w, mask = _case(2)
    a, b = _sparse(x, w, mask), _sparse(x, w, mask)
    assert a.data_ptr() != b.data_ptr()
    torch.testing.assert_close(a, b)
    a.resize_(2 * a.numel())  # a pooled storage stays resizable (grows through the pool)
    assert a.numel() == 2 * b.numel()


def test_release_returns_idle_blocks():
    x, w, mask = _case(3)
    out = _sparse(x, w, mask)
    del out
    assert cpu_pool_info().idle_blocks >= 1
    cpu_pool_release()
    info = cpu_pool_info()
    assert info.idle_blocks == 0 and info.idle_bytes == 0


@pytest.mark.parametrize("value, limit", [("0", 0), ("16", 16 << 20), ("lots", 0), ("-3", 0)])
def test_limit_from_environment(value, limit):
    code = ("import torch, sparsemask\n"
            "from sparsemask.plan import cpu_pool_info\n"
            "x = torch.rand(16, 16, 32, 32).contiguous(memory_format=torch.channels_last)\n"
            "w = torch.randn(32, 16, 3, 3); m = torch.rand(32, 32, 32) < 0.2\n"
            "with sparsemask.backend('cpu'):\n"
            "    y = sparsemask.masked_conv2d(x, w, None, m, padding=1)\n"
            "del y\n"
            "i = cpu_pool_info(); print(i.limit_bytes, i.idle_blocks)\n")
    env = dict(os.environ, SPARSEMASK_CPU_POOL_MB=value)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    got_limit, idle = map(int, res.stdout.split())
    assert got_limit == limit
    assert (idle >= 1) == (limit > 0)
