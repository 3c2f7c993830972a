"""Training with label noise, one checkpoint per epoch, resumable (PAPER.md "Training setting").

The loop follows the paper: SGD (momentum 0.9, weight decay 5e-4), batch size 512, the
one-cycle schedule of `memloc.schedule` stepped every batch. Data lives on the device; each
epoch's batch order is a permutation drawn from a generator seeded by (seed, epoch), so a
resumed run draws the same batches as an uninterrupted one and the final checkpoint is
bitwise the same on the CPU.

Per epoch it records the accuracy and loss of clean, noisy (against the noisy labels:
memorization), noisy-vs-true and test examples (an eval-mode pass after the epoch), and per
example the training loss and whether the prediction equalled the training label, taken from
the training forward pass itself (`reduction="none"`, no extra pass).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from memloc.config import TrainConfig
from memloc.data import Dataset, augment
from memloc.evaluate import Labels, evaluate
from memloc.schedule import one_cycle_lr
from memloc.store import Run
from models.example_tied_dropout import mask_table

STATE = "train"  # name of the resume state in the run store


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's batch order (and augmentation), a function of (seed, epoch)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=0.0, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def mean_backward(loss: torch.Tensor, batch_ids: torch.Tensor) -> None:
    """The ordinary batch gradient: backward of the mean cross-entropy over the batch."""
    loss.mean().backward()


#: How a batch's per-example losses become gradients; analyses that account for the gradient
#: (e.g. its clean and noisy parts) pass their own.
Backward = Callable[[torch.Tensor, torch.Tensor], None]


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
    cfg: TrainConfig,
    epoch: int,
    augment_batches: bool = False,
    backward: Backward = mean_backward,
) -> EpochStats:
    """One epoch (1-based `epoch`) of SGD over the training set in a seeded random order."""
    n = data.num_train
    device = data.train_x.device
    steps_per_epoch = -(-n // cfg.batch_size)
    gen = epoch_generator(cfg.seed, epoch)
    order = torch.randperm(n, generator=gen).to(device)
    stats = EpochStats(torch.zeros(n, device=device), torch.zeros(n, dtype=torch.bool, device=device))
    model.train()
    takes_ids = getattr(model, "takes_example_ids", False)
    # Example-tied dropout (PAPER.md section 5) masks by example id; the ids here are rows
    # 0..n-1 of the training set, so the layers may read their masks from a bit table.
    with mask_table(model, n, device) if takes_ids else contextlib.nullcontext():
        for i, ids in enumerate(order.split(cfg.batch_size)):
            lr = one_cycle_lr((epoch - 1) * steps_per_epoch + i, steps_per_epoch, cfg.epochs, cfg.peak_epoch, cfg.lr)
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


@dataclass
class TrainingResult:
    """What the training stage writes: per-epoch metrics and per-example statistics."""

    epochs: pd.DataFrame
    examples: pd.DataFrame = field(repr=False)


def train_run(
    run: Run,
    model: nn.Module,
    data: Dataset,
    labels: Labels,
    cfg: TrainConfig,
    augment_batches: bool = False,
    backward: Backward = mean_backward,
    on_epoch: Callable[[int], None] | None = None,
    name: str = STATE,
    checkpoints: str | None = None,
    evaluate_epochs: bool = True,
) -> TrainingResult:
    """Train `model` (freshly initialized) and keep every epoch in `run`, resuming if possible.

    Epoch 0 is the initialization. After each epoch the checkpoint, then the resume state
    (momentum buffers, per-example statistics so far, metrics rows) are written atomically;
    an interrupted run continues from the last epoch whose resume state is in place.
    `on_epoch(epoch)` runs after each epoch's checkpoint and before its resume state is written:
    an analysis that accumulates during training saves its own state there, which is then never
    behind the training's (after an interruption between the two, training repeats `epoch` and
    the analysis replaces what it saved for it).

    `name` is the stage whose progress is recorded and the name of its resume state;
    `checkpoints` the run store's model the checkpoints belong to (None: the run's main model).
    With `evaluate_epochs`, each epoch's row also holds `memloc.evaluate.evaluate`'s accuracies
    after the epoch; a model with example-tied dropout has no single way to be evaluated (its
    modes answer different questions), so the dropout stage turns this off and evaluates the
    modes once, after training.
    """
    device = data.train_x.device
    n, epochs = data.num_train, cfg.epochs
    optimizer = make_optimizer(model.parameters(), cfg)
    ex_loss = torch.zeros(epochs, n, device=device)
    ex_correct = torch.zeros(epochs, n, dtype=torch.bool, device=device)

    def metrics() -> dict[str, float]:
        if not evaluate_epochs:
            return {}
        return evaluate(model, data.train_x, labels, data.test_x, data.test_y, cfg.eval_batch_size)

    rows: list[dict] = []
    start = 1
    if run.has_state(name):
        tensors, meta = run.read_state(name, device)
        done = int(meta["epoch"])
        model.load_state_dict(run.read_checkpoint(done, device, checkpoints))
        restore_momentum(model, optimizer, tensors)
        ex_loss[:done] = tensors["ex_loss"][:done]
        ex_correct[:done] = tensors["ex_correct"][:done].bool()
        rows = json.loads(meta["rows"])
        start = done + 1
    else:
        run.write_checkpoint(0, model.state_dict(), checkpoints)
        rows.append({"epoch": 0, "lr": 0.0, "train_loss": float("nan"), "seconds": 0.0, **metrics()})

    # disable=None: a bar with rate and ETA on a terminal, quiet otherwise (CI, logs).
    bar = tqdm(range(start, epochs + 1), desc=name, unit="epoch", initial=start - 1, total=epochs, disable=None)
    for epoch in bar:
        t0 = time.perf_counter()
        stats = train_epoch(model, optimizer, data, labels.train, cfg, epoch, augment_batches, backward)
        ex_loss[epoch - 1] = stats.loss
        ex_correct[epoch - 1] = stats.correct
        row = metrics()
        steps_per_epoch = -(-n // cfg.batch_size)
        last_lr = one_cycle_lr(epoch * steps_per_epoch - 1, steps_per_epoch, cfg.epochs, cfg.peak_epoch, cfg.lr)
        rows.append({"epoch": epoch, "lr": last_lr, "train_loss": stats.loss.mean().item(),
                     "seconds": time.perf_counter() - t0, **row})
        run.write_checkpoint(epoch, model.state_dict(), checkpoints)
        if on_epoch is not None:
            on_epoch(epoch)
        run.write_state(
            name,
            {**momentum_state(model, optimizer), "ex_loss": ex_loss, "ex_correct": ex_correct.to(torch.uint8)},
            {"epoch": str(epoch), "rows": json.dumps(rows)},
        )
        run.update_stage(name, status="running", epochs_done=epoch)
        if row:
            bar.set_postfix(memorized=f"{row['noisy_acc']:.3f}", clean=f"{row['clean_acc']:.3f}", test=f"{row['test_acc']:.3f}")
        else:
            bar.set_postfix(loss=f"{rows[-1]['train_loss']:.3f}")

    return TrainingResult(pd.DataFrame(rows), _example_table(ex_loss, ex_correct))


def _example_table(ex_loss: torch.Tensor, ex_correct: torch.Tensor) -> pd.DataFrame:
    """Long table (example_id, epoch, loss, correct) from (epochs, N) arrays."""
    epochs, n = ex_loss.shape
    return pd.DataFrame({
        "example_id": np.tile(np.arange(n, dtype=np.int64), epochs),
        "epoch": np.repeat(np.arange(1, epochs + 1, dtype=np.int64), n),
        "loss": ex_loss.cpu().numpy().reshape(-1),
        "correct": ex_correct.cpu().numpy().reshape(-1),
    })
