"""Live metrics for an operator: while a dpo job trains, the Prometheus endpoint of the session's Ray
(its metrics agent) serves synthpref's gauges with the job's current values, tagged with the job and run;
after it, the last values equal the last records of metrics.jsonl. The Grafana board queries them."""
from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.request

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]


def scrape(name: str, run: str) -> float | None:
    """The value of gauge `name` for `run` on the session's Prometheus endpoint (None: not there yet)."""
    port = os.environ["SYNTHPREF_TEST_METRICS_PORT"]
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:                        # the agent busy or not up yet: nothing seen this time
        return None
    for line in text.splitlines():
        if line.startswith(name + "{") and f'run="{run}"' in line and 'synthpref_job="dpo"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_running_job_serves_its_metrics_in_prometheus_format(tmp_path, tiny_model):
    from synthpref.algorithms.dpo import run_dpo
    from synthpref.config import DPOConfig, from_dict, validate
    from tests.rule_judges import rule_pairs
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rule_pairs(64)))
    run = "metrics-run"
    cfg = validate(from_dict(DPOConfig, {
        "output_dir": str(tmp_path / run), "model": tiny_model, "progress": False, "eval_fraction": 0.25,
        "data": {"path": str(data)}, "train": {"lr": 1.0e-3, "epochs": 12, "micro_batch": 8, "max_len": 256,
                                                "dtype": "float32"}}))
    done = {}
    job = threading.Thread(target=lambda: done.update(report=run_dpo(cfg)))
    job.start()
    seen = []
    while job.is_alive():
        step = scrape("ray_synthpref_train_step", run)
        if step is not None:
            seen.append(step)
        time.sleep(0.5)
    job.join()
    total = done["report"]["steps"]
    assert any(1 <= s < total for s in seen), (seen, total)              # seen live, mid-run
    events = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    last = [e for e in events if e["event"] == "train"][-1]
    deadline = time.time() + 10
    while scrape("ray_synthpref_train_step", run) != total and time.time() < deadline:
        time.sleep(0.5)
    assert scrape("ray_synthpref_train_step", run) == total
    assert scrape("ray_synthpref_train_loss", run) == pytest.approx(last["loss"], rel=1e-6)
    assert scrape("ray_synthpref_eval_held_out_accuracy", run) is not None


def test_the_grafana_board_queries_metrics_synthpref_exports():
    board = json.loads((REPO / "cluster" / "grafana-synthpref.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    names = {re.match(r"(ray_synthpref_\w+)", e).group(1) for e in exprs}
    assert {"ray_synthpref_train_loss", "ray_synthpref_pool_queued_chunks", "ray_synthpref_pool_replicas",
            "ray_synthpref_shard_labels_per_s", "ray_synthpref_ppo_kl"} <= names
    assert all('synthpref_job=~"$synthpref_job"' in e for e in exprs)
