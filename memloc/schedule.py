"""The paper's one-cycle learning-rate schedule, as a pure function of the step.

The learning rate rises linearly from 0 at the first step to `peak_lr` at `peak_epoch`, then
falls linearly to 0 at the end of the last epoch; it is stepped every batch (PAPER.md). Being a
pure function of the global step, it needs no state in a checkpoint: a resumed run computes the
same rates.
"""

from __future__ import annotations


def one_cycle_lr(step: int, steps_per_epoch: int, epochs: int, peak_epoch: float, peak_lr: float) -> float:
    """Learning rate for global batch `step` (0-based)."""
    t = step / steps_per_epoch  # position in epochs
    if t <= peak_epoch:
        return peak_lr * t / peak_epoch
    return max(0.0, peak_lr * (epochs - t) / (epochs - peak_epoch))
