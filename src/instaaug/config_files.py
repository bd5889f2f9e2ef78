"""Experiment configs from files: JSON or TOML into a typed config dataclass, strictly.

A config file holds a flat table of keys of the experiment's ``Config`` (see ``instaaug run EXPERIMENT --set``
for the same keys on the command line). Unknown keys and values of the wrong type are errors naming the key;
keys left out keep their defaults (or the values of ``base``).

Example (``rotation.toml``)::

    epochs = 5
    methods = ["random", "instaaug"]
    entropy_range = [1.0, 1.2]

and ``instaaug run rotation --config rotation.toml --set seed=3`` (``--set`` applies after the file).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import os
import re
import sys
import textwrap
import tokenize
import types
import typing
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: File suffixes read as TOML; every other suffix is read as JSON.
TOML_SUFFIXES = (".toml",)


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The table in a JSON (``.json``) or TOML (``.toml``) file, as a dict; clear errors for missing,
    malformed or non-table files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_bytes()
    if path.suffix.lower() in TOML_SUFFIXES:
        if sys.version_info < (3, 11):
            raise ValueError(f"{path}: TOML config files need Python ≥ 3.11 (tomllib); use a .json file")
        import tomllib

        try:
            values = tomllib.loads(text.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not valid TOML: {e}") from None
    else:
        try:
            values = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a table of config keys, got a {type(values).__name__}")
    return values


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """``value`` (as JSON/TOML gives it) checked against the annotation ``tp`` and converted (lists → tuples,
    ints → floats); a TypeError names ``key`` otherwise."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    wrong = TypeError(f"config key {key!r} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if tp is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        if value is None:
            if type(None) in args:
                return None
            raise wrong
        for option in args:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key)
            except TypeError:
                continue
        raise wrong
    if tp is type(None):
        if value is None:
            return None
        raise wrong
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise wrong
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise wrong
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise wrong
    if tp is str:
        if isinstance(value, str):
            return value
        raise wrong
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise wrong
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise TypeError(f"config key {key!r} must have {len(args)} entries ({_type_name(tp)}), got {value!r}")
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is list:
        if not isinstance(value, list | tuple):
            raise wrong
        return [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise wrong
        if not args:
            return dict(value)
        return {_convert(k, args[0], key): _convert(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise wrong


def _default(field: dataclasses.Field) -> Any:
    """A field's default value (calling its factory), or None when it has none."""
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def warn_renamed(old: str, target: str) -> None:
    """The DeprecationWarning of a renamed config key ``old``, naming its ``target`` (see ``renamed_keys``)."""
    warnings.warn(
        f"config key {old!r} is deprecated and will be removed: use {target.replace('[', ' element [')!r}",
        DeprecationWarning,
        stacklevel=4,
    )


def renamed_keys(config_cls: type, values: Mapping[str, Any], current: Any) -> dict[str, Any]:
    """``values`` with each deprecated key of ``config_cls.RENAMED_KEYS`` replaced by its new key, with a
    DeprecationWarning naming it. A new key is ``"new"``, ``"new[i]"`` (an element of a tuple key; ``current``, a
    config instance or None for the class defaults, gives the other elements) or ``"group.key"`` (a key of a nested
    config, e.g. ``train.lr``, which joins the mapping's ``group`` table)."""
    renames: dict[str, str] = getattr(config_cls, "RENAMED_KEYS", {})
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in renames:
            if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
                value = {**out[key], **value}  # a group given both ways: its own table wins
            out[key] = value
            continue
        target = renames[key]
        warn_renamed(key, target)
        new, bracket, index = target.partition("[")
        head, dot, rest = new.partition(".")
        if dot:
            group = out.get(head)
            out[head] = {rest: value, **(dict(group) if isinstance(group, Mapping) else {})}
        elif not bracket:
            out[new] = value
        else:
            if new not in out:
                field = {f.name: f for f in dataclasses.fields(config_cls)}[new]
                out[new] = getattr(current, new) if current is not None else _default(field)
            items = list(out[new])
            items[int(index.rstrip("]"))] = value
            out[new] = tuple(items)
    return out


def config_from_mapping(config_cls: type[T], values: Mapping[str, Any], base: T | None = None, source: str = "") -> T:
    """Build the dataclass ``config_cls`` from ``values``: unknown keys raise a ValueError listing the valid
    ones, values of the wrong type a TypeError naming the key. Keys not given come from ``base`` (default: the
    dataclass defaults). The dataclass's own checks (``__post_init__``) run as usual."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"config_cls must be a dataclass, got {config_cls!r}")
    where = f" in {source}" if source else ""
    values = renamed_keys(config_cls, values, base)
    fields = {f.name for f in dataclasses.fields(config_cls) if f.init}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}{where}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(config_cls)
    converted = {}
    defaults = {f.name: f for f in dataclasses.fields(config_cls)}
    for key, value in values.items():
        tp = hints.get(key, Any)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
            # A nested config (e.g. ``train``): keys not given keep the outer base's (or default's) values.
            nested = getattr(base, key) if base is not None else _default(defaults[key])
            converted[key] = config_from_mapping(tp, value, nested, f"{source}, key {key!r}" if source else key)
            continue
        try:
            converted[key] = _convert(value, tp, key)
        except TypeError as e:
            raise TypeError(f"{e}{where}") from None
    if base is not None:
        return dataclasses.replace(base, **converted)
    return config_cls(**converted)


def load_config(path: str | os.PathLike, config_cls: type[T], base: T | None = None) -> T:
    """Read a JSON or TOML file (see ``read_config_file``) into the config dataclass ``config_cls``.

    Args:
        path: a ``.toml`` file (Python ≥ 3.11) or a JSON file, holding a flat table of config keys.
        config_cls: the experiment's ``Config`` dataclass.
        base: the config whose values the file's keys replace (e.g. ``Config.quick()``); None for the defaults.

    Raises:
        FileNotFoundError: no such file.
        ValueError: malformed file, not a table, or unknown keys (named, with the valid ones).
        TypeError: a value of the wrong type (the key and the expected type are named).
    """
    return config_from_mapping(config_cls, read_config_file(path), base=base, source=str(path))


# ------------------------------------------------------------------------------------------------------------------
# What each key means: ``instaaug show EXPERIMENT``


def _field_comments(cls: type) -> dict[str, str]:
    """The ``#:`` comments of the fields written in ``cls``'s own body: the lines right above a field (no blank
    line between) or, failing those, a ``#:`` comment at the end of the field's line. Empty if the source cannot
    be read (a class made at run time)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    try:
        tree = ast.parse(source)
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (SyntaxError, tokenize.TokenError):
        return {}
    lines = source.splitlines()
    # Comments by line, each with whether it stands alone on its line (tokenize never mistakes "#:" in a string).
    comments: dict[int, tuple[str, bool]] = {}
    for tok in tokens:
        if tok.type == tokenize.COMMENT and tok.string.startswith("#:"):
            row, col = tok.start
            comments[row] = (tok.string[2:].strip(), not lines[row - 1][:col].strip())
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    found: dict[str, str] = {}
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above: list[str] = []
        row = node.lineno - 1
        while row in comments and comments[row][1]:
            above.insert(0, comments[row][0])
            row -= 1
        if above:
            found[node.target.id] = " ".join(part for part in above if part)
        elif (node.end_lineno or node.lineno) in comments:
            found[node.target.id] = comments[node.end_lineno or node.lineno][0]
    return found


def _docstring_attributes(cls: type) -> dict[str, str]:
    """The entries of an ``Attributes:`` section (Google style) of ``cls``'s own docstring; ``a, b: text``
    documents both a and b."""
    doc = cls.__dict__.get("__doc__")
    if not doc:
        return {}
    lines = inspect.cleandoc(doc).splitlines()
    found: dict[str, str] = {}
    start = next((i for i, line in enumerate(lines) if line.strip() == "Attributes:"), None)
    if start is None:
        return {}
    header_indent = len(lines[start]) - len(lines[start].lstrip())
    entry_indent: int | None = None
    names: list[str] = []
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= header_indent:
            break  # the next section
        if entry_indent is None:
            entry_indent = indent
        match = re.match(r"([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*(?:\([^)]*\))?\s*:\s*(.*)", line.strip())
        if indent == entry_indent and match:
            names = [n.strip() for n in match.group(1).split(",")]
            for name in names:
                found[name] = match.group(2).strip()
        elif names:  # a continuation line of the entry above
            for name in names:
                found[name] = f"{found[name]} {line.strip()}".strip()
    return found


def config_help(cls: type) -> list[tuple[str, Any, str]]:
    """Every key of the config dataclass ``cls``: (name, default, meaning), in field order.

    The meaning is the ``#:`` comment above the field in the source (Sphinx's convention; the lines are joined),
    or one at the end of the field's line; failing that, the field's entry in an ``Attributes:`` section of the
    class docstring; failing that, "". Fields inherited from a base dataclass take their meaning from that base.
    The default is ``dataclasses.MISSING`` for a field without one; a ``default_factory`` is called.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"config_help needs a dataclass type, got {cls!r}")
    meanings: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # a subclass's own comment wins over its base's
        if dataclasses.is_dataclass(klass):
            attributes = _docstring_attributes(klass)
            comments = _field_comments(klass)
            own = set(inspect.get_annotations(klass))
            for name in own:
                meaning = comments.get(name) or attributes.get(name)
                if meaning or name not in meanings:
                    meanings[name] = meaning or ""
    rows = []
    for field in dataclasses.fields(cls):
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = dataclasses.MISSING
        rows.append((field.name, default, meanings.get(field.name, "")))
    return rows
