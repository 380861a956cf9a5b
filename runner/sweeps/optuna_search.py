"""`--method optuna`: Optuna proposes each trial from the results so far (TPE by default).

Optuna is an optional extra (`pip install 'mlproject-runner[optuna]'`), imported only here.
Its study is a journal file next to the sweep's state (`$MLPROJECT_HOME/sweeps/ID/optuna.log`),
so `--resume` continues the same study. Our trial N is the study's trial N-1: a trial cut
short with its driver is told its result when it is run again.
"""
from __future__ import annotations

import threading
from pathlib import Path

from runner.errors import NotAvailableError, UsageError
from runner.status import RunStatus
from runner.sweeps.search import SearchSettings
from runner.sweeps.state import Trial


class OptunaSearch:
    """An adaptive search (runner.sweeps.search): Optuna's TPE sampler, asked and told."""

    ADAPTIVE = True

    def __init__(self, settings: SearchSettings):
        if not settings.metric:
            raise UsageError("--method optuna needs --metric: the value it minimizes or maximizes",
                             hint="for example --metric rmse --goal minimize", python_hint='for example metric="rmse"')
        try:
            import optuna
        except ImportError:
            raise NotAvailableError("--method optuna needs Optuna, which is not installed",
                                    hint="pip install 'mlproject-runner[optuna]'") from None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        self.settings = settings
        self.space = settings.space
        self.max_runs = settings.max_runs or 10
        self._lock = threading.Lock()  # ask and tell from the trial threads
        self.study = None
        self._asked: dict[int, object] = {}  # our trial number -> Optuna's trial, for reporting values
        self._reported: dict[int, set[int]] = {}  # the steps reported of each

    def planned(self) -> list[dict[str, str]]:
        return []

    def budget(self) -> int:
        return self.max_runs

    def open(self, directory: Path, study_name: str) -> None:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        optuna, settings = self._optuna, self.settings
        storage = JournalStorage(JournalFileBackend(str(directory / "optuna.log")))
        sampler = optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=_startup(self.max_runs))
        pruner = {"median": optuna.pruners.MedianPruner, "asha": optuna.pruners.SuccessiveHalvingPruner}.get(
            settings.prune or "", optuna.pruners.NopPruner)()
        self.study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True,
                                         direction="minimize" if settings.goal == "minimize" else "maximize",
                                         sampler=sampler, pruner=pruner)

    def ask(self, known: int) -> Trial | None:
        """The next trial Optuna proposes; None once the sweep has max_runs trials (`known`: how
        many it has). Counted by the sweep, not by the study: a driver killed inside ask() leaves
        the study a trial the sweep never recorded, which must not take a resumed sweep's place."""
        with self._lock:
            if known >= self.max_runs:
                return None
            assert self.study is not None, "open() first"
            proposed = self.study.ask()
            parameters = dict(self.space.fixed)
            for dimension in self.space.dimensions:
                low, high = dimension.low, dimension.high
                if dimension.values is not None:
                    parameters[dimension.name] = proposed.suggest_categorical(dimension.name, list(dimension.values))
                elif low is None or high is None:  # (a dimension is either values or a range)
                    raise AssertionError(f"dimension {dimension.name} has neither values nor a range")
                elif dimension.integer:
                    parameters[dimension.name] = str(proposed.suggest_int(
                        dimension.name, round(low), round(high), log=dimension.log))
                else:
                    parameters[dimension.name] = repr(proposed.suggest_float(
                        dimension.name, low, high, log=dimension.log))
            self._asked[proposed.number + 1] = proposed
            return Trial(proposed.number + 1, parameters)

    def tell(self, trial: Trial) -> None:
        state = self._optuna.trial.TrialState
        if self.study is None:
            return
        with self._lock:
            try:
                if trial.pruned_at is not None:
                    self.study.tell(trial.number - 1, state=state.PRUNED)
                elif trial.status == RunStatus.FINISHED and trial.metric is not None:
                    self.study.tell(trial.number - 1, trial.metric)
                elif trial.status in (RunStatus.FINISHED, RunStatus.FAILED):
                    self.study.tell(trial.number - 1, state=state.FAIL)
                # A KILLED trial stays open: resumed, it runs again and is told then.
            except (ValueError, RuntimeError):  # told already (a resumed trial's earlier end)
                pass


    def pruner(self):
        return _OptunaPruning(self) if self.settings.prune else None

    def should_prune(self, trial: Trial, history: list[tuple[int, float]]) -> bool:
        """Report the trial's new values to its Optuna trial; Optuna's pruner decides."""
        with self._lock:
            asked = self._asked.get(trial.number)
            if asked is None:  # asked by an earlier driver of this sweep (resumed): the study has it
                assert self.study is not None, "open() first"
                frozen = self.study.get_trials(deepcopy=False)[trial.number - 1]
                asked = self._asked[trial.number] = self._optuna.trial.Trial(self.study, frozen._trial_id)
            reported = self._reported.setdefault(trial.number, set())
            for step, value in history:
                if step not in reported:
                    asked.report(value, step)  # type: ignore[attr-defined]
                    reported.add(step)
            return bool(history) and asked.should_prune()  # type: ignore[attr-defined]


class _OptunaPruning:
    """Optuna's pruner on the study (runner.sweeps.prune.Pruner): the study keeps every curve."""

    def __init__(self, search: OptunaSearch):
        self.search = search

    def should_prune(self, trial: Trial, history: list[tuple[int, float]]) -> bool:
        return self.search.should_prune(trial, history)

    def finished(self, trial: Trial, history: list[tuple[int, float]]) -> None:
        pass  # (reported as it ran, and told its end)


def _startup(max_runs: int) -> int:
    """Random trials before TPE takes over: Optuna's 10, but a third of a smaller budget (a
    sweep of 12 would otherwise be 10 random draws and 2 guided ones)."""
    return max(2, min(10, max_runs // 3))
