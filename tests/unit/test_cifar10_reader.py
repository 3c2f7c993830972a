"""CIFAR-10 is read from its binary release, plain bytes, so no pickle is involved (issue 17).

The fake data set is written in the real release's format: per batch, records of one label
byte and 3072 image bytes (1024 red, 1024 green, 1024 blue, each channel row-major), and
`batches.meta.txt` with one class name per line.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memloc import data
from memloc.data import DataError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10_binary(root, images: np.ndarray, labels: np.ndarray, test: int):
    """The binary release of `images` (N, 3, 32, 32): the last `test` as test_batch.bin, the rest
    split over data_batch_1.bin to data_batch_5.bin."""
    folder = root / data.CIFAR10_FOLDER
    folder.mkdir(parents=True)
    records = np.concatenate([labels.astype(np.uint8)[:, None], images.reshape(len(images), -1)], axis=1)
    train = np.array_split(records[:-test], 5)
    for i, part in enumerate(train):
        (folder / f"data_batch_{i + 1}.bin").write_bytes(part.tobytes())
    (folder / "test_batch.bin").write_bytes(records[-test:].tobytes())
    (folder / "batches.meta.txt").write_text("\n".join(CLASSES) + "\n\n")
    return folder


@pytest.fixture
def cifar_root(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(13, 3, 32, 32), dtype=np.uint8)
    write_cifar10_binary(tmp_path, images, np.arange(13) % 10, test=3)
    return tmp_path, images


def test_binary_batches_load(cifar_root):
    root, images = cifar_root
    ds = data.load("cifar10", root=root)
    assert ds.classes == tuple(CLASSES)
    assert torch.equal(ds.train_x, torch.from_numpy(images[:10]).float().div(255).sub(0.5).div(0.5))
    assert torch.equal(ds.test_x, torch.from_numpy(images[10:]).float().div(255).sub(0.5).div(0.5))
    assert ds.true_labels.tolist() == [i % 10 for i in range(10)] and ds.test_labels.tolist() == [0, 1, 2]


def test_a_damaged_batch_is_one_data_error(cifar_root):
    root, _ = cifar_root
    batch = root / data.CIFAR10_FOLDER / "test_batch.bin"
    good = batch.read_bytes()
    batch.write_bytes(good[:-40])  # cut short
    with pytest.raises(DataError, match=r"test_batch.bin: its 9179 bytes are not whole records of 3073"):
        data.load("cifar10", root=root)
    batch.write_bytes(bytes([10]) + good[1:])  # label 10
    with pytest.raises(DataError, match="test_batch.bin: a record's label byte is not a class 0..9"):
        data.load("cifar10", root=root)
    (root / data.CIFAR10_FOLDER / "batches.meta.txt").write_text("cat\ndog\n")
    batch.write_bytes(good)
    with pytest.raises(DataError, match="batches.meta.txt: it does not name 10 classes"):
        data.load("cifar10", root=root)


def test_only_the_pickled_python_release_is_refused_with_the_fix(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"\x80\x02cos\nsystem\n")
    with pytest.raises(DataError) as error:
        data.load("cifar10", root=tmp_path)
    message = str(error.value)
    assert "not the pickled python one in cifar-10-batches-py" in message and "cifar-10-binary.tar.gz" in message
    assert "\n" not in message
