"""The one way mixer reads the JSON and YAML files it did not just write: results.json,
export.json, a run's config.yaml, a download's record, timm's config.json and a
safetensors file's metadata.

A file is parsed and checked against what its reader expects before any field is used,
so a file that parses but is something else (a list, another tool's export.json, a key
missing or of another type) is refused in one line naming the file, the key and what was
expected, never a KeyError or AttributeError deep inside a command.

What a reader expects is a schema: `{KEY: WANT}`, KEY a field (`file`), a path into
nested mappings (`input.shape`) where `*` stands for every value of a mapping or item of
a list (`datasets.*.shots`), and a trailing `?` for an optional one; WANT a type, a tuple
of types, or a set of the values allowed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mixer_cli.core.errors import ConfigError, MixerError

NUMBER = (int, float)
Schema = Mapping[str, Any]

_KINDS = {
    dict: "a mapping",
    list: "a list",
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def read_json(
    path: str | os.PathLike,
    what: str,
    schema: Schema | None = None,
    error: type[MixerError] = ConfigError,
    fix: str = "",
) -> dict[str, Any]:
    """The mapping a JSON file holds, checked against `schema` (`what`: what the file
    should be, for messages, e.g. 'a mixer export record')."""
    return check(read_json_value(path, error, fix), schema, str(path), what, error, fix)


def read_results(path: str | os.PathLike, what: str, schema: Schema) -> tuple[Path, dict]:
    """A command's results.json, given as the file or the directory holding it (what
    `mixer plot` reads): the file's path and its checked contents."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(f"{path}: no results.json there")
    return file, read_json(file, what, schema)


def read_json_value(
    path: str | os.PathLike, error: type[MixerError] = ConfigError, fix: str = ""
) -> Any:
    """Whatever JSON value a file holds (a list too: ReaL's real.json), for a reader that
    checks its shape itself; a missing, unreadable or non-JSON file is `error`."""
    text = _text(path, error)
    try:
        return json.loads(text)
    except ValueError as err:
        raise error(_message(f"{path} is not JSON ({err})", fix)) from None


def read_yaml(
    path: str | os.PathLike,
    what: str,
    schema: Schema | None = None,
    error: type[MixerError] = ConfigError,
    fix: str = "",
) -> dict[str, Any]:
    """The mapping a YAML file holds (an empty file: {}), checked against `schema`."""
    import yaml

    text = _text(path, error)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        message = f"malformed YAML in {path}: {' '.join(str(err).split())}"
        raise error(_message(message, fix)) from None
    return check({} if data is None else data, schema, str(path), what, error, fix)


def parse_json(text: str, where: str, error: type[MixerError] = ConfigError) -> Any:
    """A JSON value held in a string (a safetensors metadata entry); `where` names it."""
    try:
        return json.loads(text)
    except (TypeError, ValueError) as err:
        raise error(f"{where} is not JSON ({err}): {text[:40]!r}") from None


def check(
    data: Any,
    schema: Schema | None,
    where: str,
    what: str,
    error: type[MixerError] = ConfigError,
    fix: str = "",
) -> dict[str, Any]:
    """`data` itself when it is a mapping that fits `schema`; else `error` naming `where`,
    the first key that does not fit and what it should be."""

    def fail(detail: str) -> None:
        raise error(_message(f"{where} is not {what}: {detail}", fix))

    if not isinstance(data, dict):
        fail(f"expected a mapping, found {_kind(data)}")
    for key, want in (schema or {}).items():
        optional = key.endswith("?")
        for name, value in _values(data, key.rstrip("?").split("."), "", optional, fail):
            if not _fits(value, want):
                fail(f"{name!r} should be {_describe(want)}, found {_shown(value)}")
    return data


def _values(node: Any, parts: list[str], trail: str, optional: bool, fail) -> Iterator:
    """(dotted name, value) of every value at `parts` below `node`."""
    if not parts:
        yield trail.rstrip("."), node
        return
    head, rest = parts[0], parts[1:]
    if optional and node is None:  # an empty section: nothing optional to check below it
        return
    if head == "*" and isinstance(node, list):
        for i, item in enumerate(node):
            yield from _values(item, rest, f"{trail}{i}.", optional, fail)
        return
    if not isinstance(node, dict):
        fail(f"{trail.rstrip('.')!r} should be a mapping, found {_kind(node)}")
    if head == "*":
        for key, item in node.items():
            yield from _values(item, rest, f"{trail}{key}.", optional, fail)
    elif head in node:
        yield from _values(node[head], rest, f"{trail}{head}.", optional, fail)
    elif not optional:
        fail(f"it has no {trail + head!r}")


def _fits(value: Any, want: Any) -> bool:
    if isinstance(want, (set, frozenset)):
        return isinstance(value, (str, int, float)) and value in want
    types = want if isinstance(want, tuple) else (want,)
    if isinstance(value, bool) and bool not in types:  # True is no number here
        return False
    return isinstance(value, types)


def _describe(want: Any) -> str:
    if isinstance(want, (set, frozenset)):
        return "one of " + ", ".join(sorted(map(str, want)))
    types = want if isinstance(want, tuple) else (want,)
    if set(types) == set(NUMBER):
        return "a number"
    return " or ".join(_KINDS.get(t, t.__name__) for t in types)


def _kind(value: Any) -> str:
    return next((name for t, name in _KINDS.items() if type(value) is t), type(value).__name__)


def _shown(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return _kind(value)
    return f"{_kind(value)} {value!r}"[:80]


def _text(path: str | os.PathLike, error: type[MixerError]) -> str:
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        raise error(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None


def _message(text: str, fix: str) -> str:
    return f"{text}; {fix}" if fix else text
