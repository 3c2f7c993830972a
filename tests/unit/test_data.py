"""Unit tests of memloc.data: label noise, digits, subsets, fingerprints, errors, augmentation."""

import math
import urllib.error
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest
import torch
import torchvision

from memloc import data
from memloc.data import DataError, Dataset


def toy_dataset(num_train=12, num_test=6, name="toy"):
    """A tiny hand-made data set whose labels are the example ids and whose images encode them."""
    def images(n):
        return torch.arange(n, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()

    return Dataset(
        name=name,
        train_x=images(num_train),
        true_labels=torch.arange(num_train),
        test_x=images(num_test),
        test_labels=torch.arange(num_test),
        classes=tuple(str(i) for i in range(max(num_train, num_test))),
    )


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


# --- label noise ----------------------------------------------------------------------------


def random_labels(n, k=10, seed=0):
    return torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n", [1, 7, 10, 99, 1437, 5000])
@pytest.mark.parametrize("frac", [0.0, 0.05, 0.1, 0.29, 0.5, 0.999])
def test_label_noise_flips_exactly_floor_frac_n_and_always_to_a_wrong_class(n, frac):
    labels = random_labels(n)
    noisy_labels, is_noisy = data.apply_label_noise(labels, 10, frac, seed=3)
    expected = math.floor(Fraction(str(frac)) * n)
    assert is_noisy.dtype == torch.bool and is_noisy.shape == (n,)
    assert noisy_labels.dtype == torch.int64 and noisy_labels.shape == (n,)
    assert int(is_noisy.sum()) == expected
    assert torch.equal(noisy_labels != labels, is_noisy)  # noisy ones are wrong, clean ones kept
    assert int(noisy_labels.min()) >= 0 and int(noisy_labels.max()) < 10


def test_label_noise_counts_the_decimal_fraction():
    # 0.29 * 100 is 28.999999999999996 in floats; the paper's floor(0.29 * 100) is 29.
    _, is_noisy = data.apply_label_noise(random_labels(100), 10, 0.29, seed=0)
    assert int(is_noisy.sum()) == 29


def test_label_noise_reaches_every_wrong_class_about_equally():
    k = 10
    labels = random_labels(40_000, k)
    noisy_labels, is_noisy = data.apply_label_noise(labels, k, 0.5, seed=1)
    shifts = (noisy_labels[is_noisy] - labels[is_noisy]) % k
    counts = torch.bincount(shifts, minlength=k)
    assert counts[0] == 0
    expected = 20_000 / (k - 1)
    assert torch.all((counts[1:] - expected).abs() < 5 * math.sqrt(expected))  # 5 sigma
    for true_class in range(k):  # every (true, noisy) pair with noisy != true occurs
        targets = set(noisy_labels[is_noisy & (labels == true_class)].tolist())
        assert targets == set(range(k)) - {true_class}


def test_label_noise_picks_examples_uniformly():
    labels = random_labels(10_000)
    _, is_noisy = data.apply_label_noise(labels, 10, 0.2, seed=2)
    first_half = int(is_noisy[:5000].sum())
    assert abs(first_half - 1000) < 5 * math.sqrt(1000)


def test_label_noise_with_two_classes_swaps_them():
    labels = torch.tensor([0, 1] * 50)
    noisy_labels, is_noisy = data.apply_label_noise(labels, 2, 0.3, seed=0)
    assert torch.equal(noisy_labels[is_noisy], 1 - labels[is_noisy])


def test_label_noise_is_seeded():
    labels = random_labels(1000)
    first = data.apply_label_noise(labels, 10, 0.1, seed=7)
    again = data.apply_label_noise(labels, 10, 0.1, seed=7)
    other = data.apply_label_noise(labels, 10, 0.1, seed=8)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])


def test_label_noise_ignores_and_keeps_the_global_random_state():
    labels = random_labels(1000)
    torch.manual_seed(1)
    first = data.apply_label_noise(labels, 10, 0.1, seed=7)
    torch.manual_seed(12345)
    state = torch.get_rng_state()
    second = data.apply_label_noise(labels, 10, 0.1, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_label_noise_zero_leaves_labels_alone_and_does_not_modify_its_input():
    labels = random_labels(500)
    original = labels.clone()
    noisy_labels, is_noisy = data.apply_label_noise(labels, 10, 0.0, seed=0)
    assert torch.equal(noisy_labels, labels) and not is_noisy.any()
    data.apply_label_noise(labels, 10, 0.5, seed=0)
    assert torch.equal(labels, original)


@pytest.mark.parametrize("frac", [1.0, -0.1, 1.5])
def test_label_noise_rejects_fractions_outside_zero_to_one(frac):
    with pytest.raises(ValueError, match="fraction"):
        data.apply_label_noise(random_labels(10), 10, frac, seed=0)


def test_label_noise_rejects_labels_outside_the_classes():
    with pytest.raises(ValueError, match="0..9"):
        data.apply_label_noise(torch.tensor([0, 3, 10]), 10, 0.5, seed=0)


# --- digits and the Dataset record ----------------------------------------------------------


def test_digits_has_a_fixed_stratified_split_normalized_to_minus_one_one(digits):
    assert digits.name == "digits"
    assert digits.train_x.shape == (1437, 1, 8, 8) and digits.test_x.shape == (360, 1, 8, 8)
    assert digits.train_x.dtype == torch.float32 and digits.true_labels.dtype == torch.int64
    assert digits.input_shape == data.INPUT_SHAPES["digits"] == (1, 8, 8)
    assert digits.num_classes == 10 and digits.num_train == 1437
    assert digits.classes == tuple("0123456789")
    for x in (digits.train_x, digits.test_x):
        assert x.min() == -1.0 and x.max() == 1.0
    # scikit-learn's digits have values 0..16: normalized values are multiples of 1/8 minus 1.
    assert torch.equal(digits.train_x, torch.round((digits.train_x + 1) * 8) / 8 - 1)
    train_share = torch.bincount(digits.true_labels) / 1437
    test_share = torch.bincount(digits.test_labels) / 360
    assert torch.allclose(train_share, test_share, atol=0.01)  # stratified
    again = data.load("digits")
    assert torch.equal(again.train_x, digits.train_x) and torch.equal(again.test_labels, digits.test_labels)


def test_input_shapes_are_known_for_every_data_set():
    assert tuple(data.INPUT_SHAPES) == data.DATASETS


def test_dataset_to_moves_every_tensor(digits):
    moved = digits.to("cpu")
    assert isinstance(moved, Dataset) and moved.classes == digits.classes
    for name in ("train_x", "true_labels", "test_x", "test_labels"):
        assert getattr(moved, name).device.type == "cpu"


def test_dataset_rejects_mismatched_tensors():
    with pytest.raises(ValueError, match="images must be"):
        Dataset("bad", torch.zeros(3, 1, 2, 2), torch.zeros(2, dtype=torch.int64),
                torch.zeros(1, 1, 2, 2), torch.zeros(1, dtype=torch.int64), ("a", "b"))


# --- subsample ------------------------------------------------------------------------------


def test_subsample_takes_a_seeded_sorted_subset_without_replacement():
    ds = toy_dataset(num_train=50, num_test=20)
    sub = data.subsample(ds, 10, 5, seed=0)
    assert sub.num_train == 10 and len(sub.test_x) == 5 and sub.name == "toy"
    for x, y in ((sub.train_x, sub.true_labels), (sub.test_x, sub.test_labels)):
        assert torch.all(y[1:] > y[:-1])  # sorted ids, no repeats
        assert torch.equal(x[:, 0, 0, 0], y.float())  # images stay with their labels
    same = data.subsample(ds, 10, 5, seed=0)
    other = data.subsample(ds, 10, 5, seed=1)
    assert torch.equal(same.true_labels, sub.true_labels) and torch.equal(same.test_labels, sub.test_labels)
    assert not torch.equal(other.true_labels, sub.true_labels)


def test_subsample_none_keeps_a_split_whole():
    ds = toy_dataset()
    sub = data.subsample(ds, None, 3, seed=0)
    assert torch.equal(sub.train_x, ds.train_x) and len(sub.test_labels) == 3


@pytest.mark.parametrize("train_size, test_size", [(13, None), (None, 7), (0, None), (-1, 1)])
def test_subsample_rejects_sizes_it_cannot_meet(train_size, test_size):
    with pytest.raises(DataError, match="Cannot take"):
        data.subsample(toy_dataset(), train_size, test_size, seed=0)


# --- fingerprint ----------------------------------------------------------------------------


def test_fingerprint_is_stable_across_runs():
    # A fixed value: a change here means every recorded run's data fingerprint changes.
    assert data.fingerprint(toy_dataset()) == (
        "9d8544d2722e85fc87b005549475a7e92ed462e4e872173b8a834da260d69afe"
    )


def test_fingerprint_changes_with_the_data(digits):
    base = data.fingerprint(digits)
    assert base == data.fingerprint(data.load("digits"))
    pixel = digits.train_x.clone()
    pixel[5, 0, 3, 3] += 0.125
    label = digits.test_labels.clone()
    label[0] = (label[0] + 1) % 10
    variants = [
        replace(digits, train_x=pixel),
        replace(digits, test_labels=label),
        replace(digits, name="other"),
        data.subsample(digits, 1000, None, seed=0),
    ]
    fingerprints = {data.fingerprint(v) for v in variants}
    assert len(fingerprints) == len(variants) and base not in fingerprints


# --- data root and errors -------------------------------------------------------------------


def test_data_root_prefers_argument_then_environment_then_data(monkeypatch, tmp_path):
    monkeypatch.setenv("MEMLOC_DATA", str(tmp_path / "env"))
    assert data.data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data.data_root() == tmp_path / "env"
    monkeypatch.delenv("MEMLOC_DATA")
    assert data.data_root() == Path("data")


def test_unknown_data_set_lists_the_known_ones():
    with pytest.raises(DataError) as error:
        data.load("imagenet")
    for name in data.DATASETS:
        assert name in str(error.value)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "svhn"])
def test_missing_data_set_says_how_to_get_it(name, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-package")
    with pytest.raises(DataError) as error:
        data.load(name, root=tmp_path)
    message = str(error.value)
    for words in (name, "--download", "--data-root", "MEMLOC_DATA", str(tmp_path)):
        assert words in message
    assert ("apt-get install dataset-fashion-mnist" in message) == (name == "fashion-mnist")


@pytest.mark.parametrize("name, downloader, attribute", [
    ("mnist", torchvision.datasets.MNIST, "download"),
    ("cifar10", torchvision.datasets.utils, "download_and_extract_archive"),  # the binary release, read by memloc
    ("svhn", torchvision.datasets.SVHN, "download"),
])
def test_failed_download_is_a_data_error(name, downloader, attribute, tmp_path, monkeypatch):
    def no_internet(*args, **kwargs):
        raise urllib.error.URLError("no internet")

    monkeypatch.setattr(downloader, attribute, no_internet)
    with pytest.raises(DataError, match="failed.*no internet") as error:
        data.load(name, root=tmp_path, download=True)
    assert "--data-root" in str(error.value)


# --- augment --------------------------------------------------------------------------------


def crops(image, pad):
    """Every H x W crop of the reflect-padded image."""
    _, h, w = image.shape
    padded = torch.nn.functional.pad(image[None], (pad,) * 4, mode="reflect")[0]
    offsets = range(2 * pad + 1)
    return [padded[:, dy:dy + h, dx:dx + w] for dy in offsets for dx in offsets]


@pytest.mark.parametrize("flip", [False, True])
def test_augment_crops_and_optionally_flips_each_image(flip):
    x = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    out = data.augment(x, torch.Generator().manual_seed(1), flip=flip)
    assert out.shape == x.shape and out.dtype == x.dtype
    flipped = 0
    for image, result in zip(x, out):
        plain = any(torch.equal(result, c) for c in crops(image, 2))
        mirrored = any(torch.equal(result, c) for c in crops(image.flip(2), 2))
        assert plain or (flip and mirrored)
        flipped += mirrored and not plain
    assert (flipped > 10) == flip


def test_augment_is_seeded_and_leaves_the_global_random_state_alone():
    x = torch.randn(32, 1, 8, 8)
    state = torch.get_rng_state()
    first = data.augment(x, torch.Generator().manual_seed(5), flip=True)
    again = data.augment(x, torch.Generator().manual_seed(5), flip=True)
    other = data.augment(x, torch.Generator().manual_seed(6), flip=True)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, again) and not torch.equal(first, other)
