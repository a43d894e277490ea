"""Benchmarks shipped with the package (``sparsemask bench``): ``masked_conv`` (the op vs
dense conv2d + mask, per layer shape and keep) and ``train_step`` (a whole model's training
step, sparse vs the published dense order). benchmarks/RESULTS.md records their runs; the
source tree's benchmarks/bench_*.py run the same code."""
