"""Run configuration: each section's settings checked where they are declared, the override
engine (presets, TOML, --set), and the command line that recreates a recorded config."""

import dataclasses
import json
import shlex

import pytest

from memloc import overrides
from memloc.config import SECTIONS, STAGE_TABLES, STAGES, RunConfig
from memloc.dropout import DropoutSettings
from memloc.flipping import FlipSettings
from memloc.presets import MODEL_OPTIONS, PRESETS
from memloc.settings import ConfigError
from models.example_tied_dropout import DropoutOptions


def test_defaults_are_the_papers_setting():
    cfg = RunConfig()
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.peak_epoch) == (50, 512, 0.1, 10.0)
    assert (cfg.train.momentum, cfg.train.weight_decay, cfg.data.noise_frac) == (0.9, 5e-4, 0.1)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_resolves_and_round_trips_through_json(preset):
    cfg = overrides.resolve(preset)
    again = overrides.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again.to_dict() == cfg.to_dict()


def test_overrides_are_typed_and_layered():
    cfg = overrides.resolve("demo-mlp", {"train": {"epochs": 20}}, overrides=["train.lr=0.05", "data.name=fashion-mnist",
                                                                     "model.name=resnet9", "model.options.width=0.25"])
    assert cfg.train.epochs == 20 and cfg.train.lr == 0.05 and cfg.data.name == "fashion-mnist"
    assert dict(cfg.model.options) == {"width": 0.25}  # the preset's mlp options were replaced
    assert overrides.resolve("demo", overrides=["train.peak_epoch=3"]).train.peak_epoch == 3.0  # int accepted as float


@pytest.mark.parametrize("preset", list(PRESETS))
def test_each_preset_sizes_every_architecture_it_names(preset):
    for arch, options in MODEL_OPTIONS[preset].items():
        cfg = overrides.resolve(preset, overrides=[f"model.name={arch}", 'stages=["train"]'])
        assert cfg.model.name == arch and dict(cfg.model.options) == options


def test_a_preset_sizes_another_architecture_unless_options_are_given():
    assert dict(overrides.resolve("smoke", overrides=["model.name=vit", 'stages=["train"]']).model.options) == {
        "dim": 32, "depth": 2, "heads": 2}
    assert dict(overrides.resolve("fashion-mnist", {"model": {"name": "resnet50"}}, overrides=['stages=["train"]'])
                .model.options) == {"width": 0.25}
    # Options given replace the preset's, all of them (here: vit's defaults but depth 1).
    given = overrides.resolve("smoke", overrides=["model.name=vit", "model.options.depth=1", 'stages=["train"]'])
    assert dict(given.model.options) == {"depth": 1}
    assert dict(overrides.resolve("paper-cifar10-resnet9", overrides=["model.name=cnn"]).model.options) == {}
    cfg = overrides.resolve("smoke", overrides=["model.name=cnn"])  # recreated from its manifest as it was
    assert overrides.from_dict(json.loads(json.dumps(cfg.to_dict()))).model.options == cfg.model.options


def test_configs_are_immutable():
    cfg = overrides.resolve("smoke")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.epochs = 3
    with pytest.raises(TypeError):
        cfg.model.options["hidden"] = [1]


@pytest.mark.parametrize(
    "sets, fragment",
    [
        (["data.noise_frac=1.5"], "data.noise_frac: a number in [0, 1), got 1.5"),
        (["data.noise_frac=-0.1"], "data.noise_frac"),
        (["train.epochs=0"], "train.epochs: an integer in [1, 10000], got 0"),
        (["train.epochs=2.5"], "train.epochs: an integer"),
        (["train.epochs=many"], "train.epochs: an integer"),
        (["train.lr=-1"], "train.lr: a number in (0, 10]"),
        (["data.augment=yes"], "data.augment: true or false"),
        (["data.name=imagenet"], "data.name: one of digits, fashion-mnist"),
        (["model.name=gpt"], "model.name: one of mlp"),
        (["model.options.depth=3"], "model.options"),
        (["train.epoch=3"], "unknown key 'train.epoch'"),
        (["bogus=1"], "unknown key 'bogus'"),
        (["stages=[\"fly\"]"], "stages: a non-empty list"),
        (["noequals"], "expected key=value"),
        (["dropout.p_gen=1.5"], "dropout.p_gen: a fraction in (0, 1), got 1.5"),
        (["dropout.after=[\"fc9\"]"], "dropout: mlp: example_tied_dropout.after: distinct names from ['fc1', 'fc2']"),
        (["flip.cap=0"], "flip.cap: an integer in [1, 10000000], got 0"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(sets, fragment):
    with pytest.raises(ConfigError) as err:
        overrides.resolve("demo-mlp", overrides=sets)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match="--preset: one of smoke, demo"):
        overrides.resolve("tiny")


def test_help_documents_every_key():
    text = overrides.describe_keys()
    for key in overrides.known_keys():
        assert key in text
    assert "share of training labels flipped" in text


def test_toml_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[train]\nepochs = 4\n[model]\nname = 'cnn'\n")
    cfg = overrides.resolve("smoke", overrides.load_toml(str(f)))
    assert cfg.train.epochs == 4 and cfg.model.name == "cnn"
    (tmp_path / "bad.toml").write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        overrides.load_toml(str(tmp_path / "bad.toml"))
    with pytest.raises(ConfigError, match="no such file"):
        overrides.load_toml(str(tmp_path / "missing.toml"))


def test_stage_names_match_the_precompute_stages():
    from precompute import stages

    assert tuple(stages.STAGES) == STAGES == tuple(STAGE_TABLES)


def test_a_settings_value_cannot_be_invalid_and_each_setting_is_declared_once():
    with pytest.raises(ConfigError, match=r"cap: an integer in \[1, 10000000\], got 0"):
        FlipSettings(cap=0)
    with pytest.raises(ValueError, match="p_mem: a fraction in"):
        DropoutSettings(p_mem=0.0)
    # The dropout section is the zoo's dropout options plus its own `epochs`, not a copy of them.
    assert issubclass(DropoutSettings, DropoutOptions)
    assert [f.name for f in dataclasses.fields(DropoutSettings)] == [f.name for f in dataclasses.fields(DropoutOptions)] + ["epochs"]
    for cls in (RunConfig, *SECTIONS.values()):
        for f in dataclasses.fields(cls):
            assert cls in (RunConfig,) and f.name in SECTIONS or f.metadata.get("help"), (cls.__name__, f.name)


def _run_command(command: str) -> RunConfig:
    """Resolve the config that a `python -m precompute run` command line asks for."""
    args = shlex.split(command)
    assert args[:4] == ["python", "-m", "precompute", "run"]
    preset, sets, i = None, [], 4
    while i < len(args):
        flag, value = args[i], args[i + 1]
        if flag == "--preset":
            preset = value
        elif flag == "--set":
            sets.append(value)
        elif flag == "--data-root":
            sets.append(f"data.root={json.dumps(value)}")
        i += 2
    return overrides.resolve(preset, overrides=sets)


@pytest.mark.parametrize("preset, sets", [
    ("smoke", []),
    ("demo", []),
    ("smoke", ["train.epochs=4", "flip.example_ids=[3, 7]", "data.noise_frac=0.2"]),
    ("demo", ["model.name=cnn", "model.options.width=0.5", "stages=[\"train\", \"rewind\"]", "dropout.after=[\"conv1\"]"]),
    ("fashion-mnist", ["model.options={}", "data.root=\"/tmp/my data\""]),
])
def test_command_for_a_recorded_config_makes_that_config(preset, sets):
    cfg = overrides.resolve(preset, overrides=sets)
    command = overrides.command_for(cfg.to_dict(), "runs/x y")
    assert command.endswith("--out 'runs/x y'")
    assert _run_command(command).to_dict() == cfg.to_dict()
    if not sets:
        assert command == f"python -m precompute run --preset {preset} --out 'runs/x y'"


def test_command_for_can_add_stages_and_skips_keys_this_memloc_does_not_know():
    recorded = overrides.resolve("smoke", overrides=["stages=[\"train\"]"]).to_dict()
    recorded["flip"]["retired_key"] = 1  # as if written by another memloc
    command = overrides.command_for(recorded, "runs/s", stages=["train", "flip"])
    assert "retired_key" not in command
    assert _run_command(command).stages == ("train", "flip")


def test_comma_lists_from_the_command_line_are_read_as_values():
    cfg = overrides.resolve("demo", overrides=["rewind.epochs=0,5", "flip.example_ids=3, 7", "stages=train,rewind"])
    assert cfg.rewind.epochs == (0, 5) and cfg.flip.example_ids == (3, 7) and cfg.stages == ("train", "rewind")
    with pytest.raises(ConfigError, match="rewind.epochs"):
        overrides.resolve("demo", overrides=["rewind.epochs=0,x"])
