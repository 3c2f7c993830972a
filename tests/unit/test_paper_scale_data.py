"""The synthetic CIFAR-10 of `benchmarks/paper_scale.py` is read by memloc as cifar10, and its
scaled overrides are a valid config of the paper preset (issue 16). No timing here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from memloc import data, overrides

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "paper_scale.py"


def _script():
    spec = importlib.util.spec_from_file_location("paper_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_synthetic_cifar10_is_read_as_cifar10(tmp_path):
    paper_scale = _script()
    folder = paper_scale.write_synthetic_cifar10(tmp_path, n_train=23, n_test=7, seed=3)
    assert folder == tmp_path / data.CIFAR10_FOLDER
    assert paper_scale.find_cifar10(tmp_path) is None
    ds = data.load("cifar10", tmp_path)
    assert ds.name == "cifar10" and ds.num_classes == 10 and ds.input_shape == (3, 32, 32)
    assert ds.train_x.shape == (23, 3, 32, 32) and ds.test_x.shape == (7, 3, 32, 32)
    assert len(ds.true_labels) == 23 and len(ds.test_labels) == 7
    assert 0 <= int(ds.true_labels.min()) and int(ds.true_labels.max()) <= 9
    assert -1 <= float(ds.train_x.min()) and float(ds.train_x.max()) <= 1

    again = paper_scale.write_synthetic_cifar10(tmp_path / "again", n_train=23, n_test=7, seed=3)
    assert data.fingerprint(data.load("cifar10", again.parent)) == data.fingerprint(ds)  # seeded


def test_no_cifar10_says_why(tmp_path):
    assert "cifar10" in _script().find_cifar10(tmp_path)


def test_scaled_overrides_are_a_valid_paper_config():
    paper_scale = _script()
    assert paper_scale.overrides(1.0, None) == []  # the paper setting itself
    cfg = overrides.resolve(paper_scale.PRESET, overrides=paper_scale.overrides(0.01, 2))
    assert (cfg.data.name, cfg.model.name, dict(cfg.model.options).get("width", 1.0)) == ("cifar10", "resnet9", 1.0)
    assert (cfg.data.train_size, cfg.data.test_size) == (500, 100)
    assert (cfg.train.epochs, cfg.train.peak_epoch, cfg.retrain.max_epochs) == (2, 0.4, 1)
    assert (cfg.flip.n_noisy, cfg.flip.n_clean, cfg.flip.batch_size) == (1, 1, 5)
