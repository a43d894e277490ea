"""The attacks on a CUDA device: same results as on the CPU (seeds draw on the CPU)."""
from __future__ import annotations

import copy

import pytest
import torch

from sparsemask import attacks as A


@pytest.mark.cuda
def test_attacks_on_cuda_match_cpu(digits_model, batch):
    x, y = batch
    gpu_model = copy.deepcopy(digits_model).cuda()
    xg, yg = x.cuda(), y.cuda()
    makers = [lambda m: A.FGSM(m, eps=0.1, progress=False),
              lambda m: A.PGD(m, eps=0.5, norm="2", steps=5, seed=0, progress=False),
              lambda m: A.PGD(m, eps=3.0, norm="1", steps=5, seed=0, progress=False),
              lambda m: A.MIFGSM(m, eps=0.1, steps=5, progress=False),
              lambda m: A.DeepFool(m, progress=False),
              lambda m: A.CW(m, binary_steps=2, steps=10, lr=0.05, progress=False)]
    for make in makers:
        cpu = make(digits_model)(x, y)
        gpu = make(gpu_model)(xg, yg)
        assert gpu.device.type == "cuda"
        # sign steps can flip where a gradient entry is ~0, so compare success, not bits
        assert (A.fooled_mask(gpu_model, gpu, yg).cpu() == A.fooled_mask(digits_model, cpu, y)).double().mean() > 0.9
        assert (gpu.cpu() - cpu).abs().max() < 0.6
    xb = A.Boundary(gpu_model, steps=20, seed=0, progress=False)(xg, yg)
    assert xb.device.type == "cuda" and xb.min() >= 0 and xb.max() <= 1
    noisy = A.gaussian_noise_255(xg, 8, seed=0)
    torch.testing.assert_close(noisy.cpu(), A.gaussian_noise_255(x, 8, seed=0))
    assert A.patch_shuffle(xg, 4, seed=0).device.type == "cuda"
    assert A.jpeg(xg, 50).device.type == "cuda"
