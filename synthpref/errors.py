"""The errors a job ends with, by whose making: the CLI turns each kind into one line and an exit code.

- `UserError` (exit 2): bad input or a config that cannot work, found before or while a job runs (no
  usable rows, a model path without a tokenizer, an output folder holding another run). Its message
  names the key or the file to fix; the quarantine is written before it is raised.
- `ResourceError` (exit 3): the cluster cannot provide what the job asks for (a replica or a trainer
  group that cannot be placed, replacements used up).
Anything else is a bug of ours and keeps its traceback.
"""
from __future__ import annotations

EXIT_OK, EXIT_USER, EXIT_RESOURCES = 0, 2, 3


class UserError(Exception):
    """Something the user can fix; the message names it."""


class MissingInput(UserError, FileNotFoundError):
    """A file or folder the config names does not exist."""


class NoUsableRows(UserError):
    """Every row of an input was quarantined (or it had none); the quarantine is already written."""


def no_usable_rows(what: str, path, quarantined: int, detail: str = "") -> NoUsableRows:
    """The one wording of "every row was quarantined": `data.path: no WHAT in PATH (N quarantined, DETAIL)`."""
    return NoUsableRows(f"data.path: no {what} in {path} ({quarantined} quarantined{', ' + detail if detail else ''})")


class ResourceError(Exception):
    """The cluster cannot provide what the job needs."""


def cause_of(exc: BaseException) -> BaseException:
    """The original exception behind a Ray task error (raised in an actor), else `exc` itself."""
    return getattr(exc, "cause", None) or exc
