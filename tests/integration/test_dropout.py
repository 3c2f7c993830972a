"""Stage `dropout` on the `smoke` run: tables, checkpoints, explorer access, resume, config errors."""

from __future__ import annotations

import pytest
import torch

from memloc import overrides
from memloc.evaluate import population_metrics
from memloc.runs import open_run
from memloc.settings import ConfigError
from memloc.store import RunError
from models import example_tied_dropout as etd
from models.example_tied_dropout import set_mode
from precompute.stages import execute


def _quiet(_msg: str) -> None:
    pass


def test_dropout_tables_follow_the_contract(smoke_run):
    cfg = overrides.from_dict(smoke_run.manifest()["config"])
    modes = smoke_run.read_table("dropout")
    assert list(modes.columns) == ["mode", "clean_acc", "noisy_acc", "noisy_true_acc", "test_acc"]
    assert modes["mode"].tolist() == ["train", "test", "drop", "plain"]
    assert modes.set_index("mode").loc[["test", "drop", "plain"]].notna().all().all()
    examples = smoke_run.read_table("dropout_examples")
    assert list(examples.columns) == ["example_id", "mode", "prediction", "correct"]
    n = cfg.data.train_size
    assert len(examples) == 4 * n
    train_label = smoke_run.read_labels()["train_label"]
    for mode, part in examples.groupby("mode"):
        assert part["example_id"].tolist() == list(range(n))
        assert (part["correct"].to_numpy() == (part["prediction"].to_numpy() == train_label)).all()
        is_noisy = smoke_run.read_labels()["is_noisy"]
        row = modes.set_index("mode").loc[mode]
        assert part["correct"].to_numpy()[is_noisy].mean() == pytest.approx(row["noisy_acc"])
    # The plain rows are the main model's final numbers from the training table.
    last = smoke_run.read_table("training").iloc[-1]
    for key in ("clean_acc", "noisy_acc", "test_acc"):
        assert modes.set_index("mode").loc["plain", key] == pytest.approx(last[key])


def test_dropout_checkpoints_sit_beside_the_main_ones(smoke_run):
    cfg = overrides.from_dict(smoke_run.manifest()["config"])
    epochs = list(range(cfg.train.epochs + 1))
    assert smoke_run.checkpoint_epochs() == epochs
    assert smoke_run.checkpoint_epochs("dropout") == epochs
    assert not smoke_run.has_state("dropout")
    # Same initialization (the dropout layers add no parameters), different training.
    init_a, init_b = smoke_run.read_checkpoint(0), smoke_run.read_checkpoint(0, variant="dropout")
    assert all(torch.equal(init_a[k], init_b[k]) for k in init_a)
    last_a, last_b = smoke_run.read_checkpoint(epochs[-1]), smoke_run.read_checkpoint(epochs[-1], variant="dropout")
    assert not all(torch.equal(last_a[k], last_b[k]) for k in last_a)


def test_the_opened_dropout_model_gives_the_recorded_numbers(smoke_run):
    opened = open_run(smoke_run)
    model = opened.model(variant="dropout")
    with pytest.raises(RuntimeError, match="needs a chosen mode"):
        model(opened.data.train_x[:2])
    recorded = smoke_run.read_table("dropout").set_index("mode")
    for mode in ("test", "drop"):
        set_mode(model, mode)
        with torch.no_grad():
            metrics = population_metrics(model(opened.data.train_x), model(opened.data.test_x), opened.labels, opened.data.test_labels)
        for key in ("clean_acc", "noisy_acc", "noisy_true_acc", "test_acc"):
            assert metrics[key] == pytest.approx(recorded.loc[mode, key]), (mode, key)
    set_mode(model, "train")
    with torch.no_grad():
        logits = model(opened.data.train_x, example_ids=torch.arange(opened.data.num_train))
    noisy = opened.labels.is_noisy
    noisy_acc = (logits.argmax(1)[noisy] == opened.labels.train_labels[noisy]).float().mean().item()
    assert noisy_acc == pytest.approx(recorded.loc["train", "noisy_acc"])
    with pytest.raises(RunError, match="variant must be plain or dropout"):
        opened.model(variant="other")


def test_dropout_stage_needs_the_main_model(tmp_path):
    cfg = overrides.resolve("smoke", overrides=['stages=["dropout"]'])
    with pytest.raises(RunError, match=r"a new run starts with train, got \['dropout'\]; put train first"):
        execute(cfg, str(tmp_path / "alone"), torch.device("cpu"), log=_quiet)
    assert not (tmp_path / "alone").exists()  # refused before anything was written


@pytest.mark.parametrize("sets, fragment", [
    (["model.name=vit", 'dropout.after=["fc1"]'], "dropout: vit: example_tied_dropout.after: distinct names from ['blocks_0', "),
    (["dropout.p_mem=0"], "dropout.p_mem: a fraction in (0, 1), got 0"),
    (["dropout.p_gen=1.0"], "dropout.p_gen: a fraction in (0, 1)"),
    (['dropout.after=["fc7"]'], "dropout: mlp: example_tied_dropout.after: distinct names from ['fc1', 'fc2']"),
    (["dropout.epochs=1", "train.peak_epoch=2"], "dropout.epochs: at least train.peak_epoch=2.0"),
    (["model.options.example_tied_dropout={p_mem = 0.2}"], "model.options.example_tied_dropout: unset"),
])
def test_bad_dropout_settings_are_config_errors(sets, fragment):
    with pytest.raises(ConfigError) as err:
        overrides.resolve("demo-mlp", overrides=sets)
    assert fragment in str(err.value)


@pytest.mark.parametrize("arch, places", [("vit", 2), ("resnet50", 16)])
def test_vit_and_resnet50_train_their_example_tied_dropout_variant(tmp_path, arch, places):
    cfg = overrides.resolve("smoke", overrides=[f"model.name={arch}", 'stages=["train", "dropout"]'])
    run = execute(cfg, str(tmp_path / arch), torch.device("cpu"), log=_quiet)
    assert set(run.read_table("dropout")["mode"]) == {"plain", "train", "test", "drop"}
    model = open_run(run.path).model(variant="dropout")
    layers = etd.dropout_layers(model)
    assert len(layers) == places and model.takes_example_ids
    # Each layer's units are the hidden neurons of a block's MLP (vit) or a block's output channels (resnet50).
    widths = ([b.mlp.fc1.out_features for b in model.blocks] if arch == "vit"
              else [model.get_submodule(b).conv3.out_channels for b in model.layer_groups if b.startswith("layer")])
    assert [layer.channels for layer in layers] == widths
