"""HTTP judges behind a proxy that fails 30% of requests (429, 500, garbage, timeouts), in front of a fast
loopback fake of an OpenAI server (tests/fake_openai.py): every failed attempt is retried, every final
failure is a FAILED verdict with its error, the counts add up, cost per label is reported, and the API key
is written nowhere. One smoke test runs the same judge against vLLM's own OpenAI-compatible server."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.fake_openai import FakeOpenAIServer
from tests.flaky_proxy import FlakyProxy
from tests.helpers import label_command, start_openai_server, stop_process_group

pytestmark = [pytest.mark.fault, pytest.mark.usefixtures("ray_session")]   # jobs join the session's Ray
API_KEY = "sk-synthpref-TEST-4f9c2e7a1b"          # recognisable, so a grep finds any copy of it
KEY_ENV = "SYNTHPREF_TEST_JUDGE_KEY"


@pytest.fixture
def fake_server():
    server = FakeOpenAIServer(API_KEY)
    yield server.url
    server.close()


def http_judge(judge_id: str, url: str, verdict: str, max_retries: int, timeout_s: float = 1.0, **extra) -> dict:
    return {"id": judge_id, "type": "http", "verdict": verdict, "max_tokens": 8, "chunk_size": 8,
            "usd_per_1m_prompt_tokens": 0.15, "usd_per_1m_completion_tokens": 0.60,
            "pool": {"replicas": 2, "max_inflight": 2},
            "endpoint": {"base_url": url, "model": "tiny-judge", "api_key_env": KEY_ENV, "timeout_s": timeout_s,
                         "max_retries": max_retries, "backoff_s": 0.02, "backoff_max_s": 0.1, "concurrency": 8},
            **extra}


def ready_pairs(path: Path, n: int) -> None:
    rows = [{"prompt": f"Tell me about the sea, question {i}",
             "completions": [f"The sea is large and deep {i}", f"answer number {i * 7}"]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_flaky_endpoint_retries_counts_and_no_secret_anywhere(fake_server, tmp_path):
    proxy = FlakyProxy(fake_server, fault_rate=0.3, hang_s=1.5, seed=1, client_timeout_s=1.0)
    try:
        ready_pairs(tmp_path / "pairs.jsonl", 16)
        out = tmp_path / "out"
        config = {"output_dir": str(out), "data": {"path": str(tmp_path / "pairs.jsonl"), "shard_size": 6},
                  "judging": {"jury_rule": "mean_prob", "judges": [
                      http_judge("logprob-retrying", proxy.url, "logprob", max_retries=12),
                      http_judge("text-no-retry", proxy.url, "text", max_retries=0),
                      {"id": "longer", "type": "function", "function": "synthpref.judging.functions:length"}]}}
        started = time.time()
        proc = subprocess.run(label_command(config, tmp_path), capture_output=True, text=True, timeout=900,
                              env={**os.environ, KEY_ENV: API_KEY})
        assert proc.returncode == 0, proc.stderr[-4000:]
    finally:
        proxy.close()
    summary = json.loads((out / "summary.json").read_text())
    rows = pq.read_table(out / "judgments").to_pylist()

    # exactly one row per (pair, judge, order)
    assert len(rows) == 16 * 2 * 3 == len({(r["pair_id"], r["judge_id"], r["order"]) for r in rows})
    retrying = [r for r in rows if r["judge_id"] == "logprob-retrying"]
    once = [r for r in rows if r["judge_id"] == "text-no-retry"]
    # the retrying judge got through every fault: each attempt is one request the proxy saw
    assert all(r["verdict"] != "FAILED" and r["p_first"] is not None for r in retrying)
    assert sum(r["attempts"] for r in retrying) == proxy.requests[1]
    assert sum(r["attempts"] - 1 for r in retrying) == sum(n for (mt, _), n in proxy.faults.items() if mt == 1) > 0
    # the judge without retries fails exactly where the proxy failed it, with the error kept; the server's
    # own unparseable answers ("[[A]", as a small model stops short) are FAILED too, with their raw text
    failed = [r for r in once if r["verdict"] == "FAILED"]
    gave_up = [r for r in failed if r["error"].startswith("gave up after 1 attempts")]
    assert all(r["attempts"] == 1 for r in once) and proxy.requests[8] == len(once)
    assert len(gave_up) == sum(n for (mt, _), n in proxy.faults.items() if mt == 8) > 0
    assert all(any(k in r["error"] for k in ("HTTP 429", "HTTP 500", "unreadable answer", "timeout")) for r in gave_up)
    assert all(r["error"].startswith("unparseable verdict") and r["raw"] for r in failed if r not in gave_up)
    assert {kind for (_, kind) in proxy.faults} >= {"429", "500", "garbage", "timeout"}
    # the counts add up
    c = summary["counts"]
    assert c["judgments"] == 96 and c["failed_verdicts"] == len(failed)
    assert c["preferences"] > 0
    assert c["preferences"] + c["ties"] + c["failed_pairs"] == c["pairs"] == 16
    assert summary["judges"]["logprob-retrying"]["retries"] == sum(r["attempts"] - 1 for r in retrying)
    assert summary["judges"]["text-no-retry"]["failed"] == len({r["pair_id"] for r in failed})
    # tokens and cost per label, from the server's own usage counts
    pt = {j: sum(r["prompt_tokens"] or 0 for r in rows if r["judge_id"] == j) for j in ("logprob-retrying", "text-no-retry")}
    ct = {j: sum(r["completion_tokens"] or 0 for r in rows if r["judge_id"] == j) for j in pt}
    assert pt["logprob-retrying"] > 16 * 2 * 50 and ct["logprob-retrying"] == 32
    usd = sum(pt[j] * 0.15e-6 + ct[j] * 0.60e-6 for j in pt)
    assert summary["cost"]["usd_total"] == pytest.approx(usd)
    assert summary["cost"]["usd_per_label"] == pytest.approx(usd / c["preferences"])
    assert summary["cost"]["usd_per_label"] < 0.01                      # far below a human label's $0.50
    # the key is nowhere: not in outputs, logs, provenance, the job's stdout/stderr, or Ray's session files
    leaks = [str(p) for p in out.rglob("*") if p.is_file() and API_KEY.encode() in p.read_bytes()]
    assert API_KEY not in proc.stdout + proc.stderr
    for p in Path("/tmp/ray").rglob("*"):
        try:
            if p.is_file() and not p.is_symlink() and p.stat().st_mtime >= started and API_KEY.encode() in p.read_bytes():
                leaks.append(str(p))
        except OSError:     # sockets, files that vanished
            pass
    assert leaks == []


def test_missing_key_and_unreachable_endpoint_are_config_errors(tmp_path):
    ready_pairs(tmp_path / "pairs.jsonl", 2)
    config = {"output_dir": str(tmp_path / "out"), "data": {"path": str(tmp_path / "pairs.jsonl")},
              "judging": {"judges": [http_judge("remote", "http://127.0.0.1:9/v1", "text", 0)]}}
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    proc = subprocess.run(label_command(config, tmp_path), capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and f"environment variable {KEY_ENV} is not set" in proc.stderr
    proc = subprocess.run(label_command(config, tmp_path), capture_output=True, text=True, timeout=300,
                          env={**env, KEY_ENV: API_KEY})
    assert proc.returncode == 2 and "judging.judges.0.endpoint.base_url: cannot reach" in proc.stderr
    assert API_KEY not in proc.stderr


@pytest.fixture(scope="module")
def vllm_server(first_judge_model, tmp_path_factory):
    proc, url = start_openai_server(first_judge_model, tmp_path_factory.mktemp("server") / "vllm.log", API_KEY)
    yield url
    stop_process_group(proc)


def test_smoke_against_vllms_own_openai_server(vllm_server, tmp_path):
    """The same judges against a real server: logprob verdicts from its top_logprobs, text verdicts parsed,
    token counts from its usage, and the key nowhere in the outputs."""
    ready_pairs(tmp_path / "pairs.jsonl", 3)
    out = tmp_path / "out"
    config = {"output_dir": str(out), "data": {"path": str(tmp_path / "pairs.jsonl")},
              "judging": {"judges": [http_judge("logprob", vllm_server, "logprob", max_retries=2, timeout_s=60),
                                     http_judge("text", vllm_server, "text", max_retries=2, timeout_s=60)]}}
    proc = subprocess.run(label_command(config, tmp_path), capture_output=True, text=True, timeout=600,
                          env={**os.environ, KEY_ENV: API_KEY})
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = pq.read_table(out / "judgments").to_pylist()
    assert len(rows) == 3 * 2 * 2
    logprob = [r for r in rows if r["judge_id"] == "logprob"]
    assert all(r["verdict"] != "FAILED" and 0 <= r["p_first"] <= 1 and r["prompt_tokens"] > 50 for r in logprob)
    text = [r for r in rows if r["judge_id"] == "text"]
    assert all(r["raw"] and (r["verdict"] != "FAILED" or r["error"].startswith("unparseable verdict")) for r in text)
    assert not [p for p in out.rglob("*") if p.is_file() and API_KEY.encode() in p.read_bytes()]
