"""memloc: find where a neural network stores what it memorized (Maini et al., ICML 2023).

    import memloc
    opened = memloc.open_run("runs/demo")   # config, data, labels, models of a run directory
"""

from __future__ import annotations


def open_run(run, device="cpu"):
    """Open a run directory (a path or a `memloc.store.Run`): `memloc.runs.open_run`."""
    from memloc.runs import open_run as _open_run  # imported on use: `import memloc` stays light

    return _open_run(run, device)


__all__ = ["open_run"]
