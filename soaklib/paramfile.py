"""Reading parameters: YAML files, ``--set KEY=VALUE`` overrides, deep merges, and the strict
coercion of the result into the parameter dataclasses of :mod:`soaklib.params`.

Every error names the key, the value given and what is allowed (a ``ParameterError``, exit
2). ``as_bool`` reads the booleans papermill hands over as strings.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from soaklib.errors import ParameterError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; build nested dataclasses."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(key, value, a)
            except ParameterError as e:
                errors.append(e)
        raise ParameterError(f"{key} = {value!r} is invalid: expected {_type_name(tp)}", key=key, value=value)
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ParameterError(f"{key} = {value!r} is invalid: allowed are {_type_name(tp)}", key=key, value=value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ParameterError(f"{key} = {value!r} is invalid: expected a mapping of {tp.__name__} keys", key=key, value=value)
        return from_dict(tp, value, prefix=f"{key}.")
    if origin is list:
        (item,) = get_args(tp) or (Any,)
        if isinstance(value, str) and item is str:  # "a,b,c" from a flag
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ParameterError(f"{key} = {value!r} is invalid: expected a list", key=key, value=value)
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ParameterError(f"{key} = {value!r} is invalid: expected a mapping", key=key, value=value)
        _, vt = get_args(tp) or (str, Any)
        return {str(k): _coerce(f"{key}.{k}", v, vt) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ParameterError(f"{key} = {value!r} is invalid: expected true or false", key=key, value=value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ParameterError(f"{key} = {value!r} is invalid: expected an integer", key=key, value=value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ParameterError(f"{key} = {value!r} is invalid: expected a number", key=key, value=value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ParameterError(f"{key} = {value!r} is invalid: expected a string", key=key, value=value)
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ParameterError(
            f"unknown parameter {prefix + unknown[0]!r}"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            + f": allowed keys{(' of ' + prefix.rstrip('.')) if prefix else ''} are {', '.join(sorted(names))}",
            key=prefix + unknown[0],
        )
    kwargs = {k: _coerce(prefix + k, v, hints[k]) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(params: Any) -> dict[str, Any]:
    """Plain-dict view of a parameter dataclass (for artifacts and YAML)."""
    return dataclasses.asdict(params)


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a parameter YAML file; an empty file is {}."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParameterError(f"parameter file {str(p)!r} does not exist", key="params", value=str(p)) from None
    except yaml.YAMLError as e:
        raise ParameterError(f"parameter file {str(p)!r} is not valid YAML: {e}", key="params", value=str(p)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParameterError(f"parameter file {str(p)!r} must hold a mapping of keys, not {type(data).__name__}", key="params")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` → (["a","b","c"], YAML-parsed value)."""
    if "=" not in text:
        raise ParameterError(f"--set {text!r} is not KEY=VALUE (e.g. target.halt.timeout_s=10)", key="--set", value=text)
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    return [k for k in key.strip().split(".") if k], value


def merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base`` (mappings merge, other values replace)."""
    out = dict(base)
    for k, v in overrides.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def set_path(data: dict[str, Any], keys: list[str], value: Any) -> dict[str, Any]:
    """Return a copy of ``data`` with the nested key path set to ``value``."""
    nested: Any = value
    for k in reversed(keys):
        nested = {k: nested}
    return merge(data, nested)


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def as_bool(value: Any, key: str) -> bool:
    """A boolean parameter as papermill or a YAML file may hand it over.

    ``papermill -p fail_on_gate false`` injects the *string* ``"false"``, which Python
    reads as true; this maps ``true/false, yes/no, on/off, 1/0`` (any case) and real
    booleans, and refuses anything else with a ``ParameterError`` naming the key.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ParameterError(f"{key} = {value!r} is invalid: expected true or false", key=key, value=value)
