"""Success rate of every attack on the digits test model (tests/conftest.py's DigitsCNN).

Usage: python benchmarks/attack_table_digits.py [--n 200]
Prints a markdown table: attack, settings, success rate (among correctly classified test
examples), median L2 / L∞ of the perturbation, wall time. CPU, about a minute.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from conftest import train_digits_model  # noqa: E402

from sparsemask import attacks as A  # noqa: E402


def load_digits():
    from sklearn.datasets import load_digits as ld

    d = ld()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=200, help="test examples attacked")
    args = p.parse_args()
    torch.set_num_threads(1)
    xtr, ytr, xte, yte = load_digits()
    model = train_digits_model(xtr, ytr)
    x, y = xte[: args.n], yte[: args.n]
    print(f"digits test model: clean accuracy {A.accuracy(model, xte, yte):.4f} on {len(yte)} test images; "
          f"attacking the first {args.n}\n")
    rows = [
        ("FGSM", "Linf eps=0.1", A.FGSM(model, eps=0.1)),
        ("FGSM", "Linf eps=0.2", A.FGSM(model, eps=0.2)),
        ("FGSM (FGM)", "L2 eps=1.0", A.FGSM(model, eps=1.0, norm="2")),
        ("FGSM (FGM)", "L1 eps=8", A.FGSM(model, eps=8.0, norm="1")),
        ("PGD", "Linf eps=0.1, 20 steps, random start", A.PGD(model, eps=0.1, steps=20, seed=0)),
        ("PGD", "L2 eps=1.0, 20 steps, random start", A.PGD(model, eps=1.0, norm="2", steps=20, seed=0)),
        ("PGD", "L1 eps=8, 20 steps, sparse step q=0.05", A.PGD(model, eps=8.0, norm="1", steps=20,
                                                            l1_sparsity=0.05, seed=0)),
        ("BIM", "Linf eps=0.1, 10 steps", A.BIM(model, eps=0.1, steps=10)),
        ("MI-FGSM", "Linf eps=0.1, 10 steps, mu=1", A.MIFGSM(model, eps=0.1, steps=10)),
        ("CW-L2", "kappa=0, 9 binary steps x 100, lr 0.05", A.CW(model, kappa=0, binary_steps=9, steps=100, lr=0.05)),
        ("DeepFool", "L2, overshoot 0.02", A.DeepFool(model, norm="2")),
        ("DeepFool", "Linf, overshoot 0.02", A.DeepFool(model, norm="inf")),
        ("Boundary", "500 steps (unbounded)", A.Boundary(model, steps=500, seed=0)),
        ("EOT(PGD)", "Linf eps=0.1, n=4 (deterministic model)", A.EOT(A.PGD(model, eps=0.1, steps=20, seed=0), n=4)),
        ("APGD-CE", "Linf eps=0.1, 100 steps", A.APGD(model, eps=0.1, loss="ce", seed=0)),
        ("APGD-DLR", "Linf eps=0.1, 100 steps", A.APGD(model, eps=0.1, loss="dlr", seed=0)),
        ("APGD-T", "Linf eps=0.1, 100 steps x 9 targets", A.APGDT(model, eps=0.1, seed=0)),
        ("APGD-CE", "L2 eps=1.0, 100 steps", A.APGD(model, eps=1.0, norm="2", loss="ce", seed=0)),
        ("Square", "Linf eps=0.1, 5000 queries", A.Square(model, eps=0.1, seed=0)),
        ("Square", "L2 eps=1.0, 5000 queries, p_init=0.3", A.Square(model, eps=1.0, norm="2", p_init=0.3, seed=0)),
    ]
    print("| attack | settings | success rate | median L2 | median Linf | time (s) |")
    print("|---|---|---|---|---|---|")
    for name, settings, attack in rows:
        attack.progress = False
        t0 = time.perf_counter()
        x_adv = attack(x, y)
        dt = time.perf_counter() - t0
        sr = A.attack_success_rate(model, x, x_adv, y)
        norms = A.perturbation_norms(x, x_adv)
        fooled = A.fooled_mask(model, x_adv, y)
        l2 = norms["l2"][fooled].median().item() if fooled.any() else float("nan")
        li = norms["linf"][fooled].median().item() if fooled.any() else float("nan")
        print(f"| {name} | {settings} | {100 * sr:.1f}% | {l2:.3f} | {li:.3f} | {dt:.1f} |")
    # Transfer from an ensemble of two independently trained surrogates.
    surrogates = [train_digits_model(xtr, ytr, epochs=8, seed=s) for s in (1, 2)]
    x_adv = A.PGD(A.Ensemble(surrogates), eps=0.15, steps=20, seed=0, progress=False)(x, y)
    print(f"| transfer PGD (ensemble of 2 surrogates) | Linf eps=0.15, 20 steps | "
          f"{100 * A.attack_success_rate(model, x, x_adv, y):.1f}% | - | - | - |")
    print("\nSuccess rate: fraction of correctly classified examples whose adversarial example is "
          "misclassified. Median norms over fooled examples. Boundary S(M) = "
          f"{A.boundary_score(x, A.Boundary(model, steps=500, seed=0, progress=False)(x, y)):.3g}")


if __name__ == "__main__":
    main()
