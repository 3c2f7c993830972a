"""Every bad input is one line on stderr naming the fix, exit status 2, and nothing written.

The matrix is generated from the config schema (the settings sections of `memloc.config` and
the options of every architecture of the zoo), so a new key is covered without a new test: each
number gets a wrong type, NaN and infinities, and a value far below and far above any sane
bound; every other key a wrong type. The cases run in-process through `precompute.cli.main`
(a subprocess costs seconds of imports); a few run the real command line.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import models
from memloc import overrides
from memloc.config import SECTIONS, RunConfig
from memloc.settings import ConfigError
from precompute.cli import main

REPO = Path(__file__).resolve().parents[2]
SMOKE = ["run", "--preset", "smoke"]


def _number_kind(default) -> type | None:
    """int or float for a numeric default (bools are not numbers here), else None."""
    return type(default) if type(default) in (int, float) else None


def numeric_keys() -> list[tuple[str, type, list[str], bool]]:
    """(key, int or float, the --set that selects its architecture, whether it is a list of
    numbers) for every number of the schema."""
    keys = []
    defaults = RunConfig()
    for section in SECTIONS:
        owner = getattr(defaults, section)
        for f in dataclasses.fields(owner):
            kind = _number_kind(getattr(owner, f.name))
            if kind:
                keys.append((f"{section}.{f.name}", kind, [], False))
    for arch, config_cls in models.CONFIGS.items():
        for f in dataclasses.fields(config_cls):
            default = f.default
            listed = isinstance(default, tuple) and default and all(_number_kind(v) for v in default)
            kind = _number_kind(default[0]) if listed else _number_kind(default)
            if kind:
                keys.append((f"model.options.{f.name}", kind, [f"model.name={arch}"], bool(listed)))
    return keys


def other_keys() -> list[str]:
    """Every key that is not a number: strings, booleans, lists, the options table."""
    numbers = {key for key, *_ in numeric_keys()}
    return [key for key in overrides.known_keys() if key not in numbers]


def _probes(kind: type) -> list[str]:
    """Values (as written after `--set key=`) that no numeric setting may accept."""
    far = ["-1000000000000", "1000000000000"] if kind is int else ["-1e12", "1e12"]
    return ['"abc"', "true", "nan", "inf", *far]


#: A value of the wrong type for each kind of non-numeric default.
WRONG_TYPE = {bool: ["1", '"yes"'], str: ["true", "1.5"], tuple: ["1", "true"], types.MappingProxyType: ["1", "[1]"]}


def _other_probes(key: str) -> list[str]:
    section, _, name = key.partition(".")
    owner = getattr(RunConfig(), section) if name else RunConfig()
    return WRONG_TYPE[type(getattr(owner, name or section))]


NUMERIC_CASES = [
    pytest.param(key, [*arch, f"{key}=[{value}]" if listed else f"{key}={value}"], id=f"{key}={value}")
    for key, kind, arch, listed in numeric_keys() for value in _probes(kind)
]
OTHER_CASES = [pytest.param(key, [f"{key}={value}"], id=f"{key}={value}") for key in other_keys() for value in _other_probes(key)]


def _names(key: str, line: str) -> bool:
    """Whether the error line names `key` (a zoo option as `model.options: <arch>: <option>:`)."""
    if key.startswith("model.options."):
        return line.startswith("error: model.options: ") and f" {key.removeprefix('model.options.')}:" in line
    return f" {key}:" in line


def refused(capsys, tmp_path, argv: list[str]) -> str:
    """Run `precompute` in-process on argv and check the rule: exit 2, one line on stderr,
    nothing written under tmp_path (what the test put there aside). Returns the line."""
    before = sorted(tmp_path.rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert sorted(tmp_path.rglob("*")) == before
    return err.strip()


def test_the_matrix_covers_the_schema():
    keys = {key for key, *_ in numeric_keys()}
    assert {"train.lr", "train.epochs", "retrain.weight_decay", "dropout.p_mem", "model.options.width",
            "model.options.hidden", "model.options.mlp_ratio"} <= keys
    assert len(NUMERIC_CASES) + len(OTHER_CASES) > 300


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """Where the matrix points --out (a fresh tmp_path per case costs more than the case)."""
    return tmp_path_factory.mktemp("matrix")


@pytest.mark.parametrize("key, sets", NUMERIC_CASES + OTHER_CASES)
def test_a_bad_value_is_one_line_naming_the_key(capsys, scratch, key, sets):
    argv = [*SMOKE, "--out", str(scratch / "run")]
    for text in sets:
        argv += ["--set", text]
    line = refused(capsys, scratch, argv)
    assert _names(key, line), line


def _span(line: str) -> str:
    """The allowed interval an error line states, e.g. `(0, 10]`, with cross-field values
    (`train.epochs=3`) as the help writes them (`train.epochs`)."""
    match = re.search(r"[\[(][^\[\]()]*, [^\[\]()]*[\])]", line)
    assert match, line
    return re.sub(r"=\d+", "", match.group())


def test_help_states_the_bounds_of_every_number():
    """The bounds a value is refused by are the ones `precompute run --help` prints for its key."""
    help_lines = {line.split()[0]: line for line in overrides.describe_keys().splitlines()}
    for key, kind, arch, listed in numeric_keys():
        too_large = "1000000000000" if kind is int else "1e12"
        with pytest.raises(ConfigError) as error:
            overrides.resolve("smoke", overrides=[*arch, f"{key}=[{too_large}]" if listed else f"{key}={too_large}"])
        help_line = help_lines["model.options" if key.startswith("model.options.") else key]
        assert _span(str(error.value)) in help_line, (str(error.value), help_line)


def test_sane_large_values_are_accepted():
    """The bounds leave room for the paper's setting and generous sweeps around it."""
    cfg = overrides.resolve("paper-cifar10-resnet9", overrides=[
        "train.lr=10", "train.weight_decay=1", "train.epochs=10000", "model.options.width=1.0",
        "retrain.weight_decay=0.5", "train.batch_size=50000", "data.noise_frac=0"])
    assert (cfg.train.lr, cfg.train.epochs, cfg.model.options["width"]) == (10.0, 10000, 1.0)


# --- paths ------------------------------------------------------------------------------------


@pytest.fixture
def read_only(tmp_path, monkeypatch) -> Path:
    """A directory this process cannot write to. Root may write anywhere, so for root
    `os.access` answers as it would for the directory's owner without root's privileges."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: real(p, mode) and not (
            mode & os.W_OK and not os.stat(p).st_mode & 0o200))
    yield locked
    locked.chmod(0o755)


@pytest.mark.parametrize("command", [SMOKE, ["sweep", "--preset", "smoke", "--grid", "train.seed=0,1"]], ids=["run", "sweep"])
@pytest.mark.parametrize("where, fragment", [
    ("afile", "afile: is a file, not a directory"),
    ("afile/x", "afile is a file, so no directory can be made under it"),
    ("locked/x", "locked is not writable"),
    ("locked", "locked is not writable"),
])
def test_an_out_that_cannot_be_a_directory_is_one_line(capsys, tmp_path, read_only, command, where, fragment):
    (tmp_path / "afile").write_text("keep me")
    line = refused(capsys, tmp_path, [*command, "--out", str(tmp_path / where)])
    assert "--out" in line and fragment in line and "choose" in line, line
    assert (tmp_path / "afile").read_text() == "keep me"


@pytest.mark.parametrize("command", [SMOKE, ["sweep", "--preset", "smoke", "--grid", "train.seed=0,1"]], ids=["run", "sweep"])
@pytest.mark.parametrize("name, fragment", [
    ("adir", "is a directory"),
    ("latin1.toml", "not UTF-8"),
    ("missing.toml", "no such file"),
])
def test_a_config_that_cannot_be_read_is_one_line(capsys, tmp_path, command, name, fragment):
    (tmp_path / "adir").mkdir()
    (tmp_path / "latin1.toml").write_bytes("[train]\n# réglage\nepochs = 4\n".encode("latin1"))
    line = refused(capsys, tmp_path, [*command, "--config", str(tmp_path / name), "--out", str(tmp_path / "out")])
    assert f"--config {tmp_path / name}: {fragment}" in line, line


# --- checks that need the data ----------------------------------------------------------------


@pytest.mark.parametrize("sets, fragment", [
    (["flip.example_ids=[3, 100000]"], "flip.example_ids: ids of training examples (0..399), got 100000"),
    (["data.train_size=100000"], "Cannot take 100000 training examples from digits"),
    (['stages=["rewind"]'], "stages: "),
    (['stages=["rewind", "train"]'], "put train first, e.g. stages=['train', 'rewind']"),
])
def test_what_needs_the_data_is_checked_before_anything_is_written(capsys, tmp_path, sets, fragment):
    argv = [*SMOKE, "--out", str(tmp_path / "run"), *(a for s in sets for a in ("--set", s))]
    line = refused(capsys, tmp_path, argv)
    assert fragment in line, line
    assert not (tmp_path / "run").exists()


# --- the real command line --------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def command_lines(tmp_path_factory):
    """Two real `precompute run` processes, started before the module's first test so that
    their imports (seconds each) overlap the in-process cases: a file as --out, and a TOML file
    with a learning rate of 1e30."""
    where = tmp_path_factory.mktemp("command_lines")
    (where / "afile").write_text("")
    (where / "lr.toml").write_text("[train]\nlr = 1e30\n")
    cases = [
        (["--out", str(where / "afile")], "error: --out"),
        (["--config", str(where / "lr.toml"), "--out", str(where / "run")], "error: train.lr: a number in (0, 10], got 1e+30"),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-m", "precompute", "run", "--preset", "smoke", *args], cwd=where, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for args, _ in cases]
    yield where, [(proc, fragment) for proc, (_, fragment) in zip(procs, cases)]
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_command_line_exits_2_with_one_line(command_lines):
    where, procs = command_lines
    for proc, fragment in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and err.count("\n") == 1 and err.startswith(fragment), err
    assert sorted(p.name for p in where.iterdir()) == ["afile", "lr.toml"]
