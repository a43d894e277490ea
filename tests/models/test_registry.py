"""The model registry: list_models / create_model, and weights= loading a checkpoint (checked)."""
import pytest
import torch

from sparsemask import models
from sparsemask.models import CheckpointMismatchError, create_model, list_models
from sparsemask.train import checkpoint_metadata, load_model, save_checkpoint

KW = dict(num_classes=10, in_channels=1, input_size=12)


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    model = create_model("lenet5", **KW, defective={"keep": 0.5, "seed": 3})
    path = save_checkpoint(tmp_path / "lenet.pt", model, metadata={"data": {"name": "digits"}})
    return path, model


def test_list_models_is_the_registry_sorted_and_filters():
    assert list_models() == sorted(models.MODELS)
    assert list_models("resnet18*") == ["resnet18", "resnet18_dc", "resnet18_x2"]
    assert list_models("nothing*") == []


def test_create_model_is_build():
    assert create_model is models.build
    model = create_model("lenet5", **KW)
    assert getattr(model, models.MODEL_CONFIG_ATTR) == {"name": "lenet5", "kwargs": KW}
    with pytest.raises(ValueError, match="unknown architecture 'resnet9'"):
        create_model("resnet9")


def test_weights_loads_the_checkpoint_with_its_recorded_arguments(ckpt):
    path, trained = ckpt
    x = torch.rand(3, 1, 12, 12)
    for loaded in (create_model("lenet5", weights=path), create_model(weights=str(path)),
                   create_model("lenet5", weights=path, num_classes=10, input_size=12)):  # equal arguments are fine
        assert not loaded.training
        torch.testing.assert_close(loaded(x), trained.eval()(x), rtol=0, atol=0)
        assert checkpoint_metadata(loaded) == {"data": {"name": "digits"}}
    torch.testing.assert_close(load_model(path)(x), trained(x), rtol=0, atol=0)


def test_weights_refuses_another_architecture_or_other_arguments(ckpt):
    path, _ = ckpt
    with pytest.raises(CheckpointMismatchError, match="are for lenet5.*not 'cw_mnist'"):
        create_model("cw_mnist", weights=path)
    with pytest.raises(CheckpointMismatchError, match=r"num_classes=7 \(checkpoint: 10\)"):
        create_model("lenet5", weights=path, num_classes=7)
    with pytest.raises(CheckpointMismatchError, match=r"defective=None \(checkpoint: \{'keep': 0.5"):
        create_model("lenet5", weights=path, defective=None)


def test_weights_without_a_recorded_config_still_checks_the_state(tmp_path):
    plain = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3))
    path = save_checkpoint(tmp_path / "plain.pt", plain)
    with pytest.raises(ValueError, match="records no architecture"):
        create_model(weights=path)
    with pytest.raises(CheckpointMismatchError, match="belongs to another model"):
        create_model("lenet5", weights=path, **KW)


def test_weights_errors_for_missing_foreign_and_pickled_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_model("lenet5", weights=tmp_path / "none.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="not a sparsemask checkpoint"):
        create_model("lenet5", weights=foreign)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "sparsemask-checkpoint-v1", "code": _Evil()}, pickled)
    with pytest.raises(ValueError, match="weights_only=True"):  # never unpickles the object
        create_model("lenet5", weights=pickled)
    assert not _Evil.ran


class _Evil:
    ran = False

    def __reduce__(self):
        return (_Evil._run, ())

    @staticmethod
    def _run():
        _Evil.ran = True
        return None


def test_named_weights_from_the_weights_directory(ckpt, tmp_path, monkeypatch):
    path, trained = ckpt
    folder = tmp_path / "named"
    folder.mkdir()
    (folder / "lenet-digits.pt").write_bytes(path.read_bytes())
    monkeypatch.setenv("SPARSEMASK_WEIGHTS", str(folder))
    assert models.weights_dir() == folder and models.list_weights() == ["lenet-digits"]
    x = torch.rand(2, 1, 12, 12)
    torch.testing.assert_close(create_model("lenet5", weights="lenet-digits")(x), trained.eval()(x))
    with pytest.raises(FileNotFoundError, match="available: lenet-digits"):
        create_model("lenet5", weights="lenet-cifar")


def test_a_name_or_weights_is_needed():
    with pytest.raises(ValueError, match="needs an architecture name"):
        create_model()
