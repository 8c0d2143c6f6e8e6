"""The terminal is ours: the job's messages, progress bars and summary. Everything else a run prints
(vLLM, DeepSpeed, transformers, Ray, warnings, C-level output of the driver process) goes to
`OUTPUT/logs/driver.log`, and each worker actor writes its own log there (cluster/worker_logs.py).

`quiet_terminal(log_dir)` points file descriptors 1 and 2 at the log file and keeps the real terminal
for `say()` and progress bars; `verbose=True` leaves the terminal as it is. Nested uses share the first.
It is meant for one job at a time in a process (the CLI); jobs in threads should pass verbose=True.
"""
from __future__ import annotations

import io
import logging
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

_terminal: dict = {"out": None, "err": None, "depth": 0}


def out():
    """The stream our messages go to (the real stdout, also while output is redirected)."""
    return _terminal["out"] or sys.stdout


def err():
    """The stream progress bars and error lines go to (the real stderr)."""
    return _terminal["err"] or sys.stderr


def say(*parts, **kwargs) -> None:
    print(*parts, file=out(), flush=True, **kwargs)


@contextmanager
def quiet_terminal(log_dir: str | Path, verbose: bool = False):
    """Within the block, library and engine output goes to log_dir/driver.log (unless verbose)."""
    if verbose or _terminal["depth"]:
        _terminal["depth"] += 1
        try:
            yield
        finally:
            _terminal["depth"] = max(0, _terminal["depth"] - 1)
        return
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(log_dir / "driver.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    _terminal.update(out=io.TextIOWrapper(os.fdopen(os.dup(saved[0]), "wb", buffering=0), write_through=True),
                     err=io.TextIOWrapper(os.fdopen(os.dup(saved[1]), "wb", buffering=0), write_through=True),
                     depth=1)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    logging.captureWarnings(True)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "warning")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        for stream in (_terminal["out"], _terminal["err"]):
            stream.close()
        _terminal.update(out=None, err=None, depth=0)
        logging.captureWarnings(False)
