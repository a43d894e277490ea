"""The benchmark lives in sparsemask/benchmarks/train_step.py (shipped with the package, so
`sparsemask bench --what train_step` works from a wheel too); this path keeps the documented
command `python benchmarks/bench_train_step.py ...` working."""
from sparsemask.benchmarks.train_step import main

if __name__ == "__main__":
    raise SystemExit(main())
