"""Conversion of TOML/JSON values and command-line strings into typed dataclass fields.

The run configuration is a tree of dataclasses. These helpers build a section from a dict
(rejecting unknown keys with a close-name suggestion) and parse a string such as "1e-3",
"true", "none" or "0.9,0.95" into the type a field is annotated with.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from overparam.errors import ConfigError, suggest

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"none", "null", ""}


def field_types(cls: type) -> dict[str, Any]:
    """Return the resolved type annotation of each dataclass field of `cls`."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def field_help(cls: type, name: str) -> str:
    """Return the help text stored in a field's metadata, or '' when it has none."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return str(f.metadata.get("help", ""))
    return ""


def type_name(annotation: Any) -> str:
    """Return a short readable name of a type annotation, for help texts and errors."""
    readable = {type(None): "none", bool: "true or false", int: "an integer", float: "a number"}
    if annotation in readable:
        return readable[annotation]
    if annotation is str:
        return "a string"
    if isinstance(annotation, type):
        return annotation.__name__
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin in (tuple, list):
        items = [a for a in args if a is not Ellipsis]
        if origin is tuple and len(items) == len(args):
            return f"{len(items)} comma-separated values ({', '.join(map(type_name, items))})"
        return f"comma-separated values ({', '.join(map(type_name, items))})"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    return str(annotation)


def convert_value(key: str, value: Any, annotation: Any) -> Any:
    """Convert `value` (a string from the command line, or a TOML/JSON value) to `annotation`.

    Raises ConfigError naming `key`, the value and the expected type when it does not fit.
    """
    try:
        return _convert(value, annotation)
    except (TypeError, ValueError):
        raise ConfigError(f"invalid {key} = {value!r}; expected {type_name(annotation)}.") from None


def _convert(value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)

    if origin in (typing.Union, types.UnionType):
        # Try None first, then scalar types, then str (every string fits it). A list type
        # comes before str only for a comma-separated string or an actual list.
        members = [a for a in args if a is not type(None)]
        if type(None) in args and (value is None or _is_none_string(value)):
            return None
        is_list_like = isinstance(value, (list, tuple)) or (isinstance(value, str) and "," in value)

        def order(member: Any) -> int:
            if typing.get_origin(member) in (list, tuple):
                return 1 if is_list_like else 3
            return 2 if member is str else 0

        members.sort(key=order)
        errors = []
        for member in members:
            try:
                return _convert(value, member)
            except (TypeError, ValueError) as error:
                errors.append(str(error))
        raise ValueError("; ".join(e for e in errors if e))

    if annotation is Any:
        return value
    if annotation is type(None):
        if value is None or _is_none_string(value):
            return None
        raise ValueError("")
    if annotation is bool:
        return _to_bool(value)
    if annotation is int:
        return _to_int(value)
    if annotation is float:
        return _to_float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise TypeError("")
        return value
    if origin in (tuple, list):
        return _to_sequence(value, origin, args)
    if origin is typing.Literal:
        if value in args:
            return value
        raise ValueError(f"one of {', '.join(repr(a) for a in args)}")
    if isinstance(annotation, type) and isinstance(value, annotation):
        return value
    raise TypeError("")


def _is_none_string(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() in _NONE


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("true or false")


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)  # accept "1e3" but not "1.5"
        except ValueError:
            raise ValueError("") from None
        if math.isfinite(number) and number.is_integer():
            return int(number)
    raise ValueError("")


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise ValueError("") from None
    raise TypeError("")


def _to_sequence(value: Any, origin: type, args: tuple[Any, ...]) -> Any:
    if isinstance(value, str):
        text = value.strip().strip("()[]")
        items: list[Any] = [part.strip() for part in text.split(",") if part.strip()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise TypeError("")

    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(items) != len(args):
            raise ValueError(f"{len(args)} comma-separated values")
        return tuple(_convert(item, arg) for item, arg in zip(items, args, strict=True))
    item_type = args[0] if args else Any
    converted = [_convert(item, item_type) for item in items]
    return tuple(converted) if origin is tuple else converted


def build_section(cls: type, values: dict[str, Any], section: str) -> Any:
    """Build dataclass `cls` from `values`, converting each value to its field's type.

    Unknown keys raise ConfigError naming `section.key` with a close-name suggestion.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"invalid section [{section}]: expected a table of keys, got {values!r}.")
    types_by_name = field_types(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in types_by_name:
            raise ConfigError(
                f"unknown config key '{section}.{key}'; accepted keys of [{section}]: "
                f"{', '.join(types_by_name)}." + suggest(str(key), types_by_name)
            )
        kwargs[key] = convert_value(f"{section}.{key}", value, types_by_name[key])
    return cls(**kwargs)


def section_to_dict(instance: Any) -> dict[str, Any]:
    """Return the fields of a dataclass instance as JSON-ready values (tuples become lists)."""
    result = {}
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        result[f.name] = list(value) if isinstance(value, tuple) else value
    return result
