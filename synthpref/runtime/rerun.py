"""The one rerun rule of every job, and its progress on disk.

A job's run tree is its config minus what only changes where or how fast work runs (placement keys,
progress bars, log level, the Ray address). The first run writes it to `OUTPUT/run.json`; a rerun in the
same folder compares trees key by key: a length key of the job (epochs, iterations, steps) may grow and
the run continues after its last finished unit; any other change is refused, naming the key.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from synthpref.data.schema import SCHEMA_VERSION
from synthpref.data.shards import atomic_write_bytes
from synthpref.errors import UserError

# Settings that change where or how fast work runs, not what it produces.
# (num_gpus is not one: with dtype auto it decides bf16 or fp32.)
PLACEMENT_KEYS = {"num_cpus", "cpu_cores", "kv_cache_gib", "gpu_memory_utilization",
                  "tensor_parallel_size", "chunk_size", "pool", "base_url", "api_key_env", "timeout_s",
                  "max_retries", "backoff_s", "backoff_max_s", "concurrency", "usd_per_1m_prompt_tokens",
                  "usd_per_1m_completion_tokens", "start_timeout_s", "chunk_pairs", "rank_timeout_s"}
RUN_ONLY_KEYS = {"output_dir", "progress", "verbose", "ray"}


class RunMismatch(UserError):
    """The output folder holds a run of another config; the message names the key that changed."""


def run_tree(cfg: Any, **extra) -> dict:
    """The settings that make two runs the same run, as a flat {dotted.key: value} mapping."""
    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in PLACEMENT_KEYS}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node
    tree = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RUN_ONLY_KEYS}
    return flatten({**strip(tree), "schema_version": SCHEMA_VERSION, **extra})


def flatten(node: Any, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out or {prefix.rstrip("."): {}}
    if isinstance(node, list) and node and all(isinstance(v, dict) for v in node):
        out = {f"{prefix}count": len(node)}
        for i, v in enumerate(node):
            out.update(flatten(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): node}


def rerun_change(saved: dict, now: dict, length_keys: tuple[str, ...] = ()) -> str | None:
    """None when `now` continues the run `saved` describes; else the first changed key, old and new value."""
    for key in sorted(set(saved) | set(now)):
        old, new = saved.get(key, "<absent>"), now.get(key, "<absent>")
        if old == new:
            continue
        if key in length_keys and isinstance(old, int) and isinstance(new, int) and new >= old:
            continue
        hint = f" (a rerun may raise {key}, not lower it)" if key in length_keys else ""
        return f"{key}: was {old!r}, now {new!r}{hint}"
    return None


LEGACY_FILES = ("state.json", "manifest.json")     # progress files of runs written before run.json


def refuse_other_job(out_dir: str | Path, job: str) -> None:
    """For jobs that keep no run.json (they redo everything): never write into another job's folder."""
    path = Path(out_dir) / "run.json"
    other = json.loads(path.read_text()).get("job") if path.exists() else None
    legacy = [name for name in LEGACY_FILES if (Path(out_dir) / name).exists()]
    if (other and other != job) or legacy:
        raise RunMismatch(f"{Path(out_dir)}: this output folder holds a {other or 'previous'!s} run "
                          f"({'run.json' if other else legacy[0]}); use another output_dir for {job}")


class RunState:
    """`OUTPUT/run.json`: the job, its run tree and its progress ({"finished": n, ...}). It is written when
    the job claims the folder (`claim()`, just before its first output is written) and atomically after
    each finished unit, so a run that failed before any output leaves nothing that would refuse a
    corrected rerun."""

    def __init__(self, out_dir: str | Path, job: str, tree: dict, length_keys: tuple[str, ...] = ()):
        self.path = Path(out_dir) / "run.json"
        self.claimed = self.path.exists()
        fresh = {"job": job, "config": tree, "finished": 0}
        legacy = [name for name in LEGACY_FILES if (Path(out_dir) / name).exists()]
        if not self.claimed and legacy:
            raise RunMismatch(f"{Path(out_dir)}: this output folder holds a run written by an older synthpref "
                              f"({legacy[0]}, no run.json); use another output_dir")
        self.data = json.loads(self.path.read_text()) if self.claimed else fresh
        if self.data.get("job") != job:
            raise RunMismatch(f"{self.path}: this output folder holds a {self.data.get('job')!r} run, not {job!r}; "
                              f"use another output_dir")
        change = rerun_change(self.data["config"], tree, length_keys)
        if change:
            raise RunMismatch(f"{self.path}: this output folder holds a run of another config ({change}); rerun "
                              f"with the same settings to resume, or use another output_dir")
        self.data["config"] = tree              # length keys as raised now

    def claim(self) -> None:
        """Record that this folder holds this run (idempotent)."""
        if not self.claimed:
            self.save()

    @property
    def finished(self) -> int:
        return int(self.data["finished"])

    def get(self, key: str, default=None):
        return self.data.get(key, default)

    def mark(self, n: int, **extra) -> None:
        self.data = {**self.data, **extra, "finished": n}
        self.save()

    def save(self) -> None:
        atomic_write_bytes(self.path, json.dumps(self.data, indent=2, default=str).encode())
        self.claimed = True
