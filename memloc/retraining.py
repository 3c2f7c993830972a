"""Layer retraining (PAPER.md section 3).

For each layer group: take the final model, reset that group (parameters and BatchNorm running
statistics) to its initialization, freeze every other group, and train only that group on the
*clean* training examples: SGD with momentum 0.9 and weight decay 5e-4, learning rate following a
triangle (rising linearly from 0 to `lr` at `peak_epoch`, back to 0 at `max_epochs`, stepped every
batch; the authors use peak 0.01 at epoch 10 of 20), at most `max_epochs` epochs, stopping once
`patience` epochs (counted over the whole run, as the authors do) ended at 100% clean accuracy.
After the reset (epoch 0) and after each epoch, clean, noisy (against the noisy labels), noisy
against true labels and test accuracy are recorded (eval mode). Batches are the clean examples
in a seeded random order per epoch, without augmentation.

Reading: noisy accuracy that comes back although the group never saw a noisy example means the
rest of the network still holds that memorization; if it stays low the group was needed for it.

Freezing is real: retraining runs inside `memloc.interventions.frozen(model, [group])`, so
frozen parameters have `requires_grad=False` and are not given to the optimizer (weight decay
and momentum never touch them), and every module outside the group is kept in eval mode, so
frozen BatchNorm statistics stay fixed. Only the group's modules are in train mode. Afterwards
the model is the final model again, bitwise. (The authors' script set `requires_grad` on
state-dict copies and trained every layer, on the noisy examples; memloc does not copy that.)

Speed: the frozen layers before the group compute the same activations in every epoch, so the
activations at the cut in front of the group (`memloc.partial`) are computed once for all
training and test examples and training runs only the rest of the network (when they fit in
`cache_bytes`; otherwise every batch runs the whole network). `retrain_reference` is the literal
version that runs the whole model every step; tests compare the two.

- `retrain_group(model, init_state, group, ...)`: the table rows of one group;
- `retrained(...)`: the same as a scope in which the model holds the retrained group (to look
  at the retrained weights); the model is restored when it ends.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Iterator

from memloc.data import Labels
from memloc.evaluate import ACCURACIES, eval_rows, evaluate, population_metrics
from memloc.interventions import Frozen, frozen, group_state_names, state_tensors
from memloc.lazy import lazy, no_grad
from memloc.partial import Split, frontier_bytes, group_paths, split
from memloc.schedule import one_cycle_lr
from memloc.settings import MAX_COUNT, MAX_EPOCHS, MAX_MB, check, in_range, setting
from memloc.train import epoch_generator
from models import in_group

torch = lazy("torch")
F = lazy("torch.nn.functional")
nn = lazy("torch.nn")

#: Columns of the `retraining` table (control row: group "none", group_index -1, epoch 0).
COLUMNS = ["group", "group_index", "epoch", *ACCURACIES]


@dataclass(frozen=True)
class RetrainSettings:
    """The `retrain` section of a run (the authors' values by default)."""

    lr: float = setting(0.01, "peak learning rate of the triangle schedule, in (0, 10]")
    peak_epoch: float = setting(10.0, "epoch at which the learning rate peaks (rises linearly from 0, falls to 0 at max_epochs), "
                                "in (0, retrain.max_epochs]")
    max_epochs: int = setting(20, f"most retraining epochs per layer group, in [1, {MAX_EPOCHS}]")
    patience: int = setting(3, f"stop after this many epochs ended at 100% clean accuracy, in [1, {MAX_EPOCHS}]")
    batch_size: int = setting(0, f"batch size of retraining; 0 = train.batch_size; in [0, {MAX_COUNT}]")
    momentum: float = setting(0.9, "SGD momentum, in [0, 1)")
    weight_decay: float = setting(5e-4, "SGD weight decay, in [0, 1]")
    cache_mb: int = setting(1024, "memory (MiB) for the frozen activations in front of the group, computed once; larger runs the "
                            f"whole model per batch; in [0, {MAX_MB}]")

    def __post_init__(self):
        in_range("lr", self.lr, 0, 10, open_lo=True)
        in_range("max_epochs", self.max_epochs, 1, MAX_EPOCHS, integer=True)
        check(0 < self.peak_epoch <= self.max_epochs, "peak_epoch", f"in (0, retrain.max_epochs={self.max_epochs}]", self.peak_epoch)
        in_range("patience", self.patience, 1, MAX_EPOCHS, integer=True)
        in_range("batch_size", self.batch_size, 0, MAX_COUNT, integer=True)
        in_range("momentum", self.momentum, 0, 1, open_hi=True)
        in_range("weight_decay", self.weight_decay, 0, 1)
        in_range("cache_mb", self.cache_mb, 0, MAX_MB, integer=True)


@dataclass(frozen=True)
class RetrainData:
    """What retraining reads, on one device."""

    train_x: torch.Tensor  # (N, C, H, W)
    labels: Labels
    test_x: torch.Tensor  # (M, C, H, W)
    test_labels: torch.Tensor  # (M,)


def _optimizer(params: list[nn.Parameter], settings: RetrainSettings) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=0.0, momentum=settings.momentum, weight_decay=settings.weight_decay)


def _lr(settings: RetrainSettings, epoch: int, step: int, steps_per_epoch: int) -> float:
    """The triangle schedule at batch `step` of 1-based `epoch`."""
    return one_cycle_lr((epoch - 1) * steps_per_epoch + step, steps_per_epoch, settings.max_epochs,
                        settings.peak_epoch, settings.lr)


def _epoch_order(clean_ids: torch.Tensor, seed: int, epoch: int) -> torch.Tensor:
    """The clean examples in the seeded random order of `epoch`."""
    perm = torch.randperm(len(clean_ids), generator=epoch_generator(seed, epoch)).to(clean_ids.device)
    return clean_ids[perm]  # (n_clean,)


def _row(metrics: dict[str, float], epoch: int) -> dict:
    return {"epoch": epoch, **{k: metrics[k] for k in ACCURACIES}}


class _Cut:
    """The frozen prefix in front of the group: its activations cached for all examples when
    they fit in `cache_bytes` (indexed by example), else recomputed per batch."""

    def __init__(self, part: Split, data: RetrainData, eval_batch_size: int, cache_bytes: int):
        self.part, self.data, self.ebs = part, data, eval_rows(eval_batch_size, data.train_x.device)
        self.train = self.test = None
        x0 = data.train_x[:self.ebs]
        first = self._prefix(x0)
        # Cacheable: every value at the cut has one row per example (not, e.g., a batch size).
        batch_major = all(torch.is_tensor(v) and v.dim() > 0 and len(v) == len(x0) for v in first)
        if batch_major and frontier_bytes(first) / len(x0) * (len(data.train_x) + len(data.test_x)) <= cache_bytes:
            self.train = self._stack(data.train_x)
            self.test = self._stack(data.test_x)

    def _prefix(self, x: torch.Tensor) -> tuple:
        with torch.no_grad():
            return tuple(self.part.prefix(x))

    def _stack(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Prefix activations of all of `x`, computed in eval batches; each (len(x), ...)."""
        parts = [self._prefix(xb) for xb in x.split(self.ebs)]
        return tuple(torch.cat(values) for values in zip(*parts))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, K) of training examples `ids`, with gradients for the group."""
        values = tuple(v[ids] for v in self.train) if self.train is not None else self._prefix(self.data.train_x[ids])
        return self.part.suffix(*values)

    @no_grad
    def _logits(self, x: torch.Tensor, cached: tuple | None) -> torch.Tensor:
        if cached is None:
            return torch.cat([self.part(xb) for xb in x.split(self.ebs)])
        n = len(cached[0])
        return torch.cat([self.part.suffix(*(v[i:i + self.ebs] for v in cached)) for i in range(0, n, self.ebs)])

    def metrics(self) -> dict[str, float]:
        d = self.data
        return population_metrics(self._logits(d.train_x, self.train), self._logits(d.test_x, self.test), d.labels, d.test_labels)


def _retrain(part: Frozen, init_state: dict[str, torch.Tensor], group: str, data: RetrainData,
             settings: RetrainSettings, batch_size: int, seed: int, eval_batch_size: int, cache_bytes: int) -> list[dict]:
    """Reset `group` to `init_state` and train it inside `frozen` (the scope that `part` belongs to)."""
    model = part.model
    with torch.no_grad():
        tensors = state_tensors(model)
        for name in group_state_names(model, group, include_buffers=True):
            tensors[name].copy_(init_state[name])
    optimizer = _optimizer(part.parameters, settings)
    cut = _Cut(split(model, group_paths(model, [group])), data, eval_batch_size, cache_bytes)
    rows = [_row(cut.metrics(), 0)]
    clean_ids = (~data.labels.is_noisy).nonzero().squeeze(1)  # (n_clean,)
    steps = -(-len(clean_ids) // batch_size)
    at_full = 0
    for epoch in range(1, settings.max_epochs + 1):
        part.train()
        for step, ids in enumerate(_epoch_order(clean_ids, seed, epoch).split(batch_size)):
            for param_group in optimizer.param_groups:
                param_group["lr"] = _lr(settings, epoch, step, steps)
            loss = F.cross_entropy(cut.forward(ids), data.labels.train_labels[ids])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        part.eval()
        rows.append(_row(cut.metrics(), epoch))
        at_full += rows[-1]["clean_acc"] == 1.0
        if at_full >= settings.patience:
            break
    return rows


@contextlib.contextmanager
def retrained(
    model: nn.Module,
    init_state: dict[str, torch.Tensor],
    group: str,
    data: RetrainData,
    settings: RetrainSettings,
    batch_size: int,
    seed: int,
    eval_batch_size: int = 0,
    cache_bytes: int = 1 << 30,
) -> Iterator[list[dict]]:
    """`model` (the final model) with `group` retrained from its initialization on the clean
    examples, for the block; yields one row per epoch (0 = after the reset), see the module
    docstring. When the block ends the model is the final model again, bitwise."""
    with frozen(model, [group]) as part:
        yield _retrain(part, init_state, group, data, settings, batch_size, seed, eval_batch_size, cache_bytes)


def retrain_group(
    model: nn.Module,
    init_state: dict[str, torch.Tensor],
    group: str,
    data: RetrainData,
    settings: RetrainSettings,
    batch_size: int,
    seed: int,
    eval_batch_size: int = 0,
    cache_bytes: int = 1 << 30,
) -> list[dict]:
    """The `retraining` rows of `group` (one per epoch, 0 = after the reset); `model` is
    restored afterwards."""
    with retrained(model, init_state, group, data, settings, batch_size, seed, eval_batch_size, cache_bytes) as rows:
        return rows


def retrain_reference(
    model: nn.Module,
    init_state: dict[str, torch.Tensor],
    group: str,
    data: RetrainData,
    settings: RetrainSettings,
    batch_size: int,
    seed: int,
    eval_batch_size: int = 0,
) -> tuple[list[dict], nn.Module]:
    """Naive reference of `retrain_group`, literally PAPER.md: a copy of the final model with the
    group reset, the whole model run on every batch of clean examples, the rest frozen. Returns
    the rows and the retrained copy."""
    model = copy.deepcopy(model)
    init = {name: init_state[name] for name in group_state_names(model, group, include_buffers=True)}
    model.load_state_dict(init, strict=False)
    for name, param in model.named_parameters():
        param.requires_grad = name in init
    optimizer = _optimizer([p for p in model.parameters() if p.requires_grad], settings)
    prefixes = model.layer_groups[group]
    d = data

    def measure(epoch: int) -> dict:
        return _row(evaluate(model, d.train_x, d.labels, d.test_x, d.test_labels, eval_batch_size), epoch)

    rows = [measure(0)]
    clean_ids = torch.tensor([i for i in range(len(d.train_x)) if not d.labels.is_noisy[i]], device=d.train_x.device)
    steps = -(-len(clean_ids) // batch_size)
    at_full = 0
    for epoch in range(1, settings.max_epochs + 1):
        model.eval()  # frozen modules (BatchNorm) keep their statistics; the group's train
        for name, module in model.named_modules():
            if in_group(name, prefixes):
                module.train()
        for step, ids in enumerate(_epoch_order(clean_ids, seed, epoch).split(batch_size)):
            for param_group in optimizer.param_groups:
                param_group["lr"] = _lr(settings, epoch, step, steps)
            loss = F.cross_entropy(model(d.train_x[ids]), d.labels.train_labels[ids])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        rows.append(measure(epoch))
        if rows[-1]["clean_acc"] == 1.0:
            at_full += 1
        if at_full >= settings.patience:
            break
    return rows, model
