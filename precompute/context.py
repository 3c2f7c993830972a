"""What a stage of `precompute run` gets: the run being written, its config, data and labels."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from memloc import data as data_mod
from memloc.config import RunConfig
from memloc.evaluate import Labels
from memloc.store import Run


@dataclass
class StageContext:
    run: Run  # locked for writing by the runner
    config: RunConfig
    data: data_mod.Dataset  # on `device`
    labels: Labels  # on `device`
    device: torch.device
