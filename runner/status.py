"""A run's status, as MLflow names it and the ledger stores it (the same words in SQL and JSON)."""
from __future__ import annotations

from enum import Enum


class RunStatus(str, Enum):
    SCHEDULED = "SCHEDULED"  # submitted to a cluster, not started yet
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"

    # The word itself wherever it is written (f-strings, str(), logs, a tuple's repr), on every
    # Python version: what a run's status printed or logged always was.
    __str__ = str.__str__
    __format__ = str.__format__

    def __repr__(self) -> str:
        return repr(self.value)

    def is_terminal(self) -> bool:
        return self not in (RunStatus.SCHEDULED, RunStatus.RUNNING)

    @classmethod
    def ended_by(cls, exc: BaseException) -> RunStatus:
        """How a run that `exc` stopped ends: KILLED by an interrupt (a signal), FAILED by an error."""
        return cls.FAILED if isinstance(exc, Exception) else cls.KILLED
