import pytest

from memloc.schedule import one_cycle_lr


def test_paper_schedule_rises_to_peak_at_epoch_10_then_falls_to_zero():
    spe, epochs, peak = 10, 50, 10.0
    lr = lambda step: one_cycle_lr(step, spe, epochs, peak, 0.1)  # noqa: E731
    assert lr(0) == 0.0
    assert lr(5 * spe) == pytest.approx(0.05)
    assert lr(10 * spe) == pytest.approx(0.1)
    assert lr(30 * spe) == pytest.approx(0.05)
    assert lr(50 * spe) == pytest.approx(0.0)
    # monotone up to the peak, then down
    values = [lr(s) for s in range(epochs * spe)]
    peak_step = values.index(max(values))
    assert peak_step == 10 * spe
    assert all(a <= b for a, b in zip(values[:peak_step], values[1 : peak_step + 1]))
    assert all(a >= b for a, b in zip(values[peak_step:], values[peak_step + 1 :]))


def test_schedule_steps_every_batch():
    # Within one epoch the rate changes from batch to batch (stepped per batch, not per epoch).
    assert one_cycle_lr(1, 4, 50, 10.0, 0.1) > one_cycle_lr(0, 4, 50, 10.0, 0.1)
    assert one_cycle_lr(3, 4, 50, 10.0, 0.1) == pytest.approx(0.1 * 0.75 / 10)
