"""CIFAR-10's python batches are read without running pickled code (issue 17, "no pickle").

The fake data set is written in the real files' format: Python 2 pickles (protocol 2) of dicts
whose strings are Python 2 `str` (read back as latin-1) and whose images are one uint8 array,
rebuilt by `numpy.core.multiarray._reconstruct`, `numpy.ndarray` and `numpy.dtype`.
"""

from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import pytest
import torch
import torchvision

from memloc import data
from memloc.data import DataError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2's cPickle wrote it: every string a byte string (SHORT_BINSTRING,
    BINSTRING), numpy's array rebuilt through `numpy.core.multiarray`."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def py2_pickle(obj) -> bytes:
    import io

    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    # numpy 2 names the module numpy._core; the real files (numpy 1 of 2009) numpy.core
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


@pytest.fixture
def cifar_root(tmp_path, monkeypatch):
    """Five training batches of 2 images and a test batch of 3, plus batches.meta; MD5 checks
    (which tiny files cannot pass) replaced by a check that the file exists."""
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(13, 3, 32, 32), dtype=np.uint8)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        part = images[2 * i:2 * i + (3 if name == "test_batch" else 2)]
        batch = {"batch_label": f"{name} of 6", "labels": [(2 * i + j) % 10 for j in range(len(part))],
                 "data": part.reshape(len(part), 3072), "filenames": [f"img_{j}.png" for j in range(len(part))]}
        (folder / name).write_bytes(py2_pickle(batch))
    (folder / "batches.meta").write_bytes(py2_pickle({"label_names": CLASSES, "num_cases_per_batch": 2, "num_vis": 3072}))
    return tmp_path, images


def test_real_format_batches_load_and_need_only_the_array_globals(cifar_root):
    root, images = cifar_root
    raw = (root / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw and b"U\x04data" in raw  # the real opcodes
    ds = data.load("cifar10", root=root)
    assert ds.classes == tuple(CLASSES)
    assert torch.equal(ds.train_x, torch.from_numpy(images[:10]).float().div(255).sub(0.5).div(0.5))
    assert torch.equal(ds.test_x, torch.from_numpy(images[10:]).float().div(255).sub(0.5).div(0.5))
    assert ds.true_labels.tolist() == [i % 10 for i in range(10)] and ds.test_labels.tolist() == [0, 1, 2]


class ExecOnLoad:
    """Unpickles as `exec(<shell command through os>)`."""

    def __init__(self, cmd: str):
        self.cmd = cmd

    def __reduce__(self):
        return exec, (f"import os; os.system({self.cmd!r})",)


@pytest.mark.parametrize("payload, named", [
    # protocol 2, GLOBAL: os.system("touch MARKER") if it were run
    (lambda cmd: b"\x80\x02cos\nsystem\nq\x00" + pickle.SHORT_BINSTRING + bytes([len(cmd)]) + cmd + b"\x85R.", "os.system"),
    # protocol 4, STACK_GLOBAL: builtins.exec
    (lambda cmd: pickle.dumps(ExecOnLoad(cmd.decode()), protocol=4), "builtins.exec"),
    # harmless, but no CIFAR-10 batch holds it: what Python 3's protocol 2 adds for bytes
    (lambda cmd: pickle.dumps({"data": np.zeros((1, 3072), np.uint8)}, protocol=2), "_codecs.encode"),
], ids=["os.system", "builtins.exec", "_codecs.encode"])
def test_a_batch_with_any_other_global_is_refused_not_run(cifar_root, tmp_path, payload, named):
    root, _ = cifar_root
    marker = tmp_path / "MARKER"
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(payload(f"touch {marker}".encode()))
    with pytest.raises(DataError) as error:
        data.load("cifar10", root=root)
    message = str(error.value)
    assert str(batch) in message and named in message and "\n" not in message
    assert not marker.exists()


def test_a_batch_of_other_content_is_a_data_error(cifar_root):
    root, _ = cifar_root
    batch = root / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(py2_pickle({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}))  # label 10
    with pytest.raises(DataError, match="test_batch.*label 0..9"):
        data.load("cifar10", root=root)
    batch.write_bytes(py2_pickle({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]})[:-40])  # cut short
    with pytest.raises(DataError, match="test_batch: it is not a CIFAR-10 python batch"):
        data.load("cifar10", root=root)
