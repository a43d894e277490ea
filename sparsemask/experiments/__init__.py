"""Reproductions of the seed papers' tables and figures, at three scales.

Run one with ``sparsemask experiment NAME --scale smoke|small|paper [--config FILE] [--out DIR]``
or from Python::

    from sparsemask.experiments import run_experiment
    result = run_experiment("001-transfer", scale="smoke", out="runs/001-transfer")

Each experiment writes ``results.json`` (every number and every hyperparameter),
``results.md`` (tables laid out like the seed's) and PNG figures to its output directory.
See :mod:`sparsemask.experiments.common` for the scales and the config merge order.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Mapping, Optional

# name -> module (relative to this package, or an absolute module path for experiments
# registered from elsewhere). Order = the order `sparsemask experiment --list` shows.
# An experiment is one module with NAME, DESCRIPTION, DEFAULTS and run(cfg, out) -> dict
# (docs/architecture.md, "Adding an experiment").
EXPERIMENTS: dict[str, str] = {
    "001-transfer": "seed001_transfer",        # seed 001 Tables 2, 3 (and 5: ensemble sources)
    "001-gaussian": "seed001_gaussian",        # seed 001 Figure 5
    "001-ablation": "seed001_ablation",        # seed 001 Table 4
    "001-boundary": "seed001_boundary",        # seed 001 Table 7
    "001-whitebox": "seed001_whitebox",        # seed 001 Tables 8 (white-box) and 9 (gray-box, DIF)
    "001-patch-shuffle": "seed001_patch_shuffle",  # seed 001 Table 1
    "002-mad": "seed002_mad",                  # seed 002 Tables 2-4
    "003-cw-distance": "seed003_cw_distance",  # seed 003 Tables 4, 5
    "003-stability": "seed003_stability",      # seed 003 Figures 1-2 (noise, JPEG)
    "003-multi-surrogate": "seed003_multi_surrogate",  # seed 003 Figures 3-4
    "004-randomization": "seed004_randomization",  # seed 004 Tables 2-6 + EOT
}

__all__ = ["EXPERIMENTS", "get_experiment", "run_experiment", "describe", "listing", "register_experiment",
           "unregister_experiment", "check_not_distributed"]


def register_experiment(name: str, module: str, *, replace: bool = False) -> None:
    """Register experiment ``name`` implemented by ``module`` (an absolute module path, e.g.
    ``"mypkg.my_table"``): it then runs from ``run_experiment`` and ``sparsemask experiment``.
    ``replace``: allow re-registering ``name`` (else ValueError)."""
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise ValueError(f"register_experiment: name must be a non-empty word, got {name!r}")
    if name in EXPERIMENTS and not replace:
        raise ValueError(f"register_experiment: experiment {name!r} is already registered (pass replace=True)")
    EXPERIMENTS[name] = module


def unregister_experiment(name: str) -> None:
    """Remove experiment ``name``."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unregister_experiment: no experiment {name!r}")
    del EXPERIMENTS[name]


def get_experiment(name: str):
    """The module implementing experiment ``name`` (see :data:`EXPERIMENTS`)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; expected one of: {', '.join(EXPERIMENTS)}")
    module = EXPERIMENTS[name]
    return importlib.import_module(module) if "." in module else importlib.import_module(f".{module}", __name__)


def describe() -> dict[str, str]:
    """name -> one-line description, for ``--list`` and the CLI help."""
    return {name: get_experiment(name).DESCRIPTION for name in EXPERIMENTS}


def listing() -> str:
    """The text of ``sparsemask experiment --list``: one line per experiment, then the seed
    papers they reproduce, by title and authors (:mod:`.citations`)."""
    from .citations import seed_list

    lines = [f"{name:22s} {text}" for name, text in describe().items()]
    return "\n".join([*lines, "", "Seed papers (the experiment name's number is the seed):", seed_list()])


def check_not_distributed(name: str) -> None:
    """Experiments run in one process. Under ``torchrun`` each model's training would be DDP,
    but every rank would then repeat all attacks and evaluations on the first GPU and write the
    same result files: refuse rather than waste the GPUs and race on the outputs."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(  # a usage error: the CLI prints it as one line
            f"experiment {name!r}: experiments do not run under torchrun (WORLD_SIZE="
            f"{os.environ['WORLD_SIZE']}); use one process per GPU (CUDA_VISIBLE_DEVICES=i sparsemask experiment ...) "
            "sharing --set cache=DIR, or `torchrun ... -m sparsemask train` for one model (README, 'Paper scale')")


def run_experiment(name: str, scale: str = "smoke", config: Optional[Mapping[str, Any]] = None,
                   out: Optional[str | Path] = None, overrides: Optional[Mapping[str, Any]] = None) -> dict:
    """Resolve the configuration of ``name`` at ``scale`` and run it; returns the result dict
    (also written to ``out``/results.json; default out: ``runs/<name>-<scale>``)."""
    from .common import resolve_config

    check_not_distributed(name)
    module = get_experiment(name)
    cfg = resolve_config(scale, getattr(module, "DEFAULTS", {}), config, overrides)
    out = Path(out) if out is not None else Path("runs") / f"{name}-{scale}"
    return module.run(cfg, out)
