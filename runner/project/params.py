"""Parameter types, coercion, and safe command rendering.

Every value is checked and converted before anything is created or started.
Commands are rendered as MLflow renders them (`command.format(**quoted)`, with
undeclared parameters appended as `--name value`), except that every value
and every appended name is shell-quoted: parameters are data, never code.
"""
from __future__ import annotations

import math
import os
import re
import shlex
import string
from dataclasses import dataclass, field
from pathlib import Path

from runner.errors import ParameterError, ProjectError, UsageError
from runner.project.spec import EntryPoint, Project

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any, Iterable, Mapping

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


@dataclass(frozen=True)
class Invocation:
    """What will run: the rendered shell command and the typed parameter values."""

    entry_point: str
    command: str
    cwd: Path
    values: dict[str, Any] = field(default_factory=dict)  # typed values, declared parameters
    texts: dict[str, str] = field(default_factory=dict)  # what the command received, unquoted
    extra: dict[str, str] = field(default_factory=dict)  # undeclared, appended as --name value
    # `path` parameters given as remote URIs (s3://, runs:/, models:/ ...): downloaded
    # into the run's directory before the command starts (see localize()).
    remote: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # e.g. an undeclared name close to a declared one
    # `path` parameters as the user gave them (`data/x.csv`), which MLflow logs; the command
    # gets the absolute path (texts).
    given_paths: dict[str, str] = field(default_factory=dict)

    @property
    def logged(self) -> dict[str, str]:
        """The parameters as MLflow logs them: values, with paths as given."""
        return {**self.texts, **self.given_paths, **self.extra}

    def localize(self, entry: EntryPoint, local_paths: dict[str, str]) -> Invocation:
        """The same invocation with remote path parameters replaced by their downloaded copies."""
        texts = {**self.texts, **local_paths}
        return Invocation(self.entry_point, render(entry, texts, self.extra), self.cwd, self.values, texts, self.extra, {},
                          self.warnings, self.given_paths)


def parse_assignments(items: Iterable[str], flag: str = "-P") -> dict[str, str]:
    """`name=value` pairs, split on the first `=`; a repeated name is an error."""
    result: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"{flag} {item!r}: expected NAME=VALUE", hint=f"for example {flag} alpha=0.5")
        if name in result:
            raise UsageError(f"{flag} {name}: given more than once", hint="give each parameter once")
        result[name] = value
    return result


def placeholders(command: str) -> list[str]:
    """Names of the `{placeholders}` a command refers to (format-string fields)."""
    names = []
    for _, field_name, _, _ in string.Formatter().parse(command):
        if field_name:
            base = field_name.split(".", 1)[0].split("[", 1)[0]
            if base not in names:
                names.append(base)
    return names


def check_command(entry: EntryPoint) -> list[str]:
    """Problems in a command template: placeholders naming no declared parameter."""
    try:
        names = placeholders(entry.command)
    except ValueError as exc:
        return [f"entry point {entry.name!r}: command is not a valid template ({exc})"]
    problems = []
    for name in names:
        if name not in entry.parameters:
            problems.append(
                f"entry point {entry.name!r}: command uses {{{name}}} but declares no parameter {name!r}"
            )
    return problems


def resolve(
    project: Project,
    entry_point: str,
    given: Mapping[str, Any] | None,
    caller_cwd: Path | None = None,
) -> Invocation:
    entry = project.entry_point(entry_point)
    given = dict(given or {})
    caller_cwd = caller_cwd or Path.cwd()

    # Every problem at once (a user fixes them in one go), each misspelling with its guess.
    problems: list[str] = []
    hints: list[str] = []
    missing = [p.name for p in entry.parameters.values() if p.required and given.get(p.name) is None]
    if missing:
        # (MLflow's words first: callers match on them)
        problems.append(f"No value given for missing parameters: {', '.join(repr(m) for m in missing)} "
                        f"(entry point {entry.name!r}{_guesses(missing, given, entry)})")
        hints.append("give " + " ".join(f"-P {name}=VALUE" for name in missing))
    values: dict[str, Any] = {}
    texts: dict[str, str] = {}
    remote: dict[str, str] = {}
    for param in entry.parameters.values():
        raw = given.get(param.name)
        from_default = raw is None
        if from_default:
            if param.required:
                continue  # (said above)
            raw = param.default
        if param.type == "path" and _is_remote(_text(raw)):
            values[param.name] = texts[param.name] = remote[param.name] = _text(raw)
            continue
        try:
            values[param.name], texts[param.name] = convert(param.type, raw, project.directory, caller_cwd)
        except ValueError as exc:
            problems.append(_conversion_problem(param.name, param.type, raw, from_default, str(exc)))
            hints.append(_type_hint(param.type))
    extra = {}
    for name, raw in given.items():
        if name in entry.parameters:
            continue
        if raw is None:
            problems.append(f"parameter {name!r}: no value given")
            continue
        extra[name] = _text(raw)

    for name, text in list(texts.items()) + list(extra.items()):
        if "\0" in text:
            problems.append(f"parameter {name!r}: value contains a NUL byte")
            hints.append("NUL cannot be passed to a program")
        elif _UNDECODABLE.search(name + text):
            # Bytes that were not UTF-8 on the command line (Python keeps them as lone
            # surrogates): they can be neither recorded as text nor logged to MLflow.
            problems.append(f"parameter {name.encode('utf-8', 'backslashreplace').decode()!r}: "
                            "the value is not valid UTF-8 text")
            hints.append("give parameters as UTF-8 (check the terminal's or the script's encoding)")
    if problems:
        message = problems[0] if len(problems) == 1 else (
            f"{len(problems)} problems with the parameters of entry point {entry.name!r}: " + "; ".join(problems))
        python_hint = None
        if missing and len(problems) == 1:
            python_hint = "give parameters={" + ", ".join(f"{name!r}: ..." for name in missing) + "}"
        raise ParameterError(message, hint="; ".join(dict.fromkeys(hints)) or None, problems=problems,
                             python_hint=python_hint)
    command = render(entry, texts, extra)
    given_paths = {p.name: _text(p.default if given.get(p.name) is None else given[p.name])
                   for p in entry.parameters.values() if p.type == "path" and p.name not in remote}
    return Invocation(entry.name, command, project.directory, values, texts, extra, remote,
                      _misspellings(extra, entry), given_paths)


def _conversion_problem(name: str, type_name: str, raw: Any, from_default: bool, why: str) -> str:
    origin = "default value" if from_default else "value"
    # (MLflow's words first for the path and URI checks: callers match on them)
    if type_name == "path":
        return f"Got {origin} {_show(raw)} for parameter {name}, but {why}"
    if type_name == "uri":
        return f"Expected URI for parameter {name} but got {_show(raw)} ({why})"
    return f"parameter {name!r}: {origin} {_show(raw)} {why}"


def _guesses(missing: list[str], given: Mapping[str, Any], entry: EntryPoint) -> str:
    """'; alpah was given: did you mean alpha?' for each given name that is not declared and is
    close to a missing one: the typo is why the required parameter has no value."""
    undeclared = [name for name in given if name not in entry.parameters]
    if not undeclared:
        return ""
    import difflib

    said = []
    for name in undeclared:
        close = difflib.get_close_matches(name, missing, n=1, cutoff=0.75)
        if close:
            said.append(f"{name} was given: did you mean {close[0]}?")
    return "".join(f"; {guess}" for guess in said)


def _misspellings(extra: Mapping[str, str], entry: EntryPoint) -> list[str]:
    """Undeclared parameters are passed on as `--name value` (as MLflow does); one that is a
    near miss of a declared name is probably a typo that leaves the declared one at its default."""
    if not extra or not entry.parameters:
        return []
    import difflib

    warnings = []
    for name in extra:
        close = difflib.get_close_matches(name, list(entry.parameters), n=1, cutoff=0.75)
        if close:
            warnings.append(f"-P {name} is not a parameter of entry point {entry.name!r}, so it is passed on as "
                            f"--{name}; did you mean {close[0]}?")
    return warnings


_UNDECODABLE = re.compile("[\ud800-\udfff]")


def render(entry: EntryPoint, texts: Mapping[str, str], extra: Mapping[str, str]) -> str:
    quoted = {name: shlex.quote(text) for name, text in texts.items()}
    problems = check_command(entry)
    if problems:
        raise ProjectError(problems[0], hint="declare the parameter under entry_points in MLproject")
    try:
        command = entry.command.format(**quoted)
    except (IndexError, KeyError, ValueError, AttributeError) as exc:
        raise ProjectError(
            f"entry point {entry.name!r}: cannot render command: {exc}",
            hint="placeholders are {name}; write a literal brace as {{ or }}",
        ) from None
    pieces = [command]
    for name, text in extra.items():
        pieces.append(f"{shlex.quote('--' + name)} {shlex.quote(text)}")
    return " ".join(pieces)


def _text(value: Any) -> str:
    # str() as MLflow does, so a command sees what `mlflow run` would pass it.
    return value if isinstance(value, str) else str(value)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def convert(type_name: str, raw: Any, project_dir: Path, caller_cwd: Path) -> tuple[Any, str]:
    """(typed value, text passed to the command); ValueError says what is wrong."""
    converter = _CONVERTERS.get(type_name)
    if converter is None:
        raise ValueError(f"has unknown type {type_name!r}")
    return converter(raw, project_dir, caller_cwd)


def _string(raw: Any, _p: Path, _c: Path) -> tuple[Any, str]:
    text = _text(raw)
    return text, text


def _float(raw: Any, _p: Path, _c: Path) -> tuple[Any, str]:
    if isinstance(raw, bool):
        raise ValueError("is not a float")
    if isinstance(raw, (int, float)):
        return float(raw), _text(raw)
    text = _text(raw)
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("is not a float") from None
    if math.isnan(value) and text.strip().lower() not in ("nan", "+nan", "-nan"):
        raise ValueError("is not a float")
    return value, text


def _int(raw: Any, _p: Path, _c: Path) -> tuple[Any, str]:
    if isinstance(raw, bool):
        raise ValueError("is not an int")
    if isinstance(raw, int):
        return raw, str(raw)
    if isinstance(raw, float):
        if raw.is_integer():
            return int(raw), str(int(raw))
        raise ValueError("is not an int")
    text = _text(raw)
    try:
        return int(text.strip(), 10), text
    except ValueError:
        raise ValueError("is not an int") from None


def _bool(raw: Any, _p: Path, _c: Path) -> tuple[Any, str]:
    if isinstance(raw, bool):
        return raw, str(raw)
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw), str(raw)
    text = _text(raw)
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True, text
    if lowered in _FALSE:
        return False, text
    raise ValueError("is not a bool (true/false, yes/no, 1/0)")


# RFC 3986 scheme; one letter is a Windows drive, not a scheme. (A regex, not
# urllib.parse, which costs ~2 ms to import on the warm path.)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


def _has_scheme(text: str) -> bool:
    return bool(_SCHEME.match(text))


def _is_remote(text: str) -> bool:
    return _has_scheme(text) and not text.lower().startswith("file:")


def _path(raw: Any, project_dir: Path, caller_cwd: Path) -> tuple[Any, str]:
    text = _text(raw)
    if not text:
        raise ValueError("no such file or directory was found (the path is empty)")
    if _has_scheme(text):  # a file: URI (remote ones are handled by resolve)
        from urllib.parse import unquote, urlparse

        text = unquote(urlparse(text).path)
    expanded = os.path.expanduser(text)
    for base in (caller_cwd, project_dir):
        candidate = Path(base, expanded)
        if candidate.exists():
            resolved = os.path.abspath(candidate)
            return resolved, resolved
    raise ValueError(f"no such file or directory was found (looked in {caller_cwd} and in the project)")


def _uri(raw: Any, _p: Path, _c: Path) -> tuple[Any, str]:
    text = _text(raw)
    if not _has_scheme(text):
        raise ValueError("a URI needs a scheme, like s3://bucket/key or file:///data")
    return text, text


_CONVERTERS = {
    "string": _string,
    "float": _float,
    "int": _int,
    "bool": _bool,
    "path": _path,
    "uri": _uri,
}


def _type_hint(type_name: str) -> str:
    return {
        "float": "give a number such as 0.5 or 1e-3",
        "int": "give a whole number such as 10",
        "bool": "give true or false",
        "path": "give a path relative to the current directory or to the project",
        "uri": "give a URI with a scheme, such as s3://bucket/key",
    }.get(type_name, f"expected a {type_name}")
