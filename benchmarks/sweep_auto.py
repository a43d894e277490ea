"""The sweep lives in sparsemask/benchmarks/crossover.py (shipped with the package, so
`sparsemask bench --what crossover -- sweep ...` works from a wheel too); this path gives it
the documented command `python benchmarks/sweep_auto.py {sweep,generate,verify} ...`."""
from sparsemask.benchmarks.crossover import main

if __name__ == "__main__":
    raise SystemExit(main())
