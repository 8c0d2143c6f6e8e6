"""kill -9 of a judge replica, of a sampler replica, and of the driver, in real `synthpref label` jobs:
each job ends with exactly the expected rows, none duplicated, and no vLLM process left behind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.helpers import label_command, vllm_processes

pytestmark = [pytest.mark.fault, pytest.mark.usefixtures("ray_session")]   # jobs join the session's Ray


def events(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(out: Path, proc: subprocess.Popen, predicate, timeout: float = 600) -> list[dict]:
    """Poll metrics.jsonl until `predicate(events)` holds; fail if the job ends first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        seen = events(out)
        if predicate(seen):
            return seen
        assert proc.poll() is None, f"the job ended before the fault could be injected: {proc.stderr.read()[-3000:]}"
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the job to reach the fault point")


def no_new_vllm_processes(before: set[int], timeout: float = 60) -> list[int]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        left = [p.pid for p in vllm_processes() if p.pid not in before]
        if not left:
            return []
        time.sleep(1)
    return left


def ready_pairs(path: Path, n: int) -> None:
    rows = [{"prompt": f"Tell me about the sea, question {i}",
             "completions": [f"The sea is large and deep, {i} times over", f"answer number {i * 7}"]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def start(config: dict, tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen(label_command(config, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_replica(out: Path, proc: subprocess.Popen, pool_prefix: str, after_shards: int) -> dict:
    """kill -9 the slot-0 replica of a pool once `after_shards` shards are written; returns its ready event."""
    seen = wait_for(out, proc, lambda ev: sum(e["event"] == "shard" for e in ev) >= after_shards)
    victim = next(e for e in seen if e["event"] == "replica_ready" and e["pool"].startswith(pool_prefix) and e["slot"] == 0)
    os.kill(victim["pid"], signal.SIGKILL)
    return victim


def test_kill_9_sampler_and_judge_replicas_mid_job(tmp_path, tiny_model, first_judge_model):
    """One job, two faults: a sampler replica dies after the first shard, a judge replica after the second."""
    before = {p.pid for p in vllm_processes()}
    prompts = [{"prompt": f"Write a short poem about the sea, number {i}"} for i in range(36)]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    out = tmp_path / "out"
    judge = {"id": "first", "model": first_judge_model, "verdict": "text", "max_tokens": 16, "chunk_size": 4,
             "engine": {"max_model_len": 1024}, "pool": {"replicas": 2}}
    proc = start({"output_dir": str(out), "data": {"path": str(tmp_path / "prompts.jsonl"), "shard_size": 4},
                  "policy": {"model": tiny_model, "samples_per_prompt": 2, "max_tokens": 48, "chunk_size": 2,
                             "engine": {"max_model_len": 512}, "pool": {"replicas": 2}},
                  "judging": {"judges": [judge]}}, tmp_path)
    sampler_victim = kill_replica(out, proc, "sampler", after_shards=1)
    judge_victim = kill_replica(out, proc, "judge:", after_shards=2)
    _, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-4000:]
    lost = sorted(e["pid"] for e in events(out) if e["event"] == "replica_lost")
    assert lost == sorted([sampler_victim["pid"], judge_victim["pid"]])
    samples = pq.read_table(out / "samples").to_pylist()
    assert len(samples) == 72 == len({s["sample_id"] for s in samples})  # k per prompt, none lost or doubled
    summary = json.loads((out / "summary.json").read_text())
    c = summary["counts"]
    assert c["sampling_errors"] == 0 and c["samples"] == 72
    rows = pq.read_table(out / "judgments").to_pylist()
    assert len(rows) == 2 * c["pairs"] == c["judgments"] == len({(r["pair_id"], r["judge_id"], r["order"]) for r in rows})
    # lost chunks ran again elsewhere: no verdict failed for the kill (the tiny judge's own unparseable
    # answers, e.g. "[[A]", are FAILED with their raw text, as always)
    assert all(r["error"] is None or r["error"].startswith("unparseable verdict") for r in rows)
    assert c["preferences"] + c["ties"] + c["failed_pairs"] == c["pairs"]
    assert no_new_vllm_processes(before) == []


def comparable(table_dir: Path, key: tuple, drop: tuple) -> list[dict]:
    rows = pq.read_table(table_dir).to_pylist()
    return sorted(({k: v for k, v in r.items() if k not in drop} for r in rows), key=lambda r: tuple(r[k] for k in key))


def test_driver_killed_then_rerun_equals_an_uninterrupted_run(tmp_path, first_judge_model):
    before = {p.pid for p in vllm_processes()}
    ready_pairs(tmp_path / "pairs.jsonl", 72)
    judges = [{"id": "first", "model": first_judge_model, "verdict": "text", "max_tokens": 16, "chunk_size": 4,
               "engine": {"max_model_len": 1024}},
              {"id": "longer", "type": "function", "function": "synthpref.judging.functions:length"}]

    def config(out: Path) -> dict:
        return {"output_dir": str(out), "data": {"path": str(tmp_path / "pairs.jsonl"), "shard_size": 4},
                "judging": {"judges": judges}}
    reference = tmp_path / "reference"
    (tmp_path / "a").mkdir()
    done = subprocess.run(label_command(config(reference), tmp_path / "a"), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]

    out = tmp_path / "killed"
    (tmp_path / "b").mkdir()
    proc = start(config(out), tmp_path / "b")
    wait_for(out, proc, lambda ev: sum(e["event"] == "shard" for e in ev) >= 3)
    proc.send_signal(signal.SIGKILL)                                        # the driver dies mid-job
    proc.communicate(timeout=60)
    assert no_new_vllm_processes(before, timeout=120) == []                 # its engines do not outlive it
    written = sum(e["event"] == "shard" for e in events(out))
    assert 3 <= written < 18

    rerun = subprocess.run(label_command(config(out), tmp_path / "b"), capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shards"]["skipped_as_done"] == written and summary["shards"]["run"] == 18 - written
    ref_summary = json.loads((reference / "summary.json").read_text())
    assert summary["counts"] == ref_summary["counts"]
    for table, key, drop in (("preferences", ("pair_id",), ()),
                             ("judgments", ("pair_id", "judge_id", "order"), ("latency_s",)),
                             ("samples", ("sample_id",), ())):
        assert comparable(out / table, key, drop) == comparable(reference / table, key, drop), table
    assert no_new_vllm_processes(before) == []
