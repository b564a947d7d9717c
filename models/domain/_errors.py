"""One small exception hierarchy, so callers catch by meaning (and the CLI maps it to exit codes)."""

from __future__ import annotations

from typing import NamedTuple, Sequence


class FieldProblem(NamedTuple):
    """One thing wrong with one field of an input: what the CLI prints and the UI shows beside the field."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ChangeflowError(Exception):
    """Base of every error changeflow raises on purpose."""

    exit_code = 1


class InputError(ChangeflowError):
    """The caller gave something malformed: a file, a field, a value. Nothing was written."""

    exit_code = 2

    def __init__(self, message: str, problems: Sequence[tuple[str, str]] | None = None):
        super().__init__(message)
        self.problems = [FieldProblem(*p) for p in problems or []]

    @classmethod
    def of(cls, problems: list[FieldProblem]) -> "InputError":
        """One error for several field problems, its message naming each field."""
        return cls("; ".join(str(p) for p in problems), problems)


class ConfigError(InputError):
    """The organisation config (directory, policies, checklists) or settings are invalid."""


class NotFound(ChangeflowError):
    exit_code = 2


class IllegalTransition(ChangeflowError):
    """The lifecycle does not allow this move from the change's current state."""


class PolicyViolation(ChangeflowError):
    """A rule of the approval policy refused the action (self-approval, missing role, bad code...)."""


class ConflictError(ChangeflowError):
    """Someone else changed the record first; re-read it and try again."""


class DatabaseBusy(ConflictError):
    """The database lock could not be taken in time; nothing was written."""
