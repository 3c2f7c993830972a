"""From presets, TOML files and `--set key=value` to a `RunConfig`, and back to a command line.

    resolve("demo", toml_layer, overrides=["train.epochs=30"])  ->  RunConfig

Keys are `section.field` (`train.epochs`, `model.options.width`) or a top-level field
(`stages`). Layers apply in order: the defaults, the preset, each layer (e.g. a TOML file),
then the `--set` overrides. A value is checked against its field's type (ints are accepted as
floats) and then by the section itself (`memloc.settings`); every unknown key, wrong type or
out-of-range value raises `ConfigError` naming the key and what is allowed, before anything
runs. `describe_keys` is the `--help` text of every key.

`command_for(config, out)` goes the other way: the `python -m precompute run` command that
makes a run with a recorded config (its preset and the `--set` overrides that differ from it),
for the messages that tell a user how to recreate or complete a run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import tomllib
import types
from typing import Any, Sequence

from memloc.config import SECTIONS, RunConfig
from memloc.presets import DEFAULT_PRESET, PRESETS, model_options
from memloc.settings import ConfigError, check, plain

#: Keys that say where things are, not what is computed: never a difference between two runs.
LOCATION_KEYS = ("data.root", "data.download")


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` -> (key, value); the value is read as TOML, else taken as a plain string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. train.epochs=30")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip(), value


def load_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file; name a TOML file") from None
    except IsADirectoryError:
        raise ConfigError(f"--config {path}: is a directory; name a TOML file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"--config {path}: not UTF-8 text (byte {e.object[e.start]:#04x} at {e.start}); "
                          "TOML files are UTF-8") from None
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot be read ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {path}: not valid TOML ({e})") from None


def resolve(preset: str = DEFAULT_PRESET, *layers: dict[str, Any], overrides: Sequence[str] = ()) -> RunConfig:
    """Defaults <- preset <- each layer (e.g. a TOML file) <- `key=value` overrides, checked."""
    if preset not in PRESETS:
        raise ConfigError(f"--preset: one of {', '.join(PRESETS)}, got {preset!r}")
    merged: dict[str, Any] = {}
    for layer in (PRESETS[preset], *layers):
        _merge(merged, flatten(layer))
    _merge(merged, dict(parse_override(text) for text in overrides))
    if not any(k.startswith("model.options") for k in merged):  # no layer chose options: the preset's size
        arch = merged.get("model.name", _fields(SECTIONS["model"])["name"].default)
        merged.update(flatten({"model": {"options": model_options(preset, arch)}}))
    return _build(merged)


def from_dict(d: dict[str, Any]) -> RunConfig:
    """Rebuild a config recorded in a manifest (checked like any other)."""
    return _build(flatten(d))


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections -> `section.key` keys; model options stay one key each
    (`model.options.width`), and an empty options table is kept as `model.options`."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not key.startswith("model.options."):
            if key == "model.options":
                out.update({f"{key}.{ok}": ov for ok, ov in v.items()})
                if not v:
                    out[key] = {}
            else:
                out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _merge(into: dict[str, Any], layer: dict[str, Any]) -> None:
    new_arch = "model.name" in layer and layer["model.name"] != into.get("model.name")
    if new_arch or any(k.startswith("model.options") for k in layer):
        # A layer that sets model options, or another architecture, replaces the whole options
        # table: options of one architecture rarely make sense for another.
        for k in [k for k in into if k.startswith("model.options")]:
            del into[k]
    into.update(layer)


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _build(flat: dict[str, Any]) -> RunConfig:
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    top: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in flat.items():
        if key.startswith("model.options."):
            options[key.removeprefix("model.options.")] = plain(value)
            continue
        if key == "model.options":
            check(isinstance(value, dict), key, "a table of architecture options", value)
            options.update(plain(value))
            continue
        section, _, name = key.partition(".")
        if not name:
            section, name = "", section
        cls = SECTIONS.get(section, RunConfig if not section else None)
        fields = _fields(cls) if cls else {}
        if name not in fields or (cls is RunConfig and name in SECTIONS):
            raise ConfigError(f"unknown key {key!r}; known keys: {', '.join(known_keys())}")
        typed = _coerce(key, value, fields[name].default)
        (top if cls is RunConfig else sections[section])[name] = typed
    sections["model"]["options"] = types.MappingProxyType(options)
    built = {}
    for name, cls in SECTIONS.items():
        try:
            built[name] = cls(**sections[name])
        except ValueError as e:  # a section's own check names the field; add the section
            raise ConfigError(f"{name}.{e}") from None
    return RunConfig(**top, **built)


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check `value` against the type of the field's default; ints are accepted as floats."""
    kind = type(default)
    if kind is bool:
        check(isinstance(value, bool), key, "true or false", value)
    elif kind is int:
        check(isinstance(value, int) and not isinstance(value, bool), key, "an integer", value)
    elif kind is float:
        check(isinstance(value, (int, float)) and not isinstance(value, bool), key, "a number", value)
        value = float(value)
    elif kind is str:
        if isinstance(value, int) and not isinstance(value, bool):  # `--set train.keep_epochs=10` is text
            value = str(value)
        check(isinstance(value, str), key, "a string", value)
    elif kind is tuple:
        if isinstance(value, str):  # `--set rewind.epochs=0,5`: each item read like a value
            value = [parse_override(f"v={v}")[1] for v in value.split(",") if v.strip()]
        check(isinstance(value, (list, tuple)), key, "a list, e.g. [\"train\"]", value)
        value = tuple(value)
    return value


def known_keys() -> list[str]:
    keys = [f.name for f in dataclasses.fields(RunConfig) if f.name not in SECTIONS]
    for section, cls in SECTIONS.items():
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


def describe_keys() -> str:
    """Every key with its default and help text, for `--help`."""
    lines = []
    # Each section's defaults and the top-level fields' own: `RunConfig()` would build the model.
    sections = {name: cls() for name, cls in SECTIONS.items()}
    for key in known_keys():
        section, _, name = key.partition(".")
        if name:
            f, default = _fields(SECTIONS[section])[name], getattr(sections[section], name)
        else:
            f = _fields(RunConfig)[section]
            default = f.default
        lines.append(f"  {key:<22} {f.metadata['help']} (default: {plain(default)!r})")
    return "\n".join(lines)


# ---------------------------------------------------------------------- back to a command line
def _toml_value(value: Any) -> str:
    """`value` written as the TOML that `parse_override` reads back as the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise ValueError(f"no TOML form for {value!r}")


def _comparable(flat: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flat.items() if k not in LOCATION_KEYS and k != "stages"}


def command_for(config: dict[str, Any], out: str, stages: Sequence[str] | None = None) -> str:
    """The `python -m precompute run` command that makes a run with the recorded `config` (a
    manifest's) in `out`: the preset it differs least from and a `--set` for each key that
    differs (keys this memloc does not know are left out). `stages` replaces the recorded
    stages (e.g. to add one). Run on an existing run with the same config, it resumes it."""
    known = set(known_keys())
    wanted = {k: plain(v) for k, v in flatten(config).items() if k in known or k.startswith("model.options")}
    if stages is not None:
        wanted["stages"] = list(stages)
    candidates = []
    for name in PRESETS:
        flat = flatten(resolve(name).to_dict())
        sets = _overrides(flat, wanted)
        candidates.append((len(sets), name, sets))
    _, preset, sets = min(candidates, key=lambda c: c[0])
    parts = ["python -m precompute run", f"--preset {preset}"]
    parts += [f"--set {shlex.quote(f'{key}={_toml_value(value)}')}" for key, value in sets]
    if config.get("data", {}).get("root"):
        parts.append(f"--data-root {shlex.quote(str(config['data']['root']))}")
    parts.append(f"--out {shlex.quote(str(out))}")
    return " ".join(parts)


def _overrides(preset: dict[str, Any], wanted: dict[str, Any]) -> list[tuple[str, Any]]:
    """The `--set` pairs that turn the resolved `preset` (flat) into `wanted` (flat)."""
    sets = [(k, v) for k, v in _comparable(wanted).items()
            if not k.startswith("model.options") and preset.get(k) != v]
    if "stages" in wanted and wanted["stages"] != preset.get("stages"):
        sets.append(("stages", wanted["stages"]))
    options = {k: v for k, v in wanted.items() if k.startswith("model.options")}
    if options != {k: v for k, v in preset.items() if k.startswith("model.options")}:
        table = {k.removeprefix("model.options."): v for k, v in options.items() if k != "model.options"}
        sets += [(f"model.options.{k}", v) for k, v in table.items()] if table else [("model.options", {})]
    return sets


__all__ = [
    "LOCATION_KEYS", "parse_override", "load_toml", "resolve", "from_dict", "flatten", "known_keys", "describe_keys",
    "command_for",
]
