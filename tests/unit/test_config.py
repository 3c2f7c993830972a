import dataclasses
import json

import pytest

from memloc import config as C


def test_defaults_are_the_papers_setting():
    cfg = C.RunConfig()
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.peak_epoch) == (50, 512, 0.1, 10.0)
    assert (cfg.train.momentum, cfg.train.weight_decay, cfg.data.noise_frac) == (0.9, 5e-4, 0.1)


@pytest.mark.parametrize("preset", list(C.PRESETS))
def test_every_preset_resolves_and_round_trips_through_json(preset):
    cfg = C.resolve(preset)
    again = C.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again.to_dict() == cfg.to_dict()


def test_overrides_are_typed_and_layered():
    cfg = C.resolve("demo", {"train": {"epochs": 20}}, overrides=["train.lr=0.05", "data.name=fashion-mnist",
                                                                 "model.name=resnet9", "model.options.width=0.25"])
    assert cfg.train.epochs == 20 and cfg.train.lr == 0.05 and cfg.data.name == "fashion-mnist"
    assert dict(cfg.model.options) == {"width": 0.25}  # the preset's mlp options were replaced
    assert C.resolve("demo", overrides=["train.peak_epoch=3"]).train.peak_epoch == 3.0  # int accepted as float


def test_configs_are_immutable():
    cfg = C.resolve("smoke")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.epochs = 3
    with pytest.raises(TypeError):
        cfg.model.options["hidden"] = [1]


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["data.noise_frac=1.5"], "data.noise_frac: a fraction in [0, 1), got 1.5"),
        (["data.noise_frac=-0.1"], "data.noise_frac"),
        (["train.epochs=0"], "train.epochs: an integer >= 1, got 0"),
        (["train.epochs=2.5"], "train.epochs: an integer"),
        (["train.epochs=many"], "train.epochs: an integer"),
        (["train.lr=-1"], "train.lr: a positive number"),
        (["data.augment=yes"], "data.augment: true or false"),
        (["data.name=imagenet"], "data.name: one of digits, fashion-mnist"),
        (["model.name=gpt"], "model.name: one of mlp"),
        (["model.options.depth=3"], "model.options"),
        (["train.epoch=3"], "unknown key 'train.epoch'"),
        (["bogus=1"], "unknown key 'bogus'"),
        (["stages=[\"fly\"]"], "stages: a non-empty list"),
        (["noequals"], "expected key=value"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(overrides, fragment):
    with pytest.raises(C.ConfigError) as err:
        C.resolve("demo", overrides=overrides)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(C.ConfigError, match="--preset: one of smoke, demo"):
        C.resolve("tiny")


def test_help_documents_every_key():
    text = C.describe_keys()
    for key in C.known_keys():
        assert key in text
    assert "share of training labels flipped" in text


def test_toml_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[train]\nepochs = 4\n[model]\nname = 'cnn'\n")
    cfg = C.resolve("smoke", C.load_toml(str(f)))
    assert cfg.train.epochs == 4 and cfg.model.name == "cnn"
    (tmp_path / "bad.toml").write_text("[train\n")
    with pytest.raises(C.ConfigError, match="not valid TOML"):
        C.load_toml(str(tmp_path / "bad.toml"))
    with pytest.raises(C.ConfigError, match="no such file"):
        C.load_toml(str(tmp_path / "missing.toml"))


def test_stage_names_match_the_precompute_stages():
    from precompute.stages import STAGES

    assert tuple(STAGES) == C.STAGES


def test_comma_lists_from_the_command_line_are_read_as_values():
    cfg = C.resolve("demo", overrides=["rewind.epochs=0,5", "flip.example_ids=3, 7", "stages=train,rewind"])
    assert cfg.rewind.epochs == (0, 5) and cfg.flip.example_ids == (3, 7) and cfg.stages == ("train", "rewind")
    with pytest.raises(C.ConfigError, match="rewind.epochs"):
        C.resolve("demo", overrides=["rewind.epochs=0,x"])
