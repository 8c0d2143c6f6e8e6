"""`synthpref label` end to end: as a user runs it (a subprocess per job) where the CLI or engines are under
test, and in this process (`label_here`) for jobs whose judges are plain functions."""
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from synthpref.models.precision import resolve_dtype
from tests.helpers import vllm_processes

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("ray_session")]   # jobs join the session's Ray


def run_label(config: dict, tmp_path: Path, *overrides: str) -> dict:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "synthpref.cli", "label", "--config", str(path), "progress=false",
                           *overrides], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((Path(config["output_dir"]) / "summary.json").read_text())


def label_here(config: dict, tmp_path: Path) -> dict:
    """The same job in this process (no interpreter start, no Ray: function judges need neither)."""
    from synthpref.algorithms.label import run_label as run
    from synthpref.config import LabelConfig, load_config
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    return run(load_config(LabelConfig, path, ["progress=false"]))


def function_judge(name="longer", fn="length"):
    return {"id": name, "type": "function", "function": f"synthpref.judging.functions:{fn}"}


def test_known_answer_function_judge(tmp_path):
    rows = []
    for i in range(30):
        short, long = "ok " * (i % 5 + 1), "a fuller answer " * (i % 4 + 2)
        rows.append({"prompt": f"question {i}", "completions": [short, long] if i % 2 else [long, short]})
    rows.append({"prompt": "equal", "completions": ["abcd", "wxyz"]})           # same length: a tie
    rows.append({"prompt": "three", "completions": ["a", "bbb", "cc"]})        # 3 pairs
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    summary = label_here({"output_dir": str(out), "data": {"path": str(tmp_path / "p.jsonl"), "shard_size": 7},
                          "judging": {"judges": [function_judge()]}}, tmp_path)
    c = summary["counts"]
    assert (c["prompts"], c["pairs"], c["preferences"], c["ties"], c["failed_pairs"]) == (32, 34, 33, 1, 0)
    assert c["judgments"] == 68 and c["failed_verdicts"] == 0
    assert summary["position_consistency"] == 1.0
    assert summary["judges"]["longer"]["position_flip_rate"] == 0.0
    prefs = pq.read_table(out / "preferences").to_pylist()
    assert len(prefs) == 33
    assert all(len(p["chosen"][0]["content"]) > len(p["rejected"][0]["content"]) for p in prefs)
    assert all(p["position_consistent"] and p["length_delta"] > 0 for p in prefs)
    assert summary["judges"]["longer"]["length_correlation"] > 0.5      # a length-biased judge shows it
    assert summary["chosen_longer_rate"] == 1.0


def test_real_hh_rlhf_pairs_with_a_jury(tmp_path, hh_rlhf_path):
    """hh-rlhf dialogues (ready pairs) judged by a two-judge jury; counts add up to the rows read."""
    out = tmp_path / "out"
    summary = label_here({"output_dir": str(out), "data": {"path": str(hh_rlhf_path), "limit": 60, "shard_size": 25},
                         "judging": {"jury_rule": "majority",
                                     "judges": [function_judge(), function_judge("shorter", "brevity")]}}, tmp_path)
    c = summary["counts"]
    assert c["rows_read"] == 60 and c["prompts"] + c["quarantined_rows"] == 60 and c["unpaired_prompts"] == 0
    assert c["pairs"] + c["identical_pairs"] == c["prompts"]
    assert c["preferences"] + c["ties"] + c["failed_pairs"] == c["pairs"]
    assert c["preferences"] == 0                            # opposite judges: every decided pair is a tie
    from itertools import islice

    from synthpref.data.readers import PromptRow, read_prompts
    rows = [r for r in islice(read_prompts(str(hh_rlhf_path)), 60) if isinstance(r, PromptRow)]
    usable = [r for r in rows if r.completions[0] != r.completions[1]]
    same_length = sum(1 for r in usable if len(r.completions[0]) == len(r.completions[1]))
    assert summary["judge_agreement"]["longer|shorter"] == {"pairs": len(usable),
                                                           "agreement": same_length / len(usable)}
    assert summary["shards"]["total"] == -(-c["prompts"] // 25)


def test_bad_input_is_quarantined_with_reasons(tmp_path, tiny_model):
    lines = [json.dumps({"prompt": f"fine {i}", "completions": ["x" * i, "y"]}).encode() for i in range(2, 6)]
    lines += [b'{"prompt": ', b'{"prompt": "\xff\xfe"}', json.dumps({"prompt": ["list"]}).encode(),
              json.dumps({"nothing": 1}).encode(), json.dumps({"prompt": ""}).encode(),
              json.dumps({"prompt": "q", "completions": ["one"]}).encode(),
              json.dumps({"prompt": "fine 2", "completions": ["xx", "y"]}).encode(),
              json.dumps({"prompt": "word " * 3000}).encode()]
    (tmp_path / "bad.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    summary = run_label({"output_dir": str(out), "data": {"path": str(tmp_path / "bad.jsonl")},
                         "policy": {"model": tiny_model, "max_tokens": 16, "engine": {"max_model_len": 512}},
                         "judging": {"judges": [function_judge()]}}, tmp_path)
    quarantined = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert [q["reason"] for q in quarantined] == ["malformed_json", "bad_utf8", "wrong_type", "missing_prompt",
                                                  "empty_prompt", "too_few_completions", "duplicate", "prompt_too_long"]
    assert summary["counts"]["quarantined"] == 8 and summary["counts"]["rows_read"] == 12
    assert summary["counts"]["quarantined_rows"] == 8 and summary["counts"]["sampling_errors"] == 0
    assert sum(summary["quarantined_by_reason"].values()) == 8
    assert summary["quarantined_by_reason"]["prompt_too_long"] == 1
    assert summary["counts"]["preferences"] == 4


def test_config_errors_name_the_key(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "synthpref.cli", "label", "data.path=x.jsonl",
                           "judging.judges=[{id: j, type: function, function: 'm:f', colour: red}]"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "judging.judges.0.colour: unknown key" in proc.stderr


@pytest.fixture(scope="module")
def sampled_job(tmp_path_factory, tiny_model):
    """A real job: tiny policy sampled on vLLM, a tiny vLLM judge, both orders; run once."""
    tmp = tmp_path_factory.mktemp("sampled")
    prompts = [{"prompt": f"Write one line about topic number {i}."} for i in range(12)]
    (tmp / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prompts))
    config = {"output_dir": str(tmp / "out"), "seed": 3,
              "data": {"path": str(tmp / "p.jsonl"), "shard_size": 4},
              "policy": {"model": tiny_model, "samples_per_prompt": 2, "max_tokens": 12,
                         "engine": {"max_model_len": 512}},
              "judging": {"judges": [{"id": "tiny", "model": tiny_model, "verdict": "logprob",
                                      "engine": {"max_model_len": 1024}}]}}
    before = {p.pid for p in vllm_processes()}
    summary = run_label(config, tmp)
    leftover = [p for p in vllm_processes() if p.pid not in before]
    return config, summary, tmp, leftover


def test_sampled_job_outputs(sampled_job):
    config, summary, tmp, leftover = sampled_job
    assert leftover == []                                   # no orphaned vLLM engine processes
    c = summary["counts"]
    assert c["prompts"] == 12 and c["samples"] == 24 and c["pairs"] + c["identical_pairs"] == 12
    assert c["preferences"] + c["ties"] + c["failed_pairs"] == c["pairs"]
    assert c["judgments"] == 2 * c["pairs"]
    out = Path(config["output_dir"])
    judgments = pq.read_table(out / "judgments").to_pylist()
    assert sorted({j["order"] for j in judgments}) == ["ab", "ba"]
    assert all(j["p_first"] is not None and j["template_hash"] for j in judgments)
    samples = pq.read_table(out / "samples").to_pylist()
    prompts = pq.read_table(out / "prompts").to_pylist()
    assert len(prompts) == 12 and {s["prompt_id"] for s in samples} == {p["prompt_id"] for p in prompts}
    assert all(s["seed"] is not None and s["policy"] == config["policy"]["model"] for s in samples)
    prefs = pq.read_table(out / "preferences").to_pylist()
    prov = json.loads(prefs[0]["provenance"])
    assert prov["judges"][0]["template_hash"] == judgments[0]["template_hash"] and len(prov["seeds"]) == 2
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["event"] for m in metrics if m["event"] != "replica_ready"] == ["start", "dtypes", "shard", "shard", "shard",
                                                                            "pools", "end"]
    # the dtype each engine ran (`auto`: this CPU's choice) is in the summary, the samples, provenance, metrics
    ran = resolve_dtype("auto", on_gpu=False)
    assert summary["dtypes"] == {"sampler": ran, "judge:tiny": ran}
    assert {s["dtype"] for s in samples} == {ran}
    assert prov["policy_dtype"] == ran and prov["judges"][0]["dtype"] == ran
    assert next(m for m in metrics if m["event"] == "dtypes") | {"time": 0} == {"time": 0, "event": "dtypes",
                                                                                   "sampler": ran, "judge:tiny": ran}
    assert sorted(m["pool"] for m in metrics if m["event"] == "replica_ready") == ["judge:tiny", "sampler"]


def test_preferences_load_in_datasets_and_train_trl_dpo(sampled_job, tiny_model):
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    config, summary, tmp, _ = sampled_job
    ds = datasets.load_dataset("parquet", data_files=str(Path(config["output_dir"]) / "preferences" / "*.parquet"),
                               split="train")
    assert len(ds) == summary["counts"]["preferences"] > 0
    assert ds[0]["chosen"][0]["role"] == "assistant" and ds[0]["prompt"][0]["role"] == "user"
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    before = [p.detach().clone() for p in model.parameters()]
    args = DPOConfig(output_dir=str(tmp / "dpo"), max_steps=1, per_device_train_batch_size=2, max_length=256,
                     report_to=[], logging_steps=1, save_strategy="no", use_cpu=True, learning_rate=1e-3)
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    result = trainer.train()
    assert result.global_step == 1 and torch.isfinite(torch.tensor(result.training_loss))
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))


def test_resume_recomputes_only_the_missing_shard(sampled_job):
    config, first, tmp, _ = sampled_job
    out = Path(config["output_dir"])
    first_prefs = pq.read_table(out / "preferences").to_pylist()
    first_judgments = pq.read_table(out / "judgments").to_pylist()
    (out / "preferences" / "shard-00002.parquet").unlink()
    second = run_label(config, tmp)
    assert second["shards"] == {"total": 3, "skipped_as_done": 2, "run": 1}
    assert second["counts"] == first["counts"]
    assert pq.read_table(out / "preferences").to_pylist() == first_prefs
    judgments = pq.read_table(out / "judgments").to_pylist()
    strip = lambda rows: [{k: v for k, v in r.items() if k != "latency_s"} for r in rows]  # noqa: E731
    assert strip(judgments) == strip(first_judgments)
    third = run_label(config, tmp)                          # nothing left to do: no engines, same data
    assert third["shards"]["run"] == 0 and third["counts"] == first["counts"]


def test_pointwise_best_vs_worst(tmp_path):
    rows = [{"prompt": f"q{i}", "completions": ["a" * (i + 1), "b" * (i + 5), "c" * (i + 3)]} for i in range(5)]
    rows.append({"prompt": "flat", "completions": ["xy", "zw"]})                       # equal scores: a tie
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    summary = label_here({"output_dir": str(out), "data": {"path": str(tmp_path / "p.jsonl")},
                          "judging": {"mode": "pointwise", "judges": [function_judge("short", "brevity")]}}, tmp_path)
    c = summary["counts"]
    assert (c["pairs"], c["preferences"], c["ties"], c["judgments"]) == (6, 5, 1, 17)
    prefs = pq.read_table(out / "preferences").to_pylist()
    for i, p in enumerate(prefs):
        assert p["chosen"][0]["content"] == "a" * (i + 1) and p["rejected"][0]["content"] == "b" * (i + 5)
        assert p["score_chosen"] == -(i + 1) and p["position_consistent"] is None
    judgments = pq.read_table(out / "judgments").to_pylist()
    assert {j["order"] for j in judgments} == {"point"}


def test_a_changed_config_in_the_same_output_dir_is_refused(tmp_path):
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "q", "completions": ["a", "bb"]}) + "\n")
    config = {"output_dir": str(tmp_path / "out"), "data": {"path": str(tmp_path / "p.jsonl")},
              "judging": {"judges": [function_judge()]}}
    label_here(config, tmp_path)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "synthpref.cli", "label", "--config", str(tmp_path / "job.yaml"),
                           "judging.both_orders=false"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "another config (judging.both_orders: was True, now False" in proc.stderr      # the key is named


def test_a_pool_the_cluster_cannot_host_fails_in_time_naming_the_resource(tmp_path, tiny_model):
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "q", "completions": ["a", "b"]}) + "\n")
    judge = {"id": "gpu-judge", "model": tiny_model, "engine": {"num_gpus": 1}, "pool": {"start_timeout_s": 3}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out"), "data": {"path": str(tmp_path / "p.jsonl")},
                                    "judging": {"judges": [judge]}}))
    proc = subprocess.run([sys.executable, "-m", "synthpref.cli", "label", "--config", str(path), "progress=false"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3
    assert "pool judge:gpu-judge: replica 0 did not start within 3s" in proc.stderr
    assert "GPU: needs 1, cluster has 0" in proc.stderr
