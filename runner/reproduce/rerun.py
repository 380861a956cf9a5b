"""`mlproject rerun RUN_ID`: the same project, commit, uncommitted changes, entry point,
parameters and installed packages as a recorded run, as a new run in its experiment.

What cannot be the same on this machine is said before anything starts; a difference
that makes it not a rerun (another Python minor version, a platform the lock does not
cover, a source that cannot be found or checked, packages that were not recorded)
refuses it unless the caller allows differences."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from runner.errors import UsageError
from runner.reproduce.recorded import RecordedRun, recorded
from runner.request import RunRequest

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any, Mapping

RERUN_OF_TAG = "mlproject.rerunOf"
CHANGED_TAG = "mlproject.rerunChanged"  # what the caller changed: parameter names, env_manager, backend


@dataclass(frozen=True)
class Difference:
    text: str
    blocking: bool  # makes it not a rerun: refused unless differences are allowed


@dataclass
class RerunPlan:
    original: RecordedRun
    request: RunRequest
    differences: list[Difference] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def blocking(self) -> list[Difference]:
        return [d for d in self.differences if d.blocking]


def plan_rerun(run_id: str, parameters: Mapping[str, Any] | None = None, env_manager: str | None = None,
               backend: str | None = None, backend_config: Any = None) -> RerunPlan:
    original = recorded(run_id)
    record = original.record
    if record.backend == "sweep":
        raise UsageError(f"run {record.id} is a sweep's parent run, not a run of a project",
                         hint="rerun one of its trials (mlproject sweep show ID lists them), or resume the sweep")
    if not record.finished:
        raise UsageError(f"run {record.id} is still {record.status}", hint="rerun it once it has ended")
    recorded_params = {k: str(v) for k, v in record.parameters.items()}
    given = {k: str(v) for k, v in (parameters or {}).items()}
    changed = sorted(k for k, v in given.items() if recorded_params.get(k) != v)
    manager = env_manager or record.env_manager
    if manager != record.env_manager:
        changed.append("env_manager")
    chosen_backend = backend or record.backend
    if chosen_backend != record.backend:
        changed.append("backend")
    result = RerunPlan(original, RunRequest(), changed=changed)
    uri, version, patch = _source(original, result)
    _inputs(original, given, result)
    lock_file = _environment(original, manager, result)
    tags = {RERUN_OF_TAG: original.run_id}
    if changed:
        tags[CHANGED_TAG] = ",".join(changed)
    experiment_id = None
    logged_paths: dict[str, str] = {}
    if record.tracking_run_id and record.tracking_uri:
        _check_store_is_there(record.id, record.tracking_uri)
        from runner.tracking import tracker_for
        from runner.version import __version__

        tracked = tracker_for(record.tracking_uri, quick=True).recorded_run(record.tracking_run_id)
        experiment_id = tracked.experiment_id
        # The ledger has what the command got (a path parameter made absolute); tracking, what
        # was logged (the path as given): the rerun logs it the same way.
        logged_paths = {name: str(tracked.params[name]) for name in recorded_params
                        if name not in given and name in tracked.params
                        and str(tracked.params[name]) != recorded_params[name]}
        from runner.tracking.offline import TARGET_TAG

        if TARGET_TAG in tracked.tags:  # recorded offline: the rerun is too, for the same server
            tags[TARGET_TAG] = tracked.tags[TARGET_TAG]
        then = tracked.tags.get("mlproject.version")
        if then and then != __version__:
            result.differences.append(Difference(f"runner: mlproject-runner {__version__} (the run used {then})", False))
    result.request = RunRequest(
        uri, entry_point=record.entry_point, version=version, parameters={**recorded_params, **given},
        experiment_id=experiment_id, backend=chosen_backend, backend_config=backend_config, env_manager=manager,
        tracking_uri=record.tracking_uri if record.tracking_run_id else None, patch=patch, lock_file=lock_file,
        tags=tags, logged_paths=logged_paths or None,
    )
    return result


def _check_store_is_there(run_id: str, uri: str) -> None:
    """A local store that was moved or deleted is refused before anything is opened: opening it
    would create an empty one where the original's was."""
    from runner.tracking import local_store_path

    path = local_store_path(uri)
    if path is not None and not path.exists():
        raise UsageError(f"run {run_id} was tracked in {uri}, which no longer exists (moved or deleted): its rerun "
                         "is recorded in its original's store",
                         hint="put the store back where it was (`mlproject runs show ID` names it), then rerun")


def _source(original: RecordedRun, result: RerunPlan) -> tuple[str, str | None, str | None]:
    """(uri, version, patch): the recorded commit through the git cache, with the recorded changes."""
    record = original.record
    uri, commit = record.project_uri, record.git_commit
    base = uri.partition("#")[0]
    from runner.sources.urls import is_git_url

    if commit is None and not is_git_url(base):
        return _directory_source(original, result), None, None
    if not is_git_url(base) and not os.path.isdir(base):
        result.differences.append(Difference(f"source: {base} no longer exists", True))
    patch = None
    if original.diff_not_kept:
        result.differences.append(Difference("source: the run's uncommitted changes were over the size cap and were "
                                             "not kept: the rerun runs the commit without them", True))
    elif original.diff is not None:
        patch = str(original.diff)
    names = original.untracked
    if names:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        result.differences.append(Difference(f"source: untracked files were not recorded and are not in the rerun: "
                                             f"{shown}", False))
    return uri, commit, patch


def _directory_source(original: RecordedRun, result: RerunPlan) -> str:
    """The uri of a project outside git: its directory, when its files are those the run
    recorded; else, when the directory is gone, the files kept with the run."""
    from pathlib import Path

    from runner.sources import provenance

    record = original.record
    uri = record.project_uri
    directory = Path(record.project_dir) if record.project_dir else Path(uri.partition("#")[0])
    kept = original.files
    if kept is None:
        result.differences.append(Difference(
            f"source: {uri} was not a git working copy and its files were not recorded (a run made before they "
            "were): what it held then cannot be checked", True))
        return uri
    if directory.is_dir():
        now = provenance.manifest(directory)
        differ = provenance.differing(kept, now)
        # Files that are new since the run were not part of it (often what it wrote: a model, a
        # plot): noted, as a git project's untracked files are. A changed or removed one blocks.
        added = [name for name in differ if name not in kept]
        changed = [name for name in differ if name in kept]
        if changed:
            result.differences.append(Difference(
                f"source: files of {directory} changed since the run ({len(changed)}): {_few(changed)}", True))
        if added:
            result.differences.append(Difference(
                f"source: files added to {directory} since the run, which it did not have: {_few(added)}", False))
        return uri
    if original.archive is not None:
        unpacked = provenance.unpack(original.archive, kept)
        result.differences.append(Difference(
            f"source: {directory} is not on this machine: the rerun runs the project's files kept with the run "
            f"({len(kept)} files)", False))
        return str(unpacked)
    result.differences.append(Difference(
        f"source: {directory} no longer exists, and the run kept only its files' digests (over "
        f"{provenance.ARCHIVE_CAP_BYTES // (1024 * 1024)} MB)", True))
    return uri


def _few(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _inputs(original: RecordedRun, given: dict[str, str], result: RerunPlan) -> None:
    """A file a `path` parameter named that changed since (and that the caller did not replace)."""
    from runner.sources.provenance import fingerprint

    for name, then in sorted(original.inputs.items()):
        if name in given:
            continue
        now = fingerprint(then["path"])
        if now is None:
            result.differences.append(Difference(f"parameter {name}: {then['path']} is gone", True))
        elif now != then:
            result.differences.append(Difference(f"parameter {name}: {then['path']} changed since the run", True))


def _environment(original: RecordedRun, manager: str, result: RerunPlan) -> str | None:
    """The recorded lock to install, and what about the environment cannot be the same."""
    record = original.record
    if manager in ("local", "docker"):
        if manager == "local":
            result.differences.append(Difference("environment: --env-manager local runs in the current Python "
                                                 "environment, which was not recorded", manager != record.env_manager))
        else:
            result.differences.append(Difference("environment: the docker image is built again from the "
                                                 "recorded source (or reused by its tag)", False))
        return None
    from runner.envs import manager_module

    name = manager_module(manager).LOCK_NAME  # the lock a rerun installs
    path = original.run_dir / "environment" / name if name else None
    if path is None or not path.is_file():
        result.differences.append(Difference(
            f"environment: the run recorded no {name or 'lock'} for {manager} (made before locks were recorded, or "
            "it held packages that are not on the index): the rerun resolves the env file again", True))
        return None
    from runner.platforms import platform_name

    platform = platform_name()
    if manager == "conda":
        from runner.envs.conda import lock as condalock

        if not condalock.read(path).for_platform(platform):
            result.differences.append(Difference(f"environment: the recorded lock has no packages for this machine "
                                                 f"({platform})", True))
        return str(path)
    from runner.envs.python import pylock

    lock = pylock.read(path)
    if lock.platforms and platform not in lock.platforms:
        result.differences.append(Difference(f"environment: the recorded lock covers {', '.join(lock.platforms)}, "
                                             f"not this machine ({platform})", True))
    if lock.python:
        result.differences.extend(_python_difference(lock.python))
    return str(path)


def _python_difference(wanted: str) -> list[Difference]:
    from runner.envs.python.interpreters import discover

    found = sorted((i.version for i in discover()), key=lambda v: tuple(int(p) for p in v.split(".")))
    minor = ".".join(wanted.split(".")[:2])
    if wanted in found:
        return []
    same_minor = [v for v in found if v.startswith(minor + ".")]
    if same_minor:
        return [Difference(f"environment: Python {same_minor[-1]} instead of {wanted} (another patch version)", False)]
    return [Difference(f"environment: the run used Python {wanted}, and no Python {minor} is on this machine "
                       f"(found: {', '.join(found) or 'none'})", True)]


def rerun_request(plan: RerunPlan, allow_differences: bool, notify) -> RunRequest:
    """Say what will differ; refuse (exit 2) when that makes it not a rerun and it was not allowed."""
    for difference in plan.differences:
        notify(f"{'warning' if difference.blocking else 'note'}: rerun of {plan.original.run_id[:12]}: "
               f"{difference.text}")
    if plan.changed:
        notify(f"note: a changed rerun ({', '.join(plan.changed)}): tagged {CHANGED_TAG}")
    if plan.blocking and not allow_differences:
        first = plan.blocking[0].text
        more = f" (and {len(plan.blocking) - 1} more)" if len(plan.blocking) > 1 else ""
        raise UsageError(f"run {plan.original.run_id} cannot be rerun as it ran: {first}{more}",
                         hint="--allow-differences runs it anyway, with the differences listed above",
                         python_hint="allow_differences=True runs it anyway")
    return plan.request
