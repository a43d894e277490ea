"""The experiment framework: config resolution, files, writers; the CLI's help and argument errors."""
from __future__ import annotations

import json

import pytest
import torch

from sparsemask import cli
from sparsemask.experiments import EXPERIMENTS, get_experiment, run_experiment
from sparsemask.experiments.common import (SCALES, ResultWriter, deep_merge, load_config_file, markdown_table,
                                           parse_overrides, resolve_config, save_adversarial_grid, variant_label)


def test_deep_merge_nested_and_copies():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 3}
    out = deep_merge(base, {"a": {"b": 5}, "e": 6})
    assert out == {"a": {"b": 5, "c": [1, 2]}, "d": 3, "e": 6}
    out["a"]["c"].append(3)
    assert base["a"]["c"] == [1, 2]


def test_resolve_config_merge_order(tmp_path):
    defaults = {"all": {"keeps": [0.5], "train": {"epochs": 7}}, "smoke": {"keeps": [0.1]}}
    cfg = resolve_config("smoke", defaults, {"train": {"lr": 0.2}}, {"train": {"epochs": 1}})
    assert cfg["keeps"] == [0.1]  # scale-specific default beats "all"
    assert cfg["train"]["lr"] == 0.2  # config file beats preset
    assert cfg["train"]["epochs"] == 1  # --set beats everything
    assert cfg["train"]["batch_size"] == SCALES["smoke"]["train"]["batch_size"]
    assert cfg["scale"] == "smoke"


def test_unknown_scale_and_experiment():
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        resolve_config("huge")
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        get_experiment("nope")


def test_config_files_yaml_and_toml(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("train:\n  epochs: 4\nkeeps: [0.3, 0.1]\n")
    t = tmp_path / "c.toml"
    t.write_text("keeps = [0.2]\n[train]\nepochs = 5\n")
    assert load_config_file(y) == {"train": {"epochs": 4}, "keeps": [0.3, 0.1]}
    assert load_config_file(t) == {"keeps": [0.2], "train": {"epochs": 5}}
    bad = tmp_path / "c.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="expected a .yaml, .yml or .toml"):
        load_config_file(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config_file(tmp_path / "missing.yaml")
    scalar = tmp_path / "s.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ValueError, match="mapping at top level"):
        load_config_file(scalar)


def test_committed_configs_parse():
    from pathlib import Path

    from sparsemask.experiments.config import SHIPPED_CONFIGS, shipped_configs

    files = [SHIPPED_CONFIGS / name for name in shipped_configs()]
    assert files, "sparsemask/experiments/configs/ should hold example experiment configs"
    # by name from anywhere, and by the old configs/ path
    assert load_config_file(files[0].name) == load_config_file(Path("configs") / files[0].name) == \
        load_config_file(files[0])
    for f in files:
        cfg = load_config_file(f)
        name = cfg.pop("experiment")
        assert name in EXPERIMENTS, f"{f.name}: unknown experiment {name}"
        resolve_config(cfg.pop("scale", "paper"), get_experiment(name).DEFAULTS, cfg)


def test_parse_overrides():
    assert parse_overrides(["train.epochs=3", "data.name=mnist", "keeps=[0.5, 0.1]", "x=null"]) == {
        "train": {"epochs": 3}, "data": {"name": "mnist"}, "keeps": [0.5, 0.1], "x": None}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["train.epochs"])


def test_variant_labels_follow_the_seed():
    assert variant_label("resnet18", None) == "ResNet-18"
    assert variant_label("resnet18", {"keep": 0.5}) == "0.5-Bottom"
    assert variant_label("resnet18", {"keep": 0.3, "where": "top"}) == "0.3-Top"
    assert variant_label("resnet18", {"keep": 0.1, "kind": "channel"}) == "0.1-Bottom_DC"
    assert variant_label("resnet18", {"keep": 0.1, "kind": "shared"}) == "0.1-Bottom_SM"
    assert variant_label("resnet18", {"keep": 0.5, "widen": 2}) == "0.5-Bottom_x2"
    assert variant_label("wide_resnet", None, {"depth": 8, "width": 1}) == "ResNet-8"


def test_writer_outputs(tmp_path):
    w = ResultWriter(tmp_path, "x", {"scale": "smoke", "train": {"epochs": 2}}, "desc")
    w.numbers["acc"] = {"a": 0.5, "nan": float("nan")}
    w.table("T", markdown_table(["A", "B"], [[1, 2]], "caption"))
    x = torch.rand(3, 1, 8, 8)
    save_adversarial_grid(w.figure("g.png", "grid"), x, (x + 0.1).clamp(0, 1), torch.arange(3),
                          torch.arange(3), torch.zeros(3, dtype=torch.long))
    w.finish()
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["config"]["train"]["epochs"] == 2
    assert result["numbers"]["acc"]["a"] == 0.5 and result["numbers"]["acc"]["nan"] is None
    md = (tmp_path / "results.md").read_text()
    assert "| A | B |" in md and "![grid](g.png)" in md
    assert (tmp_path / "g.png").stat().st_size > 1000


def test_results_md_cites_the_seed_and_prints_no_python_dict(tmp_path):
    from sparsemask.data import Data
    from sparsemask.experiments.citations import SEEDS

    x = torch.rand(4, 1, 8, 8)
    data = Data("digits", x, torch.arange(4), x, torch.arange(4), 4, note="a note")
    w = ResultWriter(tmp_path, "003-toy", {"scale": "smoke", "train": {"epochs": 2, "milestones": [1]}}, "desc")
    w.table("T", markdown_table(["A", "B"], [[{"k": 1}, [1, 2]]]))
    w.note({"odd": "note"})
    w.finish(data)
    md = (tmp_path / "results.md").read_text()
    assert "{'" not in md and "'}" not in md
    assert SEEDS["003"].title in md and SEEDS["003"].authors in md
    assert "digits, 1x8x8 images, 4 classes, 4 train / 4 test images, a note" in md
    assert '"epochs": 2' in md  # the configuration, as a JSON block


def test_data_carries_class_names_into_the_grid(tmp_path):
    from sparsemask.data import Data, load_arrays

    assert load_arrays("digits", n_train=20, n_test=20).classes == tuple(str(i) for i in range(10))
    x = torch.rand(2, 1, 8, 8)
    assert Data("d", x, torch.arange(2), x, torch.arange(2), 2).classes == ("0", "1")
    with pytest.raises(ValueError, match="class names"):
        Data("d", x, torch.arange(2), x, torch.arange(2), 2, classes=("a",))
    save_adversarial_grid(tmp_path / "g.png", x, x.flip(0), torch.arange(2), torch.arange(2), torch.ones(2, dtype=torch.long),
                          classes=("T-shirt/top", "Trouser"), row_names=("original", "shuffled"), difference=None)
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("kind", ["bars", "curves"])
def test_legends_sit_outside_the_axes(tmp_path, kind):
    from sparsemask.experiments.report import plot_bars, plot_curves

    series = {f"model {i}": [0.9, 0.5, 0.1] for i in range(4)}
    if kind == "bars":
        fig = plot_bars(tmp_path / "b.png", ["a", "b", "c"], series, "rate", "t", percent=True)
    else:
        fig = plot_curves(tmp_path / "c.png", [1, 2, 3], series, "x", "y", "t", percent=True)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()  # the figure comes back closed, without a canvas
    ax = fig.axes[0]
    legend, axes_box = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    assert legend.x0 >= axes_box.x1, "the legend must not overlap the data area"


def test_readme_cites_every_seed_paper():
    from pathlib import Path

    from sparsemask.experiments.citations import SEEDS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert all(c.title in readme and c.authors in readme for c in SEEDS.values())


def test_markdown_table_layout():
    md = markdown_table(["Architecture", "PGD"], [["ResNet-18", "5.98%"]])
    assert md.splitlines() == ["| Architecture | PGD |", "|---|---|", "| ResNet-18 | 5.98% |"]


@pytest.mark.parametrize("command", [None, "train", "evaluate", "attack", "bench", "experiment", "demo"])
def test_cli_help(command, capsys):
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "usage: sparsemask" in text
    assert "example" in text  # every help page carries runnable examples
    if command == "experiment":
        assert all(name in text for name in EXPERIMENTS)


def test_cli_experiment_list_and_print_config(capsys):
    from sparsemask.experiments.citations import SEEDS

    assert cli.main(["experiment", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in EXPERIMENTS)
    assert all(c.title in out and c.authors in out for c in SEEDS.values()), "--list cites every seed paper"
    assert cli.main(["experiment", "001-transfer", "--scale", "paper", "--print-config",
                     "--set", "data.root=/data/cifar"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["data"] == {"name": "cifar10", "root": "/data/cifar", "n_train": None, "n_test": 5000, "seed": 0}
    assert cfg["train"]["epochs"] == 350 and cfg["train"]["milestones"] == [150, 250]


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["experiment", "001-transfer", "--scale", "huge"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown experiment"):
        run_experiment("nope")
