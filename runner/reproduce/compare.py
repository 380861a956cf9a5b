"""`mlproject runs diff A B`: what differs between two runs, the first place to look when
two runs gave different results."""
from __future__ import annotations

from dataclasses import dataclass

from runner.reproduce.recorded import RecordedRun

_ABSENT = "-"


@dataclass(frozen=True)
class Comparison:
    rows: list[tuple[str, str, str]]  # (what, in A, in B): only what differs
    same: dict[str, int]  # how many parameters, packages, metrics are the same
    notes: list[str]


def compare(a: RecordedRun, b: RecordedRun) -> Comparison:
    rows: list[tuple[str, str, str]] = []
    notes: list[str] = []

    def differ(what: str, left: str, right: str) -> None:
        if left != right:
            rows.append((what, left, right))

    differ("source", _source(a), _source(b))
    differ("entry point", a.record.entry_point, b.record.entry_point)
    differ("env manager", a.record.env_manager, b.record.env_manager)
    differ("backend", a.record.backend, b.record.backend)
    differ("status", _status(a), _status(b))
    params_a, metrics_a, note_a = a.results()
    params_b, metrics_b, note_b = b.results()
    notes += [note for note in (note_a, note_b) if note]
    packages_a, packages_b = a.packages(), b.packages()  # (each a read of the run's lock, maybe a download)
    same = {}
    for kind, left, right in (("parameter", params_a, params_b), ("package", packages_a, packages_b),
                              ("metric", metrics_a, metrics_b)):
        count = 0
        for name in sorted(set(left) | set(right)):
            shown_left, shown_right = _value(left.get(name)), _value(right.get(name))
            if shown_left == shown_right:
                count += 1
            else:
                rows.append((f"{kind} {name}", shown_left, shown_right))
        same[kind + "s"] = count
    if not packages_a or not packages_b:
        notes.append("packages: a run without a recorded lock whose environment is gone shows none")
    return Comparison(rows, same, notes)


def _source(run: RecordedRun) -> str:
    record = run.record
    text = record.project_uri + (f" @ {record.git_commit[:12]}" if record.git_commit else "")
    if run.diff is not None or run.diff_not_kept:
        text += " + uncommitted changes"
    return text


def _status(run: RecordedRun) -> str:
    record = run.record
    return record.status + ("" if record.exit_code is None else f" ({record.exit_code})")


def _value(value) -> str:
    if value is None:
        return _ABSENT
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
