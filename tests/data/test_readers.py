"""Dataset readers on small files written here in the true formats, plus damaged files."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from sparsemask.data import (CorruptDatasetError, DatasetNotFoundError, ImageDataset, load_dataset, read_batch,
                             read_idx)

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


# --- writers for the real formats --------------------------------------------------------

def idx_bytes(array: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx_set(folder: Path, n_train=12, n_test=5, gz=True, seed=0, dotted=False):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte" if not dotted else f"{prefix}-{kind.replace('-', '.')}-ubyte"
            data = idx_bytes(arr)
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
        out[prefix] = (images, labels)
    return out


def write_cifar_batches(folder: Path, n_per_batch=4, seed=0, py2_names=False):
    """CIFAR-10 python batches: pickled dicts with bytes keys, uint8 data [N, 3072], list labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n_per_batch)]
        blob = pickle.dumps({b"batch_label": b"batch", b"labels": labels, b"data": data,
                             b"filenames": [b"a.png"] * n_per_batch}, protocol=2)
        if py2_names:  # what the official (Python 2 / numpy 1) files reference
            blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (folder / name).write_bytes(blob)
        written[name] = (data, labels)
    meta = {b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
                             b"ship", b"truck"], b"num_cases_per_batch": n_per_batch}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return written


# --- IDX: MNIST / Fashion-MNIST --------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_reads_true_format(tmp_path, gz, name):
    arrays = write_idx_set(tmp_path, gz=gz, seed=3)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ds = load_dataset(name, root=tmp_path, split=split)
        images, labels = arrays[prefix]
        assert isinstance(ds, ImageDataset) and len(ds) == len(labels)
        x, y = ds.tensors()
        assert x.shape == (len(labels), 1, 28, 28) and x.dtype == torch.float32
        torch.testing.assert_close(x[:, 0], torch.from_numpy(images).float() / 255)
        assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        xi, yi = ds[2]
        torch.testing.assert_close(xi, x[2])
        assert int(yi) == int(labels[2])


def test_idx_dotted_names_and_subfolder(tmp_path):
    write_idx_set(tmp_path / "mnist", gz=False, dotted=True)
    ds = load_dataset("mnist", root=tmp_path, split="test")
    assert len(ds) == 5 and ds.source == str(tmp_path / "mnist")


def test_read_idx_header_and_dtypes(tmp_path):
    arr = np.arange(24, dtype=">i4").reshape(2, 3, 4)
    p = tmp_path / "x-idx3-ubyte"
    p.write_bytes(idx_bytes(arr))
    out = read_idx(p)
    assert out.shape == (2, 3, 4) and np.array_equal(out, arr)
    assert idx_bytes(np.zeros((3, 28, 28), np.uint8))[:4] == bytes.fromhex("00000803")
    assert idx_bytes(np.zeros(3, np.uint8))[:4] == bytes.fromhex("00000801")


@pytest.mark.parametrize("damage", ["truncated", "trailing", "bad_magic", "bad_gzip", "empty"])
def test_idx_corrupt_files_name_the_file(tmp_path, damage):
    write_idx_set(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    if damage == "truncated":
        path.write_bytes(gzip.compress(raw[:-100]))
    elif damage == "trailing":
        path.write_bytes(gzip.compress(raw + b"\0"))
    elif damage == "bad_magic":
        path.write_bytes(gzip.compress(b"\x12\x34" + raw[2:]))
    elif damage == "bad_gzip":
        path.write_bytes(path.read_bytes()[:30])
    else:
        path.write_bytes(b"")
    with pytest.raises(CorruptDatasetError, match="train-images-idx3-ubyte.gz"):
        load_dataset("mnist", root=tmp_path)


def test_idx_label_count_mismatch(tmp_path):
    write_idx_set(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(CorruptDatasetError, match="labels"):
        load_dataset("mnist", root=tmp_path)


def test_missing_fashion_mnist_says_where_and_how(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("fashion-mnist", root=tmp_path / "nowhere")
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and str(tmp_path / "nowhere") in msg
    assert "apt-get install -y dataset-fashion-mnist" in msg


@pytest.mark.skipif(not (FMNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian_package():
    ds = load_dataset("fashion-mnist", split="test")  # default search finds /usr/share/datasets
    assert len(ds) == 10000 and ds.image_shape == (1, 28, 28)
    assert ds.classes[9] == "Ankle boot"
    # The first test images of Fashion-MNIST are labelled 9 2 1 1 6 1 4 6 5 7 (ankle boot, pullover, ...).
    assert ds.labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    x = ds.batch(torch.arange(10))[0]
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.mean()) > 0.05
    counts = torch.bincount(ds.labels, minlength=10)
    assert counts.tolist() == [1000] * 10


# --- CIFAR-10 ---------------------------------------------------------------------------

@pytest.mark.parametrize("py2_names", [False, True])
def test_cifar10_reads_pickle_batches(tmp_path, py2_names):
    folder = tmp_path / "cifar-10-batches-py"
    written = write_cifar_batches(folder, py2_names=py2_names)
    train = load_dataset("cifar10", root=tmp_path, split="train")
    test = load_dataset("cifar10", root=tmp_path, split="test")
    assert len(train) == 20 and len(test) == 4 and train.image_shape == (3, 32, 32)
    data, labels = written["data_batch_2"]
    x, y = train.tensors()
    # Row layout: 1024 red, then 1024 green, then 1024 blue values, each row-major 32x32.
    torch.testing.assert_close(x[4:8], torch.from_numpy(data).float().reshape(4, 3, 32, 32) / 255)
    assert round(float(x[4, 1, 0, 5]) * 255) == int(data[0, 1024 + 5])
    assert y[4:8].tolist() == labels
    assert train.classes[0] == "airplane" and train.num_classes == 10


class _Exploit:
    def __reduce__(self):
        import os
        return (os.system, ("touch pwned",))


def test_cifar10_refuses_code_in_pickles(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(folder)
    monkeypatch.chdir(tmp_path)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": _Exploit(), b"labels": []}, protocol=2))
    with pytest.raises(CorruptDatasetError, match="data_batch_3.*posix.system|data_batch_3.*os.system"):
        load_dataset("cifar10", root=tmp_path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("damage", ["truncated", "not_pickle", "wrong_shape", "bad_label"])
def test_cifar10_corrupt_batches(tmp_path, damage):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(folder)
    p = folder / "test_batch"
    if damage == "truncated":
        p.write_bytes(p.read_bytes()[:200])
    elif damage == "not_pickle":
        p.write_bytes(b"hello, this is not a pickle")
    elif damage == "wrong_shape":
        p.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2))
    else:
        p.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 11]}, protocol=2))
    with pytest.raises(CorruptDatasetError, match="test_batch"):
        load_dataset("cifar10", root=tmp_path, split="test")


def test_cifar10_missing_batch_names_it(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(folder)
    (folder / "data_batch_4").unlink()
    with pytest.raises(DatasetNotFoundError, match="lacks data_batch_4.*cs.toronto.edu"):
        load_dataset("cifar10", root=tmp_path)


def test_read_batch_returns_str_keys(tmp_path):
    write_cifar_batches(tmp_path)
    b = read_batch(tmp_path / "batches.meta")
    assert b["label_names"][3] == b"cat"


# --- SVHN -------------------------------------------------------------------------------

def test_svhn_mat(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.integers(0, 256, size=(32, 32, 3, 6), dtype=np.uint8)
    y = np.array([[10], [1], [2], [10], [9], [5]], dtype=np.uint8)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": X, "y": y})
    ds = load_dataset("svhn", root=tmp_path, split="test")
    assert len(ds) == 6 and ds.image_shape == (3, 32, 32)
    assert ds.labels.tolist() == [0, 1, 2, 0, 9, 5]  # 10 means digit 0
    x = ds.images
    assert round(float(x[3, 2, 7, 11]) * 255) == int(X[7, 11, 2, 3])  # X is [H, W, C, N]


def test_svhn_corrupt_and_missing(tmp_path):
    (tmp_path / "train_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file, garbage" + bytes(50))
    with pytest.raises(CorruptDatasetError, match="train_32x32.mat"):
        load_dataset("svhn", root=tmp_path, split="train")
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": np.zeros((28, 28, 1, 2), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(CorruptDatasetError, match=r"\[32, 32, 3, N\]"):
        load_dataset("svhn", root=tmp_path, split="train")
    with pytest.raises(DatasetNotFoundError, match="test_32x32.mat.*ufldl"):
        load_dataset("svhn", root=tmp_path, split="test")


# --- image folder -----------------------------------------------------------------------

def write_image_folder(root: Path, sizes=((40, 30), (32, 32)), seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for cls in ("cat", "dog"):
        (root / "train" / cls).mkdir(parents=True)
        for i, (w, h) in enumerate(sizes):
            arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / "train" / cls / f"{i}.png")


def test_image_folder(tmp_path):
    write_image_folder(tmp_path)
    ds = load_dataset("imagefolder", root=tmp_path, split="train", image_size=16)
    assert ds.classes == ("cat", "dog") and len(ds) == 4 and ds.image_shape == (3, 16, 16)
    assert ds.labels.tolist() == [0, 0, 1, 1]
    # The 32x32 image resized to 16 is its 2x2 average (bilinear, Pillow's reducing filter).
    from PIL import Image
    ref = np.asarray(Image.open(tmp_path / "train" / "dog" / "1.png").resize((16, 16), Image.BILINEAR))
    torch.testing.assert_close(ds.images[3], torch.from_numpy(ref.copy()).permute(2, 0, 1).float() / 255)


def test_image_folder_errors(tmp_path):
    write_image_folder(tmp_path)
    with pytest.raises(CorruptDatasetError, match="image_size"):
        load_dataset("imagefolder", root=tmp_path, image_size=None)
    (tmp_path / "train" / "cat" / "0.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(CorruptDatasetError, match="0.png"):
        load_dataset("imagefolder", root=tmp_path, image_size=16)
    with pytest.raises(DatasetNotFoundError, match="root is required"):
        load_dataset("imagefolder")


# --- digits, registry -------------------------------------------------------------------

def test_digits_matches_conftest_split(digits_data):
    x_train, y_train, x_test, y_test = digits_data
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    torch.testing.assert_close(train.images, x_train)
    assert torch.equal(test.labels, y_test) and len(train) + len(test) == 1797


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown dataset 'cifar100'.*fashion-mnist"):
        load_dataset("cifar100")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", split="validation")
    with pytest.raises(TypeError):
        load_dataset(10)
    with pytest.raises(DatasetNotFoundError, match="fashion-mnist"):  # alias resolved, then looked up
        load_dataset("FMNIST", root="/nonexistent-dir-xyz", split="train")


def test_pixel_mean_comes_from_train_split(tmp_path):
    arrays = write_idx_set(tmp_path, gz=True)
    test = load_dataset("mnist", root=tmp_path, split="test", pixel_mean=True)
    expected = torch.from_numpy(arrays["train"][0]).double().mean(0) / 255
    torch.testing.assert_close(test.pixel_mean[0], expected.float())
    assert test.pixel_mean.shape == (1, 28, 28)
