"""Every stage on a GPU (`--device cuda`), against the same run on the CPU.

Skipped where PyTorch sees no CUDA device (CI has none); on a GPU machine:
`python -m pytest tests/gpu`. A GPU sums in other orders than a CPU, so the two runs agree
to float32 rounding, not bitwise: the same tables, rows and columns, weights within 1e-4,
accuracies within a few examples.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memloc import overrides
from memloc.config import STAGE_TABLES
from models import example_tied_dropout as etd
from precompute.stages import STAGES, execute

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

TABLES = tuple(table for tables in STAGE_TABLES.values() for table in tables)


def test_every_stage_runs_on_cuda_and_agrees_with_the_cpu(smoke_run, tmp_path):
    run = execute(overrides.resolve("smoke"), str(tmp_path / "cuda"), torch.device("cuda"), log=lambda _: None)
    assert all(run.is_complete(stage) for stage in STAGES)
    assert run.stage("train")["device"] == "cuda"
    for name in TABLES:
        cpu, gpu = smoke_run.read_table(name), run.read_table(name)
        assert list(gpu.columns) == list(cpu.columns) and len(gpu) == len(cpu), name
    for variant in ("plain", "dropout"):
        last = run.checkpoint_epochs(variant)[-1]
        cpu, gpu = smoke_run.read_checkpoint(last, variant=variant), run.read_checkpoint(last, variant=variant)
        for key in cpu:
            torch.testing.assert_close(gpu[key], cpu[key], rtol=1e-3, atol=1e-4, msg=key)
    cpu, gpu = smoke_run.read_table("training"), run.read_table("training")
    n = len(smoke_run.read_labels()["train_label"])
    for column in ("clean_acc", "noisy_acc", "test_acc"):
        assert np.abs(gpu[column].to_numpy() - cpu[column].to_numpy()).max() <= 3 / n + 1e-9, column


def test_example_tied_masks_are_the_same_on_cuda():
    """Hash and mask table on the GPU give the CPU's masks (ids beyond int32 included)."""
    ids = torch.cat([torch.randperm(20_000), torch.tensor([2**31 + 5, 10**12])])
    model = torch.nn.Sequential(*(etd.ExampleTiedDropout(c, 0.2, 0.1, 0, i) for i, c in enumerate((13, 64, 512))))
    cpu = [layer.mask(ids) for layer in model]
    for layer, expected in zip(model, cpu):
        assert torch.equal(layer.mask(ids.cuda()).cpu(), expected)
    with etd.mask_table(model, 20_000, torch.device("cuda")):
        for layer, expected in zip(model, cpu):
            assert torch.equal(layer.mask(ids[:20_000].cuda()).cpu(), expected[:20_000])
