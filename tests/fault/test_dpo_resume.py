"""`synthpref dpo` on rule-labelled pairs (polite words chosen over plain ones), fp32 pinned: the CLI is
killed (SIGKILL) after a checkpoint and rerun; the rerun resumes there, reuses the reference log-probs,
records every step once, and the policy learns the rule (held-out preference accuracy from 0.5 to above
0.8). Bad rows are quarantined with their reason. LoRA adapters train and are saved merged."""
from __future__ import annotations

import json

import pytest

from tests.helpers import job_command, kill_then_rerun

pytestmark = [pytest.mark.fault, pytest.mark.usefixtures("ray_session")]

ACCURACY = 0.8            # held-out preference accuracy after training (0.5 before: policy == reference)


def dpo_config(out, data, model, **over) -> dict:
    return {"output_dir": str(out), "model": model, "eval_fraction": 0.25, "save_every": 3, "keep_checkpoints": 1,
            "data": {"path": str(data)}, "dpo": {"beta": 0.1},
            "train": {"lr": 1.0e-3, "epochs": 4, "micro_batch": 8, "max_len": 256, "dtype": "float32"}, **over}


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    from tests.rule_judges import rule_pairs
    path = tmp_path_factory.mktemp("dpo-data") / "pairs.jsonl"
    rows = rule_pairs(64) + [{"prompt": "Say it twice.", "chosen": "same words", "rejected": "same words"},
                             {"prompt": "Go on.", "chosen": "please " * 400, "rejected": "stone"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, pairs_file, tiny_model):
    tmp = tmp_path_factory.mktemp("dpo")
    out = tmp / "run"
    command = job_command("dpo", dpo_config(out, pairs_file, tiny_model), tmp)
    at_kill, rerun = kill_then_rerun(command, out, 3, "dpo")
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"out": out, "at_kill": at_kill, "stdout": rerun.stdout, "events": events,
            "report": json.loads((out / "report.json").read_text())}


def test_the_rerun_resumes_at_the_checkpoint_and_records_every_step_once(resumed):
    report, events = resumed["report"], resumed["events"]
    assert 3 <= resumed["at_kill"] < report["steps"]
    steps = [e["step"] for e in events if e["event"] == "train"]
    assert steps == list(range(1, report["steps"] + 1))
    starts = [e for e in events if e["event"] == "start"]
    assert len(starts) == 2 and starts[1]["resumed_after_step"] == resumed["at_kill"]
    # one reference pass: the first run computed every pair's log-probs, the rerun read them back
    passes = [(e["computed"], e["cached"]) for e in events if e["event"] == "reference_pass"]
    assert passes == [(report["pairs"], 0), (0, report["pairs"])]
    assert "held-out preference accuracy" in resumed["stdout"]


def test_the_policy_learns_the_rule_on_held_out_prompts(resumed):
    report, events = resumed["report"], resumed["events"]
    held = report["held_out"]
    assert held["pairs"] >= 10 and held["accuracy"] > ACCURACY and held["margin"] > 0, held
    first = next(e for e in events if e["event"] == "train")
    assert first["loss"] == pytest.approx(0.693147, abs=1e-4)         # ln 2: the policy starts as the reference
    evals = [e["held_out_accuracy"] for e in events if e["event"] == "eval"]
    assert len(evals) == 4 and evals[-1] > ACCURACY


def test_bad_rows_are_quarantined_with_their_reason(resumed):
    lines = [json.loads(x) for x in (resumed["out"] / "quarantine.jsonl").read_text().splitlines()]
    assert sorted(q["reason"] for q in lines) == ["identical", "too_long"]
    assert resumed["report"]["pairs"] == 64 and resumed["report"]["quarantined"] == 2


def test_lora_adapters_train_and_save_merged(tmp_path, pairs_file, tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    from synthpref.algorithms.dpo import run_dpo
    from synthpref.config import DPOConfig, from_dict, validate
    cfg = validate(from_dict(DPOConfig, dpo_config(tmp_path / "lora", pairs_file, tiny_model, save_every=0,
                                                   progress=False)))
    cfg.train.lora_r, cfg.train.lr, cfg.train.epochs = 8, 1.0e-2, 2
    report = run_dpo(cfg)
    assert report["lora"] and report["held_out"]["accuracy"] > ACCURACY, report["held_out"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).state_dict()
    merged = AutoModelForCausalLM.from_pretrained(report["policy_dir"], dtype=torch.float32).state_dict()
    assert merged.keys() == base.keys()                  # base names: no adapter left in the saved model
    changed = [k for k in base if not torch.equal(base[k], merged[k])]
    assert changed and all(k.endswith("proj.weight") for k in changed)    # only LoRA's target layers moved


def test_ipo_learns_the_rule_through_the_trainer(tmp_path, pairs_file, tiny_model):
    """IPO through train_dpo (per-token mean log-probs, reference means from the same sums) in process."""
    from synthpref.algorithms.dpo import run_dpo
    from synthpref.config import DPOConfig, from_dict, validate
    cfg = validate(from_dict(DPOConfig, dpo_config(tmp_path / "ipo", pairs_file, tiny_model, save_every=0,
                                                   progress=False, dpo={"loss": "ipo", "beta": 0.1})))
    cfg.train.epochs = 2
    report = run_dpo(cfg)
    events = [json.loads(line) for line in (tmp_path / "ipo" / "metrics.jsonl").read_text().splitlines()]
    first = next(e for e in events if e["event"] == "train")
    assert first["loss"] == pytest.approx((1 / (2 * 0.1)) ** 2, rel=1e-4)     # (h - 1/(2 beta))^2 at h = 0
    assert report["loss"] == "ipo" and report["held_out"]["accuracy"] > ACCURACY, report["held_out"]
