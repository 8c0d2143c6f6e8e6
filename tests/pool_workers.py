"""Small real Ray actors for the replica-pool tests: they echo requests and can die or fail on cue."""
from __future__ import annotations

import os
import time
from pathlib import Path


class EchoWorker:
    """`work(requests)`: each request {"id", "sleep"?, "die_once"?: flag file, "fail"?: times to raise}."""

    def __init__(self, fail_init: bool = False):
        if fail_init:
            raise ValueError("this replica cannot start: bad model path")
        self.calls = 0

    def info(self) -> dict:
        return {"pid": os.getpid()}

    def work(self, requests: list[dict]) -> list[dict]:
        self.calls += 1
        for req in requests:
            flag = req.get("die_once")
            if flag and not Path(flag).exists():
                Path(flag).write_text("died")
                os.kill(os.getpid(), 9)              # a real kill -9 in the middle of a chunk
            counter = req.get("fail_file")
            if counter:
                n = int(Path(counter).read_text()) if Path(counter).exists() else 0
                if n < req.get("fail", 0):
                    Path(counter).write_text(str(n + 1))
                    raise RuntimeError(f"transient failure {n + 1}")
        t0 = time.time()
        time.sleep(sum(r.get("sleep", 0) for r in requests))
        return [{"id": r["id"], "pid": os.getpid(), "t0": t0, "t1": time.time()} for r in requests]

    def shutdown(self) -> bool:
        return True
