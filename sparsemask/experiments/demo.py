"""The main job on the embedded default (``make demo`` / ``sparsemask demo``).

Trains, on Fashion-MNIST (or scikit-learn's digits when Fashion-MNIST is not installed —
and says so), three small ResNets (ResNet-8 = pre-activation WRN-8-1) with the sparse kernels:

  * a *source* standard model (its own seed), only used to craft transfer attacks;
  * a standard *target* model;
  * a bottom-defective target (keep 0.1 on the stem and first stage — seed 001's bottom blocks);

then reports clean accuracy, the success defense rate against transfer PGD (and FGSM) from
the source, accuracy under additive Gaussian noise, and the training-step time of the
defective model with the sparse kernels vs the dense reference (``conv2d * mask``). Prints
one summary table and writes ``results.json``, ``summary.md`` and PNG plots to ``out``.

Sized for <= 10 minutes on 2 CPU cores (about 3 on an otherwise idle machine; a machine
shared with other jobs slows it proportionally); ``quick=True`` is a few-second version for tests.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from ..attacks import attack_label
from .common import (ModelSpec, arch_name, adversarial_grid, deep_merge, fmt_pct,
                     get_model, load_data, make_attack, markdown_table, plot_bars, plot_curves, predict,
                     run_attack, success_defense_rate, ResultWriter)

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"

DEMO: dict[str, Any] = {
    "scale": "demo",
    "device": "cpu",
    "seed": 0,
    "progress": True,
    "cache": None,
    "data": {"name": "fashion-mnist", "root": FASHION_MNIST_ROOT, "n_train": 20000, "n_test": 1000, "seed": 0},
    # ResNet-8: the pre-activation WRN-8-1 (16/32/64 channels); bottom = stem + first stage.
    "model": {"arch": "wide_resnet", "depth": 8, "width": 1},
    # Batch 64: twice the SGD steps of batch 128 for about the same CPU time; with only a few
    # hundred steps, batch 128 left some runs with unsettled BatchNorm statistics.
    "train": {"epochs": 4, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
              "schedule": "cosine", "milestones": [], "augment": "none", "label_smoothing": 0.0},
    "eval": {"batch_size": 500},
    "keep": 0.1,
    "attacks": [{"name": "fgsm", "eps255": 16},
                {"name": "pgd", "eps255": 16, "steps": 20, "step255": 1, "random_start": False}],
    "sigmas": [4, 8, 16, 24, 32, 48],
    "timing": {"batch_size": 128, "steps": 7, "warmup": 2},
    # The README's speed claim on the seeds' own network: a full-width bottom-defective
    # ResNet-18 (untrained: a step costs the same), sparse vs the dense reference. ResNet-8 is
    # too narrow for the sparse kernels to pay much (the "timing" line above).
    "headline_timing": {"arch": "resnet18", "batch_size": 32, "steps": 3, "warmup": 1},
    "grid_attack": {"name": "mifgsm", "eps255": 16, "steps": 10},
}

QUICK: dict[str, Any] = {
    "progress": False,
    "data": {"name": "digits", "root": None, "n_train": 600, "n_test": 100},
    "train": {"epochs": 1, "batch_size": 64},
    "attacks": [{"name": "pgd", "eps255": 16, "steps": 3, "step255": 6, "random_start": False}],
    "sigmas": [8, 32],
    "timing": {"batch_size": 32, "steps": 2, "warmup": 1},
    "headline_timing": {"arch": "resnet18", "batch_size": 8, "steps": 1, "warmup": 0},
    "grid_attack": {"name": "mifgsm", "eps255": 16, "steps": 2},
}


def demo_config(quick: bool = False, overrides: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The demo's configuration; falls back to digits when Fashion-MNIST is absent."""
    cfg = deep_merge(DEMO, QUICK if quick else None)
    cfg = deep_merge(cfg, overrides)
    if cfg["data"]["name"] == "fashion-mnist" and not _has_fashion_mnist(cfg["data"]["root"]):
        cfg["data_note"] = (f"Fashion-MNIST not found in {cfg['data']['root']} (install it with "
                            "`apt-get install dataset-fashion-mnist`); FALLING BACK to scikit-learn's 8x8 digits.")
        cfg["data"] = deep_merge(cfg["data"], {"name": "digits", "root": None, "n_train": 1400, "n_test": 397})
        cfg["train"]["epochs"] = max(cfg["train"]["epochs"], 8)
    return cfg


def install_fashion_mnist(echo=print) -> bool:
    """Try ``apt-get install -y dataset-fashion-mnist`` (Debian; needs root and a package
    mirror). Returns whether it succeeded; never raises."""
    import os
    import shutil
    import subprocess

    if shutil.which("apt-get") is None or (hasattr(os, "geteuid") and os.geteuid() != 0):
        echo("cannot install dataset-fashion-mnist here (needs apt-get and root)")
        return False
    echo("installing dataset-fashion-mnist with apt-get ...")
    for cmd in (["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"],):
        try:
            if subprocess.call(cmd, stdout=subprocess.DEVNULL) == 0:
                return True
            subprocess.call(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL)
            return subprocess.call(cmd, stdout=subprocess.DEVNULL) == 0
        except OSError as e:
            echo(f"apt-get failed: {e}")
    return False


def _has_fashion_mnist(root: Optional[str]) -> bool:
    if not root:
        return False
    root = Path(root)
    return any((root / f).exists() for f in ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"))


def time_train_steps(models: Mapping[str, tuple[torch.nn.Module, str]], data, cfg: Mapping[str, Any]) -> dict[str, float]:
    """Median seconds of one SGD step (forward + backward + update) per entry of ``models``
    (name -> (model, backend)), on a batch of training images. Steps of the entries are
    interleaved, so a busy machine slows all of them alike; the models are throwaway copies."""
    import copy
    import sparsemask

    t = cfg["timing"]
    x, y = data.x_train[:t["batch_size"]], data.y_train[:t["batch_size"]]
    runs = {}
    for name, (model, backend) in models.items():
        m = copy.deepcopy(model).train()
        runs[name] = (m, torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9), backend, [])
    for i in range(t["warmup"] + t["steps"]):
        for m, opt, backend, times in runs.values():
            with sparsemask.backend(backend):
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(m(x), y).backward()
                opt.step()
                if i >= t["warmup"]:
                    times.append(time.perf_counter() - t0)
    return {name: sorted(r[3])[len(r[3]) // 2] for name, r in runs.items()}


def headline_speed(data, cfg: Mapping[str, Any], echo=print) -> Optional[dict[str, Any]]:
    """Training-step seconds of an untrained full-width bottom-defective model
    (``cfg["headline_timing"]["arch"]``, keep ``cfg["keep"]``) under the sparse kernels
    (``auto``) and the dense reference, and their ratio; None when not configured."""
    from sparsemask import models as smmodels

    head = cfg.get("headline_timing")
    if not head:
        return None
    torch.manual_seed(int(cfg["seed"]))
    model = smmodels.build(head["arch"], num_classes=data.num_classes, in_channels=data.in_channels,
                           input_size=data.input_size,
                           defective={"keep": cfg["keep"], "where": "bottom", "seed": int(cfg["seed"])})
    label = f"{arch_name(head['arch'])} {cfg['keep']:g}-Bottom"
    echo(f"timing a training step of a full-width {label} (untrained), sparse vs dense ...")
    step = time_train_steps({"auto": (model, "auto"), "dense": (model, "dense")}, data, {"timing": head})
    return {"label": label, "batch_size": head["batch_size"], "seconds": step,
            "speed_ratio": step["dense"] / step["auto"]}


def run_demo(out: str | Path = "runs/demo", quick: bool = False,
             overrides: Optional[Mapping[str, Any]] = None, echo=print, install_data: bool = False) -> dict[str, Any]:
    """Run the demo; returns the result dict (also in ``out``/results.json).

    ``install_data``: when Fashion-MNIST is missing, first try to install the Debian package.
    """
    t_start = time.perf_counter()
    if install_data and not quick and not _has_fashion_mnist(FASHION_MNIST_ROOT):
        install_fashion_mnist(echo)
    cfg = demo_config(quick, overrides)
    out = Path(out)
    writer = ResultWriter(out, "demo", cfg, "Standard vs bottom-defective (keep 0.1) ResNet: accuracy, transfer "
                                           "attacks, Gaussian noise and training-step speed.")
    if cfg.get("data_note"):
        echo("NOTE: " + cfg["data_note"])
        writer.note(cfg["data_note"])
    data = load_data(cfg)
    echo(f"data: {data.name} train {len(data.y_train)} / test {len(data.y_test)} images "
         f"{list(data.x_train.shape[1:])}; model {arch_name(cfg['model']['arch'], cfg['model'])}")

    seed = int(cfg["seed"])
    specs = {
        "source": ModelSpec(arch=cfg["model"]["arch"], defective=None, seed=seed + 100, label="source (standard)"),
        "standard": ModelSpec(arch=cfg["model"]["arch"], defective=None, seed=seed, label="standard"),
        "defective": ModelSpec(arch=cfg["model"]["arch"], seed=seed + 1, label=f"{cfg['keep']:g}-Bottom",
                               defective={"keep": cfg["keep"], "where": "bottom", "kind": "neuron"}),
    }
    models = {}
    for name, spec in specs.items():
        echo(f"training {spec.label} ...")
        models[name] = get_model(spec, cfg, data, writer.models)
        e = writer.models[-1]
        echo(f"  {e.get('train_seconds', 0):.1f} s, clean accuracy {fmt_pct(e['clean_accuracy'])}")
    clean = {n: e["clean_accuracy"] for n, e in zip(models, writer.models)}
    train_seconds = {n: e.get("train_seconds") for n, e in zip(models, writer.models)}

    x, y = data.x_test, data.y_test
    sdr: dict[str, dict[str, float]] = {}
    for params in cfg["attacks"]:
        label = attack_label(params)
        echo(f"transfer {label} from the source model ...")
        x_adv = run_attack(make_attack(models["source"], params, cfg), x, y, cfg, desc=label)
        sdr[label] = {n: success_defense_rate(models[n], x, x_adv, y, cfg) for n in ("standard", "defective")}
        sdr[label]["source (white-box)"] = success_defense_rate(models["source"], x, x_adv, y, cfg)

    echo("Gaussian noise ...")
    from .seed001_gaussian import add_noise

    noise = {n: [] for n in ("standard", "defective")}
    for i, sigma in enumerate(cfg["sigmas"]):
        xn = add_noise(x, float(sigma), seed=seed * 1000 + i)
        for n in noise:
            noise[n].append(float((predict(models[n], xn, cfg) == y).float().mean()))

    echo("timing a training step, sparse vs dense ...")
    step = time_train_steps({"auto": (models["defective"], "auto"), "dense": (models["defective"], "dense"),
                             "standard (dense model)": (models["standard"], "auto")}, data, cfg)
    speed_ratio = step["dense"] / step["auto"]
    headline = headline_speed(data, cfg, echo)

    summary = {
        "data": data.info(), "data_note": cfg.get("data_note", ""), "clean_accuracy": clean,
        "success_defense_rate": sdr, "gaussian_sigmas_255": cfg["sigmas"], "gaussian_accuracy": noise,
        "train_step_seconds": step, "speed_ratio_dense_over_sparse": speed_ratio,
        "train_seconds": train_seconds, "headline_timing": headline,
    }
    writer.numbers.update(summary)

    # One table: rows = target models, columns = the measures.
    header = ["Model", "Clean acc", *[f"Transfer {a} SDR" for a in sdr],
              *[f"Noise σ={s:g}" for s in cfg["sigmas"][-2:]], "Train step (s)"]
    rows = []
    for n in ("standard", "defective"):
        rows.append([specs[n].label, fmt_pct(clean[n]), *[fmt_pct(sdr[a][n]) for a in sdr],
                     *[fmt_pct(v) for v in noise[n][-2:]],
                     f"{step['standard (dense model)']:.3f}" if n == "standard" else
                     f"{step['auto']:.3f} (dense ref {step['dense']:.3f})"])
    table = markdown_table(header, rows, (
        f"{data.name}, {arch_name(cfg['model']['arch'], cfg['model'])}, {cfg['train']['epochs']} epochs on "
        f"{len(data.y_train)} images; SDR = success defense rate (accuracy on adversarial examples whose clean "
        f"originals the model gets right), adversarial examples crafted on a separately trained standard source "
        f"model (clean {fmt_pct(clean['source'])}). Training-step speed of the defective model, sparse kernels vs "
        f"dense reference: {speed_ratio:.2f}x (batch {cfg['timing']['batch_size']})"
        + (f"; a full-width {headline['label']} (untrained), same comparison: {headline['speed_ratio']:.2f}x "
           f"(batch {headline['batch_size']})." if headline else ".")))
    writer.table("Summary", table)

    plot_curves(writer.figure("gaussian_noise.png", "Accuracy under additive Gaussian noise"), cfg["sigmas"],
                {specs[n].label: v for n, v in noise.items()}, "noise σ (0-255 pixel scale)", "accuracy",
                "Accuracy under additive Gaussian noise", subtitle=writer.subtitle(data), legend_title="model",
                percent=True)
    plot_bars(writer.figure("transfer_sdr.png", "Transfer attack success defense rate"), list(sdr),
              {specs[n].label: [sdr[a][n] for a in sdr] for n in ("standard", "defective")},
              "success defense rate", "Transfer attacks from the source model", xlabel="attack (number = ε/255)",
              subtitle=writer.subtitle(data), legend_title="target model", percent=True)
    adversarial_grid(writer, models["defective"], data, cfg, title=specs["defective"].label)
    writer.numbers["total_seconds"] = time.perf_counter() - t_start
    result = writer.finish(data)
    (out / "summary.md").write_text(table)
    echo("")
    echo(table)
    echo(f"total {writer.numbers['total_seconds']:.0f} s; results and plots in {out}/")
    return result
