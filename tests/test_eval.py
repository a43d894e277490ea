"""sparsemask.eval.run_attack_sweep: one attack over several ε, one row each; and quiet progress."""
from __future__ import annotations

import pytest
import torch

from sparsemask import eval as ev
from sparsemask.attacks import PGD, make_attack


@pytest.fixture(scope="module")
def data(digits_data):
    _, _, x, y = digits_data
    return x[:48], y[:48]


def test_sweep_rows_match_single_runs(digits_model, data):
    x, y = data
    rows = ev.run_attack_sweep(digits_model, {"name": "pgd", "steps": 3}, x, y, eps255=[2, 8, 32], batch_size=16,
                               keep_examples=True)
    assert list(rows) == [2, 8, 32]
    clean = ev.accuracy(digits_model, x, y)
    for e, row in rows.items():
        assert row["eps"] == pytest.approx(e / 255) and row["eps255"] == pytest.approx(e)
        assert row["clean_accuracy"] == pytest.approx(clean)
        assert row["mean_linf_255"] <= e + 1e-3
        single = ev.run_attack(make_attack(digits_model, {"name": "pgd", "steps": 3, "eps255": e}, seed=0), x, y,
                               batch_size=16)
        torch.testing.assert_close(row["x_adv"], single)
        assert row["adversarial_accuracy"] == pytest.approx(ev.accuracy(digits_model, single, y))
    accs = [rows[e]["adversarial_accuracy"] for e in (2, 8, 32)]
    assert accs[0] >= accs[1] >= accs[2] and accs[2] < clean


def test_sweep_callable_and_eps_scale(digits_model, data):
    x, y = data
    seen = []

    def make(e):
        seen.append(e)
        return PGD(digits_model, eps=e, steps=2, seed=0)

    rows = ev.run_attack_sweep(digits_model, make, x[:16], y[:16], eps=[0.01, 0.1])
    assert seen == [0.01, 0.1] and list(rows) == [0.01, 0.1] and "x_adv" not in rows[0.1]
    assert rows[0.1]["eps255"] == pytest.approx(25.5)


def test_sweep_errors(digits_model, data):
    x, y = data
    with pytest.raises(ValueError, match="one of eps"):
        ev.run_attack_sweep(digits_model, "pgd", x, y)
    with pytest.raises(ValueError, match="one of eps"):
        ev.run_attack_sweep(digits_model, "pgd", x, y, eps=[0.1], eps255=[8])
    with pytest.raises(ValueError, match="> 0"):
        ev.run_attack_sweep(digits_model, "pgd", x, y, eps255=[0])
    with pytest.raises(ValueError, match="leave eps/eps255 out"):
        ev.run_attack_sweep(digits_model, {"name": "pgd", "eps255": 8}, x, y, eps255=[2])
    with pytest.raises(TypeError, match="registry name"):
        ev.run_attack_sweep(digits_model, 3, x, y, eps255=[2])


def test_progress_is_off_by_default(digits_model, data, capsys):
    x, y = data
    ev.accuracy(digits_model, x, y, batch_size=8)
    assert capsys.readouterr().err == ""
    ev.accuracy(digits_model, x, y, batch_size=8, progress=True, desc="clean accuracy")
    assert "clean accuracy" in capsys.readouterr().err
