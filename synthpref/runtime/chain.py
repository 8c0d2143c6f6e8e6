"""Jobs chained into one: each phase is an ordinary job (its own run folder, rerun rule and report) run
by name, so no driver imports another. The chain records which phases finished (`OUTPUT/chain.json`,
with each phase's run tree): a rerun skips a finished phase whose config is unchanged and reruns the
others, each of which resumes where it stopped by its own rule (finished shards, epochs, checkpoints).
A finished phase whose config changed (a raised length key: more epochs, steps) while later phases were
already made from its output is refused, naming the key, rather than leaving them stale.
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from synthpref.data.shards import atomic_write_bytes
from synthpref.runtime.rerun import RunMismatch, rerun_change, run_tree

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
        configs = [phase.make_config() for phase in phases]
        trees = [json.loads(json.dumps(run_tree(cfg, **(phase.keys or {})), default=str))
                 for phase, cfg in zip(phases, configs)]
        self.refuse_stale(phases, trees)
        for phase, cfg, tree in zip(phases, configs, trees):
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

    def refuse_stale(self, phases: list[Phase], trees: list[dict]) -> None:
        """A finished phase that would run again (its config changed) while a later phase already has
        outputs made from it: refuse, naming the changed key and the later phases."""
        recorded = self.state["phases"]
        for i, (phase, tree) in enumerate(zip(phases, trees)):
            entry = recorded.get(phase.name)
            later = [p.name for p in phases[i + 1:] if p.name in recorded]
            if entry and entry.get("finished") and entry.get("config") != tree and later:
                change = rerun_change(entry["config"], tree) or "its config"
                raise RunMismatch(f"{self.path}: phase {phase.name} changed ({change}) after {', '.join(later)} "
                                  f"were made from its output; use another output_dir, or remove the folders of "
                                  f"{', '.join(later)} and their entries in chain.json to redo them")
