"""Typed configuration from YAML, with errors that name the file, line and field.

Configuration classes are plain dataclasses whose fields are declared with :func:`param` (help text,
source of the default, bounds, choices). :func:`build` turns a YAML node (from ``yaml.compose`` with the
safe loader, so every value keeps its line) into such a dataclass, checking unknown keys (with a
did-you-mean), types, bounds and choices. Validation is pure: no I/O, no environment changes.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import MISSING, Field, dataclass
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from bench.errors import SuiteError, did_you_mean

T = TypeVar("T")


def param(default: Any = MISSING, *, help: str, source: str | None = None, min: float | None = None,
          max: float | None = None, default_factory: Any = MISSING) -> Any:
    """Declare a configuration field with its help text, the source of its default and its bounds."""
    meta = {"help": help, "source": source, "min": min, "max": max}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Located:
    """A YAML node together with the file it came from, for error messages."""

    node: yaml.Node
    file: str

    @property
    def line(self) -> int:
        """1-based line of the node."""
        return self.node.start_mark.line + 1

    def error(self, field: str, message: str) -> SuiteError:
        """A SuiteError pointing at this node."""
        return SuiteError(self.file, self.line, field, message)


def compose(text: str, file: str) -> Located:
    """Parse YAML text safely into a node tree; syntax errors become a SuiteError with the line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise SuiteError(file, line, "", f"invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise SuiteError(file, None, "", f"invalid YAML: {exc}") from None
    if node is None:
        raise SuiteError(file, 1, "", "the file is empty; expected a mapping of suite fields")
    _check_tags(node, file)
    return Located(node, file)


_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map")}


def _check_tags(node: yaml.Node, file: str) -> None:
    """Reject explicit tags beyond plain YAML types (``!!python/...`` and friends): a suite is data only."""
    stack = [node]
    while stack:
        n = stack.pop()
        if n.tag not in _PLAIN_TAGS:
            raise SuiteError(file, n.start_mark.line + 1, "", f"unsupported YAML tag {n.tag!r}; a suite holds plain "
                                                              "values, lists and mappings only")
        if isinstance(n, yaml.MappingNode):
            stack.extend(x for pair in n.value for x in pair)
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)


def scalar(loc: Located, path: str) -> Any:
    """The Python value of a scalar node (safe-loader typing: int, float, bool, str, null)."""
    if not isinstance(loc.node, yaml.ScalarNode):
        raise loc.error(path, f"expected a single value, got a {_kind(loc.node)}")
    return yaml.SafeLoader(stream="").construct_object(loc.node)


def mapping_items(loc: Located, path: str) -> list[tuple[str, Located]]:
    """(key, value) pairs of a mapping node, rejecting duplicate and non-string keys."""
    if not isinstance(loc.node, yaml.MappingNode):
        raise loc.error(path, f"expected a mapping (key: value lines), got a {_kind(loc.node)}")
    seen: set[str] = set()
    items = []
    for knode, vnode in loc.node.value:
        key = scalar(Located(knode, loc.file), path)
        if not isinstance(key, str):
            raise Located(knode, loc.file).error(path, f"keys must be names, got {key!r}")
        if key in seen:
            raise Located(knode, loc.file).error(_join(path, key), "duplicate key")
        seen.add(key)
        items.append((key, Located(vnode, loc.file)))
    return items


def sequence_items(loc: Located, path: str) -> list[Located]:
    """Items of a sequence node."""
    if not isinstance(loc.node, yaml.SequenceNode):
        raise loc.error(path, f"expected a list, got a {_kind(loc.node)}")
    return [Located(n, loc.file) for n in loc.node.value]


def unknown_key(loc: Located, path: str, key: str, allowed: typing.Iterable[str]) -> SuiteError:
    """The error for a key that is not allowed, with a did-you-mean and the allowed list."""
    allowed = sorted(allowed)
    hint = did_you_mean(key, allowed)
    return loc.error(_join(path, key), f"unknown key; {hint}expected one of: {', '.join(allowed)}")


def build(cls: type[T], loc: Located | None, path: str) -> T:
    """Build dataclass ``cls`` from a mapping node (None = all defaults), validating every field."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    if loc is not None:
        for key, vloc in mapping_items(loc, path):
            if key not in fields:
                raise unknown_key(vloc, path, key, fields)
            values[key] = convert(hints[key], vloc, _join(path, key), fields[key])
    for name, f in fields.items():
        if name not in values and f.default is MISSING and f.default_factory is MISSING:
            where = loc if loc is not None else None
            if where is None:
                raise SuiteError("<suite>", None, _join(path, name), "missing required field")
            raise where.error(_join(path, name), f"missing required field ({_help(f)})")
    return cls(**values)


def convert(tp: Any, loc: Located, path: str, f: Field[Any] | None = None) -> Any:
    """Convert a node to type ``tp`` (scalars, Literal, list, dict, Optional, nested dataclasses)."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if type(None) in get_args(tp) and _is_null(loc):
            return None
        if len(args) == 1:
            return convert(args[0], loc, path, f)
        errors = []
        for a in args:
            try:
                return convert(a, loc, path, f)
            except SuiteError as exc:
                errors.append(exc.detail)
        raise loc.error(path, " or ".join(dict.fromkeys(errors)))
    if origin is Literal:
        value = scalar(loc, path)
        choices = get_args(tp)
        if value not in choices:
            hint = did_you_mean(str(value), map(str, choices)).rstrip()
            raise loc.error(path, f"expected one of {', '.join(map(str, choices))}, got {value!r}"
                                  + (f"; {hint}" if hint else ""))
        return value
    if origin is list:
        (item,) = get_args(tp)
        items = sequence_items(loc, path)
        if not items:
            raise loc.error(path, "expected a non-empty list")
        return [convert(item, it, f"{path}[{i}]", f) for i, it in enumerate(items)]
    if origin is dict:
        _, vt = get_args(tp)
        return {k: convert(vt, v, _join(path, k), f) for k, v in mapping_items(loc, path)}
    if dataclasses.is_dataclass(tp):
        return build(tp, loc, path)
    return _check_scalar(tp, scalar(loc, path), loc, path, f)


def _check_scalar(tp: Any, value: Any, loc: Located, path: str, f: Field[Any] | None) -> Any:
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if (tp in (int, float) and isinstance(value, bool)) or not isinstance(value, tp):
        raise loc.error(path, f"expected {_type_name(tp)}, got {_describe(value)}")
    if f is not None and isinstance(value, (int, float)):
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        if lo is not None and value < lo:
            raise loc.error(path, f"must be >= {lo}, got {value}")
        if hi is not None and value > hi:
            raise loc.error(path, f"must be <= {hi}, got {value}")
    return value


def _is_null(loc: Located) -> bool:
    return isinstance(loc.node, yaml.ScalarNode) and loc.node.tag == "tag:yaml.org,2002:null"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(node: yaml.Node) -> str:
    return {yaml.MappingNode: "mapping", yaml.SequenceNode: "list"}.get(type(node), "single value")


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"


def _help(f: Field[Any]) -> str:
    return str(f.metadata.get("help", f.name))

