"""The recipes of docs/architecture.md hold: a backend, an attack and an experiment are each
added by one file (here: the code in this test module), and every entry point sees them.
Also the layering rule: no module imports a private name from another module."""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import sparsemask
from sparsemask import attacks, dispatch
from sparsemask.cli import build_parser

PACKAGE = Path(sparsemask.__file__).parent


# --------------------------------------------------------------------------------------
# A toy backend: the masked convolution as im2col + matmul over the kept positions only.

def _toy_conv(input, weight, bias, mask, stride, padding, dilation, max_density):
    """conv2d(input, weight, bias) * mask via unfold, computing only positions with a kept neuron."""
    n, _, h, w = input.shape
    c_out, _, kh, kw = weight.shape
    ho, wo = mask.shape[1:]
    cols = F.unfold(input, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # [N, C_in*kh*kw, L]
    live = mask.flatten(1).any(0).nonzero().squeeze(1)                                   # positions with work
    out = input.new_zeros(n, c_out, ho * wo)
    vals = weight.flatten(1) @ cols[:, :, live]                                           # [N, C_out, |live|]
    if bias is not None:
        vals = vals + bias[:, None]
    out = out.index_copy(2, live, vals) * mask.flatten(1)
    return out.view(n, c_out, ho, wo)


@pytest.fixture
def toy_backend():
    dispatch.register_backend("toy", _toy_conv, devices=("cpu",), description="im2col over kept positions",
                              max_density={("cpu", torch.float64): 0.9})
    try:
        yield "toy"
    finally:
        dispatch.unregister_backend("toy")


def test_a_backend_is_one_registration(toy_backend, monkeypatch):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(5, 5, 4) < 0.3
    assert toy_backend in sparsemask.backend_names()
    with sparsemask.backend(toy_backend):
        out = sparsemask.masked_conv2d(x, w, b, mask, stride=2, padding=1)
        torch.autograd.gradcheck(lambda *a: sparsemask.masked_conv2d(*a, mask, stride=2, padding=1), (x, w, b))
    ref = F.conv2d(x, w, b, 2, 1) * mask
    torch.testing.assert_close(out, ref)
    # auto asks the registry: the toy's row (0.9 for CPU float64) beats the C++ one (0.5);
    # with few input channels both are capped at 0.3 and the first registered (C++) wins.
    # (The hand rows, as without the generated CPU crossover table: this is about the registry.)
    monkeypatch.setitem(dispatch._cpu_table_cache, "table", None)
    wide = torch.randn(2, 8, 9, 8, dtype=torch.float64)
    w8, mask8 = torch.randn(5, 8, 3, 3, dtype=torch.float64), torch.ones(5, 9, 8, dtype=torch.bool)
    impl, limit = dispatch.conv_backend(wide, w8, mask8, [1, 1])
    assert (impl.name, limit) == ("toy", 0.9)
    assert dispatch.conv_backend(x, w, torch.ones(5, 9, 8, dtype=torch.bool), [1, 1])[0].name == "cpu"
    impl, limit = dispatch.conv_backend(wide.float(), w8.float(), mask8, [1, 1])  # no float32 row: the C++ kernel stays
    assert (impl.name, limit) == ("cpu", dispatch.max_density("cpu", torch.float32, 8))
    # the CLI lists it
    args = build_parser().parse_args(["evaluate", "m.pt", "--backend", toy_backend])
    assert args.backend == toy_backend


def test_backend_registry_errors(toy_backend):
    with pytest.raises(ValueError, match="already registered"):
        dispatch.register_backend("toy", _toy_conv, devices=("cpu",))
    with pytest.raises(ValueError, match="name"):
        dispatch.register_backend("auto", _toy_conv, devices=("cpu",))
    with pytest.raises(ValueError, match="max_density"):
        dispatch.register_backend("toy2", _toy_conv, devices=("cpu",), max_density={("cpu", torch.float32): 2.0})
    with pytest.raises(ValueError, match="unknown sparsemask backend 'nope'.*toy"):
        sparsemask.set_backend("nope")
    with pytest.raises(RuntimeError, match="backend 'toy' cannot run meta tensors"):
        with sparsemask.backend("toy"):
            x = torch.empty(1, 2, 4, 4, device="meta")
            sparsemask.masked_conv2d(x, torch.empty(3, 2, 3, 3, device="meta"), None,
                                     torch.ones(3, 2, 2, dtype=torch.bool, device="meta"))


# --------------------------------------------------------------------------------------
# A toy attack: one signed random step of size eps (a noise baseline).

class ToyNoise(attacks.Attack):
    """Random sign noise of L-inf size eps (a baseline, not an adversary)."""

    gradient_based = False

    def __init__(self, model, eps: float = 8 / 255, *, seed: int = 0, progress: bool = False):
        super().__init__(model, progress=progress)
        self.eps, self.seed = float(eps), seed

    def _run(self, x, y, targets):
        g = torch.Generator().manual_seed(self.seed)
        noise = torch.randint(0, 2, x.shape, generator=g).to(x) * 2 - 1
        return (x + self.eps * noise).clamp(0, 1)


@pytest.fixture
def toy_attack():
    attacks.register_attack("toy_noise")(ToyNoise)
    try:
        yield "toy_noise"
    finally:
        attacks.unregister_attack("toy_noise")


def test_an_attack_is_one_registration(toy_attack):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    assert toy_attack in attacks.attack_names()
    attack = attacks.make_attack(model, {"name": toy_attack, "eps255": 8}, seed=3)
    assert isinstance(attack, ToyNoise) and attack.seed == 3 and attack.eps == pytest.approx(8 / 255)
    x_adv = attack(x, y)
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-7 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert attacks.attack_label({"name": toy_attack, "eps255": 8}) == "TOYNOISE8"
    args = build_parser().parse_args(["attack", "m.pt", "--attack", toy_attack])
    assert args.attack == toy_attack
    with pytest.raises(ValueError, match="toy_noise does not take 'steps'"):
        attacks.make_attack(model, {"name": toy_attack, "steps": 3})
    with pytest.raises(ValueError, match="unknown attack 'nope'"):
        attacks.make_attack(model, {"name": "nope"})


def test_bim_runs_bim():
    """The config name 'bim' used to build PGD with random_start=False (PGD's 2.5*eps/steps
    step); the registry gives the BIM class (Kurakin's eps/steps)."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    attack = attacks.make_attack(model, {"name": "bim", "eps255": 8, "steps": 4})
    assert type(attack) is attacks.BIM and not attack.random_start


# --------------------------------------------------------------------------------------
# A toy experiment: this module is one (NAME, DESCRIPTION, DEFAULTS, run).

NAME = "toy-accuracy"
DESCRIPTION = "toy: clean accuracy of an untrained model on a few test images"
DEFAULTS = {"all": {"n_images": 16}}


def run(cfg, out):
    from sparsemask.experiments.common import ModelSpec, ResultWriter, accuracy, load_data, model_from_spec

    data = load_data(cfg)
    model = model_from_spec(ModelSpec(arch=cfg["model"]["arch"]), cfg, data).eval()
    n = cfg["n_images"]
    writer = ResultWriter(out, NAME, cfg, DESCRIPTION)
    writer.numbers.update(accuracy=accuracy(model, data.x_test[:n], data.y_test[:n], cfg), n=n)
    writer.table("toy", f"accuracy {100 * writer.numbers['accuracy']:.1f}% on {n} images")
    return writer.finish(data)


@pytest.fixture
def toy_experiment():
    from sparsemask import experiments

    experiments.register_experiment(NAME, __name__)
    try:
        yield NAME
    finally:
        experiments.unregister_experiment(NAME)


def test_an_experiment_is_one_registration(toy_experiment, tmp_path):
    from sparsemask import experiments

    assert experiments.describe()[toy_experiment] == DESCRIPTION
    result = experiments.run_experiment(toy_experiment, scale="smoke", out=tmp_path,
                                        overrides={"data": {"n_train": 32, "n_test": 16}})
    assert result["numbers"]["n"] == 16 and 0.0 <= result["numbers"]["accuracy"] <= 1.0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["experiment"] == NAME and "## toy" in (tmp_path / "results.md").read_text()


# --------------------------------------------------------------------------------------
# Layering: no module imports a private name (one starting with "_") from another module.

def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("sparsemask")):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    # a module (source, compiled extension or package) next to this one
                    is_module = node.module is None and node.level == 1 and any(path.parent.glob(f"{alias.name}.*")) \
                        or (path.parent / alias.name).is_dir()
                    if not is_module:  # a private module of the same package is fine; a private name is not
                        found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {alias.name}")
    return found


def test_no_module_imports_a_private_name_from_another():
    offenders = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in _private_imports(path)]
    assert not offenders, "private names imported across modules:\n" + "\n".join(offenders)


def test_the_old_backend_module_path_still_works_with_a_warning():
    with pytest.warns(DeprecationWarning, match="sparsemask.dispatch"):
        from sparsemask.backend import max_density  # noqa: F401
    assert callable(sparsemask.backend) and sys.modules["sparsemask.backend"] is not sparsemask.backend
