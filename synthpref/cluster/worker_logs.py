"""Worker actors write their output (vLLM, DeepSpeed, transformers, C-level) to the job's log folder.

The job runtime names the folder (`set_log_dir`); every worker actor gets it in its runtime env
(`ray_setup.actor_env`) and calls `to_log_file(role)` first thing in `__init__`, which points its file
descriptors 1 and 2 at `LOG_DIR/<role>-<pid>.log`. Without a folder (verbose runs, tests that build
actors directly, a node where the driver's folder does not exist) output stays where Ray sends it.
"""
from __future__ import annotations

import os

ENV = "SYNTHPREF_LOG_DIR"
_log_dir: dict = {"path": None}


def set_log_dir(path: str | None) -> None:
    """The folder worker actors started from now on write to (None: leave their output to Ray)."""
    _log_dir["path"] = None if path is None else os.path.abspath(path)


def env() -> dict[str, str]:
    return {ENV: _log_dir["path"]} if _log_dir["path"] else {}


def to_log_file(role: str) -> str | None:
    """In a worker actor: send this process's output to the job's log folder; returns the file's path."""
    folder = os.environ.get(ENV)
    if not folder or not os.path.isdir(folder):    # a node without the job's filesystem: Ray's own logs
        return None
    try:
        path = os.path.join(folder, f"{role}-{os.getpid()}.log")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        return None
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return path
