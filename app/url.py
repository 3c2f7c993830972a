"""The explorer's state in the URL, so a link reopens the same view.

`?run=demo&page=neurons&example=17&intervention=zero:fc1[3],fc2[7]&model=drop`: the run and the
page (app/main.py), the example, the intervention in a short readable form
(`rewind:fc1@0+rewind:out@0`, `zero:fc1[3],fc2[7]`) and the model (`app.cache.MODEL_CHOICES`);
`&sel=3,17,42` is the selection of examples (app/selection.py).
"""

from __future__ import annotations

from typing import Callable

import streamlit as st

from memloc.interventions import Intervention, Rewind, ZeroUnits, parse_unit


def url_notice(text: str) -> None:
    """Say that a value of the link was not used, and what is shown instead: a link that
    silently opens something else would mislead its audience."""
    st.info(f"From the link: {text}", icon=":material/link_off:")


def url_int(param: str, key: str, valid: Callable[[int], bool], default: int, expected: str = "a valid value") -> None:
    """Initialize widget state `key` from query parameter `param` (if valid) on first use; an
    invalid value gets a notice naming it and `expected`."""
    if key in st.session_state:
        return
    raw = st.query_params.get(param)
    try:
        value = int(raw) if raw is not None else None
    except ValueError:
        value = None
    ok = value is not None and valid(value)
    if raw is not None and not ok:
        url_notice(f"`{param}={raw}` is not {expected}; showing {default}.")
    st.session_state[key] = value if ok else default


def url_choice(param: str, key: str, options: list, default) -> None:
    """Initialize widget state `key` from query parameter `param` (if one of `options`) on first
    use; another value gets a notice naming it."""
    if key in st.session_state:
        return
    raw = st.query_params.get(param)
    if raw is not None and raw not in options:
        url_notice(f"`{param}={raw}` is not one of {', '.join(map(str, options))}; showing {default}.")
    st.session_state[key] = raw if raw in options else default


def encode_interventions(items: list[Intervention]) -> str:
    """A short, readable URL form: `rewind:fc1@0+rewind:fc2@0`, `zero:fc1[3],fc2[7]`."""
    parts = []
    for item in items:
        if isinstance(item, Rewind):
            parts.append(f"rewind:{item.group}@{item.epoch}" + ("" if item.include_buffers else "!nobuf"))
        else:
            parts.append("zero:" + ",".join(item.units))
    return "+".join(parts)


def decode_interventions(text: str | None) -> list[Intervention]:
    """The inverse of `encode_interventions`; anything malformed gives an empty list."""
    items: list[Intervention] = []
    try:
        for part in (text or "").split("+"):
            kind, _, rest = part.partition(":")
            if kind == "rewind":
                body, _, flag = rest.partition("!")
                group, _, epoch = body.rpartition("@")
                items.append(Rewind(group, int(epoch), flag != "nobuf"))
            elif kind == "zero" and rest:
                units = tuple(rest.split(","))
                for unit in units:
                    parse_unit(unit)
                items.append(ZeroUnits(units))
            elif part:
                return []
    except ValueError:
        return []
    return items


__all__ = ["url_notice", "url_int", "url_choice", "encode_interventions", "decode_interventions"]
