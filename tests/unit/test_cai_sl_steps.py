"""The SL phase's steps with a scripted sampler: what a round does with failed and empty revisions, the
conversations the policy is shown, and the tables (SFT, preferences, quarantine) built from the rounds."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pyarrow.parquet as pq

from synthpref.algorithms.cai_sl import write_tables
from synthpref.config import CAISLConfig
from synthpref.data.readers import PromptRow
from synthpref.judging.constitution import load_constitution
from synthpref.sampling.revisions import (CRITIQUE_LEAD, REVISION_LEAD, apply_round, critique_round,
                                          few_shot_turns)

CONSTITUTION = load_constitution("default")
CONV = {"p1": [{"role": "user", "content": "q1"}], "p2": [{"role": "user", "content": "q2"}],
        "p3": [{"role": "user", "content": "q3"}]}


class Script:
    """A sampler that answers from a table of outcomes by turn id suffix and records what it was shown."""

    def __init__(self, outcomes: dict):
        self.outcomes, self.shown = outcomes, {}

    def __call__(self, turns, kind):
        out = {}
        for t in turns:
            self.shown[t.prompt_id] = t.messages
            pid = t.prompt_id.split("|")[0]
            out[t.prompt_id] = self.outcomes.get((pid, kind), (f"{kind} of {pid}", None))
        return out


def test_a_round_keeps_good_revisions_and_says_why_it_kept_none_of_the_others():
    sampler = Script({("p2", "revision"): ("   ", None), ("p3", "critique"): (None, "prompt_too_long: 900 > 512")})
    latest = {"p1": "a1", "p2": "a2", "p3": "a3"}
    prefix = few_shot_turns(CONSTITUTION, CONSTITUTION.few_shot)
    rows = critique_round(sampler, CONSTITUTION, prefix, CONV, latest, 1, seed=7)
    by = {r["prompt_id"]: r for r in rows}
    assert by["p1"]["kept"] and by["p1"]["revision"] == "revision of p1" and by["p1"]["reason"] is None
    assert not by["p2"]["kept"] and by["p2"]["reason"] == "empty_revision"
    assert not by["p3"]["kept"] and by["p3"]["reason"].startswith("critique_failed: prompt_too_long")
    assert "p3|round1|revision" not in sampler.shown                  # no revision without a critique
    assert apply_round(latest, rows) == {"p1": "revision of p1", "p2": "a2", "p3": "a3"}
    for pid, row in by.items():
        assert row["principle"] == CONSTITUTION.draw(7, pid, "round1").id
    rule = CONSTITUTION.by_id(by["p1"]["principle"])
    shown = sampler.shown["p1|round1|revision"]
    assert shown[:len(prefix)] == prefix                              # the few-shot examples come first
    assert shown[len(prefix):] == [CONV["p1"][0], {"role": "assistant", "content": "a1"},
                                   {"role": "user", "content": CRITIQUE_LEAD + rule.critique},
                                   {"role": "assistant", "content": "critique of p1"},
                                   {"role": "user", "content": REVISION_LEAD + rule.revision}]


def rounds_for(final_by_round: dict) -> list[list[dict]]:
    """Critique rows: {round: {prompt: revision or None (not kept)}}."""
    out = []
    for r, revisions in sorted(final_by_round.items()):
        out.append([{"prompt_id": pid, "round": r, "principle": "helpfulness", "answer_before": "x", "critique": "c",
                     "revision": text, "kept": text is not None, "reason": None if text is not None else "empty_revision",
                     "revision_id": f"{pid}-r{r}"} for pid, text in revisions.items()])
    return out


def answer(pid: str, text: str) -> dict:
    return {"prompt_id": pid, "sample_id": f"s-{pid}", "policy": "m", "text": text, "n_tokens": 1, "logprob": -1.0,
            "finish_reason": "stop", "seed": 1, "dtype": "float32", "token_ids": [1], "token_logprobs": [-1.0]}


def test_tables_hold_the_final_or_every_revision_the_revision_pairs_and_the_reasons(tmp_path):
    red = [PromptRow(p, CONV[p], "f:1") for p in ("p1", "p2", "p3")] + [PromptRow("p4", [{"role": "user", "content": "q4"}], "f:4")]
    helpful = [PromptRow("h1", [{"role": "user", "content": "help"}], "g:1")]
    answers = [answer("p1", "orig1"), answer("p2", "orig2"), answer("p3", "orig3"), answer("h1", "helpful answer")]
    rounds = rounds_for({1: {"p1": "rev1a", "p2": None, "p3": "orig3"}, 2: {"p1": "rev1b", "p2": None, "p3": None}})
    for every, expected in ((False, {("p1", 2): "rev1b"}), (True, {("p1", 1): "rev1a", ("p1", 2): "rev1b"})):
        cfg = CAISLConfig(policy=SimpleNamespace(model="m"), sl=SimpleNamespace(sft_every_round=every))
        out = tmp_path / str(every)
        tables = write_tables(out, cfg, red, helpful, answers, rounds)
        sft = pq.read_table(out / "sft").to_pylist()
        got = {(r["prompt_id"], r["iteration"]): r["completion"][0]["content"] for r in sft}
        # p3's only kept revision equals its answer: trained on, but no preference pair
        assert got == {**expected, ("p3", 1): "orig3", ("h1", 0): "helpful answer"}
        prefs = pq.read_table(out / "preferences").to_pylist()
        assert [(p["prompt_id"], p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in prefs] == \
            [("p1", "rev1b", "orig1")]
        assert json.loads(prefs[0]["provenance"])["kept_rounds"] == [1, 2]
        reasons = {q["prompt_id"]: q["reason"] for q in tables["quarantine"]}
        assert reasons == {"p2": "no_revision", "p3": "identical_pair", "p4": "answer_failed"}
        assert tables["principles"] == {"helpfulness": {"drawn": 6, "kept": 3}}
        kinds = {r["prompt_id"]: json.loads(r["meta"])["kind"] for r in pq.read_table(out / "prompts.parquet").to_pylist()}
        assert kinds == {"p1": "red_team", "p2": "red_team", "p3": "red_team", "p4": "red_team", "h1": "helpful"}
