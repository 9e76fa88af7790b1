"""Read, override, validate and print configurations.

The error messages here are the user's first contact with marrow3d: each names the key, the
value and what is allowed, in one line, and suggests the closest key for a typo.
"""

from __future__ import annotations

import difflib
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel, ValidationError

from ..errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "parse_toml_text",
    "read_toml",
    "default_config_text",
    "apply_overrides",
    "parse_override",
    "validate_dict",
    "to_toml",
]


def default_config_text() -> str:
    """The embedded default configuration (mirrored in ``configs/default.toml``)."""
    return resources.files("marrow3d").joinpath("data/default.toml").read_text(encoding="utf-8")


def parse_toml_text(text: str, source: str = "config") -> dict[str, Any]:
    """Parse TOML text; invalid TOML is a one-line ConfigError naming ``source`` (line, column)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from None


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file into a dict, with errors that name the file.

    Raises
    ------
    ConfigError
        Missing or unreadable file, or invalid TOML (with line and column).
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    if p.is_dir():
        raise ConfigError(f"config path {str(p)!r} is a directory, not a TOML file")
    if not p.is_file():  # a FIFO or device would block the read or never end
        raise ConfigError(f"config path {str(p)!r} is not a regular file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {str(p)!r}: {exc}") from None
    return parse_toml_text(text, f"config file {str(p)!r}")


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``section.key=value`` into a key path and a TOML-parsed value.

    The value is read as a TOML literal (``3``, ``1e-3``, ``true``, ``[1, 2]``, ``"x"``);
    anything that is not a TOML literal is taken as a bare string (``backend=cpu``).
    """
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"override {item!r} has an empty key")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``a.b.c=value`` override applied."""
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        parts, value = parse_override(item)
        node = out
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(
                    f"override {item!r}: {'.'.join(parts[: i + 1])} is a value, not a section"
                )
            node = nxt
        node[parts[-1]] = value
    return out


def _keys_of(model: Any) -> dict[str, Any]:
    """The keys a user writes for ``model``'s fields (a field's alias when it has one, e.g.
    ``set`` for the attribute ``set_``) -> field info."""
    fields = getattr(model, "model_fields", None) or {}
    return {(info.alias or name): info for name, info in fields.items()}


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Keys valid at ``loc`` (the parent path of an unknown key), as a user writes them."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        keys = _keys_of(current)
        if part not in keys:
            return []
        sub = _first_model(keys[part].annotation)
        if sub is None:
            return []
        current = sub
    return list(_keys_of(current))


def _first_model(annotation: Any) -> type[BaseModel] | None:
    """Find a BaseModel class inside an annotation (handles Optional, list[...], unions)."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _format_error(model: type[BaseModel], err: dict[str, Any], source: str) -> str:
    loc = tuple(err.get("loc", ()))
    key = ".".join(str(p) for p in loc) or "(top level)"
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        options = _known_keys(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), options, n=1, cutoff=0.5)
        hint = f"; did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}?" if close else ""
        allowed = f" (allowed here: {', '.join(options)})" if options and not close else ""
        return f"{source}: unknown key {key!r}{hint}{allowed}"
    value = err.get("input")
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    msg = err.get("msg", "invalid value")
    if kind == "missing":
        return f"{source}: key {key!r} is required"
    if isinstance(value, dict) and kind == "value_error":  # a cross-field check of a section: its message names the keys
        where = f"[{key}] " if loc else ""
        return f"{source}: {where}{msg.removeprefix('Value error, ')}"
    return f"{source}: {key} = {shown} is invalid: {msg}"


def validate_dict(model: type[BaseModel], data: dict[str, Any], source: str = "config") -> BaseModel:
    """Validate ``data`` against ``model``; the first problem becomes a one-line ConfigError."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = _format_error(model, errors[0], source)
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise ConfigError(first + more) from None


def to_toml(model: BaseModel) -> str:
    """Serialise a config to TOML that reads back into an equal config."""
    data = model.model_dump(mode="json", exclude_none=True)
    return tomli_w.dumps(data)
