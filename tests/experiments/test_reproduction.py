"""The claims catalogue and the docs/reproduction.md generator.

* Every claim's ``ours`` + ``verdict`` on real smoke results of the three fastest experiments
  (001-gaussian, 001-patch-shuffle, 001-boundary: run once per module, shared model cache).
* Every claim with an experiment on synthetic ``numbers`` shaped like that experiment's real
  results (the shapes were taken from smoke runs of each experiment, and from the rows being
  added: Madry / SpatialDropout / DropBlock targets, the gray-box column, mixed p-Bottom, q-Top
  rows); one set built so that every claim holds, one so that every claim fails: the rules
  must say reproduced / holds for the first and not reproduced / vanishes for the second.
* A missing experiment or key gives "not run" with the key named, never an exception.
* The generator writes a row per claim, the summary and the links; missing results -> not run.
* (slow) every other experiment at smoke scale: no claim fails on the *shape* of its results.
"""
from __future__ import annotations

import copy
import json
import re

import pytest

from sparsemask.experiments import EXPERIMENTS, run_experiment
from sparsemask.experiments import claims as C
from sparsemask.experiments import reproduction as R

GOOD = {C.REPRODUCED, C.HOLDS}
BAD = {C.NOT_REPRODUCED, C.VANISHES}
ALL_VERDICTS = set(C.VERDICTS) | set(C.ADAPTIVE_VERDICTS)
FAST = ("001-gaussian", "001-patch-shuffle", "001-boundary")


# --------------------------------------------------------------------------- synthetic results

def _std(prefix=""):
    return f"{prefix}ResNet-18 (width 0.25)"


def _results(name, numbers, config=None):
    cfg = {"scale": "small", "model": {"arch": "resnet18", "width": 0.25}, "train": {"epochs": 4},
           "data": {"name": "fashion-mnist", "n_train": 6000, "n_test": 1000}}
    cfg.update(config or {})
    return {"experiment": name, "config": cfg, "numbers": numbers, "models": [], "figures": ["plot.png"],
            "data": {"name": "fashion-mnist", "n_train": 6000, "n_test": 1000, "shape": [1, 28, 28]},
            "environment": {"torch": "2.14.1"}, "notes": [], "tables": {}, "seconds": 1.0}


def _transfer(good):
    std, a = _std("resnet18/"), ["FGSM16", "PGD16"]
    sources = [_std(), "LeNet-5", "CW-MNIST", f"Ensemble(-{_std()})", "Ensemble(-LeNet-5)", "Ensemble(-CW-MNIST)"]
    rows = {std: 0.3}
    for p, v in ((0.5, 0.6), (0.3, 0.7), (0.1, 0.8)):
        rows[f"resnet18/{p:g}-Bottom"] = v if good else 0.25
    rows.update({"resnet18/SpatialDropout": 0.31 if good else 0.6, "resnet18/DropBlock": 0.29 if good else 0.6,
                 "resnet18/Label smoothing (ε=0.1)": 0.3,
                 "resnet18/Adversarial Training (Madry, PGD-3)": 0.7 if good else 0.95})
    sdr = {atk: {k: {s: v for s in sources} for k, v in rows.items()} for atk in a}
    for atk in a:
        sdr[atk]["resnet18/0.1-Bottom"][C.GRAYBOX_COLUMN] = 0.75 if good else 0.3
    clean = {k: 0.9 for k in rows}
    clean.update({f"resnet18/{p:g}-Bottom": (0.88 if good else 0.7) for p in (0.5, 0.3, 0.1)})
    clean["resnet18/Adversarial Training (Madry, PGD-3)"] = 0.8 if good else 0.95
    return _results("001-transfer", {"success_defense_rate": sdr, "clean_accuracy": clean,
                                     "source_clean_accuracy": {s: 0.9 for s in sources[:3]},
                                     "graybox_sources": {"resnet18/0.1-Bottom": {"arch": "resnet18"}}})


def _ablation(good):
    atk = ["FGSM16", "PGD16", "PGD32", "CW40"]
    sdr_rows = {_std(): 0.2}
    clean = {_std(): 0.92}
    for p, v, c in ((0.5, 0.5, 0.9), (0.3, 0.6, 0.88), (0.1, 0.8, 0.85)):
        sdr_rows[f"{p:g}-Bottom"] = v if good else {0.5: 0.3, 0.3: 0.25, 0.1: 0.2}[p]
        clean[f"{p:g}-Bottom"] = c
    for p in (0.5, 0.3, 0.1):
        sdr_rows[f"{p:g}-Top"], clean[f"{p:g}-Top"] = (0.2 if good else 0.5), 0.91
    variants = {"0.3-Bottom, 0.7-Top": (0.5, 0.86, 0.7, 0.86), "0.1-Bottom_DC": (0.3, 0.9, 0.5, 0.9),
                "0.1-Bottom_SM": (0.8, 0.75, 0.2, 0.9), "0.1-Bottom_x2": (0.78, 0.87, 0.05, 0.8),
                "0.1-Bottom_EN": (0.85, 0.87, 0.1, 0.8)}
    for k, (gs, gc, bs, bc) in variants.items():
        sdr_rows[k], clean[k] = (gs, gc) if good else (bs, bc)
    return _results("001-ablation", {"success_defense_rate": {k: {a: v for a in atk} for k, v in sdr_rows.items()},
                                     "clean_accuracy": clean, "source": _std()})


def _gaussian(good):
    std = [0.99, 0.8, 0.5, 0.3]
    b01 = [0.99, 0.95, 0.85, 0.6] if good else [0.9, 0.6, 0.3, 0.2]
    b05 = [0.99, 0.9, 0.7, 0.4] if good else [0.9, 0.6, 0.3, 0.2]
    return _results("001-gaussian", {
        "sigmas_255": [4.0, 16.0, 32.0, 64.0], "n_images": 600,
        "accuracy": {"resnet18/" + _std(): std, "resnet18/0.5-Bottom": b05, "resnet18/0.1-Bottom": b01},
        "clean_accuracy": {_std(): 0.9, "0.5-Bottom": 0.89, "0.1-Bottom": 0.88}})


def _patch(good):
    d = {"2x2": 0.85, "4x4": 0.4, "7x7": 0.1} if good else {"2x2": 0.95, "4x4": 0.7, "7x7": 0.3}
    return _results("001-patch-shuffle", {"accuracy": {"Standard CNN": {"2x2": 0.9, "4x4": 0.6, "7x7": 0.2},
                                                       "Defective CNN": d}, "n_images": 300})


def _boundary(good):
    return _results("001-boundary", {
        "S(M)": {"Standard CNN": 1e-3, "Standard CNN + LS": 1.1e-3 if good else 5e-3,
                 "Defective CNN": 4e-3 if good else 5e-4},
        "details": {k: {"success_rate": 1.0, "median_l2": 1.0} for k in ("Standard CNN", "Standard CNN + LS",
                                                                          "Defective CNN")}, "n_images": 100})


def _whitebox(good):
    white = {_std(): {"FGSM4": 0.8, "PGD8": 0.01},
             "0.5-Bottom": {"FGSM4": 0.85, "PGD8": 0.05} if good else {"FGSM4": 0.7, "PGD8": 0.0},
             "0.3-Bottom": {"FGSM4": 0.86, "PGD8": 0.08} if good else {"FGSM4": 0.6, "PGD8": 0.0}}
    # numbers["adaptive_whitebox"] as 001-whitebox writes it (experiments/adaptive.adaptive_verdict's keys)
    restart = {_std(): 0.0, "0.5-Bottom": 0.1 if good else 0.005, "0.3-Bottom": 0.08 if good else 0.0}
    adaptive = {"attack": "PGD8 adaptive (5 restarts x 40 steps)", "compared_with": "PGD8", "n_images": 200,
                "success_defense_rate": {k: {"adaptive": v, "non_adaptive": white[k]["PGD8"], "drop": None,
                                             "reference": None, "margin": 0.02, "vanishes": None}
                                         for k, v in restart.items()}}
    diag = 0.5 if good else 0.2
    dif = 0.51 if good else 0.55
    gray = {"0.5-Bottom": {"0.5-Bottom": diag, "0.3-Bottom": 0.5}, "0.5-Bottom_DIF": {"0.5-Bottom": dif, "0.3-Bottom": 0.52},
            "0.3-Bottom": {"0.5-Bottom": 0.6, "0.3-Bottom": diag}, "0.3-Bottom_DIF": {"0.5-Bottom": 0.61, "0.3-Bottom": dif}}
    return _results("001-whitebox", {"whitebox_success_defense_rate": white, "graybox_success_defense_rate": gray,
                                     "clean_accuracy": {k: 0.9 for k in white}, "adaptive_whitebox": adaptive})


def _mad(good):
    from sparsemask.experiments.seed002_mad import attack_row_label

    attacks = [{"name": "fgsm", "norm": "inf", "eps255": 8}, {"name": "pgd", "norm": "inf", "eps255": 3.825, "steps": 10},
               {"name": "cw", "kappa": 0, "steps": 50, "binary_steps": 5}]
    adaptive = {"name": "pgd", "norm": "inf", "eps255": 3.825, "steps": 10, "eot": 5, "label": "PGD EOT-adaptive"}
    f, p, c = (attack_row_label(a) for a in attacks)
    undef = {"Benign": 0.9, f: 0.3, p: 0.1, c: 0.05}
    if good:
        rates = {"rate 0.5": {"Benign": 0.89, f: 0.5, p: 0.4, c: 0.6},
                 "rate 0.75": {"Benign": 0.87, f: 0.6, p: 0.55, c: 0.9, "PGD EOT-adaptive": 0.45}}
        grids = {"7x7 / 3x3": {"Benign": 0.8, f: 0.7, p: 0.7, c: 0.9}, "7x7 / 7x7": {"Benign": 0.87, f: 0.6, p: 0.55, c: 0.9},
                 "14x14 / 7x7": {"Benign": 0.88, f: 0.5, p: 0.5, c: 0.85}}
    else:
        rates = {"rate 0.5": {"Benign": 0.85, f: 0.3, p: 0.1, c: 0.05},
                 "rate 0.75": {"Benign": 0.88, f: 0.27, p: 0.09, c: 0.0, "PGD EOT-adaptive": 0.12}}
        grids = {"7x7 / 3x3": {"Benign": 0.9, f: 0.5, p: 0.5, c: 0.5}, "7x7 / 7x7": {"Benign": 0.8, f: 0.6, p: 0.6, c: 0.6},
                 "14x14 / 7x7": {"Benign": 0.8, f: 0.6, p: 0.6, c: 0.6}}
    return _results("002-mad", {"grids": {"train": 7, "test": 7, "from_seed": True, "pairs": [[7, 3], [7, 7], [14, 7]]},
                                "undefended": undef, "rates": rates, "grid_sizes": grids, "n_images": 500},
                    {"attacks": attacks, "adaptive": adaptive})


def _cw(good):
    rs = "RS-1 (p=0.8)"

    def t(v):
        return {"mean": v, "std": v / 2, "success_rate": 1.0}

    table = {"Standard": t(0.1), rs: t(0.2 if good else 0.05), "0.1-Bottom": t(0.15)}
    # numbers["adaptive_spiking"] as 003-cw-distance writes it
    row = {"clean": 0.9, "non_adaptive": 0.5, "adaptive": 0.45 if good else 0.06, "drop": None, "reference": 0.05,
           "margin": 0.02, "vanishes": None}
    spiking = {"attack": "PGD L2 ε=1 EOT-10", "non_adaptive_attack": "PGD L2 ε=1", "n_images": 100,
               "accuracy": {"Standard (single pred.)": {"clean": 0.9, "non_adaptive": 0.05, "adaptive": None},
                            f"{rs} single pred.": {"clean": 0.9, "non_adaptive": 0.3, "adaptive": None},
                            f"{rs} MC Avg. (n=10)": row, f"{rs} Voting (n=10)": dict(row)}}
    return _results("003-cw-distance", {"single": table, "multi_4": copy.deepcopy(table), "n_images": 100,
                                        "adaptive_spiking": spiking})


def _stability(good):
    rs = "RS-1 (p=0.8)"
    return _results("003-stability", {
        "l2_levels": [0.5, 2, 4], "jpeg_qualities": [10, 50, 90], "n_images": 1000,
        "noise_stability": {"Standard": [0.99, 0.8, 0.5], rs: [0.99, 0.85, 0.6] if good else [0.98, 0.7, 0.4],
                            "0.1-Bottom": [0.99, 0.9, 0.7]},
        "jpeg_stability": {"Standard": [0.7, 0.9, 0.99], rs: [0.8, 0.92, 0.99] if good else [0.6, 0.85, 0.98],
                           "0.1-Bottom": [0.75, 0.9, 0.99]}})


def _multi(good):
    return _results("003-multi-surrogate", {
        "transfer_rate_by_bucket": {"Standard": [0.5, 0.7], "RS-1 (p=0.8)": [0.3, 0.4], "0.1-Bottom": [0.3, 0.4]},
        "bucket_edges": [0, 1.0, 100.0], "bucket_counts": [10, 20], "validated": 30, "generated": 96,
        "transfer_rate": {"Standard": 0.6, "RS-1 (p=0.8)": 0.3 if good else 0.65, "0.1-Bottom": 0.3 if good else 0.62}})


def _randomization(good):
    atk = ["FGSM2", "FGSM10", "DeepFool", "CW0"]
    plain = dict(zip(atk, [0.3, 0.2, 0.0, 0.0] if good else [0.3, 0.4, 0.0, 0.0]))

    def d(vals):
        return dict(zip(atk, vals))

    if good:
        res = {"clean": 0.89, "plain_model_vanilla": plain, "vanilla": d([0.7, 0.5, 0.85, 0.86]),
               "single": d([0.7, 0.5, 0.85, 0.86]), "ensemble": d([0.4, 0.3, 0.5, 0.45]),
               "eot": d([0.5, 0.45, 0.6, 0.6])}
    else:
        res = {"clean": 0.7, "plain_model_vanilla": plain, **{s: dict(plain) for s in ("vanilla", "single", "ensemble", "eot")}}
    return _results("004-randomization", {"accuracy": {"plain_clean": 0.9, "resize_pad": res,
                                                       "one_pixel_pad": copy.deepcopy(res),
                                                       "one_pixel_resize": copy.deepcopy(res)}, "n_images": 500})


BUILDERS = {"001-transfer": _transfer, "001-ablation": _ablation, "001-gaussian": _gaussian,
            "001-patch-shuffle": _patch, "001-boundary": _boundary, "001-whitebox": _whitebox, "002-mad": _mad,
            "003-cw-distance": _cw, "003-stability": _stability, "003-multi-surrogate": _multi,
            "004-randomization": _randomization}


def synthetic(good: bool) -> dict:
    return {name: build(good) for name, build in BUILDERS.items()}


TESTED = [c for c in C.CLAIMS if c.experiment is not None]


# --------------------------------------------------------------------------- the catalogue

def test_catalogue_is_complete_and_consistent():
    assert set(BUILDERS) == set(EXPERIMENTS), "a synthetic builder per registered experiment"
    assert {c.seed for c in C.CLAIMS} == {"000", "001", "002", "003", "004"}
    ids = [c.id for c in C.CLAIMS]
    assert len(ids) == len(set(ids))
    for c in C.CLAIMS:
        assert c.quote and c.where and c.seed_number, c.id
        for name in C.experiments_of(c):
            assert name in EXPERIMENTS, (c.id, name)
        if c.experiment is None:
            assert c.elsewhere, f"{c.id}: a claim no experiment measures must say where it is measured, or why not"
        else:
            assert c.keys and c.rule, c.id
    # Every experiment is read by at least one claim; adaptive rows exist for the attacks the seeds skipped.
    assert {n for c in TESTED for n in C.experiments_of(c)} == set(EXPERIMENTS)
    adaptive = {c.id for c in C.CLAIMS if c.adaptive}
    assert {"001-AD-restarts", "001-AD-graybox-same-masks", "002-AD-eot", "003-AD-eot", "004-AD-eot"} <= adaptive
    assert any("benchmarks/RESULTS.md" in c.elsewhere for c in C.CLAIMS), "the speed claim points at the benchmarks"


def test_quotes_are_verbatim():
    """Each quote (pieces between '…') occurs in its seed's text (compared without whitespace; the
    seeds' LaTeX ``$\\epsilon$`` read as ε)."""
    import glob

    texts = {}
    for path in glob.glob("/work/shared/seeds/*.txt") + glob.glob("../shared/seeds/*.txt"):
        seed = re.search(r"(\d{3})_[^/]*\.txt$", path).group(1)
        raw = re.sub(r"\s+", "", open(path, encoding="utf-8").read())
        texts[seed] = raw.replace("$\\epsilon$", "ε")
    if len(texts) < 5:
        pytest.skip("seed texts not found next to the checkout")
    for c in C.CLAIMS:
        for piece in c.quote.split("…"):
            piece = re.sub(r"\s+", "", piece)
            assert not piece or piece in texts[c.seed], f"{c.id}: not verbatim in seed {c.seed}: {piece!r}"


@pytest.mark.parametrize("claim", TESTED, ids=[c.id for c in TESTED])
def test_rules_on_synthetic_results(claim):
    """Shaped like the real results; one world where every claim holds, one where none does."""
    good = C.evaluate(claim, synthetic(True))
    bad = C.evaluate(claim, synthetic(False))
    assert good.verdict in GOOD, (good.verdict, good.reason)
    assert bad.verdict in BAD, (bad.verdict, bad.reason)
    assert good.summary and good.reason and bad.reason
    if claim.adaptive:
        assert good.verdict == C.HOLDS and bad.verdict == C.VANISHES


@pytest.mark.parametrize("claim", TESTED, ids=[c.id for c in TESTED])
def test_missing_results_and_keys_give_not_run(claim):
    # No results at all for its experiment.
    out = C.evaluate(claim, {})
    assert out.verdict == C.NOT_RUN and "no results" in out.reason
    # Results present but the numbers empty: not run, naming what is missing.
    empty = {n: _results(n, {}) for n in EXPERIMENTS}
    out = C.evaluate(claim, empty)
    assert out.verdict == C.NOT_RUN and out.reason.startswith("results lack numbers"), out.reason
    # Garbage in the numbers never raises.
    garbage = {n: _results(n, {k: 5 for k in ("success_defense_rate", "accuracy", "rates", "undefended", "single",
                                              "S(M)", "whitebox_success_defense_rate", "transfer_rate")})
               for n in EXPERIMENTS}
    assert C.evaluate(claim, garbage).verdict == C.NOT_RUN


def test_keys_being_added_are_named_when_absent():
    """Today's committed 001-transfer results predate the Madry / dropout / gray-box rows."""
    res = synthetic(True)
    tr = res["001-transfer"]["numbers"]["success_defense_rate"]
    for a in tr:
        for k in [k for k in tr[a] if "Madry" in k or "Dropout" in k or "DropBlock" in k]:
            del tr[a][k]
        del tr[a]["resnet18/0.1-Bottom"][C.GRAYBOX_COLUMN]
    by_id = {c.id: c for c in C.CLAIMS}
    for cid, needle in (("001-T2-madry", "Madry"), ("001-T2-dropout", "SpatialDropout"),
                        ("001-AD-graybox-same-masks", C.GRAYBOX_COLUMN)):
        out = C.evaluate(by_id[cid], res)
        assert out.verdict == C.NOT_RUN and needle in out.reason, out.reason
    # Without the mixed rows or a restart attack: not run, named.
    del res["001-ablation"]["numbers"]["success_defense_rate"]["0.3-Bottom, 0.7-Top"]
    assert "p-Bottom, q-Top" in C.evaluate(by_id["001-T4-mixed"], res).reason
    del res["001-whitebox"]["numbers"]["adaptive_whitebox"]
    assert "adaptive_whitebox" in C.evaluate(by_id["001-AD-restarts"], res).reason


def test_not_tested_claims():
    out = [C.evaluate(c, synthetic(True)) for c in C.CLAIMS if c.experiment is None]
    assert out and all(o.verdict == C.NOT_TESTED and o.reason == o.claim.elsewhere for o in out)


# --------------------------------------------------------------------------- real smoke results

@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory):
    """The three fastest experiments at smoke scale (one shared model cache), as <name>-smoke/."""
    root = tmp_path_factory.mktemp("reproduction-smoke")
    cache = str(root / "cache")
    for name in FAST:
        run_experiment(name, "smoke", out=root / f"{name}-smoke", overrides={"cache": cache, "data": {"n_test": 64}})
    return root


def _assert_shape_ok(outcomes):
    for o in outcomes:
        assert o.verdict in ALL_VERDICTS, o.verdict
        if o.verdict == C.NOT_RUN:
            # Only a named missing key is acceptable; never a shape error.
            assert o.reason.startswith(("results lack", "no results")), (o.claim.id, o.reason)


def test_claims_on_real_smoke_results(smoke_dir):
    results, absent = R.load_results(smoke_dir, "smoke")
    assert set(FAST) <= set(results)
    claims = [c for c in TESTED if set(C.experiments_of(c)) <= set(FAST)]
    assert len(claims) >= 6
    outcomes = [C.evaluate(c, results) for c in claims]
    _assert_shape_ok(outcomes)
    for o in outcomes:  # these experiments write every key their claims read
        assert o.verdict != C.NOT_RUN, (o.claim.id, o.reason)
        assert o.summary
    # The synthetic shapes of these experiments are the real ones.
    for name in FAST:
        assert _shape(results[name]["numbers"]) == _shape(BUILDERS[name](True)["numbers"]), name


def _shape(obj):
    """Nested key structure with row/column labels abstracted to their kind."""
    if isinstance(obj, dict):
        return {_kind(k): _shape(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return "list"
    return "number" if isinstance(obj, (int, float)) else type(obj).__name__


def _kind(key):
    if re.search(r"-(Bottom|Top)|ResNet|Standard|Defective", key):
        return "<model>"
    if re.fullmatch(r"\d+x\d+", key):
        return "<k x k>"
    return key


def test_generator_on_smoke_results(smoke_dir, tmp_path):
    out = tmp_path / "docs" / "reproduction.md"
    assert R.main(["--results", str(smoke_dir), "--suffix", "smoke", "--out", str(out)]) == 0
    text = out.read_text()
    for c in C.CLAIMS:
        assert f"`{c.id}`" in text, c.id
    # The scale is read from the results' config, not typed.
    assert "digits" in text and "scale smoke" in text
    # Experiments without results: their claims are 'not run', and the links say so.
    assert "**not run**" in text and "002-mad" in text
    assert text.count("| `") >= len(C.CLAIMS)
    assert "## Summary" in text and "## Keys read and rules" in text
    for name in FAST:
        assert f"{name}-smoke/results.md" in text
    assert (out.parent / "reproduction_gaussian.png").read_bytes()[:4] == b"\x89PNG"


def test_generator_without_any_results(tmp_path):
    out = tmp_path / "reproduction.md"
    outcomes = R.write(tmp_path / "nothing", out, plots=False)
    assert {o.verdict for o in outcomes} == {C.NOT_RUN, C.NOT_TESTED}
    text = out.read_text()
    assert "No results found" in text
    rows = [line for line in text.splitlines() if line.startswith("| `") and "**" in line]
    assert len(rows) == len(C.CLAIMS)


def test_generator_on_synthetic_results(tmp_path):
    for name, res in synthetic(True).items():
        d = tmp_path / "results" / f"{name}-small"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(res))
    (tmp_path / "results" / "002-mad-small" / "results.json").write_text("{not json")
    outcomes = R.write(tmp_path / "results", tmp_path / "reproduction.md", plots=True)
    by_id = {o.claim.id: o for o in outcomes}
    assert by_id["002-T3-main"].verdict == C.NOT_RUN and "unreadable" in (tmp_path / "reproduction.md").read_text()
    assert by_id["001-T2-headline"].verdict == C.REPRODUCED
    assert (tmp_path / "reproduction_jpeg.png").exists()


# --------------------------------------------------------------------------- every experiment (slow)

@pytest.mark.slow
def test_claims_on_every_smoke_experiment(smoke_dir):
    cache = str(smoke_dir / "cache")
    for name in EXPERIMENTS:
        if name not in FAST:
            run_experiment(name, "smoke", out=smoke_dir / f"{name}-smoke", overrides={"cache": cache, "data": {"n_test": 64}})
    results, absent = R.load_results(smoke_dir, "smoke")
    assert not absent
    _assert_shape_ok([C.evaluate(c, results) for c in TESTED])
