"""The reward-model judge: batched scalar scores from a sequence-classification model in a Ray actor."""
from __future__ import annotations

import math

import pytest

from synthpref.config import EngineConfig, JudgeConfig, PoolConfig
from synthpref.judging.backends import PairRequest, PointRequest

pytestmark = pytest.mark.integration
CONV = [{"role": "user", "content": "Explain how plants make food."}]
TEXTS = ["Photosynthesis turns light into sugar.", "No.", "Plants use sunlight, water and carbon dioxide " * 3]


@pytest.fixture(scope="module")
def rm_judge(ray_session, tiny_reward_model):
    from synthpref.judging.reward_model import RewardModelActor, RewardModelJudge
    from synthpref.cluster.pool import ReplicaPool
    from synthpref.sampling.group import engine_spawner

    # float32 pinned: the scores are compared with transformers' in float32 (`auto` is bf16 on some CPUs)
    engine = EngineConfig(max_model_len=96, num_cpus=0, dtype="float32")
    pool = ReplicaPool("judge:rm", engine_spawner(tiny_reward_model, engine, 1, RewardModelActor), PoolConfig())
    yield RewardModelJudge(JudgeConfig(id="rm", type="reward_model", model=tiny_reward_model, chunk_size=8), pool)
    pool.shutdown()


def reference_score(model_path: str, text: str) -> float:
    """The same score computed by hand with transformers, one sequence, no padding."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, dtype=torch.float32).eval()
    ids = tok.apply_chat_template([*CONV, {"role": "assistant", "content": text}], tokenize=True,
                                  add_generation_prompt=False, return_dict=True)["input_ids"]
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0, 0].item()


def test_batched_scores_equal_one_by_one_scores(rm_judge, tiny_reward_model):
    rows = rm_judge.score([PointRequest(f"s{i}", CONV, t) for i, t in enumerate(TEXTS)])
    assert rm_judge.pool.dtype() == "float32"
    assert [r["verdict"] for r in rows] == ["SCORE"] * 3
    for row, text in zip(rows, TEXTS):       # padding in the batch does not change any score
        assert row["score"] == pytest.approx(reference_score(tiny_reward_model, text), abs=1e-4)
    assert rows[0]["prompt_tokens"] > 10


def test_pairwise_reads_bradley_terry_probabilities(rm_judge):
    reqs = [PairRequest("p", "ab", CONV, TEXTS[0], TEXTS[1]), PairRequest("p", "ba", CONV, TEXTS[1], TEXTS[0])]
    ab, ba = rm_judge.judge_pairs(reqs)
    s0, s1 = rm_judge.score([PointRequest("x", CONV, TEXTS[0]), PointRequest("y", CONV, TEXTS[1])])
    assert ab["p_first"] == pytest.approx(1 / (1 + math.exp(-(s0["score"] - s1["score"]))), abs=1e-6)
    assert ab["p_first"] + ba["p_first"] == pytest.approx(1.0)          # no position bias by construction
    assert {ab["verdict"], ba["verdict"]} == {"A", "B"}


def test_over_long_response_fails_alone(rm_judge):
    rows = rm_judge.score([PointRequest("ok", CONV, "fine"), PointRequest("long", CONV, "word " * 400)])
    assert rows[0]["verdict"] == "SCORE"
    assert rows[1]["verdict"] == "FAILED" and "prompt_too_long" in rows[1]["error"]
