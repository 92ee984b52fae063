"""Typed, strict loading of `params.yaml` sections into dataclasses.

Every stage reads exactly one or two sections. YAML keys equal dataclass field names;
an unknown key, a wrong type or a value outside the allowed choices is an error that
names the file, the section, the key and what was expected.

A field is declared with :func:`option`, which carries the help text (shown by
``wizardcoder params``) and, optionally, the allowed choices.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

import yaml

from wizardcoder.errors import ConfigError
from wizardcoder.params import check_sections

T = TypeVar("T")


def option(default: Any = dataclasses.MISSING, *, help: str, choices: tuple | None = None,
           default_factory: Any = dataclasses.MISSING, affects_outputs: bool = True) -> Any:
    """A dataclass field with help text and optional allowed values.

    ``affects_outputs=False`` marks a setting that cannot change what a stage writes (log
    cadence, concurrency, where checkpoints go): dvc.yaml does not declare it as a param of
    the stage, so changing it reruns nothing (tests/test_dvc_params.py checks both ways)."""
    metadata = {"help": help, "affects_outputs": affects_outputs}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_choice(section: str, name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{section}.{name}: {value!r} is not one of {list(choices)}")


def require(condition: bool, section: str, name: str, expected: str) -> None:
    """Used by ``__post_init__`` validators: fail naming the field and the expected form."""
    if not condition:
        raise ConfigError(f"{section}.{name}: expected {expected}")


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is None:
        return getattr(tp, "__name__", str(tp))
    args = ", ".join(_type_name(a) for a in get_args(tp))
    name = "null | " if type(None) in get_args(tp) else ""
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    return f"{name}{getattr(origin, '__name__', str(origin))}[{args}]"


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                pass  # the union's own message below names every accepted type
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin is list:
        (item_tp,) = get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list of {_type_name(item_tp)}, got {value!r}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_tp, val_tp = get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {_coerce(k, key_tp, f"{where} key"): _coerce(v, val_tp, f"{where}.{k}")
                for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "2e-5" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    elif dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    else:
        raise TypeError(f"unsupported config annotation {tp!r} at {where}")
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def from_dict(cls: type[T], data: Any, section: str) -> T:
    """Build ``cls`` from a mapping, rejecting unknown keys and mistyped values."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{section}: expected a mapping of {cls.__name__} fields, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"{section}: unknown key {key!r}{hint}; valid keys: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        where = f"{section}.{name}"
        coerced = _coerce(value, hints[name], where)
        choices = fields[name].metadata.get("choices")
        if choices is not None:
            check_choice(section, name, coerced, choices)
        kwargs[name] = coerced
    missing = [n for n, f in fields.items() if n not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{section}: missing required key {missing[0]!r}")
    return cls(**kwargs)


def read_params(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    check_sections(data, str(path))
    return data


def load_section(path: str | Path, section: str, cls: type[T]) -> T:
    """Load one section of a params file; errors are prefixed with the file name."""
    data = read_params(path)
    try:
        return from_dict(cls, data.get(section), section)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def flatten(data: Any, prefix: str = "", *, keep_empty: bool = True) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, the shape MLflow params want.

    ``keep_empty``: a nested empty mapping stays as the value ``"{}"`` (so MLflow records the
    param) rather than being left out."""
    out: dict[str, Any] = {}
    if dataclasses.is_dataclass(data):
        data = dataclasses.asdict(data)
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}.", keep_empty=keep_empty))
        if not data and prefix and keep_empty:
            out[prefix[:-1]] = "{}"
    else:
        out[prefix[:-1]] = data
    return out


def output_fields(cls: type) -> list[str]:
    """The fields that can change a stage's outputs (see ``option(affects_outputs=...)``); a
    nested section (a dataclass field such as ``evolve.sandbox``) by its own such fields,
    dotted (``sandbox.timeout_s``), as dvc.yaml declares them."""
    hints = typing.get_type_hints(cls)
    names = []
    for f in dataclasses.fields(cls):
        if not f.metadata.get("affects_outputs", True):
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            names += [f"{f.name}.{inner}" for inner in output_fields(hints[f.name])]
        else:
            names.append(f.name)
    return names


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) rows, for documentation and ``wizardcoder params``."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if dataclasses.is_dataclass(default):  # a nested section: its keys, as YAML has them
            default = dataclasses.asdict(default)
        help_text = f.metadata.get("help", "")
        if "choices" in f.metadata:
            help_text += f" One of {list(f.metadata['choices'])}."
        if not f.metadata.get("affects_outputs", True):
            help_text += " (Changes no output: not a DVC param of the stage.)"
        rows.append((f.name, _type_name(hints[f.name]), default, help_text))
    return rows
