"""The benchmark lives in sparsemask/benchmarks/masked_conv.py (shipped with the package, so
`sparsemask bench --what masked_conv` works from a wheel too); this path keeps the documented
command `python benchmarks/bench_masked_conv.py ...` working."""
from sparsemask.benchmarks.masked_conv import main

if __name__ == "__main__":
    raise SystemExit(main())
