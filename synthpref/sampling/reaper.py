"""Reap a dead actor's vLLM engine processes.

When the process that owns a `vllm.LLM` dies without shutting it down (kill -9, os._exit), its
EngineCore and worker processes live on as orphans holding gigabytes (STACK.md). `watch_children()`
records the engine's child processes and starts a small detached watcher that kills them once the
owner is gone. Run as a module it is that watcher: `python -m synthpref.sampling.reaper OWNER JSON`.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil


class ChildReaper:
    def __init__(self, targets: list[tuple[int, float]], watcher: subprocess.Popen | None):
        self.targets = targets
        self.watcher = watcher

    @property
    def pids(self) -> list[int]:
        return [pid for pid, _ in self.targets]

    def kill_now(self) -> None:
        kill_targets(self.targets)
        if self.watcher and self.watcher.poll() is None:
            self.watcher.kill()
            self.watcher.wait(timeout=5)


def kill_targets(targets: list[tuple[int, float]]) -> None:
    """Kill each (pid, create_time) that is still the same process (guards against pid reuse)."""
    procs = []
    for pid, created in targets:
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) < 1e-3:
                proc.kill()
                procs.append(proc)
        except psutil.Error:
            continue
    psutil.wait_procs(procs, timeout=10)


def watch_children() -> ChildReaper | None:
    """Record this process's descendants and start a detached watcher for them."""
    me = psutil.Process()
    targets = []
    for child in me.children(recursive=True):
        try:
            targets.append((child.pid, child.create_time()))
        except psutil.Error:
            continue
    if not targets:
        return None
    watcher = subprocess.Popen([sys.executable, "-m", "synthpref.sampling.reaper", str(me.pid),
                                str(me.create_time()), json.dumps(targets)],
                               start_new_session=True, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return ChildReaper(targets, watcher)


def _owner_alive(pid: int, created: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - created) < 1e-3 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def main(argv: list[str]) -> int:
    owner, owner_created, targets = int(argv[0]), float(argv[1]), [tuple(t) for t in json.loads(argv[2])]
    while _owner_alive(owner, owner_created):
        if not any(psutil.pid_exists(pid) for pid, _ in targets):
            return 0
        time.sleep(0.5)
    kill_targets(targets)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
