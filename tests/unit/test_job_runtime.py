"""JobRuntime's lifecycle with stand-in worker groups (real Ray groups: tests/integration/test_halfway_failures.py):
owned parts stop last-started-first on success, an error, Ctrl-C and SIGTERM; the job's own error wins
over a failing shutdown; the terminal and the SIGTERM handler are as they were afterwards."""
import os
import signal
import time

import pytest

from synthpref.config import EvalJudgeConfig
from synthpref.errors import UserError
from synthpref.runtime.job import JobRuntime


class Part:
    def __init__(self, stopped: list, name: str, fails: bool = False):
        self.stopped, self.name, self.fails = stopped, name, fails

    def shutdown(self):
        self.stopped.append(self.name)
        if self.fails:
            raise RuntimeError(f"{self.name} would not stop")


def job(tmp_path, verbose=True):
    cfg = EvalJudgeConfig(output_dir=str(tmp_path / "out"), verbose=verbose)
    return JobRuntime(cfg, "eval-judge", tensorboard=False, resumable=False)


def test_parts_stop_last_started_first_on_success_and_on_ctrl_c(tmp_path):
    stopped = []
    with job(tmp_path) as j:
        j.own(Part(stopped, "sampler"))
        j.own(Part(stopped, "jury"))
    assert stopped == ["jury", "sampler"]
    stopped.clear()
    with pytest.raises(KeyboardInterrupt):
        with job(tmp_path) as j:
            j.own(Part(stopped, "sampler"))
            raise KeyboardInterrupt
    assert stopped == ["sampler"]


def test_sigterm_unwinds_like_ctrl_c_and_the_handler_is_restored(tmp_path):
    before, stopped = signal.getsignal(signal.SIGTERM), []
    with pytest.raises(SystemExit) as exc:
        with job(tmp_path) as j:
            j.own(Part(stopped, "trainer"))
            j.own(Part(stopped, "sampler"))
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)                                   # the handler interrupts this
    assert exc.value.code == 128 + signal.SIGTERM and stopped == ["sampler", "trainer"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_jobs_own_error_wins_over_a_failing_shutdown(tmp_path):
    stopped = []
    with pytest.raises(UserError, match="bad input"):
        with job(tmp_path) as j:
            j.own(Part(stopped, "first"))
            j.own(Part(stopped, "stuck", fails=True))
            raise UserError("bad input")
    assert stopped == ["stuck", "first"]                     # the others still stopped
    with pytest.raises(RuntimeError, match="would not stop"):  # on success, a failed stop is reported
        with job(tmp_path) as j:
            j.own(Part(stopped, "stuck", fails=True))


def test_a_quiet_run_sends_library_output_to_the_log_and_restores_the_terminal(tmp_path, capfd):
    before = os.fstat(1).st_ino, os.fstat(2).st_ino
    from synthpref.monitor.console import say
    with job(tmp_path, verbose=False):
        os.write(1, b"engine chatter\n")
        os.write(2, b"library warning\n")
        say("our own line")
    assert (os.fstat(1).st_ino, os.fstat(2).st_ino) == before
    log = (tmp_path / "out" / "logs" / "driver.log").read_text()
    assert "engine chatter" in log and "library warning" in log and "our own line" not in log
    out, err = capfd.readouterr()
    assert "our own line" in out and "chatter" not in out + err and "warning" not in out + err
