"""Fault tests: SIGKILL during training and during a checkpoint write, a full disk.

The last good checkpoint survives and loads, a killed writer's temporary file is removed
when the next run starts, and the resumed run ends bit-identical to an uninterrupted one
(issue 15, faults). The runs are child processes (_fault_child.py) so that a real SIGKILL
lands where the child blocks on purpose.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import sparsemask.train as smt
from sparsemask.train import load_checkpoint, remove_stale_temp_files, save_checkpoint

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL and tmpfs are POSIX")

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("_fault_child.py")
EPOCHS = 4


def _tiny_model():
    """The child's model, built in this process (import-mode=importlib: load the file by path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_fault_child", CHILD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.tiny_model()


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _run(ckpt: Path, mode: str = "run", epochs: int = EPOCHS, marker: Path = Path("unused")):
    done = subprocess.run([sys.executable, str(CHILD), str(ckpt), str(epochs), mode, str(marker)], env=_env(),
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _run_and_kill(ckpt: Path, mode: str, marker: Path) -> int:
    """Start a child that blocks where ``mode`` says, SIGKILL it once it wrote ``marker``; returns its pid."""
    child = subprocess.Popen([sys.executable, str(CHILD), str(ckpt), str(EPOCHS), mode, str(marker)], env=_env(),
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not marker.exists():
        if child.poll() is not None:
            raise AssertionError(f"child ended ({child.returncode}) before blocking: {child.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, "child never reached the point to kill"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=60) == -signal.SIGKILL
    return child.pid


def _weights(path: Path):
    return torch.load(path, weights_only=True)["model"]


@pytest.mark.slow  # ~10 s: several training processes killed and resumed
def test_sigkill_during_training_and_checkpoint_write_then_resume_bit_identically(tmp_path):
    reference = tmp_path / "reference.pt"
    _run(reference)
    ckpt = tmp_path / "run" / "ckpt.pt"

    # 1. Killed in the middle of epoch 3: epoch 2's checkpoint is the last good one.
    _run_and_kill(ckpt, "hang-in-epoch:2", tmp_path / "marker1")
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    assert not list(ckpt.parent.glob("*.tmp-*"))

    # 2. Resumed, then killed half-way through writing epoch 3's checkpoint.
    pid = _run_and_kill(ckpt, "hang-in-write:3", tmp_path / "marker2")
    temp = Path((tmp_path / "marker2").read_text())
    assert temp == ckpt.with_name(f"ckpt.pt.tmp-{pid}") and temp.stat().st_size > 0
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2  # untouched by the half-written file
    assert load_checkpoint(ckpt, _tiny_model())["epoch"] == 2

    # 3. The next start removes the dead writer's file and finishes the run.
    _run(ckpt)
    assert not temp.exists() and not list(ckpt.parent.glob("*.tmp-*"))
    final, ref = torch.load(ckpt, weights_only=True), torch.load(reference, weights_only=True)
    assert final["epoch"] == ref["epoch"] == EPOCHS
    assert [h["epoch"] for h in final["history"]] == [1, 2, 3, 4]
    assert final["model"].keys() == ref["model"].keys()
    for key in ref["model"]:
        assert torch.equal(final["model"][key], ref["model"][key]), key
    losses = [[(h["train_loss"], h["lr"]) for h in c["history"]] for c in (final, ref)]
    assert losses[0] == losses[1]


def test_remove_stale_temp_files_keeps_live_writers(tmp_path):
    ckpt = tmp_path / "c.pt"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp_path / f"c.pt.tmp-{gone.pid}"
    ours = tmp_path / f"c.pt.tmp-{os.getpid()}"
    live = tmp_path / f"c.pt.tmp-{os.getppid()}"  # the process that started pytest is alive
    other = tmp_path / f"d.pt.tmp-{gone.pid}"  # another checkpoint's file
    odd = tmp_path / "c.pt.tmp-notapid"
    for p in (dead, ours, live, other, odd):
        p.write_bytes(b"partial")
    assert sorted(remove_stale_temp_files(ckpt)) == sorted([dead, ours])
    assert live.exists() and other.exists() and odd.exists()
    assert remove_stale_temp_files(tmp_path / "nowhere" / "c.pt") == []


def _enospc_after(nbytes: int):
    """A torch.save that writes ``nbytes`` and then fails as a full disk does."""
    def save(obj, f, *args, **kwargs):
        f.write(b"\0" * nbytes)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return save


def test_full_disk_simulated_keeps_previous_checkpoint(tmp_path, monkeypatch):
    ckpt = tmp_path / "c.pt"
    save_checkpoint(ckpt, _tiny_model(), epoch=1)
    before = ckpt.read_bytes()
    save = _enospc_after(1000)
    monkeypatch.setattr(smt.torch, "save", save)
    with pytest.raises(OSError, match=r"cannot write checkpoint .*c\.pt.*No space left.*previous checkpoint") as e:
        save_checkpoint(ckpt, _tiny_model(), epoch=2)
    assert e.value.errno == errno.ENOSPC
    assert ckpt.read_bytes() == before and not list(tmp_path.glob("*.tmp-*"))


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k none /mnt"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


def test_full_disk_on_a_real_tmpfs(tmp_path):
    if not _can_mount_tmpfs():
        pytest.skip("cannot mount a tmpfs (no unshare or no user namespaces)")
    disk = tmp_path / "disk"
    disk.mkdir()
    # A private mount namespace: the tmpfs vanishes with the child, whoever runs the tests.
    script = (f"mount -t tmpfs -o size=256k none {disk} && "
              f"exec {sys.executable} {CHILD} {disk / 'ckpt.pt'} 2 full-disk unused")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=_env(), cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["epoch_before"] == 1 and result["epoch_after"] == 1
    assert result["error"] == "OSError" and result["errno"] == errno.ENOSPC
    assert "ckpt.pt" in result["message"] and "previous checkpoint" in result["message"]
    assert result["left"] == ["ckpt.pt"]  # no temporary file left behind
