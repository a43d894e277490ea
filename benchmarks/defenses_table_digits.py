"""Clean and PGD accuracy of every sparsemask.nn defense on scikit-learn digits (CPU, ~5 min).

Usage: python benchmarks/defenses_table_digits.py [--n 200] [--eps 0.1] [--steps 20] [--eot 8]

One small CNN per defense (the tests' DigitsCNN idea: conv 16 - conv 32 stride 2 - linear,
plus an adaptive 4x4 pooling so the randomization layer's larger inputs fit), trained for 15
epochs with Adam on the 1400 training images, evaluated on the 397 test images. On these 8x8
images the untrained-for randomization layer (seed 004 adds it without retraining) costs most
of the clean accuracy, so the table also has a model trained with the layer active. Each defense
is attacked as deployed (its forward pass, randomness included; wrappers that average n runs
are attacked through that average) with L-inf PGD, and — where it is randomized — with
EOT-PGD (every gradient the mean over ``--eot`` forward passes). Accuracies under attack are
on the first ``--n`` test images, measured with fresh randomness. Prints markdown tables.
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from sparsemask import attacks as A
from sparsemask.nn import (DefectiveConv2d, DropBlock2d, GridMask, MADClassifier, MCDropout, PatternEnsemble,
                           RandomizedInference, RandomResizePad, RandomSpiking, SpatialDropout2d,
                           insert_after_first_conv, mad_defaults, spiking_inference)
from sparsemask.nn.dropout import Randomized


def load_digits():
    """(x_train, y_train, x_test, y_test): [N, 1, 8, 8] in [0, 1]; the tests' 1400/397 split."""
    from sklearn.datasets import load_digits as ld

    d = ld()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:1400], y[:1400], x[1400:], y[1400:]


class DigitsNet(nn.Module):
    """conv(1->16, 3x3) [+ after_conv1] - ReLU - conv(16->32, 3x3, stride 2) - ReLU - pool to
    4x4 - [head_dropout] - linear(512 -> 10). Inputs [N, 1, H, W] in [0, 1], H, W >= 8."""

    def __init__(self, conv1: nn.Module = None, after_conv1: nn.Module = None, head_dropout: nn.Module = None):
        super().__init__()
        self.features = nn.Sequential(
            conv1 or nn.Conv2d(1, 16, 3, padding=1), after_conv1 or nn.Identity(), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.head = nn.Sequential(head_dropout or nn.Identity(), nn.Linear(32 * 4 * 4, 10))

    def forward(self, x):
        return self.head(self.features((x - 0.5) / 0.5).flatten(1))


def net(seed: int = 0, **kwargs) -> DigitsNet:
    """A :class:`DigitsNet` whose initial weights depend only on ``seed``."""
    torch.manual_seed(seed)
    return DigitsNet(**kwargs)


def train(model: nn.Module, x, y, *, epochs: int = 15, seed: int = 0, transform=None) -> nn.Module:
    """Adam 3e-3, batch 64; ``transform`` (e.g. a GridMask) applied to every training batch."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(64):
            xb = x[idx] if transform is None else transform(x[idx])
            opt.zero_grad()
            F.cross_entropy(model(xb), y[idx]).backward()
            opt.step()
    return model.eval()


def reseed_all(model: nn.Module, seed: int) -> None:
    """Restart every random stream in ``model`` (so evaluations are reproducible)."""
    for i, m in enumerate(model.modules()):
        if isinstance(m, Randomized):
            m.reseed(seed + i)


@torch.no_grad()
def accuracy(model: nn.Module, x, y) -> float:
    return (model(x).argmax(1) == y).float().mean().item()


def build_defenses(xtr, ytr):
    """[(name, deployed model, randomized, how it is trained / decides)]."""
    torch.manual_seed(0)  # layers built outside net() (the defective conv) draw from the global RNG
    rows = []
    rows.append(("standard", train(net(), xtr, ytr), False, "plain training"))
    defective = net(conv1=DefectiveConv2d(1, 16, 3, padding=1, keep=0.5, feature_size=8, seed=0))
    rows.append(("defective conv1 (keep 0.5)", train(defective, xtr, ytr), False,
                 "fixed random mask on the first conv (seeds 000/001)"))
    rows.append(("DropBlock", train(net(after_conv1=DropBlock2d(0.9, 3, seed=0)), xtr, ytr), False,
                 "keep 0.9, 3x3 blocks after conv1; off at test"))
    rows.append(("SpatialDropout", train(net(after_conv1=SpatialDropout2d(0.9, seed=0)), xtr, ytr), False,
                 "keep 0.9 after conv1; off at test"))
    mc = train(net(head_dropout=MCDropout(0.5, mc=True, seed=0)), xtr, ytr)
    rows.append(("MC dropout", RandomizedInference(mc, n=10, combine="mean"), True,
                 "keep 0.5 before the linear layer; MC average of 10"))
    rs = train(insert_after_first_conv(net(), RandomSpiking(0.8, "mc", n=10, seed=0)), xtr, ytr)
    rows.append(("Random Spiking RS-1", spiking_inference(rs), True, "p 0.8 after conv1; MC average of 10"))
    rs_vote = copy.deepcopy(rs)
    rs_vote.features[0][1].mode = "vote"
    rows.append(("RS-1, vote", spiking_inference(rs_vote), True, "same model; vote of 10"))
    rsd = insert_after_first_conv(net(head_dropout=MCDropout(0.5, mc=True, seed=1)),
                                  RandomSpiking(0.8, "mc", n=10, seed=0))
    rows.append(("RSD-1 (spiking + dropout)", spiking_inference(train(rsd, xtr, ytr)), True,
                 "RS-1 + MC dropout keep 0.5; MC average of 10"))
    d = mad_defaults(8)
    # masked training converges slower: 30 epochs instead of 15
    mad_net = train(net(), xtr, ytr, epochs=30, transform=GridMask(d["train_grid"], d["rate"], seed=0))
    for combine, label in (("vote", "vote"), ("probs", "probability average")):
        rows.append((f"MAD, {combine}", MADClassifier(mad_net, grid=d["train_grid"], rate=d["rate"], n=7,
                                                      combine=combine, seed=0), True,
                     f"trained on grid {d['train_grid']} rate {d['rate']} masks (30 epochs); test grid "
                     f"{d['train_grid']}, {label} of 7"))
    base = rows[0][1]
    rows.append(("randomization, no retraining", nn.Sequential(RandomResizePad(10, 8, seed=0), base), True,
                 "standard model behind 8 -> [8, 10) -> pad 10, one pattern per image"))
    rr = train(nn.Sequential(RandomResizePad(10, 8, seed=1), net()), xtr, ytr)
    rows.append(("randomization, trained with it", rr, True, "same layer, also active in training; one pattern"))
    rows.append(("randomization, trained, 10 patterns", RandomizedInference(rr, n=10), True,
                 "MC average of 10 patterns"))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=200, help="test images attacked")
    p.add_argument("--eps", type=float, default=0.1, help="L-inf budget (images in [0, 1])")
    p.add_argument("--steps", type=int, default=20, help="PGD steps (step 2.5 eps / steps, random start)")
    p.add_argument("--eot", type=int, default=8, help="forward passes per EOT gradient")
    args = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    xtr, ytr, xte, yte = load_digits()
    x, y = xte[: args.n], yte[: args.n]
    rows = build_defenses(xtr, ytr)
    print(f"sklearn digits, {len(ytr)} train / {len(yte)} test images; L-inf PGD eps={args.eps}, "
          f"{args.steps} steps, step {2.5 * args.eps / args.steps:.4f}, random start, CE loss; "
          f"EOT: {args.eot} forward passes per gradient; attacked: first {args.n} test images\n")
    print("| defense | clean acc (397) | PGD acc | EOT-PGD acc | setting |")
    print("|---|---|---|---|---|")
    for name, model, randomized, how in rows:
        reseed_all(model, 100)
        clean = accuracy(model, xte, yte)
        pgd = A.PGD(model, eps=args.eps, steps=args.steps, seed=0, progress=False)
        reseed_all(model, 200)
        x_adv = pgd(x, y)
        reseed_all(model, 300)
        rob = accuracy(model, x_adv, y)
        eot = "—"
        if randomized:
            reseed_all(model, 200)
            x_eot = A.EOT(pgd, n=args.eot)(x, y)
            reseed_all(model, 300)
            eot = f"{100 * accuracy(model, x_eot, y):.1f}%"
        print(f"| {name} | {100 * clean:.1f}% | {100 * rob:.1f}% | {eot} | {how} |")

    # Seed 004's attack scenarios against the randomization layer (model trained with it).
    deployed = next(model for name, model, _, _ in rows if name == "randomization, trained with it")
    layer, base = deployed[0], deployed[1]
    scenarios = [
        ("vanilla (attack the model without the layer)", base),
        (f"single pattern {tuple(layer.single_pattern()[:3])}",
         nn.Sequential(copy.deepcopy(layer).fix_pattern(layer.single_pattern()), base)),
        (f"ensemble of {len(layer.ensemble_patterns())} patterns", PatternEnsemble(base, layer)),
        ("deployed layer, one random pattern per step", deployed),
        (f"EOT, {args.eot} random patterns per step", None),
    ]
    print("\nRandomization (8 -> [8, 10) -> 10, model trained with the layer) under seed 004's attack "
          "scenarios, same PGD; accuracy of the deployed layer (one random pattern per image):\n")
    print("| attack scenario | accuracy |")
    print("|---|---|")
    for name, target in scenarios:
        layer.reseed(200)
        if target is None:
            x_adv = A.EOT(A.PGD(deployed, eps=args.eps, steps=args.steps, seed=0, progress=False), n=args.eot)(x, y)
        else:
            x_adv = A.PGD(target, eps=args.eps, steps=args.steps, seed=0, progress=False)(x, y)
        layer.reseed(300)
        print(f"| {name} | {100 * accuracy(deployed, x_adv, y):.1f}% |")
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
