"""Training loop: config, schedules, logging, checkpoints, resume, model-mismatch errors."""
from __future__ import annotations

import json
import math
import pickle

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from sparsemask.data import load_dataset
from sparsemask.train import (CheckpointMismatchError, TrainConfig, build_model, evaluate, load_checkpoint, load_model,
                              lr_factor, save_checkpoint, train)


def tiny_cnn(seed=0, bn=True):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8) if bn else nn.Identity(), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 16, 10))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits"), load_dataset("digits", split="test")


def quick(**kw):
    base = dict(epochs=3, batch_size=64, lr=0.05, milestones=(2,), progress=False)
    return TrainConfig(**{**base, **kw})


def test_cifar_preset_is_seed_recipe():
    c = TrainConfig.preset("cifar")
    assert (c.momentum, c.weight_decay, c.batch_size, c.lr, c.epochs, c.milestones, c.gamma) == \
        (0.9, 5e-4, 128, 0.1, 350, (150, 250), 0.1)
    assert c.augment == "crop_flip" and c.augment_pad == 4
    assert [lr_factor(e, c) for e in (0, 149, 150, 249, 250, 349)] == pytest.approx([1, 1, .1, .1, .01, .01])
    m = TrainConfig.preset("mnist", epochs=5)
    assert m.milestones == (20, 40) and m.epochs == 5 and m.augment == "flip"
    assert TrainConfig.preset("madry").method == "adversarial"
    cos = TrainConfig(schedule="cosine", epochs=10)
    assert lr_factor(0, cos) == 1.0 and lr_factor(5, cos) == pytest.approx(0.5)
    assert TrainConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("kw, match", [(dict(method="magic"), "method"), (dict(schedule="step"), "schedule"),
                                       (dict(epochs=-1), "epochs"), (dict(lr=0), "lr"),
                                       (dict(label_smoothing=1.0), "label_smoothing"),
                                       (dict(temperature=0), "temperature"), (dict(augment="rotate"), "augment")])
def test_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)
    with pytest.raises(ValueError, match="preset"):
        TrainConfig.preset("imagenet")
    with pytest.raises(ValueError, match="unknown fields"):
        TrainConfig.from_dict({"epoch": 3})


def test_train_learns_and_logs(digits, tmp_path):
    tr, te = digits
    model = tiny_cnn()
    log = tmp_path / "log.jsonl"
    h = train(model, tr, te, quick(epochs=5, milestones=(4,), log_path=str(log)))
    assert [r["epoch"] for r in h] == [1, 2, 3, 4, 5]
    assert h[-1]["train_loss"] < h[0]["train_loss"] and h[-1]["test_acc"] > 0.85
    assert [r["lr"] for r in h] == pytest.approx([0.05, 0.05, 0.05, 0.05, 0.005])
    lines = [json.loads(s) for s in log.read_text().splitlines()]
    assert lines[0]["event"] == "start" and lines[0]["config"]["milestones"] == [4]
    assert [r["epoch"] for r in lines[1:]] == [1, 2, 3, 4, 5]
    assert not model.training


class ListDataset(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


@pytest.mark.parametrize("kind", ["tuple", "tensordataset", "dataset"])
def test_accepts_other_data_types(digits, kind):
    tr, te = digits
    x, y = tr.tensors()
    data = {"tuple": (x, y), "tensordataset": TensorDataset(x, y), "dataset": ListDataset(x, y)}[kind]
    ref, other = tiny_cnn(), tiny_cnn()
    h_ref = train(ref, tr, None, quick(epochs=1, max_steps_per_epoch=5, channels_last=True))
    h = train(other, data, None, quick(epochs=1, max_steps_per_epoch=5, channels_last=True))
    assert h[0]["train_loss"] == pytest.approx(h_ref[0]["train_loss"], rel=1e-5)
    with pytest.raises(TypeError, match="train_data"):
        train(tiny_cnn(), [1, 2, 3], None, quick())


def test_label_smoothing_changes_the_loss_as_expected(digits):
    """With eps, the loss is CE against (1 - eps) one-hot + eps / K, bounded below by that target's entropy."""
    tr, _ = digits
    eps, k = 0.1, 10
    p_true = 1 - eps + eps / k
    floor = -(p_true * math.log(p_true) + (k - 1) * (eps / k) * math.log(eps / k))  # ~0.50 nats
    x, y = tr.batch(torch.arange(200), transform=False)
    plain, smooth = tiny_cnn(), tiny_cnn()
    h_plain = train(plain, tr, None, quick(epochs=6, milestones=()))
    h_smooth = train(smooth, tr, None, quick(epochs=6, milestones=(), label_smoothing=eps))
    assert h_plain[-1]["train_loss"] < floor - 0.2      # plain CE goes well below the floor
    assert h_smooth[-1]["train_loss"] > floor            # smoothed CE cannot
    assert h_smooth[-1]["train_acc"] > 0.9
    with torch.no_grad():
        conf_plain = plain(x).softmax(1).max(1).values.mean()
        conf_smooth = smooth(x).softmax(1).max(1).values.mean()
    assert conf_smooth < conf_plain and conf_smooth < p_true + 0.03  # calibrated towards 1 - eps + eps/K


def test_checkpoint_contents_and_weights_only(digits, tmp_path):
    tr, _ = digits
    ck = tmp_path / "run" / "ckpt.pt"
    model = tiny_cnn()
    train(model, tr, None, quick(epochs=2, checkpoint=str(ck)), model_config=("tiny", {"width": 8}))
    assert ck.is_file() and not list(ck.parent.glob("*.tmp-*"))
    raw = torch.load(ck, weights_only=True)
    assert raw["epoch"] == 2 and raw["model_config"] == {"name": "tiny", "kwargs": {"width": 8}}
    assert set(raw) >= {"model", "optimizer", "scheduler", "rng", "config", "history"}
    fresh = tiny_cnn(seed=5)
    load_checkpoint(ck, fresh)
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k


def test_resume_after_interruption_replays_exactly(digits, tmp_path):
    tr, te = digits
    cfg = quick(epochs=4, milestones=(2,), augment="crop_flip", augment_pad=1)
    full = tiny_cnn()
    h_full = train(full, tr, te, cfg)

    ck = tmp_path / "c.pt"

    def crash(epoch, _):
        if epoch == 2:
            raise KeyboardInterrupt("simulated interruption")

    interrupted = tiny_cnn()
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, tr, te, quick(epochs=4, milestones=(2,), augment="crop_flip", augment_pad=1,
                                         checkpoint=str(ck), log_path=str(tmp_path / "l.jsonl")), callback=crash)
    assert torch.load(ck, weights_only=True)["epoch"] == 2
    resumed = tiny_cnn(seed=123)  # a fresh process would start from other weights
    h = train(resumed, tr, te, quick(epochs=4, milestones=(2,), augment="crop_flip", augment_pad=1,
                                     checkpoint=str(ck), log_path=str(tmp_path / "l.jsonl")))
    assert [r["epoch"] for r in h] == [1, 2, 3, 4]
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert h[-1]["test_acc"] == h_full[-1]["test_acc"]
    events = [json.loads(s)["event"] for s in (tmp_path / "l.jsonl").read_text().splitlines()]
    assert events == ["start", "epoch", "epoch", "resume", "epoch", "epoch"]


def test_checkpoint_of_another_model_is_refused(digits, tmp_path):
    tr, _ = digits
    ck = tmp_path / "c.pt"
    save_checkpoint(ck, tiny_cnn(), epoch=1)
    other = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 10))
    with pytest.raises(CheckpointMismatchError, match="shape mismatches.*0.weight.*checkpoint \\(8, 1, 3, 3\\)"):
        load_checkpoint(ck, other)
    no_bn = tiny_cnn(bn=False)
    with pytest.raises(CheckpointMismatchError, match="unexpected keys.*1.running_mean"):
        load_checkpoint(ck, no_bn)


def test_resuming_under_other_settings_is_refused(digits, tmp_path):
    """A finished run rerun with another lr must not 'resume' (train nothing) silently; more
    epochs extend it; resume=False starts over."""
    tr, _ = digits
    ck = str(tmp_path / "c.pt")
    assert len(train(tiny_cnn(), tr, None, quick(epochs=1, max_steps_per_epoch=2, checkpoint=ck))) == 1
    with pytest.raises(CheckpointMismatchError, match=r"lr: checkpoint 0.05, now 0.1.*resume=False"):
        train(tiny_cnn(), tr, None, quick(epochs=1, max_steps_per_epoch=2, checkpoint=ck, lr=0.1))
    history = train(tiny_cnn(), tr, None, quick(epochs=2, max_steps_per_epoch=2, checkpoint=ck, device="cpu"))
    assert [h["epoch"] for h in history] == [1, 2]  # resumed: epoch 1 from the file, epoch 2 trained
    history = train(tiny_cnn(), tr, None, quick(epochs=1, max_steps_per_epoch=2, checkpoint=ck, lr=0.1,
                                                resume=False))
    assert [h["epoch"] for h in history] == [1]


def test_damaged_and_malicious_checkpoints(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="weights_only=True"):
        load_checkpoint(bad, tiny_cnn())

    class Exploit:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "sparsemask-checkpoint-v1", "x": Exploit()}, evil)
    with pytest.raises(ValueError, match="weights_only"):
        load_checkpoint(evil)
    assert not (tmp_path / "pwned").exists()
    other = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="not a sparsemask checkpoint"):
        load_checkpoint(other)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    ck = tmp_path / "trunc.pt"
    save_checkpoint(ck, tiny_cnn())
    ck.write_bytes(ck.read_bytes()[:500])
    with pytest.raises(ValueError, match="trunc.pt"):
        load_checkpoint(ck, tiny_cnn())


def test_build_model_roundtrip_with_masks(tmp_path):
    kwargs = dict(num_classes=10, in_channels=1, input_size=28, defective=dict(keep=0.3, seed=7))
    model = build_model("lenet5", **kwargs)
    masks = {k: v.clone() for k, v in model.state_dict().items() if v.dtype == torch.bool}
    assert masks, "lenet5 with defective=... should hold bool mask buffers"
    ck = save_checkpoint(tmp_path / "m.pt", model)
    rebuilt = load_model(ck)
    for k, m in masks.items():
        assert torch.equal(rebuilt.state_dict()[k], m)
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(rebuilt(x), model.eval()(x))
    assert next(load_model(ck, map_location=torch.device("cpu")).parameters()).device.type == "cpu"
    with pytest.raises(TypeError, match="map_location must be a device"):
        load_model(ck, map_location={"cuda:0": "cpu"})  # torch.load's remapping form has no use here
    other = build_model("lenet5", **{**kwargs, "defective": dict(keep=0.5, seed=7)})
    with pytest.raises(CheckpointMismatchError, match="written for lenet5"):
        load_checkpoint(ck, other)
    with pytest.raises(TypeError, match="model_config"):
        save_checkpoint(tmp_path / "x.pt", tiny_cnn(), model_config=("tiny", {"f": object()}))


def test_evaluate(digits):
    tr, te = digits
    model = tiny_cnn()
    train(model, tr, None, quick())
    r = evaluate(model, te, batch_size=50)
    x, y = te.tensors()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert r["n"] == len(te) and r["acc"] == pytest.approx(acc)


def test_amp_modes_and_errors():
    assert TrainConfig().amp == "auto"
    assert TrainConfig(amp=True).amp == "auto" and TrainConfig(amp=False).amp == "off"
    with pytest.raises(ValueError, match="TrainConfig.amp must be one of auto, bf16, off"):
        TrainConfig(amp="fp8")


def test_bf16_autocast_trains_a_defective_model_on_cpu(digits):
    """TrainConfig.amp="bf16" on CPU: the defective layers run under autocast (their Autocast
    kernels), the weights stay float32, and the model learns."""
    from sparsemask.models import lenet5

    train_set, test_set = digits
    torch.manual_seed(0)
    model = lenet5(in_channels=1, input_size=12, defective=dict(keep=0.5, seed=0))
    # digits are 8x8: pad to the 12x12 lenet5 accepts
    pad = nn.ZeroPad2d(2)
    x, y = train_set.tensors()
    data = TensorDataset(pad(x), y)
    x_test, y_test = test_set.tensors()
    test = TensorDataset(pad(x_test), y_test)
    # digits are not MNIST: normalise with their own statistics, not the builder's default (the
    # published MNIST constants since issue 14; with them this 4-epoch bf16 run reaches ~0.36)
    model.normalize.fit_(pad(x))
    before = evaluate(model, test, device="cpu", amp="bf16")["acc"]
    history = train(model, data, test, quick(amp="bf16", epochs=4, milestones=(3,), device="cpu"))
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    assert before < 0.2 and history[-1]["test_acc"] > 0.75  # float32 reaches 0.86 in this recipe
