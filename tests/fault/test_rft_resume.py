"""`synthpref rft` as a user runs it: killed with SIGKILL after its first iteration, rerun, it continues
from iteration 2; over three iterations a target-token rule judge's mean score rises, the samplers serve
each new weight version, and TRL's trainers read what it wrote."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.helpers import job_command, kill_then_rerun, vllm_processes

pytestmark = [pytest.mark.fault, pytest.mark.usefixtures("ray_session")]   # jobs join the session's Ray


def rft_config(out: Path, prompts: Path, model: str) -> dict:
    return {"output_dir": str(out), "iterations": 3, "prompts_per_iteration": 16, "kl_prompts": 8, "seed": 1,
            "data": {"path": str(prompts)},
            "policy": {"model": model, "samples_per_prompt": 8, "max_tokens": 16, "engine": {"max_model_len": 256}},
            "judging": {"mode": "pointwise", "judges": [
                {"id": "e", "type": "function", "function": "tests.rule_judges:letter_e_rate"}]},
            "train": {"lr": 5.0e-3, "epochs": 2, "micro_batch": 8, "max_len": 256, "world_size": 1,
                      "num_cpus": 1}}


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory, tiny_model):
    from synthpref.data.demo_prompts import write_demo_prompts

    tmp = tmp_path_factory.mktemp("rft")
    out = tmp / "run"
    command = job_command("rft", rft_config(out, write_demo_prompts(tmp / "prompts.jsonl"), tiny_model), tmp)
    before = {p.pid for p in vllm_processes()}
    at_kill, _ = kill_then_rerun(command, out, 1, "rft")      # the driver dies during iteration 2
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"out": out, "at_kill": at_kill, "events": events, "before": before,
            "report": json.loads((out / "report.json").read_text()), "model": tiny_model}


def test_rerun_continues_from_iteration_2(resumed_run):
    assert resumed_run["at_kill"] == 1
    starts = [e for e in resumed_run["events"] if e["event"] == "start"]
    assert [s["resumed_after_iteration"] for s in starts] == [0, 1]
    iterations = [e["step"] for e in resumed_run["events"] if e["event"] == "iteration"]
    assert iterations == [1, 2, 3]                       # each iteration finished exactly once
    assert [r["iteration"] for r in resumed_run["report"]["iterations"]] == [1, 2, 3]
    out = resumed_run["out"]
    for i in (1, 2, 3):
        assert pq.read_table(out / "iterations" / f"{i:04d}" / "samples.parquet").num_rows == 16 * 8
    assert (out / "policy" / "model.safetensors").exists()
    from synthpref.models.precision import resolve_dtype
    ran = resolve_dtype("auto", on_gpu=False)               # every part runs this CPU's `auto` choice
    assert resumed_run["report"]["dtypes"] == {"policy_trainer": ran, "reference_trainer": ran, "sampler": ran}
    assert all(s["dtypes"] == resumed_run["report"]["dtypes"] for s in starts)
    assert set(pq.read_table(out / "iterations" / "0002" / "samples.parquet").column("dtype").to_pylist()) == {ran}
    assert not [p.pid for p in vllm_processes() if p.pid not in resumed_run["before"]]


def test_mean_score_rises_and_samplers_serve_each_new_version(resumed_run):
    its, model = resumed_run["report"]["iterations"], resumed_run["model"]
    scores = [it["mean_score"] for it in its]
    assert scores[2] > scores[0] + 0.03, scores          # measured 0.087 -> 0.141 (seed 1 differs slightly)
    assert its[2]["best_score"] > its[0]["best_score"]
    # iteration i samples from the weights of iteration i-1 (iteration 2's came back after the kill)
    assert [it["sampled_version"] for it in its] == [[model], [f"{model}@v1"], [f"{model}@v2"]]
    assert [it["weight_version"] for it in its] == [1, 2, 3]
    # the same fixed prompts and seeds give other completions under each new version, and drift from the start
    assert len({it["kl_sample_digest"] for it in its}) == 3
    assert all(it["kl_to_start"] > 0 for it in its)
    assert all(it["sync_bytes"] > 0 and it["kept_fraction"] == 1.0 for it in its)
    assert all(it["distinct_2"] is not None for it in its)
    assert (resumed_run["out"] / "tensorboard").is_dir() and any((resumed_run["out"] / "tensorboard").iterdir())


def test_trl_trainers_read_the_sft_and_preference_tables(resumed_run):
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer, SFTConfig, SFTTrainer

    out, model_path = resumed_run["out"], resumed_run["model"]
    tok = AutoTokenizer.from_pretrained(model_path)
    sft = datasets.load_dataset("parquet", data_files=str(out / "iterations" / "*" / "sft.parquet"), split="train")
    assert sft.num_rows == 3 * 16 and sft[0]["completion"][0]["role"] == "assistant"
    args = SFTConfig(output_dir=str(out / "trl-sft"), max_steps=1, per_device_train_batch_size=4, report_to=[],
                     save_strategy="no", use_cpu=True, max_length=128)
    result = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_path), args=args, train_dataset=sft,
                        processing_class=tok).train()
    assert result.global_step == 1 and torch.isfinite(torch.tensor(result.training_loss))

    prefs = datasets.load_dataset("parquet", data_files=str(out / "iterations" / "*" / "preferences.parquet"),
                                  split="train")
    assert prefs.num_rows > 0
    rm = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    args = RewardConfig(output_dir=str(out / "trl-rm"), max_steps=1, per_device_train_batch_size=4, report_to=[],
                        save_strategy="no", use_cpu=True, max_length=128)
    result = RewardTrainer(model=rm, args=args, train_dataset=prefs, processing_class=tok).train()
    assert result.global_step == 1 and torch.isfinite(torch.tensor(result.training_loss))
