"""pytest-benchmark entries for a whole training step (not part of `make test`).

    .venv/bin/python -m pytest benchmarks/test_bench_train_step.py --benchmark-enable \
        --benchmark-columns=median,iqr,rounds --benchmark-sort=name

One step (forward, cross-entropy, backward, SGD with momentum) of a bottom-defective
ResNet-18 on CIFAR-sized float32 channels_last inputs, N=64: the dense reference (the
published F.conv2d + mask) against the default ``auto`` backend (sparse kernels and the fused
defective unit). bench_train_step.py is the full sweep with peak memory and the RESULTS.md table.
"""
from __future__ import annotations

import pytest
import torch

import sparsemask
from sparsemask.models import resnet18


@pytest.mark.parametrize("keep", [0.1, 0.3])
@pytest.mark.parametrize("backend", ["dense", "auto"])
def test_train_step(benchmark, keep, backend):
    torch.manual_seed(0)
    model = resnet18(num_classes=10, input_size=32, defective=dict(keep=keep, where="bottom", seed=0))
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(64, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,))

    def step():
        opt.zero_grad(set_to_none=True)
        with sparsemask.backend(backend):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
        opt.step()
        return loss.item()

    step()  # warm-up: mask plans, scratch buffers
    loss = benchmark.pedantic(step, rounds=5, iterations=1)
    assert torch.isfinite(torch.tensor(loss))
