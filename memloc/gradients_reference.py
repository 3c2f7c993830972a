"""Naive references of gradient accounting and per-example gradient norms (tests and benchmarks).

They follow PAPER.md section 1 literally and are slow on purpose:

- `ReferenceAccounting`: three backward passes per batch (clean part, noisy part, total), each
  gradient copied to the host and summed there; the optimizer gets the total.
- `reference_group_values`: the reduction to group norms and cosines, one tensor at a time.
- `reference_example_norms`: one backward pass per example, BatchNorm in eval mode.

Compare against `memloc.gradients.GradientAccounting` and
`memloc.example_gradients.example_gradient_norms`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from memloc.gradients import parameter_groups
from memloc.interventions import eval_mode


class ReferenceAccounting:
    """Backward strategy (like `memloc.train.mean_backward`) that sums g_clean, g_noisy, g_total
    on the host, each from its own backward pass through the whole batch's graph."""

    def __init__(self, model: nn.Module, is_noisy: torch.Tensor):
        self.entries = parameter_groups(model)
        self.is_noisy = is_noisy.cpu()
        self.sums = {part: [torch.zeros(p.shape, dtype=torch.float64) for _, _, p in self.entries]
                     for part in ("clean", "noisy", "total")}
        self.epochs: list[pd.DataFrame] = []

    def __call__(self, loss: torch.Tensor, batch_ids: torch.Tensor) -> None:
        params = [p for _, _, p in self.entries]
        noisy = self.is_noisy[batch_ids.cpu()].to(loss.device)
        b = loss.shape[0]
        b_c, b_n = int((~noisy).sum()), int(noisy.sum())
        objectives = {
            "clean": (b_c / b) * loss[~noisy].mean() if b_c else None,
            "noisy": (b_n / b) * loss[noisy].mean() if b_n else None,
            "total": loss.mean(),
        }
        for part, objective in objectives.items():
            if objective is None:
                continue
            grads = torch.autograd.grad(objective, params, retain_graph=True, allow_unused=True)
            for acc, g in zip(self.sums[part], grads):
                if g is not None:
                    acc += g.detach().cpu().double()
            if part == "total":
                for p, g in zip(params, grads):
                    p.grad = g

    def end_epoch(self, epoch: int) -> pd.DataFrame:
        """Tensor rows of the finished epoch (columns of `gradient_tensors`); restarts the sums."""
        rows = []
        for i, (group, name, p) in enumerate(self.entries):
            c, n, t = (self.sums[part][i] for part in ("clean", "noisy", "total"))
            scale = p.numel() ** 0.5
            cn, nn_ = float(c.norm()), float(n.norm())
            cosine = float((c * n).sum()) / (cn * nn_) if cn > 0 and nn_ > 0 else float("nan")
            rows.append({"epoch": epoch, "group": group, "tensor": name, "numel": p.numel(),
                         "clean_norm": cn / scale, "noisy_norm": nn_ / scale,
                         "total_norm": float(t.norm()) / scale, "cosine": cosine})
        for part in self.sums.values():
            for acc in part:
                acc.zero_()
        table = pd.DataFrame(rows)
        self.epochs.append(table)
        return table


def reference_group_values(tensors: pd.DataFrame) -> dict[tuple[int, str], tuple[float, float, float, float]]:
    """(epoch, group) -> (clean, noisy, total norm, cosine): PAPER.md's sums and means, by loops."""
    out = {}
    for (epoch, group), rows in tensors.groupby(["epoch", "group"], sort=False):
        cosines = [c for c in rows["cosine"] if not np.isnan(c)]
        out[(int(epoch), group)] = (
            sum(rows["clean_norm"]), sum(rows["noisy_norm"]), sum(rows["total_norm"]),
            sum(cosines) / len(cosines) if cosines else float("nan"),
        )
    return out


def reference_example_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    """(group names, (N, G)): for each example alone, backward of its own cross-entropy (eval
    mode), then per group sqrt(sum over its tensors of ||grad||^2)."""
    entries = parameter_groups(model)
    groups = list(dict.fromkeys(g for g, _, _ in entries))
    out = torch.zeros(x.shape[0], len(groups), dtype=torch.float64)
    with eval_mode(model):
        for i in range(x.shape[0]):
            loss = nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
            grads = torch.autograd.grad(loss, [p for _, _, p in entries], allow_unused=True)
            for (group, _, _), g in zip(entries, grads):
                if g is not None:
                    out[i, groups.index(group)] += g.double().square().sum().cpu()
    return groups, out.sqrt()


__all__ = ["ReferenceAccounting", "reference_group_values", "reference_example_norms"]
