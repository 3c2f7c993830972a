"""`pip install .` into a fresh virtual environment: memloc, models and precompute work from any
directory, and a notebook opens a run in one line.

The fresh environment sees this environment's packages through a `.pth` file, so pip finds the
pinned dependencies already installed (it checks them against requirements.txt) instead of
downloading several GB of PyTorch; memloc itself is built and installed from a copy of the
source tree, as `pip install .` in a clone does.
"""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(".git", ".venv", "runs", "data", "__pycache__", "*.egg-info", "build", ".pytest_cache")


def test_pip_install_then_open_a_run_from_another_directory(smoke_run, tmp_path):
    source = tmp_path / "clone"
    shutil.copytree(ROOT, source, ignore=SKIP)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "memloc-test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([python, "-m", "pip", "install", "--disable-pip-version-check", "--quiet", str(source)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    shutil.rmtree(source)  # what runs below is the installed copy, not the source tree

    elsewhere = tmp_path / "notebook"
    elsewhere.mkdir()
    code = (
        "import memloc, models, precompute\n"
        f"opened = memloc.open_run({str(smoke_run.path)!r})\n"
        "print(type(opened).__name__, opened.config.data.name, type(opened.model()).__name__)\n"
        "print(memloc.__file__)\n"
    )
    env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}  # no PYTHONPATH: only the install
    result = subprocess.run([python, "-c", code], cwd=elsewhere, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    described, where = result.stdout.splitlines()
    assert described == "OpenRun digits MLP"
    assert where.startswith(site)
    listing = subprocess.run([python, "-m", "precompute", "list", str(smoke_run.path.parent)], cwd=elsewhere,
                             capture_output=True, text=True, env=env, timeout=120)
    assert listing.returncode == 0 and f"{smoke_run.name}: digits / mlp" in listing.stdout, listing.stderr
