"""Data sets, label noise and augmentation for memloc.

Everything a training run needs about its data lives here:

- `load` returns a `Dataset`: the training and test images of one data set as tensors,
  (N, C, H, W) float32 normalized per channel with mean 0.5 and std 0.5 (PAPER.md, "Training
  setting"), and their true labels (int64).
- `apply_label_noise` picks the *noisy* examples and gives them a wrong label exactly as
  PAPER.md ("Label noise") says; all other training examples are *clean*.
- `subsample`, `fingerprint`, `augment` and `data_root` are the small helpers around them.
- `DataSettings` is a run's `data` section; `load_data` and `make_labels` turn it into the
  run's `Dataset` and its `Labels` (true labels, training labels, which examples are noisy).

Data sets and where they come from (DESIGN.md, "Data"):

- ``digits``: scikit-learn's bundled 8x8 handwritten digits; always available, no network.
- ``fashion-mnist``, ``mnist``: gzipped or plain IDX files in torchvision's layout under the
  data root; Fashion-MNIST is also found in Debian's ``dataset-fashion-mnist`` package.
- ``cifar10``: the batches of CIFAR-10's binary release (``cifar-10-binary.tar.gz``), plain
  bytes read with numpy; the python release is pickled, so memloc does not read it.
- ``svhn``: torchvision's data set class on the data root.

Only with ``download=True`` does torchvision fetch anything. A data set that cannot be found
raises `DataError`, whose message says how to get it.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
from contextlib import contextmanager
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from memloc.lazy import lazy
from memloc.settings import MAX_COUNT, MAX_SEED, check, in_range, setting

torch = lazy("torch")
F = lazy("torch.nn.functional")
torchvision = lazy("torchvision")

DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10", "svhn")

# Image shape (C, H, W) of each data set, known without loading it (config validation uses it).
INPUT_SHAPES = {
    "digits": (1, 8, 8),
    "fashion-mnist": (1, 28, 28),
    "mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "svhn": (3, 32, 32),
}

# Where Debian's `dataset-fashion-mnist` package installs the four gzipped IDX files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# `digits` has no test split of its own: a fixed stratified split, the same on every machine.
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0

# The IDX files of MNIST and Fashion-MNIST, by split, each possibly gzipped (".gz").
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_DIGIT_CLASSES = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class DataSettings:
    """The `data` section of a run: which data set, which subset, how much label noise."""

    name: str = setting("digits", f"data set, one of {', '.join(DATASETS)}")
    root: str = setting("", "data root; empty = $MEMLOC_DATA or ./data")
    download: bool = setting(False, "allow torchvision to download the data set (needs internet)")
    train_size: int = setting(0, f"use a seeded random subset of this many training examples; 0 = all; in [0, {MAX_COUNT}]")
    test_size: int = setting(0, f"use a seeded random subset of this many test examples; 0 = all; in [0, {MAX_COUNT}]")
    subset_seed: int = setting(0, f"seed of the train/test subsets, in [0, {MAX_SEED}]")
    noise_frac: float = setting(0.1, "share of training labels flipped to a wrong class, in [0, 1)")
    noise_seed: int = setting(0, f"seed of the label noise (independent of the model seed), in [0, {MAX_SEED}]")
    augment: bool = setting(False, "random crop + flip of training batches")

    def __post_init__(self):
        check(self.name in DATASETS, "name", f"one of {', '.join(DATASETS)}", self.name)
        in_range("noise_frac", self.noise_frac, 0, 1, open_hi=True)
        in_range("train_size", self.train_size, 0, MAX_COUNT, integer=True)
        in_range("test_size", self.test_size, 0, MAX_COUNT, integer=True)
        in_range("subset_seed", self.subset_seed, 0, MAX_SEED, integer=True)
        in_range("noise_seed", self.noise_seed, 0, MAX_SEED, integer=True)


class DataError(Exception):
    """A data set cannot be loaded or a request about data cannot be met; the message says why
    and how to fix it."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """The training and test split of one data set, ready for training.

    Images are (N, C, H, W) float32, channel-first (C = 1 for grayscale), normalized per
    channel with mean 0.5 and std 0.5, so pixel values lie in [-1, 1]. `true_labels` are the
    training examples' true labels and `test_labels` the test examples', int64 in 0..K-1; the
    labels a run trains on (its `train_labels`, with label noise) are a run's `Labels`. The
    position of a training example in `train_x` is its example id.
    """

    name: str
    train_x: torch.Tensor
    true_labels: torch.Tensor
    test_x: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        for x, y in ((self.train_x, self.true_labels), (self.test_x, self.test_labels)):
            if x.dim() != 4 or y.dim() != 1 or len(x) != len(y):
                raise ValueError(
                    f"{self.name}: images must be (N, C, H, W) and labels (N,), "
                    f"got {tuple(x.shape)} and {tuple(y.shape)}"
                )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.train_x.shape[1:]
        return c, h, w

    @property
    def num_classes(self) -> int:
        """K, the number of classes."""
        return len(self.classes)

    @property
    def num_train(self) -> int:
        """N, the number of training examples."""
        return len(self.train_x)

    def to(self, device: torch.device | str) -> Dataset:
        """The same data set with all four tensors on `device`."""
        return replace(
            self,
            train_x=self.train_x.to(device),
            true_labels=self.true_labels.to(device),
            test_x=self.test_x.to(device),
            test_labels=self.test_labels.to(device),
        )


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: `root` if given, else ``$MEMLOC_DATA`` if set, else ``./data``."""
    if root is not None:
        return Path(root).expanduser()
    return Path(os.environ.get("MEMLOC_DATA") or "data").expanduser()


def load(name: str, root: str | os.PathLike | None = None, download: bool = False) -> Dataset:
    """Load data set `name` (one of `DATASETS`) from the data root (see `data_root`).

    With ``download=True`` torchvision may fetch a missing data set into the data root (needs
    internet). A data set that is missing, corrupted or cannot be downloaded raises `DataError`.
    """
    if name not in DATASETS:
        raise DataError(f"Unknown data set {name!r}. memloc knows these: {', '.join(DATASETS)}.")
    return _LOADERS[name](data_root(root), download)


def subsample(ds: Dataset, train_size: int | None, test_size: int | None, seed: int) -> Dataset:
    """A uniform random subset of each split, drawn without replacement from `seed`.

    `None` keeps the whole split. The chosen examples keep their original order, and the
    example ids of the result are their positions in the subset.
    """
    generator = torch.Generator().manual_seed(seed)
    train_idx = _subset_indices(ds.name, "training", ds.num_train, train_size, generator)
    test_idx = _subset_indices(ds.name, "test", len(ds.test_x), test_size, generator)
    return replace(
        ds,
        train_x=ds.train_x[train_idx.to(ds.train_x.device)],
        true_labels=ds.true_labels[train_idx.to(ds.true_labels.device)],
        test_x=ds.test_x[test_idx.to(ds.test_x.device)],
        test_labels=ds.test_labels[test_idx.to(ds.test_labels.device)],
    )


def fingerprint(ds: Dataset) -> str:
    """SHA-256 (hex) of the data set's name and the dtype, shape and bytes of its four tensors.

    The same data gives the same fingerprint in every run; any change to the images, the labels
    or the subset gives a different one.
    """
    digest = hashlib.sha256(ds.name.encode() + b"\0")
    for tensor in (ds.train_x, ds.true_labels, ds.test_x, ds.test_labels):
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.reshape(-1).view(np.uint8))
    return digest.hexdigest()


@dataclass(frozen=True)
class Labels:
    """The labels of a run's training examples, as tensors indexed by example id."""

    true_labels: torch.Tensor  # (N,) int64, the data set's labels
    train_labels: torch.Tensor  # (N,) int64, what the model is trained on: true_labels except where is_noisy
    is_noisy: torch.Tensor  # (N,) bool

    def to(self, device: str | torch.device) -> "Labels":
        return Labels(self.true_labels.to(device), self.train_labels.to(device), self.is_noisy.to(device))

    def subset(self, ids: torch.Tensor) -> "Labels":
        """The labels of the examples `ids` (in that order)."""
        return Labels(self.true_labels[ids], self.train_labels[ids], self.is_noisy[ids])


def load_data(settings: DataSettings) -> Dataset:
    """The data set of a run: loaded from the data root and subsampled as `settings` say."""
    ds = load(settings.name, settings.root or None, settings.download)
    return subsample(ds, settings.train_size or None, settings.test_size or None, settings.subset_seed)


def make_labels(settings: DataSettings, ds: Dataset) -> Labels:
    """PAPER.md's label noise on the training labels of `ds`, seeded by `settings.noise_seed`."""
    train_labels, is_noisy = apply_label_noise(ds.true_labels, ds.num_classes, settings.noise_frac, settings.noise_seed)
    return Labels(ds.true_labels, train_labels, is_noisy)


def apply_label_noise(
    labels: torch.Tensor, num_classes: int, frac: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip the labels of a fraction of the training examples, as in PAPER.md ("Label noise").

    Exactly ``n = floor(frac * N)`` examples, chosen uniformly without replacement, become
    *noisy*: each gets the label ``(y + r) mod K`` with ``r`` uniform in ``1..K-1``, so the new
    label is always wrong and every wrong class can be drawn. ``frac * N`` is computed from the
    decimal value of `frac` (0.29 of 100 examples is 29, not 28 by float rounding).

    The draw uses its own `torch.Generator` seeded with `seed`, never the global random state,
    so the noise does not depend on the model's seed.

    Returns ``(training_labels, is_noisy)``: the labels to train on and a bool mask of the
    noisy examples, both on the device of `labels`.
    """
    if not 0 <= frac < 1:
        raise ValueError(f"label noise fraction must be in [0, 1), got {frac}")
    if num_classes < 2:
        raise ValueError(f"label noise needs at least 2 classes, got {num_classes}")
    if labels.dim() != 1 or labels.dtype != torch.int64:
        raise ValueError(
            f"labels must be a 1-D int64 tensor, got {labels.dtype} {tuple(labels.shape)}"
        )
    true_labels = labels.cpu()
    if len(true_labels) and not 0 <= true_labels.min() <= true_labels.max() < num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")

    n = math.floor(Fraction(str(frac)) * len(true_labels))
    generator = torch.Generator().manual_seed(seed)
    noisy = torch.randperm(len(true_labels), generator=generator)[:n]
    shift = torch.randint(1, num_classes, (n,), generator=generator)

    training_labels = true_labels.clone()
    training_labels[noisy] = (true_labels[noisy] + shift) % num_classes
    is_noisy = torch.zeros(len(true_labels), dtype=torch.bool)
    is_noisy[noisy] = True
    return training_labels.to(labels.device), is_noisy.to(labels.device)


def augment(x: torch.Tensor, generator: torch.Generator, flip: bool = False) -> torch.Tensor:
    """Training augmentation of a batch (N, C, H, W), drawn from `generator`.

    Each image is padded by ``p = max(1, min(H, W) // 8)`` pixels (reflect padding; 4 for 32x32,
    3 for 28x28, 1 for 8x8) and cropped back to H x W at a random offset; with ``flip=True`` it is
    also mirrored left-right with probability 1/2 (right for CIFAR-10-like photos, wrong for
    digits). The whole batch is one indexing operation, on the device of `x`. Off by default,
    as in the paper.
    """
    n, c, h, w = x.shape
    pad = max(1, min(h, w) // 8)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")

    def draw(high: int) -> torch.Tensor:
        drawn = torch.randint(0, high, (n,), generator=generator, device=generator.device)
        return drawn.to(x.device)

    top, left = draw(2 * pad + 1), draw(2 * pad + 1)
    rows = top[:, None] + torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device).expand(n, w)
    if flip:
        cols = torch.where(draw(2).bool()[:, None], cols.flip(1), cols)
    cols = left[:, None] + cols
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


# ---------------------------------------------------------------------------------------------
# Loaders, one per data set: (data root, download allowed) -> Dataset.


def _load_digits(root: Path, download: bool) -> Dataset:
    """scikit-learn's 8x8 digits (values 0..16), split 80/20, stratified by class, seed 0.

    They ship with scikit-learn, so the data root and `download` play no part.
    """
    from sklearn.datasets import load_digits  # imported here: scikit-learn adds a second to every start
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images).unsqueeze(1)
    labels = torch.from_numpy(digits.target).to(torch.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)),
        test_size=DIGITS_TEST_FRACTION,
        stratify=digits.target,
        random_state=DIGITS_SPLIT_SEED,
    )
    train_idx, test_idx = torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(test_idx))
    return Dataset(
        name="digits",
        train_x=_normalize(images[train_idx], 16),
        true_labels=labels[train_idx],
        test_x=_normalize(images[test_idx], 16),
        test_labels=labels[test_idx],
        classes=_DIGIT_CLASSES,
    )


def _load_mnist(root: Path, download: bool) -> Dataset:
    return _load_idx("mnist", torchvision.datasets.MNIST, root, download, _DIGIT_CLASSES)


def _load_fashion_mnist(root: Path, download: bool) -> Dataset:
    classes = tuple(torchvision.datasets.FashionMNIST.classes)
    return _load_idx("fashion-mnist", torchvision.datasets.FashionMNIST, root, download, classes)


def _load_idx(
    name: str, torchvision_class: type, root: Path, download: bool, classes: tuple[str, ...]
) -> Dataset:
    """MNIST-like data sets from IDX files.

    Looks in torchvision's layout ``<root>/<torchvision class name>/raw/`` and, for
    Fashion-MNIST, in Debian's directory; the files may be gzipped. memloc reads them itself
    because torchvision's class needs them uncompressed and in its own layout; torchvision is
    used to download them into that layout.
    """
    raw_dir = root / torchvision_class.__name__ / "raw"
    candidates = [raw_dir, DEBIAN_FASHION_MNIST] if name == "fashion-mnist" else [raw_dir]
    found = next((files for files in map(_idx_files, candidates) if files), None)
    if found is None and download:
        with _torchvision_errors(name, root, download):
            torchvision_class(str(root), train=True, download=True)
        found = _idx_files(raw_dir)
    if found is None:
        places = " or ".join(str(d) for d in candidates)
        raise _missing(name, root, f"no complete set of its four IDX files is in {places}")

    (train_images, train_label_file), (test_images, test_label_file) = found["train"], found["test"]
    return Dataset(
        name=name,
        train_x=_normalize(torch.from_numpy(_read_idx(train_images)).unsqueeze(1), 255),
        true_labels=torch.from_numpy(_read_idx(train_label_file)).to(torch.int64),
        test_x=_normalize(torch.from_numpy(_read_idx(test_images)).unsqueeze(1), 255),
        test_labels=torch.from_numpy(_read_idx(test_label_file)).to(torch.int64),
        classes=classes,
    )


def _idx_files(directory: Path) -> dict[str, tuple[Path, Path]] | None:
    """The four IDX files in `directory` by split (plain preferred over gzipped), or None
    unless all four are there."""
    found = {}
    for split, stems in _IDX_FILES.items():
        paths = []
        for stem in stems:
            plain, gzipped = directory / stem, directory / f"{stem}.gz"
            path = plain if plain.is_file() else gzipped if gzipped.is_file() else None
            if path is None:
                return None
            paths.append(path)
        found[split] = tuple(paths)
    return found


def _read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX file (gzipped if its name ends in .gz) as a uint8 array.

    Format: two zero bytes, the type code 0x08 (unsigned byte), the number of dimensions, one
    big-endian uint32 per dimension, then the values.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = bytearray(f.read())
    except (OSError, EOFError) as exc:
        raise _corrupted(path, str(exc)) from exc
    if len(raw) < 4 or raw[0:3] != b"\x00\x00\x08":
        raise _corrupted(path, "it does not start with the magic number of unsigned-byte IDX")
    header_size = 4 + 4 * raw[3]
    if len(raw) < header_size:
        raise _corrupted(path, "its header is cut short")
    shape = struct.unpack(f">{raw[3]}I", raw[4:header_size])
    if len(raw) - header_size != math.prod(shape):
        raise _corrupted(path, f"its header promises shape {shape} but the values do not match")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


#: CIFAR-10's binary release (https://www.cs.toronto.edu/~kriz/cifar.html): its archive with the
#: MD5 the page publishes, the folder it unpacks to, its batches and the class names file.
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CIFAR10_FOLDER = "cifar-10-batches-bin"
_CIFAR10_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR10_TEST = "test_batch.bin"
_CIFAR10_META = "batches.meta.txt"
_CIFAR10_RECORD = 1 + 3 * 32 * 32  # a label byte, then the image


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels of one batch of the binary release: records of a
    label byte (0..9) and an image's 1024 red, then 1024 green, then 1024 blue values, each
    channel row-major."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _CIFAR10_RECORD:
        raise _corrupted(path, f"its {raw.size} bytes are not whole records of {_CIFAR10_RECORD} (a label and an image)")
    records = raw.reshape(-1, _CIFAR10_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise _corrupted(path, "a record's label byte is not a class 0..9")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _load_cifar10(root: Path, download: bool) -> Dataset:
    """CIFAR-10 from ``<root>/cifar-10-batches-bin/``, the binary release: plain bytes, read with
    numpy, so no pickle is involved (the python release, torchvision's, is pickled). `--download`
    fetches the archive and checks its published MD5; the batches are checked record by record."""
    folder = root / CIFAR10_FOLDER
    files = [folder / name for name in (*_CIFAR10_TRAIN, _CIFAR10_TEST, _CIFAR10_META)]
    with _torchvision_errors("cifar10", root, download):
        if not all(f.is_file() for f in files) and download:
            torchvision.datasets.utils.download_and_extract_archive(CIFAR10_URL, str(root), md5=CIFAR10_MD5)
        if not all(f.is_file() for f in files):
            python_release = (root / "cifar-10-batches-py").is_dir()
            raise _missing("cifar10", root, f"{folder} is not complete"
                           + (" (memloc reads the binary release, not the pickled python one in cifar-10-batches-py)"
                              if python_release else ""))
        train = [_read_cifar_batch(folder / name) for name in _CIFAR10_TRAIN]
        test_x, test_y = _read_cifar_batch(folder / _CIFAR10_TEST)
        classes = [line.strip() for line in (folder / _CIFAR10_META).read_text(encoding="ascii", errors="replace").splitlines()
                   if line.strip()]
    if len(classes) != 10:
        raise _corrupted(folder / _CIFAR10_META, "it does not name 10 classes, one per line")
    return Dataset(
        name="cifar10",
        train_x=_normalize(torch.from_numpy(np.concatenate([x for x, _ in train])), 255),
        true_labels=torch.from_numpy(np.concatenate([y for _, y in train])),
        test_x=_normalize(torch.from_numpy(test_x.copy()), 255),
        test_labels=torch.from_numpy(test_y),
        classes=tuple(classes),
    )


def _load_svhn(root: Path, download: bool) -> Dataset:
    """SVHN's cropped digits, train and test split (not "extra"), from ``<root>/*_32x32.mat``.

    torchvision already turns the images channel-first and the label 10 into the digit 0
    (its labels of a one-image split are squeezed to a scalar, hence the reshape).
    """
    with _torchvision_errors("svhn", root, download):
        train = torchvision.datasets.SVHN(str(root), split="train", download=download)
        test = torchvision.datasets.SVHN(str(root), split="test", download=download)
    return Dataset(
        name="svhn",
        train_x=_normalize(torch.from_numpy(train.data), 255),
        true_labels=torch.from_numpy(train.labels).reshape(-1),
        test_x=_normalize(torch.from_numpy(test.data), 255),
        test_labels=torch.from_numpy(test.labels).reshape(-1),
        classes=_DIGIT_CLASSES,
    )


@contextmanager
def _torchvision_errors(name: str, root: Path, download: bool) -> Iterator[None]:
    """Turn torchvision's errors (files missing, corrupted or not downloadable) into `DataError`."""
    try:
        yield
    except (RuntimeError, OSError, ValueError) as exc:
        if download:
            reason = f"getting it into {root} failed ({exc})"
        elif isinstance(exc, RuntimeError):  # torchvision's "Dataset not found or corrupted"
            reason = f"no complete, intact copy of its files is in {root}"
        else:
            reason = f"its files in {root} cannot be read ({exc})"
        raise _missing(name, root, reason) from exc


_LOADERS: dict[str, Callable[[Path, bool], Dataset]] = {
    "digits": _load_digits,
    "fashion-mnist": _load_fashion_mnist,
    "mnist": _load_mnist,
    "cifar10": _load_cifar10,
    "svhn": _load_svhn,
}


# ---------------------------------------------------------------------------------------------
# Small helpers.


def _normalize(images: torch.Tensor, max_value: int) -> torch.Tensor:
    """Pixel values 0..max_value -> float32 in [0, 1] -> (x - 0.5) / 0.5, in [-1, 1]."""
    return images.to(torch.float32).div_(max_value).sub_(0.5).div_(0.5).contiguous()


def _subset_indices(
    name: str, split: str, available: int, size: int | None, generator: torch.Generator
) -> torch.Tensor:
    """Sorted indices of `size` examples out of `available`, uniform without replacement."""
    if size is None:
        return torch.arange(available)
    if not 1 <= size <= available:
        raise DataError(
            f"Cannot take {size} {split} examples from {name}: it has {available}. "
            f"Ask for a {split} size between 1 and {available}, or none to use them all."
        )
    return torch.randperm(available, generator=generator)[:size].sort().values


def _where_files_go(name: str, root: Path) -> str:
    """Where the files of data set `name` belong under the data root (torchvision's layout)."""
    if name == "cifar10":
        return (
            f"{root / CIFAR10_FOLDER}/ (data_batch_1.bin to data_batch_5.bin, test_batch.bin and "
            f"batches.meta.txt, as unpacked from {CIFAR10_URL}: the binary release, not the pickled python one)"
        )
    if name == "svhn":
        return f"{root / 'train_32x32.mat'} and {root / 'test_32x32.mat'}"
    folder = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}[name]
    files = ", ".join(stem for stems in _IDX_FILES.values() for stem in stems)
    return f"{root / folder / 'raw'}/ as the four IDX files {files} (each may be gzipped, .gz)"


def _missing(name: str, root: Path, reason: str) -> DataError:
    """The error for a data set that cannot be had: what went wrong and every way to fix it."""
    debian = (
        f"; or run `apt-get install dataset-fashion-mnist` (Debian), whose files memloc finds in "
        f"{DEBIAN_FASHION_MNIST} by itself"
        if name == "fashion-mnist"
        else ""
    )
    return DataError(
        f"Cannot load the {name} data set: {reason}. Get it in one of these ways: put its files "
        f"under the data root, at {_where_files_go(name, root)}; pass --download (download=True "
        f"in Python) to let torchvision fetch it into {root} (needs internet); or point "
        f"--data-root or $MEMLOC_DATA at a directory that already holds it{debian}."
    )


def _corrupted(path: Path, reason: str) -> DataError:
    return DataError(
        f"Cannot read {path}: {reason}. The file is damaged or not what its name says; delete it "
        "and get the data set again (copy the files anew, or pass --download)."
    )
