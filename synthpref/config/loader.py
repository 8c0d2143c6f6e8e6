"""Reading job configs: YAML files plus `key.sub=value` overrides, checked against the dataclass tree.

Every config is a tree of dataclasses (sections.py, jobs.py). `load_config` reads YAML, applies
command-line overrides, checks each value against its annotation, then runs every section's own
`check(key)` once (`validate`); an unknown key or a bad value raises `ConfigError` naming the dotted
key (e.g. `judging.judges.0.verdict`).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from synthpref.errors import UserError


class ConfigError(UserError, ValueError):
    """A config key is unknown or its value is invalid; the message names the key."""


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "|".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args).replace("NoneType", "null")
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check (and gently convert) `value` against annotation `tp`; raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        return [_coerce(v, args[0], f"{key}.{i}") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, prefix=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):           # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping; unknown keys and bad values raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"{dotted}: unknown key (known: {', '.join(sorted(names))})")
        kwargs[key] = _coerce(value, hints[key], dotted)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.0.c=value` -> (["a", "b", "0", "c"], value parsed as a YAML scalar)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: cannot parse value {raw!r}: {exc}") from exc
    return key.split("."), value


def apply_override(tree: dict, path: list[str], value: Any) -> None:
    """Set `value` at `path` inside a plain dict/list tree, creating mappings as needed."""
    node: Any = tree
    for i, part in enumerate(path[:-1]):
        dotted = ".".join(path[: i + 1])
        if isinstance(node, list):
            node = node[_list_index(node, part, dotted)]
        else:
            node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"{dotted}: is a value, cannot set {'.'.join(path)}")
    last = path[-1]
    if isinstance(node, list):
        node[_list_index(node, last, ".".join(path))] = value
    else:
        node[last] = value


def _list_index(node: list, part: str, dotted: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"{dotted}: no list item {part!r} (the list has {len(node)})")
    return int(part)


def load_config(cls: type, path: str | Path | None, overrides: list[str] = ()) -> Any:
    """Read YAML at `path` (optional), apply overrides, validate into `cls`."""
    tree: dict = {}
    if path:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p}: top level must be a mapping")
        tree = loaded
    for text in overrides:
        key_path, value = parse_override(text)
        apply_override(tree, key_path, value)
    return validate(from_dict(cls, tree))


def validate(cfg: Any, key: str = "") -> Any:
    """Run `check(key)` of every section of the tree, children first, each exactly once; returns cfg. A
    section whose field says `filled_by_job` (a later phase of a multi-phase job, part of it taken from
    an earlier phase) is checked by the job once it has filled it in."""
    for f in dataclasses.fields(cfg):
        if f.metadata.get("filled_by_job"):
            continue
        value = getattr(cfg, f.name)
        child = f"{key}.{f.name}" if key else f.name
        if dataclasses.is_dataclass(value):
            validate(value, child)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    validate(item, f"{child}.{i}")
    if hasattr(cfg, "check"):
        cfg.check(key)
    return cfg


def describe_keys(cls: type, prefix: str = "") -> list[str]:
    """One line per config key: `dotted.key (type, default): help`, for --help."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if f.metadata.get("filled_by_job"):          # a whole job's config: its own --help lists the keys
            lines.append(f"  {key}.*: {f.metadata.get('help', '')}")
            continue
        if dataclasses.is_dataclass(tp):
            lines.extend(describe_keys(tp, key + "."))
            continue
        if typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            lines.append(f"  {key}: {f.metadata.get('help', '')}; each item has:")
            lines.extend(describe_keys(typing.get_args(tp)[0], key + ".N."))
            continue
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        lines.append(f"  {key} ({_type_name(tp)}, default {default!r}): {f.metadata.get('help', '')}")
    return lines
