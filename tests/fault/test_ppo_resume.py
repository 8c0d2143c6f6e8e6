"""`synthpref ppo` as a user runs it, direct RLAIF: a tiny vLLM judge on its own pool rates every completion
0-9 and the reward is its expected rating; a TRL-signature reward function fails a known subset. The
driver is killed with SIGKILL after its step-2 checkpoint and rerun; one run serves every check here."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.helpers import job_command, kill_then_rerun, vllm_processes

pytestmark = [pytest.mark.fault, pytest.mark.usefixtures("ray_session")]   # jobs join the session's Ray

STEPS, PER_STEP, K = 4, 8, 3


def ppo_config(out: Path, prompts: Path, policy: str) -> dict:
    return {"output_dir": str(out), "steps": STEPS, "prompts_per_step": PER_STEP, "save_every": 2,
            "keep_checkpoints": 1, "estimator": "rloo", "mini_batch": 12, "seed": 3,
            "data": {"path": str(prompts)},
            "policy": {"model": policy, "samples_per_prompt": K, "max_tokens": 12, "engine": {"max_model_len": 1024}},
            "judging": {"mode": "pointwise", "judges": [
                {"id": "rater", "type": "vllm", "model": policy, "template": "pointwise-rating-logprob",
                 "engine": {"max_model_len": 512}},
                {"id": "sometimes", "type": "function", "function": "tests.rule_judges:fails_on_some", "weight": 0.0}]},
            "train": {"lr": 1.0e-4, "micro_batch": 12, "max_len": 1024, "dtype": "float32"}}


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory, tiny_model):
    from synthpref.data.demo_prompts import demo_prompts
    from tests.rule_judges import long_prompts

    tmp = tmp_path_factory.mktemp("ppo")
    prompts = tmp / "prompts.jsonl"
    rows = demo_prompts(12) + long_prompts(4)          # 3 of every 4 prompts fit the judge's context
    rows = [rows[i] for i in sorted(range(16), key=lambda i: (i % 4, i))]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp / "run"
    command = job_command("ppo", ppo_config(out, prompts, tiny_model), tmp)
    before = {p.pid for p in vllm_processes()}
    at_kill, rerun = kill_then_rerun(command, out, 2, "ppo")     # the driver dies during step 3
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"out": out, "at_kill": at_kill, "events": events, "before": before, "stdout": rerun.stdout,
            "report": json.loads((out / "report.json").read_text())}


def step_table(out: Path, step: int, name: str) -> list[dict]:
    return pq.read_table(out / "steps" / f"{step:06d}" / f"{name}.parquet").to_pylist()


def test_rerun_resumes_at_the_last_checkpoint_and_records_each_step_once(resumed_run):
    assert resumed_run["at_kill"] == 2
    events = resumed_run["events"]
    assert [e["resumed_after_step"] for e in events if e["event"] == "start"] == [0, 2]
    assert [e["step"] for e in events if e["event"] == "ppo"] == [1, 2, 3, 4]
    assert [e["step"] for e in events if e["event"] == "ppo_phases"] == [1, 2, 3, 4]
    assert [s["step"] for s in resumed_run["report"]["steps"]] == [1, 2, 3, 4]
    checkpoints = resumed_run["out"] / "checkpoints" / "policy"
    assert sorted(p.name for p in checkpoints.glob("step*")) == ["step4"]        # keep_checkpoints: 1
    assert (resumed_run["out"] / "policy" / "model.safetensors").exists()
    assert not [p.pid for p in vllm_processes() if p.pid not in resumed_run["before"]]
    assert "step   reward" in resumed_run["stdout"]


def test_every_reward_is_the_expected_rating_of_its_stored_probabilities(resumed_run):
    from synthpref.judging.expected_score import rescale
    out, checked = resumed_run["out"], 0
    for step in range(1, STEPS + 1):
        judged = {j["pair_id"]: j for j in step_table(out, step, "judgments") if j["judge_id"] == "rater"}
        for row in step_table(out, step, "rewards"):
            j = judged[row["sample_id"]]
            if j["verdict"] == "FAILED":
                continue
            probs = json.loads(j["choice_probs"])
            assert sorted(probs) == [str(i) for i in range(10)] and sum(probs.values()) == pytest.approx(1.0)
            expected = rescale(sum(int(label) * p for label, p in probs.items()), 0, 9)
            if row["reward"] is not None:
                assert row["reward"] == pytest.approx(expected, abs=1e-9)
                checked += 1
    assert checked > 0


def test_failed_verdicts_and_small_groups_are_left_out_and_counted_exactly(resumed_run):
    out = resumed_run["out"]
    ppo = {e["step"]: e for e in resumed_run["events"] if e["event"] == "ppo"}
    for step in range(1, STEPS + 1):
        samples = step_table(out, step, "samples")
        assert len(samples) == PER_STEP * K
        rows = {r["sample_id"]: r for r in step_table(out, step, "rewards")}
        judged = {(j["pair_id"], j["judge_id"]): j for j in step_table(out, step, "judgments")}
        failed = set()
        for s in samples:
            rater, fn = judged[(s["sample_id"], "rater")], judged[(s["sample_id"], "sometimes")]
            if s["token_ids"][0] % 4 == 0:
                assert fn["verdict"] == "FAILED" and "returned None" in fn["error"]
                failed.add(s["sample_id"])
            if rater["verdict"] == "FAILED":
                assert rater["error"].startswith("prompt_too_long")
                failed.add(s["sample_id"])
        # each long prompt's completions fail at the judge; the short ones fit
        assert sum(judged[(s["sample_id"], "rater")]["verdict"] == "FAILED" for s in samples) == K * 2
        assert {sid for sid, r in rows.items() if r["reward"] is None} == failed
        left = {}
        for s in samples:
            if s["sample_id"] not in failed:
                left.setdefault(s["prompt_id"], []).append(s["sample_id"])
        lonely = {sid for ids in left.values() if len(ids) < 2 for sid in ids}
        trained = {sid for sid, r in rows.items() if r["trained"]}
        assert trained == set(s["sample_id"] for s in samples) - failed - lonely
        assert all(rows[sid]["dropped_reason"].startswith("group_too_small") for sid in lonely)
        assert ppo[step]["reward_failed"] == len(failed) and ppo[step]["trained_rows"] == len(trained)
        assert ppo[step]["dropped_groups"] == sum(len(ids) < 2 for ids in left.values())


def test_judges_overlap_the_reference_pass_and_the_first_ratio_is_one(resumed_run):
    phases = [e for e in resumed_run["events"] if e["event"] == "ppo_phases"]
    for e in phases:
        (r0, r1), (f0, f1) = e["spans"]["reward"], e["spans"]["reference"]
        assert max(r0, f0) < min(r1, f1), e["spans"]          # the two intervals overlap
    for e in (e for e in resumed_run["events"] if e["event"] == "ppo"):
        assert e["first_ratio_max_dev"] < 1e-5 and e["first_clip_fraction"] == 0.0
        assert e["engine_trainer_logprob_gap_max"] < 0.5 and "time_sync_s" in e     # bf16 or fp32 engine, fp32 trainer
    assert resumed_run["report"]["engine_trainer_logprob_gap_max"] is not None
