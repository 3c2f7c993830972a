"""Training with label noise (PAPER.md "Training setting"): settings, one epoch, its records.

The loop follows the paper: SGD (momentum 0.9, weight decay 5e-4), batch size 512, the
one-cycle schedule of `memloc.schedule` stepped every batch. Data lives on the device; each
epoch's batch order is a permutation drawn from a generator seeded by (seed, epoch), so a
resumed run draws the same batches as an uninterrupted one and the final checkpoint is
bitwise the same on the CPU (the resumable loop over epochs, with a checkpoint per epoch, is
the `train` stage, `precompute/train.py`).

Per epoch a run records the accuracy and loss of the four populations (`memloc.evaluate`, an
eval-mode pass after the epoch; table `training`) and per example the training loss and
whether the prediction equalled the training label, taken from the training forward pass
itself (`reduction="none"`, no extra pass; table `example_training`).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from memloc.data import Dataset, augment
from memloc.lazy import lazy
from memloc.schedule import one_cycle_lr
from memloc.settings import MAX_COUNT, MAX_EPOCHS, MAX_SEED, check, in_range, setting

pd = lazy("pandas")
torch = lazy("torch")
F = lazy("torch.nn.functional")
nn = lazy("torch.nn")
etd = lazy("models.example_tied_dropout")  # its layers are nn.Modules: torch


@dataclass(frozen=True)
class TrainSettings:
    """The `train` section of a run: PAPER.md's optimizer and schedule."""

    epochs: int = setting(50, f"training epochs (a checkpoint is kept after each; epoch 0 = init), in [1, {MAX_EPOCHS}]")
    batch_size: int = setting(512, f"training batch size, in [1, {MAX_COUNT}]")
    lr: float = setting(0.1, "peak learning rate of the one-cycle schedule, in (0, 10]")
    peak_epoch: float = setting(10.0, "epoch at which the learning rate peaks (rises linearly from 0), in (0, train.epochs]")
    momentum: float = setting(0.9, "SGD momentum, in [0, 1)")
    weight_decay: float = setting(5e-4, "SGD weight decay, in [0, 1]")
    seed: int = setting(0, f"seed of model initialization and batch order, in [0, {MAX_SEED}]")
    eval_batch_size: int = setting(0, f"batch size of evaluation passes; 0 = auto (256 on a CPU, 4096 on a GPU); in [0, {MAX_COUNT}]")
    keep_epochs: str = setting("", "checkpoints kept on disk: empty = every epoch; else epochs and ranges, e.g. "
                               "0-10,15-50/5 (0 to 10, then every 5th from 15 to 50); 0 and the last are always kept")

    def __post_init__(self):
        in_range("epochs", self.epochs, 1, MAX_EPOCHS, integer=True)
        in_range("batch_size", self.batch_size, 1, MAX_COUNT, integer=True)
        in_range("eval_batch_size", self.eval_batch_size, 0, MAX_COUNT, integer=True)
        in_range("lr", self.lr, 0, 10, open_lo=True)
        check(0 < self.peak_epoch <= self.epochs, "peak_epoch", f"in (0, train.epochs={self.epochs}]", self.peak_epoch)
        in_range("momentum", self.momentum, 0, 1, open_hi=True)
        in_range("weight_decay", self.weight_decay, 0, 1)
        in_range("seed", self.seed, 0, MAX_SEED, integer=True)
        self.kept_epochs()  # checks the policy

    def kept_epochs(self, epochs: int | None = None) -> list[int]:
        """The checkpoints `keep_epochs` keeps of a training of `epochs` (default: this one's)
        epochs, sorted: every epoch when it is empty, else its epochs and ranges (items beyond
        `epochs` left out), always with 0 and the last."""
        last = self.epochs if epochs is None else epochs
        if not self.keep_epochs.strip():
            return list(range(last + 1))
        kept = {0, last}
        for item in self.keep_epochs.split(","):
            match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*(?:/\s*(\d+)\s*)?)?", item)
            check(match is not None, "keep_epochs", "epochs and ranges like 0-10,15-50/5", self.keep_epochs)
            start = int(match[1])
            stop, step = int(match[2] or start), int(match[3] or 1)
            check(start <= stop <= self.epochs and step >= 1, "keep_epochs",
                  f"epochs and ranges in 0..train.epochs={self.epochs}, steps >= 1", self.keep_epochs)
            kept |= {e for e in range(start, stop + 1, step) if e <= last}
        return sorted(kept)

    def steps_per_epoch(self, n: int) -> int:
        """Batches per epoch over `n` training examples (the last one may be smaller)."""
        return -(-n // self.batch_size)

    def last_lr(self, epoch: int, n: int) -> float:
        """The learning rate of the last step of 1-based `epoch`."""
        steps = self.steps_per_epoch(n)
        return one_cycle_lr(epoch * steps - 1, steps, self.epochs, self.peak_epoch, self.lr)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's batch order (and augmentation), a function of (seed, epoch)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def make_optimizer(params, settings: TrainSettings) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=0.0, momentum=settings.momentum, weight_decay=settings.weight_decay)


def mean_backward(loss: torch.Tensor, batch_ids: torch.Tensor) -> None:
    """The ordinary batch gradient: backward of the mean cross-entropy over the batch."""
    loss.mean().backward()


#: How a batch's per-example losses become gradients; analyses that account for the gradient
#: (e.g. its clean and noisy parts) pass their own.
Backward = Callable[["torch.Tensor", "torch.Tensor"], None]


@dataclass
class EpochStats:
    """Per-example training-pass statistics of one epoch, kept on the device."""

    loss: torch.Tensor  # (N,) float32
    correct: torch.Tensor  # (N,) bool: prediction == training label in the training pass


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Dataset,
    train_labels: torch.Tensor,
    settings: TrainSettings,
    epoch: int,
    augment_batches: bool = False,
    backward: Backward = mean_backward,
) -> EpochStats:
    """One epoch (1-based `epoch`) of SGD over the training set in a seeded random order."""
    n = data.num_train
    device = data.train_x.device
    steps_per_epoch = settings.steps_per_epoch(n)
    gen = epoch_generator(settings.seed, epoch)
    order = torch.randperm(n, generator=gen).to(device)
    stats = EpochStats(torch.zeros(n, device=device), torch.zeros(n, dtype=torch.bool, device=device))
    model.train()
    takes_ids = getattr(model, "takes_example_ids", False)
    # Example-tied dropout (PAPER.md section 5) masks by example id; the ids here are rows
    # 0..n-1 of the training set, so the layers may read their masks from a bit table.
    with etd.mask_table(model, n, device) if takes_ids else contextlib.nullcontext():
        for i, ids in enumerate(order.split(settings.batch_size)):
            lr = one_cycle_lr((epoch - 1) * steps_per_epoch + i, steps_per_epoch, settings.epochs, settings.peak_epoch, settings.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x = data.train_x[ids]  # (B, C, H, W)
            if augment_batches:
                x = augment(x, gen)
            y = train_labels[ids]
            logits = model(x, example_ids=ids) if takes_ids else model(x)
            loss = F.cross_entropy(logits, y, reduction="none")  # (B,)
            optimizer.zero_grad(set_to_none=True)
            backward(loss, ids)
            optimizer.step()
            stats.loss[ids] = loss.detach()
            stats.correct[ids] = logits.detach().argmax(1) == y
    return stats


def momentum_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """SGD's momentum buffers by parameter name, for a resume state (`restore_momentum` reads them)."""
    out = {}
    for name, p in model.named_parameters():
        buf = optimizer.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            out[f"momentum.{name}"] = buf
    return out


def restore_momentum(model: nn.Module, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Put momentum buffers saved by `momentum_state` back into `optimizer`."""
    for name, p in model.named_parameters():
        buf = tensors.get(f"momentum.{name}")
        if buf is not None:
            optimizer.state[p]["momentum_buffer"] = buf.clone()


#: Columns of the `example_training` table (one row per example and epoch, epochs 1..E).
EXAMPLE_COLUMNS = ["example_id", "epoch", "loss", "correct"]


def example_rows(epoch: int, stats: EpochStats) -> pd.DataFrame:
    """The `example_training` rows of one epoch: every example's training-pass loss and
    whether its prediction equalled its training label."""
    n = len(stats.loss)
    return pd.DataFrame({
        "example_id": np.arange(n, dtype=np.int64),
        "epoch": np.full(n, epoch, dtype=np.int64),
        "loss": stats.loss.cpu().numpy(),
        "correct": stats.correct.cpu().numpy(),
    })


def memorized_from(example_training: pd.DataFrame, is_noisy: np.ndarray) -> pd.DataFrame:
    """example_id, memorized_from for every noisy example.

    `memorized_from` is the first epoch e such that the example was predicted with its (noisy)
    training label in epochs e, e+1, ..., last (`example_training.correct`, from the training
    forward pass); <NA> when it is not predicted so in the last epoch.
    """
    noisy_ids = np.flatnonzero(is_noisy)
    table = example_training[example_training["example_id"].isin(noisy_ids)]
    wide = table.pivot(index="example_id", columns="epoch", values="correct").sort_index(axis=1)  # (noisy, epochs)
    correct = wide.to_numpy(dtype=bool)
    epochs = wide.columns.to_numpy()
    # Walk from the last epoch back: the run of True at the end starts at the last False + 1.
    tail = np.flip(np.cumprod(np.flip(correct, axis=1), axis=1), axis=1).astype(bool)  # (noisy, epochs)
    first = np.where(tail.any(axis=1), epochs[np.argmax(tail, axis=1)], -1)
    out = pd.DataFrame({"example_id": wide.index.to_numpy(), "memorized_from": first})
    out["memorized_from"] = out["memorized_from"].astype("Int64").mask(out["memorized_from"] < 0)
    return out.reset_index(drop=True)
