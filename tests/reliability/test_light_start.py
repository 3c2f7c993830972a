"""A command with nothing heavy to do answers without importing torch, torchvision, pandas or
scikit-learn (`memloc.lazy`): `--help`, `list` and every configuration error of a section.

Each case is the real command line, `python -X importtime -m precompute ...`, whose stderr
lists every module the command imported next to its own output. Errors of the model's
options stay with torch: they are checked by building the model (`RunConfig._check_models`).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memloc.config import SECTIONS

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "pandas", "sklearn")


def precompute(*args: str, cwd: Path = REPO) -> tuple[int, str, str, list[str]]:
    """(exit status, stdout, stderr without the import lines, heavy modules it imported)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "precompute", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    lines = done.stderr.splitlines()
    imported = [line.split("|")[-1].strip() for line in lines if line.startswith("import time:")]
    heavy = sorted({name for name in imported if name.split(".")[0] in HEAVY})
    err = "".join(f"{line}\n" for line in lines if not line.startswith("import time:"))
    return done.returncode, done.stdout, err, heavy


@pytest.mark.parametrize("args, expected", [
    (["--help"], "usage: python -m precompute"),
    (["run", "--help"], "data.noise_frac"),
    (["sweep", "--help"], "a sweep file (--config)"),
])
def test_help_imports_nothing_heavy(args, expected):
    code, out, err, heavy = precompute(*args)
    assert (code, err, heavy) == (0, "", [])
    assert expected in out


def test_list_imports_nothing_heavy(smoke_run):
    code, out, err, heavy = precompute("list", str(smoke_run.path.parent))
    assert (code, err, heavy) == (0, "", [])
    assert out.startswith("smoke: digits / mlp, noise 0.1\n") and "\n  train: complete" in out, out


def _too_large(section: str) -> str:
    """`--set` of a value far above the bounds of the section's first number (every number is
    bounded: tests/reliability/test_bad_input.py)."""
    defaults = SECTIONS[section]()
    f = next(f for f in dataclasses.fields(defaults) if type(getattr(defaults, f.name)) in (int, float))
    return f"{section}.{f.name}=" + ("1000000000000" if type(getattr(defaults, f.name)) is int else "1e12")


BAD = [
    pytest.param(["--set", "data.noise_frac=1.5"], "error: data.noise_frac: a number in [0, 1), got 1.5", id="noise"),
    pytest.param(["--set", "train.epoch=3"], "error: unknown key 'train.epoch'; known keys: stages, ", id="unknown-key"),
    pytest.param(["--preset", "nope"], "error: --preset: one of smoke, ", id="unknown-preset"),
    pytest.param(["--config", "{tmp}/bad.toml"], "error: --config {tmp}/bad.toml: not valid TOML", id="bad-toml"),
    pytest.param(["--set", "rewind.epochs=[100]"], "error: rewind.epochs: epochs in 0..train.epochs=60", id="across-sections"),
    *[pytest.param(["--set", _too_large(s)], f"error: {_too_large(s).partition('=')[0]}: ", id=s) for s in SECTIONS if s != "model"],
]


@pytest.mark.parametrize("args, message", BAD)
def test_a_config_error_imports_nothing_heavy(tmp_path, args, message):
    (tmp_path / "bad.toml").write_text("[train\nepochs = 3\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, out, err, heavy = precompute("run", *args, "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert (code, out, heavy) == (2, "", [])
    assert err.startswith(message.replace("{tmp}", str(tmp_path))) and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_a_model_option_error_is_the_same_line_with_torch(tmp_path):
    code, out, err, heavy = precompute("run", "--set", "model.options.width=9", "--out", str(tmp_path / "run"))
    assert (code, out) == (2, "")
    assert err == "error: model.options: resnet9: width: a number in (0, 8], got 9\n"
    assert "torch" in heavy
