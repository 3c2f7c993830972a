"""memloc.data reads the real on-disk formats of each data set.

MNIST, CIFAR-10 and SVHN cannot be downloaded on the machines memloc is tested on, so each test
writes a few images in the data set's real format (IDX, CIFAR-10's binary batches, SVHN's MATLAB
files) and loads them through `memloc.data.load`. Real Fashion-MNIST is used when Debian's
`dataset-fashion-mnist` package is installed.
"""

import gzip
import os
import struct
import time

import numpy as np
import pytest
import scipy.io
import torch
import torchvision

from memloc import data
from memloc.data import DataError


def pixels(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def normalized(images):
    return torch.from_numpy(images.astype(np.float32) / 255 * 2 - 1)


# --- MNIST and Fashion-MNIST: IDX files ------------------------------------------------------


def write_idx(path, array, gz):
    """An unsigned-byte IDX file: 0, 0, type 0x08, number of dims, big-endian dims, values."""
    content = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    content += array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(content))
    else:
        path.write_bytes(content)


def write_mnist_like(directory, gz=True):
    """20 training and 10 test images with labels, as the four IDX files of MNIST."""
    arrays = {
        "train-images-idx3-ubyte": pixels((20, 28, 28), 0),
        "train-labels-idx1-ubyte": np.arange(20, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": pixels((10, 28, 28), 1),
        "t10k-labels-idx1-ubyte": np.arange(10, dtype=np.uint8)[::-1].copy(),
    }
    for file_name, array in arrays.items():
        write_idx(directory / file_name, array, gz)
    return arrays


@pytest.mark.parametrize("name, folder, gz", [
    ("mnist", "MNIST", True),
    ("mnist", "MNIST", False),
    ("fashion-mnist", "FashionMNIST", True),  # found in the data root before Debian's copy
])
def test_idx_files_in_torchvision_layout_round_trip(name, folder, gz, tmp_path):
    arrays = write_mnist_like(tmp_path / folder / "raw", gz)
    ds = data.load(name, root=tmp_path)
    assert ds.name == name and ds.input_shape == data.INPUT_SHAPES[name] == (1, 28, 28)
    assert ds.num_classes == 10
    assert torch.equal(ds.train_x[:, 0], normalized(arrays["train-images-idx3-ubyte"]))
    assert torch.equal(ds.test_x[:, 0], normalized(arrays["t10k-images-idx3-ubyte"]))
    assert torch.equal(ds.true_labels, torch.arange(20) % 10)
    assert torch.equal(ds.test_labels, torch.arange(9, -1, -1))
    assert ds.true_labels.dtype == torch.int64 and ds.train_x.dtype == torch.float32


def test_fashion_mnist_falls_back_to_debians_directory(tmp_path, monkeypatch):
    debian = tmp_path / "usr-share-datasets-fashion-mnist"
    arrays = write_mnist_like(debian)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", debian)
    ds = data.load("fashion-mnist", root=tmp_path / "empty-root")
    assert torch.equal(ds.train_x[:, 0], normalized(arrays["train-images-idx3-ubyte"]))
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"


@pytest.mark.parametrize("damage, words", [
    (lambda raw: b"\x00\x00\x0d\x03" + raw[4:], "magic number"),  # float IDX, not unsigned byte
    (lambda raw: raw[:-5], "shape"),  # values cut short
    (lambda raw: raw[:6], "header"),
])
def test_damaged_idx_file_is_a_data_error_naming_it(damage, words, tmp_path):
    write_mnist_like(tmp_path / "MNIST" / "raw", gz=False)
    images = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    images.write_bytes(damage(images.read_bytes()))
    with pytest.raises(DataError, match=words) as error:
        data.load("mnist", root=tmp_path)
    assert str(images) in str(error.value)


def test_damaged_gzip_is_a_data_error(tmp_path):
    write_mnist_like(tmp_path / "MNIST" / "raw")
    labels = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-8])
    with pytest.raises(DataError, match="train-labels"):
        data.load("mnist", root=tmp_path)


# --- CIFAR-10: the binary release ------------------------------------------------------------

CIFAR_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
]


def write_cifar10(root):
    """Five training batches of 4 images and a test batch of 10, plus batches.meta.txt, in the
    binary release's format: records of a label byte and an image's 1024 red, then 1024 green,
    then 1024 blue values, each channel row-major (32 x 32). The first training image is black
    except for one pure-red pixel at row 1, column 2.
    """
    folder = root / data.CIFAR10_FOLDER
    folder.mkdir(parents=True)
    train = pixels((20, 3, 32, 32), 2)
    train[0] = 0
    train[0, 0, 1, 2] = 255
    test = pixels((10, 3, 32, 32), 3)
    batches = [(f"data_batch_{i + 1}.bin", train[4 * i:4 * i + 4], [(4 * i + j) % 10 for j in range(4)]) for i in range(5)]
    batches.append(("test_batch.bin", test, list(range(10))))
    for file_name, images, labels in batches:
        records = np.concatenate([np.array(labels, dtype=np.uint8)[:, None], images.reshape(len(images), 3072)], axis=1)
        (folder / file_name).write_bytes(records.tobytes())
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR_CLASSES) + "\n")
    return train, test


@pytest.fixture
def skip_checksums(monkeypatch):
    """torchvision compares every file's MD5 with the published checksum of the real data set,
    which tiny test files cannot match. SVHN's `_check_integrity` goes through its module's
    `check_integrity`, so that is replaced with a check that the file exists."""
    monkeypatch.setattr(torchvision.datasets.svhn, "check_integrity", lambda path, md5=None: os.path.isfile(path))


def test_cifar10_batches_round_trip(tmp_path):
    train, test = write_cifar10(tmp_path)
    ds = data.load("cifar10", root=tmp_path)
    assert ds.input_shape == data.INPUT_SHAPES["cifar10"] and ds.classes == tuple(CIFAR_CLASSES)
    assert ds.train_x.shape == (20, 3, 32, 32) and ds.test_x.shape == (10, 3, 32, 32)
    red = torch.full((3, 32, 32), -1.0)
    red[0, 1, 2] = 1.0
    assert torch.equal(ds.train_x[0], red)
    assert torch.equal(ds.train_x, normalized(train)) and torch.equal(ds.test_x, normalized(test))
    assert torch.equal(ds.true_labels, torch.arange(20) % 10)
    assert torch.equal(ds.test_labels, torch.arange(10))


# --- SVHN: MATLAB files ----------------------------------------------------------------------


def write_svhn(root, split, count, seed):
    """X: (32, 32, 3, N) uint8 (row, column, channel, example); y: (N, 1), 10 meaning digit 0."""
    images = pixels((count, 3, 32, 32), seed)
    digits = np.arange(count) % 10
    x = np.ascontiguousarray(images.transpose(2, 3, 1, 0))
    y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(-1, 1)
    scipy.io.savemat(root / f"{split}_32x32.mat", {"X": x, "y": y})
    return images, digits


def test_svhn_mat_files_round_trip(tmp_path, skip_checksums):
    train, train_digits = write_svhn(tmp_path, "train", 20, 4)
    test, test_digits = write_svhn(tmp_path, "test", 10, 5)
    ds = data.load("svhn", root=tmp_path)
    assert ds.input_shape == data.INPUT_SHAPES["svhn"] == (3, 32, 32) and ds.num_classes == 10
    assert torch.equal(ds.train_x, normalized(train)) and torch.equal(ds.test_x, normalized(test))
    assert torch.equal(ds.true_labels, torch.from_numpy(train_digits))
    assert torch.equal(ds.test_labels, torch.from_numpy(test_digits))
    assert ds.true_labels.dtype == torch.int64 and int(ds.true_labels[0]) == 0  # stored as 10


def test_svhn_image_layout_is_row_column_channel(tmp_path, skip_checksums):
    for split in ("train", "test"):
        x = np.zeros((32, 32, 3, 1), dtype=np.uint8)
        x[1, 2, 0, 0] = 255  # row 1, column 2, red
        y = np.array([[3]], dtype=np.uint8)
        scipy.io.savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
    ds = data.load("svhn", root=tmp_path)
    assert ds.train_x[0, 0, 1, 2] == 1.0 and (ds.train_x == 1.0).sum() == 1


# --- real Fashion-MNIST from Debian's package ------------------------------------------------


def test_real_fashion_mnist_from_debian_loads_in_seconds(tmp_path):
    if not data.DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip(
            "Debian's dataset-fashion-mnist is not installed: apt-get install dataset-fashion-mnist"
        )
    start = time.perf_counter()
    ds = data.load("fashion-mnist", root=tmp_path)
    elapsed = time.perf_counter() - start
    assert elapsed < 10, f"loading Fashion-MNIST took {elapsed:.1f} s"  # about 0.5 s here
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.num_classes == 10
    assert torch.equal(torch.bincount(ds.true_labels), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(ds.test_labels), torch.full((10,), 1000))
    assert ds.train_x.min() == -1.0 and ds.train_x.max() == 1.0
