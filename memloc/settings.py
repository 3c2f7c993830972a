"""How memloc declares settings: frozen dataclasses whose fields carry their help text.

Every part of a run that has settings (the data, the training, each analysis) declares them
once, in its own module, as a frozen dataclass of `setting(default, help)` fields that checks
its values when it is built (`__post_init__`), so an invalid settings value cannot exist:

    @dataclass(frozen=True)
    class RewindSettings:
        cache_mb: int = setting(1024, "memory (MiB) for the activations in front of the group")

        def __post_init__(self):
            check(self.cache_mb >= 0, "cache_mb", "an integer >= 0", self.cache_mb)

`memloc.config.RunConfig` composes them into one run's configuration (one section each),
`memloc.overrides` reads presets, TOML files and `--set key=value` into it, and `--help` prints
the help texts. A check names its field; the override engine adds the section, so the user
reads `rewind.cache_mb: an integer >= 0, got -1`.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any


class ConfigError(ValueError):
    """A configuration problem; the message names the key and the allowed values."""


def setting(default: Any, help: str) -> Any:
    """A settings field with its help text (immutable defaults only)."""
    return dataclasses.field(default=default, metadata={"help": help})


def check(ok: bool, key: str, allowed: str, value: Any) -> None:
    """Raise `ConfigError("key: allowed, got value")` unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}: {allowed}, got {value!r}")


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


__all__ = ["ConfigError", "setting", "check", "epoch_list", "plain"]
