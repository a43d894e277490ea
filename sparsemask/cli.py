"""The ``sparsemask`` command line (also ``python -m sparsemask``).

Subcommands: ``train``, ``evaluate``, ``attack``, ``bench``, ``experiment``, ``demo``.
Run ``sparsemask SUBCOMMAND --help`` for each one's options and examples.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from .attacks import attack_names, get_attack
from .dispatch import backend_names

__all__ = ["main", "build_parser"]

_EPILOG = """\
examples:
  sparsemask demo                                   # the main job, ~5 min on 2 CPU cores
  sparsemask experiment --list
  sparsemask experiment 001-transfer --scale smoke --out runs/t
  sparsemask train --arch wide_resnet --depth 8 --width 1 --keep 0.1 --out runs/r8-def.pt
  sparsemask evaluate runs/r8-def.pt --noise 8 16 32
  sparsemask attack runs/r8-def.pt --source runs/r8-std.pt --attack pgd --eps255 16 --steps 20
  sparsemask bench
"""


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Raw epilogs, and "(default: ...)" after every option's help unless the help already says it in words."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if "(default" in help_text or action.required:  # a required option has no default to state  # e.g. "(default: the loader's search path)" says more than "None"
            return help_text
        return super()._get_help_string(action)


def _positive_int(text: str) -> int:
    """argparse type: an int >= 1 (argparse names the option in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {value}")
    return value


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=None,
                   help="dataset name: fashion-mnist, mnist, cifar10, svhn, digits (scikit-learn's, embedded) "
                        "(default: train: fashion-mnist; evaluate/attack: the one the model was trained on)")
    g.add_argument("--data-root", default=None,
                   help="directory holding the dataset files (default: the loader's search path, "
                        "e.g. /usr/share/datasets/fashion-mnist)")
    g.add_argument("--n-train", type=_positive_int, default=None, help="use a random subset of this many training images (default: all)")
    g.add_argument("--n-test", type=_positive_int, default=None, help="use a random subset of this many test images (default: all)")


def _add_debug_arg(p: argparse.ArgumentParser) -> None:
    # Also after the subcommand (`sparsemask train ... --debug`); SUPPRESS keeps the subparser from
    # overwriting a --debug given before it.
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the full traceback when the command fails (default: off)")


def _add_defense_args(p: argparse.ArgumentParser) -> None:
    from .defenses import DEFENSES

    g = p.add_argument_group("defense (sparsemask.defenses.defend: the model is wrapped at test time)")
    g.add_argument("--defense", default="none", choices=DEFENSES,
                   help="randomized test-time defense around the model: mad (seed 002 grid masking + vote), "
                        "resize-pad (seed 004 random resize and padding), spiking (seed 003 Random Spiking); "
                        "attack it with --eot N")
    g.add_argument("--mad-votes", type=_positive_int, default=5, help="MAD: random maskings voted over")
    g.add_argument("--mad-grid", type=_positive_int, default=None,
                   help="MAD: grid cell side in pixels (default: the seed's test grid for the image size)")
    g.add_argument("--mad-rate", type=float, default=0.75, help="MAD: probability that a cell is masked")
    g.add_argument("--resize-max", type=_positive_int, default=None,
                   help="resize-pad: output side, the image is padded to it (default: the image side, which "
                        "models with defective layers need)")
    g.add_argument("--resize-min", type=_positive_int, default=None,
                   help="resize-pad: smallest resized side (default: the seed's 299/331 of --resize-max)")
    g.add_argument("--resize-draws", type=_positive_int, default=1, help="resize-pad: patterns averaged per prediction")
    g.add_argument("--spiking-p", type=float, default=0.8, help="spiking: probability that a unit is kept")
    g.add_argument("--spiking-runs", type=_positive_int, default=10, help="spiking: runs combined per prediction")
    g.add_argument("--spiking-combine", default="vote", choices=["vote", "mc"], help="spiking: vote or MC average")


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("runtime")
    g.add_argument("--device", default="cpu", help="cpu or cuda")
    g.add_argument("--backend", default="auto", choices=backend_names(),
                   help="masked-convolution backend (dense = the reference conv2d * mask)")
    g.add_argument("--seed", type=int, default=0, help="seed for weights, masks, data subsets and attacks")
    g.add_argument("--eval-batch-size", "--batch-size", dest="batch_size", type=int, default=256,
                   help="batch size of evaluation and attacks (--batch-size: its old name; training uses --train-batch-size)")
    g.add_argument("--no-progress", action="store_true", help="disable progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the whole CLI."""
    parser = argparse.ArgumentParser(
        prog="sparsemask", formatter_class=_Formatter, epilog=_EPILOG,
        description="Defective (Random Mask) convolutional layers with sparse kernels, the seed papers' "
                    "randomized defenses, attacks and experiments.")
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback when a command fails (user errors print one line otherwise)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                help="run `sparsemask COMMAND --help` for its options")

    # train
    p = sub.add_parser("train", formatter_class=_Formatter, help="train a (defective) model and save it",
                       description="Train a standard or defective model on a dataset and save a model file "
                                   "(weights, masks and the spec needed to rebuild it).",
                       epilog="example:\n  sparsemask train --arch wide_resnet --depth 8 --width 1 --dataset fashion-mnist "
                              "--n-train 10000 --epochs 3 --keep 0.1 --out runs/r8-def.pt")
    p.add_argument("--arch", default="resnet18",
                   help="resnet18, resnet18_x2, resnet18_dc, resnet50, resnet32x4, densenet121, senet18, vgg19, "
                        "wide_resnet, lenet5, cw_mnist")
    p.add_argument("--depth", type=int, default=None,
                   help="depth, for wide_resnet and resnet32x4 (e.g. 8 = ResNet-8, 32) (default: the builder's)")
    p.add_argument("--width", type=int, default=None,
                   help="width factor, for wide_resnet and resnet32x4 (1 = 16/32/64 channels) (default: the builder's)")
    p.add_argument("--keep", type=float, default=None,
                   help="keep probability of defective layers (default: none, a standard model)")
    p.add_argument("--where", default="bottom", help="bottom, top, or comma-separated layer names")
    p.add_argument("--kind", default="neuron", choices=["neuron", "channel", "shared"],
                   help="mask kind: neuron (the method), channel (DC), shared (SM)")
    p.add_argument("--widen", type=int, default=1, help="multiply the channels of defective layers (the seeds' xn)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs (a resumed run continues up to this many)")
    p.add_argument("--lr", type=float, default=0.05, help="initial SGD learning rate")
    p.add_argument("--train-batch-size", type=int, default=128, help="training batch size")
    p.add_argument("--schedule", default="cosine", choices=["cosine", "multistep", "constant"],
                   help="learning-rate schedule over the epochs")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing ε of the cross-entropy")
    p.add_argument("--out", required=True,
                   help="checkpoint to write (sparsemask.train format, rewritten every epoch); an existing one "
                        "trained with the same settings is resumed (more --epochs extend it), one with other "
                        "settings is refused; per-epoch metrics go to the same path with .jsonl and .csv (and a .tb/ "
                        "TensorBoard directory when tensorboard is installed)")
    p.add_argument("--force", action="store_true",
                   help="start over and overwrite an existing --out checkpoint instead of resuming it")
    _add_data_args(p)
    _add_runtime_args(p)

    # evaluate
    p = sub.add_parser("evaluate", formatter_class=_Formatter, help="clean (and noisy) accuracy of a saved model",
                       description="Clean test accuracy of a model file, optionally under seed 001's additive "
                                   "Gaussian noise (σ on the 0-255 scale, clipped to [-2σ, 2σ]).",
                       epilog="example:\n  sparsemask evaluate runs/r8-def.pt --noise 4 8 16 32 --json runs/eval.json")
    p.add_argument("model", help="model file written by `sparsemask train`")
    p.add_argument("--noise", type=float, nargs="*", default=[], help="Gaussian noise σ values (0-255 scale)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file (default: none)")
    _add_defense_args(p)
    _add_data_args(p)
    _add_runtime_args(p)

    # attack
    p = sub.add_parser("attack", formatter_class=_Formatter, help="attack a saved model (white-box or transfer)",
                       description="Attack a model file. With --source the adversarial examples are crafted on the "
                                   "source model and transferred (black-box, seed 001's protocol); otherwise the "
                                   "attack is white-box. Reports the success defense rate (accuracy on adversarial "
                                   "examples whose clean originals the target classifies correctly).",
                       epilog="examples:\n  sparsemask attack runs/r8-def.pt --attack pgd --eps255 2 4 8 --steps 10\n"
                              "  sparsemask attack runs/r8-def.pt --defense mad --mad-votes 5 --attack pgd --eot 8\n"
                              "  sparsemask attack runs/r8-def.pt --source runs/r8-std.pt --attack fgsm --eps255 16\n"
                              "  sparsemask attack runs/r8-def.pt --attack cw --kappa 20 --steps 100 --grid adv.png")
    p.add_argument("model", help="target model file")
    p.add_argument("--source", default=None,
                   help="craft the examples on this model file (transfer attack) (default: none, white-box)")
    p.add_argument("--attack", default="pgd", choices=attack_names(),
                   help="attack (the registry of sparsemask.attacks; eps255/norm go to those that take them)")
    p.add_argument("--eps255", type=float, nargs="+", default=[16],
                   help="ε on the 0-255 pixel scale; several values run the attack once per ε, one result row each")
    p.add_argument("--norm", default="inf", choices=["inf", "2", "1"], help="norm of the ε-ball (for the attacks that take one)")
    p.add_argument("--steps", type=int, default=None,
                   help="iterations (iterative attacks) (default: the attack's own)")
    p.add_argument("--step255", type=float, default=None, help="step size on the 0-255 scale (default: the attack's own)")
    p.add_argument("--kappa", type=float, default=None, help="CW confidence κ (default: the attack's own)")
    p.add_argument("--eot", type=_positive_int, default=None,
                   help="wrap in EOT with this many draws (randomized models) (default: no EOT)")
    p.add_argument("--grid", default=None,
                   help="write a PNG grid of adversarial examples (at the last --eps255) here (default: none)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file (default: none)")
    _add_defense_args(p)
    _add_data_args(p)
    _add_runtime_args(p)

    # robustness
    p = sub.add_parser("robustness", formatter_class=_Formatter, help="robustness report: an attack suite over several ε",
                       description="Run a standard suite on a model file at each ε (clean, FGSM, PGD, APGD-CE, APGD-DLR, "
                                   "Square, transfer from --source, random noise) and write report.md, report.json and "
                                   "robust_accuracy.png. Robust accuracy = correct on the clean input and under every "
                                   "attack (AutoAttack's per-example worst case). Says whether the model is randomized.",
                       epilog="examples:\n  sparsemask robustness runs/r8-def.pt --eps255 2 8 16 --n-test 500 --out runs/rob\n"
                              "  sparsemask robustness runs/r8-def.pt --source runs/r8-std.pt --eot 8 --apgd-steps 50")
    p.add_argument("model", help="model file written by `sparsemask train`")
    p.add_argument("--eps255", type=float, nargs="+", default=[2, 8, 16], help="L∞ budgets on the 0-255 scale")
    p.add_argument("--suite", nargs="+", default=None, metavar="ATTACK",
                   help="entries to run, of clean fgsm pgd apgd_ce apgd_dlr apgd_t square transfer noise (default: all "
                        "but apgd_t; transfer only with --source)")
    p.add_argument("--source", default=None,
                   help="surrogate model file for the transfer attack (default: none, transfer skipped)")
    p.add_argument("--eot", type=_positive_int, default=None,
                   help="average gradients over this many forward passes (randomized models) (default: no EOT)")
    p.add_argument("--pgd-steps", type=_positive_int, default=20, help="PGD (and transfer PGD) iterations")
    p.add_argument("--apgd-steps", type=_positive_int, default=100, help="APGD iterations (AutoAttack's)")
    p.add_argument("--square-queries", type=_positive_int, default=5000, help="Square queries per example (AutoAttack's)")
    p.add_argument("--out", default=None, help="directory for report.md/.json and the plot (default: runs/robustness-MODEL)")
    _add_defense_args(p)
    _add_data_args(p)
    _add_runtime_args(p)

    # bench
    p = sub.add_parser("bench", formatter_class=_Formatter, help="benchmark the masked convolution vs dense",
                       description="Run a benchmark shipped with the package: masked_conv (the op: sparse "
                                   "kernels vs the dense conv2d * mask baseline), train_step (a model's "
                                   "training step) or crossover (the sweep behind auto's CPU thresholds: "
                                   "sweep/generate/verify); arguments after `--` are passed through.",
                       epilog="examples:\n  sparsemask bench -- --quick\n  sparsemask bench -- --out benchmarks/results\n"
                              "  sparsemask bench --what train_step -- --help")
    p.add_argument("--what", default="masked_conv", choices=["masked_conv", "train_step", "crossover"],
                   help="which benchmark to run (sparsemask/benchmarks/<what>.py)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark script")

    # experiment
    from .experiments import EXPERIMENTS

    names = "\n".join(f"  {n}" for n in EXPERIMENTS)
    p = sub.add_parser("experiment", formatter_class=_Formatter, help="reproduce a seed paper's table or figure",
                       description="Run one experiment at a scale: smoke (scikit-learn digits, seconds), small "
                                   "(Fashion-MNIST on CPU, minutes), paper (the seed's settings: CIFAR-10 from "
                                   "data.root, GPU). Writes results.json (every number and hyperparameter), "
                                   "results.md (tables laid out like the seed's) and PNG plots.\n\n"
                                   "experiments:\n" + names,
                       epilog="examples:\n  sparsemask experiment 001-transfer --scale smoke\n"
                              "  sparsemask experiment 001-gaussian --scale small --out docs/results/001-gaussian\n"
                              "  sparsemask experiment 001-transfer --scale paper --config 001-transfer-paper.yaml "
                              "--set data.root=/data/cifar-10-batches-py\n  sparsemask experiment --list")
    p.add_argument("name", nargs="?", help="experiment name (see --list) (default: the config file's `experiment:`)")
    p.add_argument("--scale", default=None, choices=["smoke", "small", "paper"],
                   help="preset size (default: the config file's `scale:`, else smoke)")
    p.add_argument("--config", default=None, help="YAML or TOML file overriding the scale preset (default: none)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting with a dotted key, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--out", default=None, help="output directory (default runs/NAME-SCALE)")
    p.add_argument("--list", action="store_true", help="list the experiments with one line each and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    p.add_argument("--dry-run", action="store_true",
                   help="build every model NAME (default: every experiment) would train, run one step of each on "
                        "random data, print the estimated GPU-hours and write OUT/dry_run.json; reads no dataset")

    # demo
    p = sub.add_parser("demo", formatter_class=_Formatter, help="the main job: standard vs defective small ResNet",
                       description="Train a standard and a bottom-defective (keep 0.1) small ResNet (ResNet-8) on "
                                   "Fashion-MNIST (falls back to scikit-learn's digits, and says so, when "
                                   "/usr/share/datasets/fashion-mnist is missing) with the sparse kernels; report "
                                   "clean accuracy, transfer-PGD success defense rate from a separately trained "
                                   "source model, Gaussian-noise accuracy and the sparse-vs-dense training-step "
                                   "speed. About 5 minutes on 2 CPU cores.",
                       epilog="examples:\n  sparsemask demo\n  sparsemask demo --install-data   # make demo\n"
                              "  sparsemask demo --quick --out /tmp/demo")
    p.add_argument("--out", default="runs/demo", help="directory for summary.md, results.json and plots")
    p.add_argument("--quick", action="store_true", help="a few-second version on digits (for tests)")
    p.add_argument("--install-data", action="store_true",
                   help="if Fashion-MNIST is missing, try `apt-get install -y dataset-fashion-mnist` first (root)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a demo setting, e.g. --set train.epochs=1")
    p.add_argument("--no-progress", action="store_true", help="disable progress bars")
    for p in sub.choices.values():
        _add_debug_arg(p)
    return parser


def _version() -> str:
    from . import __version__

    return f"sparsemask {__version__}"


# --------------------------------------------------------------------------- commands

DEFAULT_DATASET = "fashion-mnist"


def _load_data(args, model=None):
    """The dataset's splits as tensors (the --n-train / --n-test subsets, seeded by --seed):
    --dataset, else the one ``model`` (from `_load_model`) was trained on (recorded by
    `train`), else Fashion-MNIST. A --dataset other than the model's is allowed, with a note."""
    from . import train
    from .data import load_arrays

    trained_on = (train.checkpoint_metadata(model).get("data") or {}) if model is not None else {}
    name = args.dataset or trained_on.get("name") or DEFAULT_DATASET
    root = args.data_root if args.data_root is not None or args.dataset else trained_on.get("root")
    if args.dataset and trained_on.get("name") and args.dataset != trained_on["name"]:
        print(f"note: {args.model} was trained on {trained_on['name']}; evaluating on {args.dataset}", file=sys.stderr)
    with _status(args, f"loading {name}"):  # both splits are decoded: seconds for Fashion-MNIST
        return load_arrays(name, root, n_train=args.n_train, n_test=args.n_test, seed=args.seed)


@contextlib.contextmanager
def _status(args, text: str):
    """A status line on stderr around a phase without a progress bar of its own: ``text ...``
    while it runs (on a terminal), ``text ... done in 6.2 s`` after; erased on failure so an
    error stays one line. Silent with --no-progress."""
    quiet = getattr(args, "no_progress", False)
    live = not quiet and sys.stderr.isatty()
    if live:
        print(f"{text} ...", end="", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        yield
    except BaseException:
        if live:
            print("\r\033[K", end="", file=sys.stderr, flush=True)  # back to column 0, clear the line
        raise
    if not quiet:
        print(f"{'' if live else text + ' ...'} done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


def _runtime(args) -> None:
    """Apply the runtime options every subcommand shares (the backend; device and seed are
    passed explicitly)."""
    import sparsemask

    sparsemask.set_backend(args.backend)


def cmd_train(args) -> int:
    import torch

    from . import eval as ev
    from . import models, train

    _runtime(args)
    # The hyperparameters are checked before the (slow) data loading, so a typo fails at once.
    config = train.TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.train_batch_size,
                               schedule=args.schedule, milestones=(), label_smoothing=args.label_smoothing,
                               seed=args.seed, device=args.device, progress=not args.no_progress,
                               checkpoint=args.out, resume=not args.force,  # rewritten atomically every epoch
                               log_path=str(Path(args.out).with_suffix(".jsonl")))  # one JSON line per epoch
    data = _load_data(args)
    defective = None
    if args.keep is not None:
        where = args.where if args.where in ("bottom", "top") else args.where.split(",")
        defective = {"keep": args.keep, "where": where, "kind": args.kind, "widen": args.widen, "seed": args.seed}
    arch_options = {k: v for k, v in (("depth", args.depth), ("width", args.width)) if v is not None}
    torch.manual_seed(args.seed)  # the initial weights
    model = models.build(args.arch, num_classes=data.num_classes, in_channels=data.in_channels,
                         input_size=data.input_size, defective=defective, **arch_options)
    train.train(model, (data.x_train, data.y_train), None, config,
                metadata={"data": {"name": data.name, "root": args.data_root, "n_train": args.n_train,
                                   "seed": args.seed}})
    acc = ev.accuracy(model.eval(), data.x_test, data.y_test, args.batch_size, progress=not args.no_progress,
                      desc="test accuracy")
    kind = "standard" if defective is None else f"keep {args.keep:g} ({args.kind}, {args.where})"
    print(f"{args.arch} {kind}: clean test accuracy {100 * acc:.2f}% on {data.name}; checkpoint {args.out}")
    print(_describe_logs(config.log_path))
    return 0


def _describe_logs(log_path: str) -> str:
    """One line naming the run's log files (and why there is no TensorBoard log, if there is none)."""
    from .train import log_paths, tensorboard_available

    paths = log_paths(log_path)
    tb = f", TensorBoard {paths['tensorboard']}/" if tensorboard_available() else \
        " (no TensorBoard log: `pip install tensorboard` for one)"
    return f"logs: {paths['jsonl']}, {paths['csv']}{tb}"


def _load_model(args, path):
    from . import train

    return train.load_model(path).to(args.device).eval()


def _defended(args, model, data):
    """``model`` behind --defense (itself for none), seeded by --seed, and the defense's settings
    for the report (None for none)."""
    from .defenses import defend

    if args.defense == "none":
        return model, None
    settings = {k: getattr(args, k) for k in ("mad_votes", "mad_grid", "mad_rate", "resize_min", "resize_max",
                                              "resize_draws", "spiking_p", "spiking_runs", "spiking_combine")
                if k.split("_")[0] == args.defense.split("-")[0]}
    defended = defend(model, args.defense, input_size=data.input_size, seed=args.seed, **settings)
    return defended.to(args.device), {"name": args.defense, **settings}


def cmd_evaluate(args) -> int:
    from . import eval as ev
    from .attacks import gaussian_noise_255
    from .experiments.report import fmt_pct, markdown_table

    _runtime(args)
    model = _load_model(args, args.model)
    data = _load_data(args, model)
    model, defense = _defended(args, model, data)
    bar = not args.no_progress
    result = {"model": args.model, "data": data.info(), "defense": defense,
              "clean_accuracy": ev.accuracy(model, data.x_test, data.y_test, args.batch_size, progress=bar,
                                            desc="clean accuracy"), "noise": {}}
    for i, sigma in enumerate(args.noise):  # seed 001's clipped Gaussian noise, one seed per σ
        xn = gaussian_noise_255(data.x_test, sigma, seed=args.seed * 1000 + i)
        result["noise"][f"{sigma:g}"] = ev.accuracy(model, xn, data.y_test, args.batch_size, progress=bar,
                                                    desc=f"noise σ={sigma:g}")
    rows = [["clean", fmt_pct(result["clean_accuracy"])]] + [[f"σ={s}", fmt_pct(v)] for s, v in result["noise"].items()]
    behind = f" behind {args.defense}" if defense else ""
    print(markdown_table(["Input", "Accuracy"], rows,
                         f"{args.model}{behind} on {data.name} ({len(data.y_test)} test images)"))
    _maybe_json(args.json, result)
    return 0


def cmd_attack(args) -> int:
    from . import eval as ev
    from .attacks import attack_label, make_attack
    from .experiments.report import fmt_pct, save_adversarial_grid

    _runtime(args)
    target = _load_model(args, args.model)
    data = _load_data(args, target)
    target, defense = _defended(args, target, data)
    # White-box: the examples are crafted on the defended model itself (EOT with --eot);
    # transfer: on the attacker's undefended --source.
    source = _load_model(args, args.source) if args.source else target
    params: dict[str, Any] = {"name": args.attack}
    spec = get_attack(args.attack)
    if spec.accepts("norm"):
        params["norm"] = args.norm
    for key in ("steps", "step255", "kappa", "eot"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    takes_eps = spec.accepts("eps")
    if not takes_eps and len(args.eps255) > 1:
        print(f"note: {args.attack} takes no ε; --eps255 ignored", file=sys.stderr)
    if defense and not args.eot and not args.source:
        print(f"note: --defense {args.defense} is randomized and no --eot was given: gradients follow single draws "
              f"(add --eot N for an adaptive attack)", file=sys.stderr)
    rows = ev.run_attack_sweep(
        target, lambda e: make_attack(source, {**params, **({"eps": e} if takes_eps else {})}, seed=args.seed,
                                      progress=not args.no_progress),  # the attack's own bar over its steps
        data.x_test, data.y_test, eps255=args.eps255 if takes_eps else args.eps255[:1], source=source,
        batch_size=args.batch_size, progress=not args.no_progress, keep_examples=bool(args.grid))
    how = f"transfer from {args.source}" if args.source else "white-box"
    results = []
    for e, row in rows.items():
        label = attack_label({**params, "eps255": e} if takes_eps else params)
        x_adv = row.pop("x_adv", None)
        if not takes_eps:
            row.pop("eps"), row.pop("eps255")
        results.append({"label": label, **row})
        print(f"{label} {how} on {args.model}{' behind ' + args.defense if defense else ''}: "
              f"clean {fmt_pct(row['clean_accuracy'])}, adversarial {fmt_pct(row['adversarial_accuracy'])}, "
              f"success defense rate {fmt_pct(row['success_defense_rate'])} "
              f"(mean L∞ {row['mean_linf_255']:.1f}/255, mean L2 {row['mean_l2']:.3f})")
    if args.grid:  # the last (largest listed) ε's examples
        x, y = data.x_test[:8], data.y_test[:8]
        save_adversarial_grid(args.grid, x, x_adv[:8], y, ev.predict(target, x, args.batch_size),
                              ev.predict(target, x_adv[:8], args.batch_size), classes=data.classes,
                              title=f"{label} adversarial examples on {args.model} ({data.name})")
        print(f"wrote {args.grid}")
    _maybe_json(args.json, {"target": args.model, "source": args.source or "(white-box)", "attack": params,
                            "defense": defense, "results": results})
    return 0


def cmd_robustness(args) -> int:
    from .robustness import DEFAULT_SUITE, evaluate_robustness

    _runtime(args)
    model = _load_model(args, args.model)
    source = _load_model(args, args.source) if args.source else None
    data = _load_data(args, model)
    model, _ = _defended(args, model, data)
    out = args.out or f"runs/robustness-{Path(args.model).stem}"
    report = evaluate_robustness(model, data.x_test, data.y_test, eps255=args.eps255, suite=args.suite or DEFAULT_SUITE,
                                 eot=args.eot, source_model=source, pgd_steps=args.pgd_steps,
                                 apgd_steps=args.apgd_steps, square_queries=args.square_queries,
                                 batch_size=args.batch_size, seed=args.seed, out=out, progress=not args.no_progress,
                                 device=args.device)
    print((Path(out) / "report.md").read_text())
    print(f"wrote {out}/report.md, report.json, robust_accuracy.png")
    return 0


def cmd_bench(args) -> int:
    import importlib

    bench = importlib.import_module(f".benchmarks.{args.what}", __package__)
    return int(bench.main([a for a in args.args if a != "--"]) or 0)


def cmd_experiment(args) -> int:
    from .experiments import EXPERIMENTS, get_experiment, listing, run_experiment
    from .experiments.common import load_config_file, parse_overrides, resolve_config

    config = load_config_file(args.config) if args.config else {}
    # A config file may name its experiment and scale; the command line wins.
    args.name = args.name or config.get("experiment")
    args.scale = args.scale or config.get("scale") or "smoke"
    config = {k: v for k, v in config.items() if k not in ("experiment", "scale")}
    if args.dry_run and not args.list:
        from .experiments.dry_run import run_cli

        return run_cli([args.name] if args.name else None, args.scale, config, parse_overrides(args.overrides), args.out)
    if args.list or not args.name:
        print(listing())
        return 0 if args.list else 2
    overrides = parse_overrides(args.overrides)
    if args.print_config:
        module = get_experiment(args.name)
        print(json.dumps(resolve_config(args.scale, module.DEFAULTS, config, overrides), indent=2))
        return 0
    # The experiments' own phases (data, cached trainings, attacks) draw bars where they are long;
    # this line says what runs before the first of them.
    print(f"running {args.name} ({args.scale}) ...", file=sys.stderr, flush=True)
    result = run_experiment(args.name, args.scale, config=config, out=args.out, overrides=overrides)
    for title, table in result["tables"].items():
        print(f"## {title}\n\n{table}")
    out = args.out or f"runs/{args.name}-{args.scale}"
    print(f"{args.name} ({args.scale}) done in {result['seconds']:.1f} s; results in {out}/")
    return 0


def cmd_demo(args) -> int:
    from .experiments.common import parse_overrides
    from .experiments.demo import run_demo

    overrides = parse_overrides(args.overrides)
    if args.no_progress:
        overrides["progress"] = False
    run_demo(args.out, quick=args.quick, overrides=overrides, install_data=args.install_data)
    return 0


def _maybe_json(path: Optional[str], result: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {path}")


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "attack": cmd_attack, "robustness": cmd_robustness, "bench": cmd_bench,
            "experiment": cmd_experiment, "demo": cmd_demo}


# What a bad argument, a missing or damaged file, a full disk raise: the user can fix these, so
# they get one line instead of a traceback. Anything else (RuntimeError, KeyError, ...) is a
# bug or a torch failure whose traceback is needed to report it.
USER_ERRORS = (ValueError, TypeError, OSError)
USER_ERROR_STATUS = 1  # argparse's own usage errors exit 2


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``sparsemask`` / ``python -m sparsemask``; returns the exit status.

    A user error (see ``USER_ERRORS``) prints ``sparsemask: error: <message>`` on stderr and
    returns 1, Ctrl-C prints ``sparsemask: interrupted`` and returns 130; ``--debug`` re-raises
    either with its traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as e:
        if args.debug:
            raise
        print(f"{parser.prog}: error: {_one_line(e)} (run with --debug for the traceback)", file=sys.stderr)
        return USER_ERROR_STATUS
    except KeyboardInterrupt:
        if args.debug:
            raise
        # A checkpoint is replaced atomically, so a run stopped here resumes from the last one.
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130  # the shell's status for SIGINT


if __name__ == "__main__":
    sys.exit(main())
