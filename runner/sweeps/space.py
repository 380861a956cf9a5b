"""A sweep's parameter space: what `-P name=SPEC` means (the searches of runner.sweeps.search draw from it).

    -P alpha=0.1,0.5,1.0            a list (`\\,` is a literal comma)
    -P l1=range(0,1,0.25)           start, stop (excluded), step: 0, 0.25, 0.5, 0.75
    -P solver=choice(lbfgs,adam)    a list, written as a call
    -P alpha=uniform(0,1)           a continuous range (random search)
    -P alpha=loguniform(1e-4,1)     ... uniform in its logarithm
    -P n=int(uniform(10,200))       ... rounded to an integer
    -P epochs=3                     fixed: every trial gets it

Values are texts, as on the command line; the project's declared types check them.
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

from runner.errors import UsageError

_CALL = re.compile(r"^\s*(range|choice|uniform|loguniform|int)\s*\((.*)\)\s*$", re.S)


@dataclass(frozen=True)
class Dimension:
    """One swept parameter: finite `values`, or a continuous range from `low` to `high`."""

    name: str
    spec: str  # as written
    values: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    @property
    def finite(self) -> bool:
        return self.values is not None

    def draw(self, rng: random.Random) -> str:
        if self.values is not None:
            return rng.choice(self.values)
        assert self.low is not None and self.high is not None
        value = (math.exp(rng.uniform(math.log(self.low), math.log(self.high))) if self.log
                 else rng.uniform(self.low, self.high))
        return str(round(value)) if self.integer else _number(value)


@dataclass(frozen=True)
class Space:
    dimensions: tuple[Dimension, ...]
    fixed: tuple[tuple[str, str], ...]

    def as_json(self) -> dict[str, str]:
        return {**dict(self.fixed), **{d.name: d.spec for d in self.dimensions}}

    def size(self) -> int | None:
        """The number of grid points; None when a dimension is continuous."""
        if not all(d.finite for d in self.dimensions):
            return None
        return math.prod(len(d.values or ()) for d in self.dimensions)

    def corners(self) -> list[dict[str, str]]:
        """Parameters that, together, give every dimension each of its listed values and both ends
        of its range: what can be checked before a search that proposes its trials as it goes."""
        fixed = dict(self.fixed)
        ends = []
        for d in self.dimensions:
            if d.values is not None:
                ends.append(list(d.values))
            else:
                low, high = (str(round(d.low)), str(round(d.high))) if d.integer else (_number(d.low), _number(d.high))  # type: ignore[arg-type]
                ends.append([low, high])
        count = max([len(e) for e in ends] or [1])
        return [{**fixed, **{d.name: e[i % len(e)] for d, e in zip(self.dimensions, ends)}} for i in range(count)]


def parse_space(assignments: dict[str, str]) -> Space:
    dimensions, fixed = [], []
    for name, spec in assignments.items():
        dimension = parse_dimension(name, str(spec))
        if dimension is None:
            fixed.append((name, _unescape(str(spec))))
        else:
            dimensions.append(dimension)
    return Space(tuple(dimensions), tuple(fixed))


def parse_dimension(name: str, spec: str) -> Dimension | None:
    """The dimension `spec` describes; None for a fixed value."""
    call = _CALL.match(spec)
    if call is None:
        values = _split(spec)
        return None if len(values) == 1 else Dimension(name, spec, values=tuple(values))
    function, inner = call.group(1), call.group(2)
    if function == "int":
        wrapped = parse_dimension(name, inner)
        if wrapped is None or wrapped.finite:
            raise _bad(name, spec, "int(...) wraps uniform(a,b) or loguniform(a,b)")
        return Dimension(name, spec, low=wrapped.low, high=wrapped.high, log=wrapped.log, integer=True)
    arguments = _split(inner)
    if function == "choice":
        return Dimension(name, spec, values=tuple(arguments))
    numbers = [_float(name, spec, text) for text in arguments]
    if function == "range":
        if len(numbers) not in (2, 3) or (len(numbers) == 3 and numbers[2] == 0):
            raise _bad(name, spec, "range(start, stop[, step]) with a step that is not 0")
        start, stop = numbers[0], numbers[1]
        step = numbers[2] if len(numbers) == 3 else 1.0
        count = max(0, math.ceil((stop - start) / step - 1e-9))
        if count == 0:
            raise _bad(name, spec, "the range is empty")
        integers = all(_is_int(text) for text in arguments)
        values = [start + i * step for i in range(count)]
        return Dimension(name, spec, values=tuple(str(int(v)) if integers else _number(v) for v in values))
    if len(numbers) != 2 or numbers[0] >= numbers[1]:
        raise _bad(name, spec, f"{function}(low, high) with low < high")
    if function == "loguniform" and numbers[0] <= 0:
        raise _bad(name, spec, "loguniform needs 0 < low")
    return Dimension(name, spec, low=numbers[0], high=numbers[1], log=function == "loguniform")


def _split(text: str) -> list[str]:
    """`a,b\\,c` -> ["a", "b,c"]: commas separate, a backslash keeps one."""
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return parts


def _unescape(text: str) -> str:
    return text.replace("\\,", ",")


def _float(name: str, spec: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise _bad(name, spec, f"{text!r} is not a number") from None


def _is_int(text: str) -> bool:
    return re.fullmatch(r"\s*[-+]?\d+\s*", text) is not None


def _number(value: float) -> str:
    """A float as short as it reads: 0.25, not 0.25000000000000006."""
    rounded = round(value, 12)
    return repr(int(rounded)) + ".0" if rounded == int(rounded) and abs(rounded) < 1e15 else repr(rounded)


def _bad(name: str, spec: str, why: str) -> UsageError:
    return UsageError(f"-P {name}={spec}: {why}", hint="see `mlproject sweep --help` for the forms a value can take",
                      python_hint="see runner.sweep's docstring for the forms a value can take")
