"""How memloc declares settings: frozen dataclasses whose fields carry their help text.

Every part of a run that has settings (the data, the training, each analysis) declares them
once, in its own module, as a frozen dataclass of `setting(default, help)` fields that checks
its values when it is built (`__post_init__`), so an invalid settings value cannot exist:

    @dataclass(frozen=True)
    class RewindSettings:
        cache_mb: int = setting(1024, "memory (MiB) for the activations in front of the group")

        def __post_init__(self):
            check(self.cache_mb >= 0, "cache_mb", "an integer >= 0", self.cache_mb)

A number is checked with `in_range(key, value, lo, hi)`: finite and within bounds a researcher
finds generous (a learning rate of 1e30 trains a NaN model, a billion epochs or widths run or
allocate forever), and the help text says the bounds, so `--help` prints them:

        lr: float = setting(0.1, "peak learning rate, in (0, 10]")
        ...
        in_range("lr", self.lr, 0, 10, open_lo=True)

The modules that declare settings bind torch and pandas with `memloc.lazy`, so a configuration
is checked (and `--help` printed) without importing them.

`memloc.config.RunConfig` composes them into one run's configuration (one section each),
`memloc.overrides` reads presets, TOML files and `--set key=value` into it, and `--help` prints
the help texts. A check names its field; the override engine adds the section, so the user
reads `rewind.cache_mb: an integer >= 0, got -1`.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any

from models.base import check_range

#: Bounds shared by many settings (their help texts say them).
MAX_EPOCHS = 10_000  # epochs of a training or retraining
MAX_COUNT = 10_000_000  # examples, batch sizes, chunk sizes, subsets: far above any data set memloc reads
MAX_SEED = 2**32 - 1  # seeds (numpy's SeedSequence takes no negative ones)
MAX_MB = 1_048_576  # memory budgets in MiB (1 TiB)


class ConfigError(ValueError):
    """A configuration problem; the message names the key and the allowed values."""


def setting(default: Any, help: str) -> Any:
    """A settings field with its help text (immutable defaults only)."""
    return dataclasses.field(default=default, metadata={"help": help})


def check(ok: bool, key: str, allowed: str, value: Any) -> None:
    """Raise `ConfigError("key: allowed, got value")` unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}: {allowed}, got {value!r}")


def in_range(key: str, value: Any, lo: float, hi: float, *, integer: bool = False,
             open_lo: bool = False, open_hi: bool = False) -> None:
    """Raise `ConfigError("key: a number in (lo, hi], got value")` unless `value` is a finite
    number (an integer if `integer`) from `lo` to `hi`, each end included unless open."""
    try:
        check_range(key, value, lo, hi, integer=integer, open_lo=open_lo, open_hi=open_hi)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def epoch_list(values: tuple, key: str, example: str) -> None:
    """Check a list of checkpoint epochs (integers >= 0)."""
    ok = all(isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in values)
    check(ok, key, f"a list of epochs (integers >= 0), e.g. {example}", list(values))


def plain(value: Any) -> Any:
    """A JSON-friendly copy: dataclasses and mapping proxies become dicts, tuples lists."""
    if dataclasses.is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (dict, types.MappingProxyType)):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


__all__ = ["ConfigError", "MAX_EPOCHS", "MAX_COUNT", "MAX_SEED", "MAX_MB", "setting", "check", "in_range", "epoch_list", "plain"]
