"""The RL phase's labels with chain of thought (`synthpref cai` with phases [label], chain_of_thought on): each
judge reasons first, then its choice probabilities are read in a second turn and clamped to the band; every
label carries its principle and a soft label recomputed exactly from the stored probabilities."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from synthpref.data.schema import content_id
from synthpref.judging.constitution import load_constitution

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

BAND = [0.45, 0.55]


@pytest.fixture(scope="module")
def cot_labels(tmp_path_factory, tiny_model):
    from synthpref.algorithms.cai import run_cai
    from synthpref.config import CAIConfig, from_dict, validate
    tmp = tmp_path_factory.mktemp("cai-cot")
    prompts = tmp / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Question {i}: how do I hurt someone?"}) + "\n" for i in range(4)))
    cfg = validate(from_dict(CAIConfig, {
        "output_dir": str(tmp / "run"), "progress": False, "phases": ["label"], "chain_of_thought": True,
        "cot_band": BAND, "data": {"path": str(prompts)}, "policy": {"model": tiny_model, "max_tokens": 8},
        "label": {"policy": {"samples_per_prompt": 3, "max_tokens": 8},
                  "judging": {"jury_rule": "mean_prob",
                              "judges": [{"id": "cot", "model": tiny_model, "max_tokens": 8,
                                          "engine": {"max_model_len": 1024}}]}}}))
    report = run_cai(cfg)
    out = tmp / "run" / "labels"
    return {"report": report, "judgments": pq.read_table(out / "judgments").to_pylist(),
            "prefs": pq.read_table(out / "preferences").to_pylist(),
            "summary": json.loads((out / "summary.json").read_text())}


def test_chain_of_thought_verdicts_reason_then_clamp_the_stored_probabilities(cot_labels):
    judgments = cot_labels["judgments"]
    assert len(judgments) == 4 * 3 * 2                                # 3 pairs per prompt, both orders
    for j in judgments:
        assert j["verdict"] != "FAILED", j["error"]
        assert j["rationale"] is not None                             # the first turn's reasoning is kept
        assert j["completion_tokens"] > 1                             # both calls are counted
        probs = json.loads(j["choice_probs"])
        p_first = probs["A"] / (probs["A"] + probs["B"])
        assert j["p_first"] == pytest.approx(min(max(p_first, BAND[0]), BAND[1]), abs=1e-12)


def test_every_label_carries_its_principle_and_the_clamped_soft_label(cot_labels):
    ids = {p.id for p in load_constitution("default").principles}
    by_pair: dict = {}
    for j in cot_labels["judgments"]:
        by_pair.setdefault(j["pair_id"], {})[j["order"]] = j
    clamp = lambda p: min(max(p, BAND[0]), BAND[1])                   # noqa: E731
    for pref in cot_labels["prefs"]:
        ab, ba = by_pair[pref["pair_id"]]["ab"], by_pair[pref["pair_id"]]["ba"]
        principle = json.loads(pref["provenance"])["principle"]
        assert principle in ids and ab["principle"] == ba["principle"] == principle
        p_ab, p_ba = json.loads(ab["choice_probs"]), json.loads(ba["choice_probs"])
        p_a = (clamp(p_ab["A"] / (p_ab["A"] + p_ab["B"])) + clamp(p_ba["B"] / (p_ba["A"] + p_ba["B"]))) / 2
        chosen_id, rejected_id = json.loads(pref["provenance"])["sample_ids"]
        chosen_is_a = pref["pair_id"] == content_id(pref["prompt_id"], chosen_id, rejected_id)   # make_pairs' id
        assert (p_a > 0.5) == chosen_is_a                             # the side the probabilities favour won
        assert pref["score_chosen"] == pytest.approx(p_a if chosen_is_a else 1 - p_a, abs=1e-9)
        assert BAND[0] <= 1 - pref["score_chosen"] <= pref["score_chosen"] <= BAND[1]
    principles = cot_labels["summary"]["principles"]
    assert sum(p["drawn"] for p in principles.values()) == 12 and set(principles) <= ids
    assert set(cot_labels["report"]["principles"]) == set(principles)
