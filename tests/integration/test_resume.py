"""Every stage resumes from its partial Parquet tables to bitwise the same files.

Each stage of the `smoke` run is interrupted (a KeyboardInterrupt, as Ctrl-C) right after it
saved a piece of its progress, or in the middle of a save (its new files written, the manifest
not yet switched to them); the same command then resumes it. Every table and checkpoint of the
resumed run has the sha256 of the uninterrupted run's (`training` and `localizers` without
their `seconds`).
"""

from __future__ import annotations

import pytest
import torch

from memloc import overrides
from memloc.config import STAGE_TABLES, STAGES
from memloc.store import Run
from precompute.stages import execute

#: The save after which each stage is interrupted (each has more saves after it in `smoke`).
INTERRUPT_AFTER = {"train": 2, "example_gradients": 1, "rewind": 1, "retrain": 2, "flip": 1, "dropout": 2, "localize": 2}


@pytest.mark.parametrize("when", ["after a save", "during a save"])
@pytest.mark.parametrize("stage", STAGES)
def test_an_interrupted_stage_resumes_to_bitwise_the_same_tables(smoke_run, digests, tmp_path, monkeypatch, stage, when):
    stages = STAGES[: STAGES.index(stage) + 1] if stage != "dropout" else ("train", "dropout")
    cfg = overrides.resolve("smoke", overrides=[f"stages={list(stages)!r}".replace("'", '"')])
    out = tmp_path / "run"
    real_append, real_update = Run.append_state, Run._update
    saves = {"n": 0, "saving": False}

    def append_then_interrupt(self, name, *args, **kwargs):
        if name != stage:
            return real_append(self, name, *args, **kwargs)
        saves["n"] += 1
        saves["saving"] = saves["n"] == INTERRUPT_AFTER[stage] and when == "during a save"
        real_append(self, name, *args, **kwargs)
        if saves["n"] == INTERRUPT_AFTER[stage]:
            raise KeyboardInterrupt

    def update_or_interrupt(self, change):
        if saves["saving"]:  # the save's files are written; the manifest would switch to them now
            saves["saving"] = False
            raise KeyboardInterrupt
        return real_update(self, change)

    monkeypatch.setattr(Run, "append_state", append_then_interrupt)
    monkeypatch.setattr(Run, "_update", update_or_interrupt)
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, str(out), torch.device("cpu"), log=lambda _: None)
    run = Run(out)
    assert not run.is_complete(stage) and run.has_state(stage) == (when == "after a save" or INTERRUPT_AFTER[stage] > 1)

    monkeypatch.setattr(Run, "append_state", real_append)
    monkeypatch.setattr(Run, "_update", real_update)
    messages: list[str] = []
    execute(cfg, str(out), torch.device("cpu"), log=messages.append)
    assert "resuming" in messages[0] and run.is_complete(stage) and not run.has_state(stage)
    assert not (run.path / "state").exists()  # no partial file is left behind
    tables = tuple(t for s in stages for t in STAGE_TABLES[s] if run.has_table(t))
    assert set(STAGE_TABLES[stage]) <= set(tables)
    variants = ("plain", "dropout") if "dropout" in stages else ("plain",)
    assert digests(run, tables, variants) == digests(smoke_run, tables, variants)


def test_training_resumes_under_a_checkpoint_policy(smoke_run, digests, tmp_path, monkeypatch):
    """Checkpoints the policy drops go only once a later one is saved: an interrupted training
    still finds the checkpoint it resumes from."""
    cfg = overrides.resolve("smoke", overrides=['stages=["train"]', "train.keep_epochs=0"])
    real_append, saves = Run.append_state, {"n": 0}

    def append_then_interrupt(self, *args, **kwargs):
        real_append(self, *args, **kwargs)
        saves["n"] += 1
        if saves["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Run, "append_state", append_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, str(tmp_path / "run"), torch.device("cpu"), log=lambda _: None)
    # Interrupted right after epoch 2 was saved, before the policy dropped epoch 1: 2 is there to resume from.
    assert Run(tmp_path / "run").checkpoint_epochs() == [0, 1, 2]
    monkeypatch.setattr(Run, "append_state", real_append)
    run = execute(cfg, str(tmp_path / "run"), torch.device("cpu"), log=lambda _: None)
    assert run.checkpoint_epochs() == [0, 3]
    assert digests(run, ("training", "example_training"), ()) == digests(smoke_run, ("training", "example_training"), ())
    assert all(torch.equal(run.read_checkpoint(3)[k], v) for k, v in smoke_run.read_checkpoint(3).items())
