"""JobRuntime: what every driver runs inside, so that a driver is the method's steps and nothing else
(in the spirit of veRL's `fit()`).

    with JobRuntime(cfg, "rft") as job:          # output folder, logs, rerun rule, metrics
        job.start_ray(cpus)                       # start a local Ray or join one
        policy = job.own(TrainerGroup(...))       # shut down when the block ends, however it ends
        ...

On leaving the block (success, an error, Ctrl-C, SIGTERM) every owned worker group is shut down, last
started first, then Ray if the job started it. Worker groups clean up after themselves when their own
start fails half-way, so a failure while starting the second group leaves nothing behind either.
"""
from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any, TypeVar

from synthpref.cluster import worker_logs
from synthpref.monitor.console import quiet_terminal, say
from synthpref.monitor import ray_metrics
from synthpref.monitor.metrics import MetricsLog
from synthpref.config.loader import ConfigError
from synthpref.runtime.rerun import RunState, refuse_other_job, run_tree
from synthpref.runtime.storage import is_uri

T = TypeVar("T")
log = logging.getLogger(__name__)
_nesting = threading.local()        # how many jobs this thread is inside: only the outermost prints its report


class JobRuntime:
    def __init__(self, cfg: Any, job: str, tensorboard: bool = True, resumable: bool = True, **run_keys):
        """`resumable=False`: a job that redoes all its work on every run (eval-judge) keeps no run.json."""
        if is_uri(cfg.output_dir):
            raise ConfigError(f"output_dir: {cfg.output_dir} is a URI, which the synthpref command (and jobs/run.py) "
                              f"stages; code that calls a job directly wraps it in runtime.mirror.staged_output(cfg)")
        self.cfg, self.job, self.resumable = cfg, job, resumable
        self.out = Path(cfg.output_dir)
        self.logs = self.out / "logs"
        self.verbose = bool(getattr(cfg, "verbose", False))
        self._tree = run_tree(cfg, **run_keys)
        self._tensorboard = tensorboard
        self._owned: list[Any] = []
        self._started_ray = False
        self._quiet = None
        self._counted = False                   # counted in _nesting (undone on exit)

    # -- entering and leaving ----------------------------------------------------------------------
    def __enter__(self) -> "JobRuntime":
        self.out.mkdir(parents=True, exist_ok=True)
        self.state = RunState(self.out, self.job, self._tree, self.cfg.length_keys) if self.resumable else None
        if not self.resumable:
            refuse_other_job(self.out, self.job)
        self.metrics = None
        self._previous_sigterm = None
        self._quiet = quiet_terminal(self.logs, self.verbose)
        self._quiet.__enter__()
        try:
            _nesting.depth = getattr(_nesting, "depth", 0) + 1
            self._counted = True
            worker_logs.set_log_dir(None if self.verbose else str(self.logs))
            self.metrics = MetricsLog(self.out / "metrics.jsonl", self.out / "tensorboard" if self._tensorboard else None)
            ray_metrics.set_job(self.job, self.out.name)
            if threading.current_thread() is threading.main_thread():
                # a cancelled Ray job or `kill` unwinds like Ctrl-C, so the block's exit shuts the workers down
                self._previous_sigterm = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None
        try:
            self.shutdown(raise_errors=exc is None)
            if exc is None:
                self.write_report()
        finally:
            if self._counted:
                _nesting.depth -= 1
                self._counted = False
            if self.metrics is not None:
                self.metrics.close()
            worker_logs.set_log_dir(None)
            if self._quiet is not None:
                self._quiet.__exit__(exc_type, exc, tb)
                self._quiet = None

    def write_report(self) -> None:
        """OUTPUT/report.html, for a job that ends without an error; the outermost job prints its path (a
        job run inside another, e.g. a cai run's label step, writes its own but prints nothing). A report
        that cannot be written is a warning in the run's log, never a failed job."""
        try:
            from synthpref.monitor.report import write_report
            path = write_report(self.out)
        except Exception as exc:
            log.warning("%s: report.html not written: %s", self.out, exc, exc_info=True)
            return
        if getattr(_nesting, "depth", 0) == 1:
            say(f"report: {path}")

    def shutdown(self, raise_errors: bool = True) -> None:
        """Stop every owned worker group, last started first, then Ray if this job started it. A failure to
        stop one is raised after the others are stopped, unless the job is already failing (then it is
        logged, and the job's own error is the one the user sees)."""
        errors = []
        while self._owned:
            part = self._owned.pop()
            try:
                part.shutdown()
            except Exception as exc:  # keep stopping the others
                errors.append(exc)
                log.warning("shutting down %s failed: %s", type(part).__name__, exc)
        if self._started_ray:
            import ray
            ray.shutdown()
            self._started_ray = False
        if errors and raise_errors:
            raise errors[0]

    # -- workers -----------------------------------------------------------------------------------
    def start_ray(self, cpus: int) -> None:
        """Join the configured (or submitted job's) Ray cluster, else start a local one with `cpus` CPUs.
        Quiet runs keep worker output out of the terminal (each worker writes to OUTPUT/logs/)."""
        from synthpref.cluster.ray_setup import init_ray
        self._started_ray = init_ray(self.cfg.ray, min_cpus=max(1, cpus), log_to_driver=self.verbose) or self._started_ray

    def own(self, part: T) -> T:
        """Shut `part` (anything with shutdown()) down when the job ends; returns it."""
        self._owned.append(part)
        return part

    # -- records -----------------------------------------------------------------------------------
    def log(self, record: dict) -> None:
        self.metrics.log(record)
