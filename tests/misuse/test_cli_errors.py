"""CLI: user errors print one line `sparsemask: error: ...` and exit 1 without a traceback;
--debug shows it; every option's help states its default (issue 15, CLI)."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparsemask.cli import build_parser, main

REPO = Path(__file__).resolve().parents[2]


def _walk(parser: argparse.ArgumentParser, prefix: str = "sparsemask"):
    """(command path, parser, action) for every action of the parser and its subparsers."""
    for action in parser._actions:
        yield prefix, parser, action
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{prefix} {name}")


def test_every_option_has_help_that_states_its_default():
    missing_help, missing_default = [], []
    actions = list(_walk(build_parser()))
    assert len(actions) > 60  # the walk reached the subcommands
    for where, parser, action in actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        name = f"{where} {'/'.join(action.option_strings) or action.dest}"
        if not (action.help or "").strip():
            missing_help.append(name)
            continue
        if action.option_strings and not action.required:
            shown = parser._get_formatter()._get_help_string(action)
            if "(default" not in shown:
                missing_default.append(name)
    assert not missing_help, f"options without help: {missing_help}"
    assert not missing_default, f"options whose help does not state the default: {missing_default}"


def test_help_renders_for_every_subcommand(capsys):
    # %-formatting of the help strings fails only when rendered (e.g. a stray "%" in a help text).
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subs.choices.items():
        text = sub.format_help()
        assert "--debug" in text and "(default" in text, name


def _bad_checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a checkpoint at all")
    return path


@pytest.mark.parametrize("case, argv, needle", [
    ("missing checkpoint", lambda t: ["evaluate", str(t / "missing.pt")], "missing.pt"),
    ("directory checkpoint", lambda t: ["evaluate", str(t)], "directory"),
    ("damaged checkpoint", lambda t: ["attack", str(_bad_checkpoint(t))], "garbage.pt"),
    ("missing source", lambda t: ["attack", str(t / "a.pt"), "--source", str(t / "b.pt")], "a.pt"),
    ("config extension", lambda t: ["experiment", "001-transfer", "--config", str(_bad_checkpoint(t))],
     ".yaml"),
    ("unknown --set key", lambda t: ["experiment", "001-transfer", "--print-config", "--set", "trian.epochs=1"],
     "trian"),
    ("unknown dataset", lambda t: ["train", "--dataset", "nosuch", "--out", str(t / "m.pt")], "nosuch"),
])
def test_user_errors_print_one_line(case, argv, needle, tmp_path, capsys):
    status = main(argv(tmp_path))
    err = capsys.readouterr().err
    assert status == 1, case
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparsemask: error: "), err
    assert needle in lines[0] and "Traceback" not in err


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_reraises(where, tmp_path):
    argv = ["evaluate", str(tmp_path / "missing.pt")]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        main(argv)


def test_ctrl_c_prints_one_line(monkeypatch, capsys):
    import sparsemask.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "evaluate", interrupted)
    assert main(["evaluate", "m.pt"]) == 130
    assert capsys.readouterr().err.strip() == "sparsemask: interrupted"
    with pytest.raises(KeyboardInterrupt):
        main(["--debug", "evaluate", "m.pt"])


def test_python_m_sparsemask_has_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "sparsemask", "evaluate", str(tmp_path / "missing.pt")]
    quiet = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr
    assert quiet.stderr.startswith("sparsemask: error: ") and "missing.pt" in quiet.stderr
    loud = subprocess.run([*cmd, "--debug"], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "FileNotFoundError" in loud.stderr
