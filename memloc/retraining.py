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

Freezing is real: frozen parameters have `requires_grad=False` and are not given to the
optimizer (so weight decay and momentum never touch them), and every module outside the group is
kept in eval mode, so frozen BatchNorm statistics stay fixed. Only the group's modules are in
train mode. (The authors' script set `requires_grad` on state-dict copies and trained every
layer, on the noisy examples; memloc does not copy that.)

Speed: the frozen layers before the group compute the same activations in every epoch, so the
activations at the cut in front of the group (`memloc.partial`) are computed once for all
training and test examples and training runs only the rest of the network (when they fit in
`cache_bytes`; otherwise every batch runs the whole network). `retrain_reference` is the literal
version that runs the whole model every step; tests compare the two.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from memloc.config import RetrainConfig
from memloc.evaluate import Labels, evaluate, population_metrics
from memloc.interventions import group_state_names
from memloc.partial import Split, frontier_bytes, group_paths, split
from memloc.schedule import one_cycle_lr
from memloc.train import epoch_generator

#: Columns of the `retraining` table (control row: group "none", group_index -1, epoch 0).
COLUMNS = ["group", "group_index", "epoch", "clean_acc", "noisy_acc", "noisy_true_acc", "test_acc"]
METRICS = COLUMNS[3:]


@dataclass(frozen=True)
class RetrainData:
    """What retraining reads, on one device."""

    train_x: torch.Tensor  # (N, C, H, W)
    labels: Labels
    test_x: torch.Tensor  # (M, C, H, W)
    test_y: torch.Tensor  # (M,)


def reset_and_freeze(model: nn.Module, init_state: dict[str, torch.Tensor], group: str) -> list[nn.Parameter]:
    """Reset `group` to `init_state` (parameters and buffers), freeze every other parameter;
    return the group's parameters (the only ones to give the optimizer)."""
    names = set(group_state_names(model, group, include_buffers=True))
    model.load_state_dict({name: init_state[name] for name in names}, strict=False)
    trained = []
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)
        if name in names:
            trained.append(param)
    return trained


def train_modes(model: nn.Module, group: str) -> None:
    """Eval mode everywhere (frozen BatchNorm statistics stay fixed), train mode in the group."""
    prefixes = model.layer_groups[group]
    model.eval()
    for name, module in model.named_modules():
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            module.train()


def _optimizer(params: list[nn.Parameter], cfg: RetrainConfig) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=0.0, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _lr(cfg: RetrainConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """The triangle schedule at batch `step` of 1-based `epoch`."""
    return one_cycle_lr((epoch - 1) * steps_per_epoch + step, steps_per_epoch, cfg.max_epochs, cfg.peak_epoch, cfg.lr)


def _epoch_order(clean_ids: torch.Tensor, seed: int, epoch: int) -> torch.Tensor:
    """The clean examples in the seeded random order of `epoch`."""
    perm = torch.randperm(len(clean_ids), generator=epoch_generator(seed, epoch)).to(clean_ids.device)
    return clean_ids[perm]  # (n_clean,)


def _row(metrics: dict[str, float], epoch: int) -> dict:
    return {"epoch": epoch, **{k: metrics[k] for k in METRICS}}


class _Cut:
    """The frozen prefix in front of the group: its activations cached for all examples when
    they fit in `cache_bytes` (indexed by example), else recomputed per batch."""

    def __init__(self, part: Split, data: RetrainData, eval_batch_size: int, cache_bytes: int):
        self.part, self.data, self.ebs = part, data, eval_batch_size
        self.train = self.test = None
        x0 = data.train_x[:eval_batch_size]
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

    @torch.no_grad()
    def _logits(self, x: torch.Tensor, cached: tuple | None) -> torch.Tensor:
        if cached is None:
            return torch.cat([self.part(xb) for xb in x.split(self.ebs)])
        n = len(cached[0])
        return torch.cat([self.part.suffix(*(v[i:i + self.ebs] for v in cached)) for i in range(0, n, self.ebs)])

    def metrics(self) -> dict[str, float]:
        d = self.data
        return population_metrics(self._logits(d.train_x, self.train), self._logits(d.test_x, self.test), d.labels, d.test_y)


def retrain_group(
    model: nn.Module,
    init_state: dict[str, torch.Tensor],
    group: str,
    data: RetrainData,
    cfg: RetrainConfig,
    batch_size: int,
    seed: int,
    eval_batch_size: int = 4096,
    cache_bytes: int = 1 << 30,
) -> list[dict]:
    """Retrain `group` of `model` (the final model; edited in place) from its initialization on
    the clean examples; one row per epoch (0 = after the reset), see the module docstring."""
    params = reset_and_freeze(model, init_state, group)
    optimizer = _optimizer(params, cfg)
    model.eval()
    cut = _Cut(split(model, group_paths(model, [group])), data, eval_batch_size, cache_bytes)
    rows = [_row(cut.metrics(), 0)]
    clean_ids = (~data.labels.is_noisy).nonzero().squeeze(1)  # (n_clean,)
    steps = -(-len(clean_ids) // batch_size)
    at_full = 0
    for epoch in range(1, cfg.max_epochs + 1):
        train_modes(model, group)
        for step, ids in enumerate(_epoch_order(clean_ids, seed, epoch).split(batch_size)):
            for param_group in optimizer.param_groups:
                param_group["lr"] = _lr(cfg, epoch, step, steps)
            loss = F.cross_entropy(cut.forward(ids), data.labels.train[ids])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        rows.append(_row(cut.metrics(), epoch))
        at_full += rows[-1]["clean_acc"] == 1.0
        if at_full >= cfg.patience:
            break
    return rows


def retrain_reference(
    model: nn.Module,
    init_state: dict[str, torch.Tensor],
    group: str,
    data: RetrainData,
    cfg: RetrainConfig,
    batch_size: int,
    seed: int,
    eval_batch_size: int = 4096,
) -> tuple[list[dict], nn.Module]:
    """Naive reference of `retrain_group`, literally PAPER.md: a copy of the final model with the
    group reset, the whole model run on every batch of clean examples, the rest frozen. Returns
    the rows and the retrained copy."""
    model = copy.deepcopy(model)
    init = {name: init_state[name] for name in group_state_names(model, group, include_buffers=True)}
    model.load_state_dict(init, strict=False)
    for name, param in model.named_parameters():
        param.requires_grad = name in init
    optimizer = _optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    d = data

    def measure(epoch: int) -> dict:
        return _row(evaluate(model, d.train_x, d.labels, d.test_x, d.test_y, eval_batch_size), epoch)

    rows = [measure(0)]
    clean_ids = torch.tensor([i for i in range(len(d.train_x)) if not d.labels.is_noisy[i]], device=d.train_x.device)
    steps = -(-len(clean_ids) // batch_size)
    at_full = 0
    for epoch in range(1, cfg.max_epochs + 1):
        train_modes(model, group)
        for step, ids in enumerate(_epoch_order(clean_ids, seed, epoch).split(batch_size)):
            for param_group in optimizer.param_groups:
                param_group["lr"] = _lr(cfg, epoch, step, steps)
            loss = F.cross_entropy(model(d.train_x[ids]), d.labels.train[ids])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        rows.append(measure(epoch))
        if rows[-1]["clean_acc"] == 1.0:
            at_full += 1
        if at_full >= cfg.patience:
            break
    return rows, model
