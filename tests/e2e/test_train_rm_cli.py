"""`synthpref train-rm` end to end: preferences labelled by a known rule judge are learnt (held-out
accuracy stated below), the reward_model judge loads the saved model, and hh-rlhf agreement is reported."""
from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest

from tests.helpers import job_command, label_command

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("ray_session")]   # jobs join the session's Ray

WORDS = "sea sky tree stone river cloud bird light road field window paper green quiet small".split()


def rule_pairs(path: Path, n: int, seed: int = 0) -> None:
    """n prompts with two ready answers of random words; exactly one of them says "please" (either side)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9)))
        b = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9)))
        words = a.split()
        words.insert(rng.randint(0, len(words)), "please")
        polite, plain = " ".join(words), b
        rows.append({"prompt": f"question {i}: {rng.choice(WORDS)} or {rng.choice(WORDS)}?",
                     "completions": [polite, plain] if rng.random() < 0.5 else [plain, polite]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def run(command: list[str]) -> dict:
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def test_reward_model_learns_a_rule_judges_preferences(tmp_path, tiny_model):
    rule_pairs(tmp_path / "pairs.jsonl", 160)
    labels = tmp_path / "labels"
    run(label_command({"output_dir": str(labels), "data": {"path": str(tmp_path / "pairs.jsonl"), "shard_size": 64},
                       "judging": {"judges": [{"id": "polite", "type": "function",
                                               "function": "tests.rule_judges:polite"}]}}, tmp_path))
    out = tmp_path / "rm"
    config = {"output_dir": str(out), "model": tiny_model, "eval_fraction": 0.25, "seed": 0,
              "data": {"path": str(labels / "preferences")},
              "train": {"micro_batch": 8, "lr": 2.0e-3, "epochs": 2, "max_len": 128, "num_cpus": 1}}
    run(job_command("train-rm", config, tmp_path))
    report = json.loads((out / "report.json").read_text())
    assert report["pairs"] == 160 and report["quarantined"] == 0
    from synthpref.models.precision import resolve_dtype
    assert report["dtypes"] == {"reward_trainer": resolve_dtype("auto", on_gpu=False, training=True)}
    held = report["held_out"]
    assert 25 <= held["pairs"] <= 55 and held["accuracy"] >= 0.9, held          # chance is 0.5
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "eval" for e in events) == 2
    assert next(e for e in events if e["event"] == "start")["dtypes"] == report["dtypes"]
    assert any((out / "tensorboard").iterdir())

    from synthpref.config import EngineConfig
    from synthpref.judging.reward_model import RewardModelActor
    judge = RewardModelActor(str(out / "model"), EngineConfig(max_model_len=128))
    conv = [{"role": "user", "content": "question 999: sea or sky?"}]
    polite, plain = judge.score([{"messages": conv + [{"role": "assistant", "content": "please the quiet sea"}]},
                                 {"messages": conv + [{"role": "assistant", "content": "the quiet sea"}]}])
    assert polite["score"] > plain["score"]



def test_train_rm_reports_human_agreement_on_hh_rlhf(tmp_path, tiny_model, hh_rlhf_path):
    out = tmp_path / "rm"
    config = {"output_dir": str(out), "model": tiny_model, "data": {"path": str(hh_rlhf_path), "limit": 32},
              "human_eval": {"path": str(hh_rlhf_path), "limit": 40},
              "train": {"micro_batch": 8, "lr": 1.0e-3, "epochs": 1, "max_len": 384, "num_cpus": 1, "dtype": "float32"}}
    run(job_command("train-rm", config, tmp_path))
    report = json.loads((out / "report.json").read_text())
    human = report["human_agreement"]
    assert human["pairs"] + human["quarantined"] == 40
    assert report["pairs"] + report["quarantined"] == 32
    # the reported agreement is what the saved model itself says about those human pairs: loaded with
    # transformers, it scores chosen above rejected that often (ties half; one pair of float slack)
    import torch
    from transformers import AutoModelForSequenceClassification

    from synthpref.algorithms.reward_model import encode_pairs
    from synthpref.data.preference_rows import read_pairs
    from synthpref.config import DataConfig
    from synthpref.models.loading import load_tokenizer
    rows, _ = read_pairs(DataConfig(path=str(hh_rlhf_path), limit=40))
    pairs = encode_pairs(load_tokenizer(tiny_model), rows, 384, [])
    assert len(pairs) == human["pairs"]
    model = AutoModelForSequenceClassification.from_pretrained(out / "model", dtype=torch.float32).eval()
    with torch.no_grad():
        def reward(ids):
            return float(model(input_ids=torch.tensor([ids])).logits[0, 0])
        wins = sum(1.0 if c > r else 0.5 if c == r else 0.0
                   for c, r in ((reward(p.chosen), reward(p.rejected)) for p in pairs))
    assert abs(wins / len(pairs) - human["accuracy"]) <= 1.0 / len(pairs) + 1e-9, (wins, human)
