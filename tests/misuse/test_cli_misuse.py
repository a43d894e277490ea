"""CLI: non-positive --n-train/--n-test/--eot and misspelled --set keys are refused, naming
the option (issue 15, item 8)."""
from __future__ import annotations

import pytest

from sparsemask.cli import main
from sparsemask.experiments.common import resolve_config


@pytest.mark.parametrize("argv, option", [
    (["train", "--n-train", "-5", "--out", "m.pt"], "--n-train"),
    (["train", "--n-train", "0", "--out", "m.pt"], "--n-train"),
    (["train", "--n-test", "-1", "--out", "m.pt"], "--n-test"),
    (["attack", "m.pt", "--eot", "0"], "--eot"),
    (["attack", "m.pt", "--eot", "-3"], "--eot"),
])
def test_cli_refuses_non_positive_counts(argv, option, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert option in err and ">= 1" in err
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("overrides", [{"trian": {"epochs": 1}}, {"train": {"epoch": 1}},
                                       {"data": {"n_trian": 5}}])
def test_set_refuses_unknown_keys(overrides):
    with pytest.raises(ValueError, match=r"unknown setting"):
        resolve_config("smoke", {}, None, overrides)


def test_set_known_keys_still_apply():
    cfg = resolve_config("smoke", {}, None, {"train": {"epochs": 1}, "data": {"root": "/x"}})
    assert cfg["train"]["epochs"] == 1 and cfg["data"]["root"] == "/x"


@pytest.mark.parametrize("name, content", [("c.pt", b"\x80\x02\xff\xfe binary"), ("c.json", b"{}")])
def test_config_file_with_wrong_extension(tmp_path, name, content):
    from sparsemask.experiments.common import load_config_file

    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=r"\.yaml.*\.toml"):
        load_config_file(tmp_path / name)
