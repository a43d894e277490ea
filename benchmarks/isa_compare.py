"""Compare builds (or forced ISA levels) of the CPU kernels on a shared machine: interleaved.

Each "build" is a directory whose `sparsemask` package (with its built _C) is imported,
optionally with SPARSEMASK_CPU_CAPABILITY forced. Every round runs one subprocess per build,
in alternating order, and each subprocess times the sparse CPU kernel (backend "cpu") with
the timers of sparsemask.benchmarks.masked_conv (median of --reps): forward and
forward+backward for each shape and keep. The report gives, per case, each build's median
over rounds and the median over rounds of the per-round time ratio to the first build —
ratios of runs taken minutes apart on a noisy machine are less reliable than ratios of
neighbouring runs.

    # the default (dispatched) build vs a -march=native one, and forced lower levels
    python benchmarks/isa_compare.py native=/tmp/native_src default=. avx2=.:avx2 --rounds 5

Defaults: one thread, timed by the thread's CPU time (time.thread_time), so that time
other jobs hold the core does not count; --threads 2 --clock wall for what a user waits.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

WORKER = r"""
import json, sys, torch
import sparsemask
from sparsemask.benchmarks import masked_conv as mc
cases, reps, threads, clock = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(threads)
mc.SETTINGS["clock"] = clock
level = sparsemask.cpu_capability() if hasattr(sparsemask, "cpu_capability") else "native (no dispatch)"
out = {"level": level, "times": {}}
for name, keep, n in cases:
    shape = mc.SHAPES[name]
    c_in, c_out, h, stride, kernel, padding = shape
    g = torch.Generator().manual_seed(0)
    ho = shape.h_out
    fmt = torch.channels_last
    x = torch.rand(n, c_in, h, h, generator=g).contiguous(memory_format=fmt).requires_grad_(c_in != 3)
    w = (torch.randn(c_out, c_in, kernel, kernel, generator=g) * 0.1).contiguous(memory_format=fmt).requires_grad_()
    b = torch.randn(c_out, generator=g).requires_grad_()
    mask = torch.rand(c_out, ho, ho, generator=g) < keep
    grad = torch.randn(n, c_out, ho, ho, generator=g).contiguous(memory_format=fmt)
    t = mc.time_modes(mc.sparse_conv_on("cpu"), (x, w, b, mask, grad), stride, padding, c_in != 3, reps)
    for mode in ("forward", "forward+backward"):
        out["times"][f"{name} keep {keep} N={n} {mode}"] = t[mode]
print(json.dumps(out))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("builds", nargs="+", help="label=DIR[:LEVEL]; the first is the reference")
    parser.add_argument("--cases", nargs="+", default=["64-64@32:0.1:32", "64-64@32:0.5:32", "128-128@16:0.1:32",
                                                         "64-128@32s2:0.3:32", "3-64@32:0.3:32"],
                        help="SHAPE:KEEP:N (shapes of sparsemask.benchmarks.masked_conv)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["thread", "wall"], default="thread",
                        help="thread CPU time (default, with --threads 1: excludes time other jobs hold the core) "
                             "or wall time")
    parser.add_argument("--json", default=None, help="write every round's times here")
    args = parser.parse_args(argv)
    builds = []
    for spec in args.builds:
        label, _, rest = spec.partition("=")
        path, _, level = rest.partition(":")
        builds.append((label, os.path.abspath(path), level or None))
    cases = [[s, float(k), int(n)] for s, k, n in (c.split(":") for c in args.cases)]
    rounds: dict[str, list[dict]] = {label: [] for label, _, _ in builds}
    levels = {}
    for r in range(args.rounds):
        order = builds if r % 2 == 0 else builds[::-1]
        for label, path, level in order:
            env = dict(os.environ)
            env.pop("SPARSEMASK_CPU_CAPABILITY", None)
            if level:
                env["SPARSEMASK_CPU_CAPABILITY"] = level
            res = subprocess.run([sys.executable, "-c", WORKER, json.dumps(cases), str(args.reps), str(args.threads),
                                  args.clock],
                                 cwd=path, env=env, capture_output=True, text=True, check=True)
            out = json.loads(res.stdout.strip().splitlines()[-1])
            levels[label] = out["level"]
            rounds[label].append(out["times"])
            print(f"round {r + 1} {label} ({out['level']}): " +
                  ", ".join(f"{v:.1f}" for v in out["times"].values()), flush=True)
    ref = builds[0][0]
    keys = list(rounds[ref][0])
    print(f"\n| case | {' | '.join(f'{b[0]} ms ({levels[b[0]]})' for b in builds)} | "
          + " | ".join(f"{b[0]}/{ref}" for b in builds[1:]) + " |")
    print("|---" * (1 + 2 * len(builds) - 1) + "|")
    for k in keys:
        meds = [statistics.median(rd[k] for rd in rounds[b[0]]) for b in builds]
        ratios = [statistics.median(rounds[b[0]][i][k] / rounds[ref][i][k] for i in range(args.rounds))
                  for b in builds[1:]]
        print(f"| {k} | " + " | ".join(f"{m:.2f}" for m in meds) + " | " + " | ".join(f"{x:.3f}" for x in ratios) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"builds": builds, "levels": levels, "cases": cases, "rounds": rounds}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
