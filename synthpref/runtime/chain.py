"""Jobs chained into one: each phase is an ordinary job (its own run folder, rerun rule and report) run
by name, so no driver imports another. The chain records which phases finished (`OUTPUT/chain.json`,
with each phase's run tree): a rerun skips a finished phase whose config is unchanged and reruns the
others, each of which resumes where it stopped by its own rule (finished shards, epochs, checkpoints).
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from synthpref.data.shards import atomic_write_bytes
from synthpref.runtime.rerun import run_tree

# job name -> "module:function" of its driver (the same drivers the command line runs)
JOBS = {
    "label": "synthpref.algorithms.label:run_label",
    "train-rm": "synthpref.algorithms.reward_model:run_train_rm",
    "ppo": "synthpref.algorithms.ppo:run_ppo",
    "dpo": "synthpref.algorithms.dpo:run_dpo",
    "rft": "synthpref.algorithms.rft:run_rft",
    "cai-sl": "synthpref.algorithms.cai_sl:run_cai_sl",
}


def run_job(job: str, cfg: Any) -> dict:
    """Run the driver of `job` on `cfg`; returns its report."""
    module, _, function = JOBS[job].partition(":")
    return getattr(importlib.import_module(module), function)(cfg)


@dataclass
class Phase:
    name: str                       # the phase's name in the chain (e.g. "sl", "label")
    job: str                        # the job that runs it (a key of JOBS)
    make_config: Callable[[], Any]  # the phase's config, built when the phase is reached (it may read earlier outputs)
    keys: dict | None = None        # more of what makes the phase the same phase (e.g. a constitution file's hash)


class Chain:
    def __init__(self, out_dir: str | Path, events: Callable[[dict], None] | None = None):
        self.path = Path(out_dir) / "chain.json"
        self.events = events or (lambda record: None)
        self.state = json.loads(self.path.read_text()) if self.path.exists() else {"phases": {}}

    def done(self, phase: str, tree: dict) -> bool:
        entry = self.state["phases"].get(phase)
        return bool(entry and entry.get("finished") and entry.get("config") == tree)

    def _save(self) -> None:
        atomic_write_bytes(self.path, json.dumps(self.state, indent=2, default=str).encode())

    def run(self, phases: list[Phase]) -> dict[str, dict]:
        """Run each phase not yet finished with its current config; returns {phase: report} (a skipped
        phase's report is the one recorded when it finished)."""
        reports = {}
        for phase in phases:
            cfg = phase.make_config()
            tree = json.loads(json.dumps(run_tree(cfg, **(phase.keys or {})), default=str))
            if self.done(phase.name, tree):
                reports[phase.name] = self.state["phases"][phase.name]["report"]
                self.events({"event": "phase", "phase": phase.name, "job": phase.job, "status": "finished before"})
                continue
            self.state["phases"][phase.name] = {"job": phase.job, "config": tree, "finished": False,
                                                "output_dir": str(cfg.output_dir)}
            self._save()
            self.events({"event": "phase", "phase": phase.name, "job": phase.job, "status": "started"})
            report = run_job(phase.job, cfg)
            self.state["phases"][phase.name].update(finished=True, report=json.loads(json.dumps(report, default=str)))
            self._save()
            self.events({"event": "phase", "phase": phase.name, "job": phase.job, "status": "finished"})
            reports[phase.name] = report
        return reports
