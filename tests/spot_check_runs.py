"""The hand-built label run the spot-check tests share (tests/unit/test_spot_check_*.py, tests/e2e), and helpers.

The run: three judges (j1 weighs 2 under `weighted`), order rule and jury rule mean_prob, ten pairs over
three prompts (math, chat, one without a domain tag). Each judge's vote is given as its P(a better), a
dyadic number so the sums are exact; judged in both orders consistently (ab p_first = q, ba = 1 - q),
or F: a flip (A in both orders shown, so P(a better) = 0.5, a TIE vote, position inconsistent), or X:
FAILED. Decisions under mean_prob (mean of the judges' P(a better)):

pair  domain  j1     j2     j3      mean      run     conf    agreement  consistent
d1    math    .875   .75    .75     2.375/3   A       .7917   1          yes
d2    math    .875   .75    .25     1.875/3   A       .625    2/3        yes
d3    math    .125   .375   F       1/3       B       .6667   2/3        no
u1    math    .75    .25    F       .5        TIE     -       1/3        no
d4    chat    .125   .125   .25     .5/3      B       .8333   1          yes
d5    chat    .875   F      .75     2.125/3   A       .7083   2/3        no
d6    chat    .375   .875   .375    1.625/3   A       .5417   1/3        yes   (majority and weighted: B)
u2    chat    X      X      X       -         FAILED  -       -          -
d7    -       .875   .875   text A  2.75/3    A       .9167   1          yes
d8    -       F      .875   .875    2.25/3    A       .75     2/3        no
"""
from __future__ import annotations

import json


from synthpref.data.schema import JUDGMENTS, PREFERENCES, PROMPTS, SAMPLES, content_id, to_table
from synthpref.data.shards import ShardStore
from synthpref.monitor.spot_check import QueueRules, export_queue

F, X = "F", "X"
PROMPTS_SPEC = {"math": ("Integrate x^2.", "math", 4), "chat": ("Say hello.", "chat", 4), "misc": ("Name a fruit.", None, 3)}
# name: (prompt, index of a, index of b, votes of j1, j2, j3, run winner, confidence, agreement, consistent)
PAIRS = {
    "d1": ("math", 0, 1, (.875, .75, .75), "A", 2.375 / 3, 1.0, True),
    "d2": ("math", 0, 2, (.875, .75, .25), "A", 1.875 / 3, 2 / 3, True),
    "d3": ("math", 0, 3, (.125, .375, F), "B", 2 / 3, 2 / 3, False),
    "u1": ("math", 1, 2, (.75, .25, F), "TIE", None, None, None),
    "d4": ("chat", 0, 1, (.125, .125, .25), "B", 1 - .5 / 3, 1.0, True),
    "d5": ("chat", 0, 2, (.875, F, .75), "A", 2.125 / 3, 2 / 3, False),
    "d6": ("chat", 0, 3, (.375, .875, .375), "A", 1.625 / 3, 1 / 3, True),
    "u2": ("chat", 1, 2, (X, X, X), "FAILED", None, None, None),
    "d7": ("misc", 0, 1, (.875, .875, "text A"), "A", 2.75 / 3, 1.0, True),
    "d8": ("misc", 0, 2, (F, .875, .875), "A", 0.75, 2 / 3, False),
}
CONFIDENCE_ORDER = ["d6", "d2", "d3", "d5", "d8", "d1", "d4", "d7"]      # decided pairs, lowest first
# what the humans say, in each pair's own labels (the test turns it into the reviewer's a/b)
HUMAN = {"d1": "A", "d2": "B", "d3": "B", "u1": "A", "d4": "B", "d5": "TIE", "d6": "B", "u2": "B", "d7": "B", "d8": "B"}
OPEN = dict(control_fraction=0.0, min_per_domain=0)     # no random share, no domain quota: every pick is known


def blank(schema) -> dict:
    return {name: None for name in schema.names}


def sample_id(prompt: str, i: int) -> str:
    return f"{prompt}-s{i}"


def text(prompt: str, i: int) -> str:
    return f"answer {i} to the {prompt} prompt"


def judgment_rows(pair_id: str, judge: str, vote) -> list[dict]:
    """A judge's ab and ba rows for one vote spec (see the module docstring)."""
    if vote == X:
        orders = [("FAILED", None, "timeout")] * 2
    elif vote == F:
        orders = [("A", 0.75, None), ("A", 0.75, None)]
    elif vote == "text A":
        orders = [("A", None, None), ("B", None, None)]
    else:
        orders = [("A" if vote > .5 else "B", vote, None), ("A" if 1 - vote > .5 else "B", 1 - vote, None)]
    return [{**blank(JUDGMENTS), "pair_id": pair_id, "judge_id": judge, "template_hash": "t", "order": order,
             "verdict": verdict, "p_first": p, "error": error}
            for order, (verdict, p, error) in zip(("ab", "ba"), orders)]


def make_run(root) -> dict[str, str]:
    """Write the run of the module docstring in two shards (ShardStore), run.json and summary.json;
    returns {pair name: pair_id}."""
    store, ids = ShardStore(root), {}
    shards = {0: ["math", "misc"], 1: ["chat"]}
    for index, names in shards.items():
        prompts, samples, judgments, prefs = [], [], [], []
        for name in names:
            question, domain, k = PROMPTS_SPEC[name]
            messages = [{"role": "user", "content": question}]
            prompts.append({"prompt_id": name, "messages": messages, "source": f"prompts.jsonl:{name}",
                            "meta": json.dumps({"domain": domain} if domain else {})})
            samples += [{**blank(SAMPLES), "prompt_id": name, "sample_id": sample_id(name, i), "policy": "m",
                         "text": text(name, i)} for i in range(k)]
            for pair, (prompt, a, b, votes, winner, conf, agreement, consistent) in PAIRS.items():
                if prompt != name:
                    continue
                ids[pair] = pair_id = content_id(name, sample_id(name, a), sample_id(name, b))
                for judge, vote in zip(("j1", "j2", "j3"), votes):
                    judgments += judgment_rows(pair_id, judge, vote)
                if winner in ("A", "B"):
                    chosen, rejected = (a, b) if winner == "A" else (b, a)
                    prefs.append({**blank(PREFERENCES), "prompt_id": name, "pair_id": pair_id, "prompt": messages,
                                  "chosen": [{"role": "assistant", "content": text(name, chosen)}],
                                  "rejected": [{"role": "assistant", "content": text(name, rejected)}],
                                  "confidence": conf, "n_votes": 3, "agreement": agreement,
                                  "position_consistent": consistent, "provenance": json.dumps({
                                      "sample_ids": [sample_id(name, chosen), sample_id(name, rejected)],
                                      "order_rule": "mean_prob", "jury_rule": "mean_prob"})})
        tables = {"prompts": to_table(prompts, PROMPTS), "samples": to_table(samples, SAMPLES),
                  "judgments": to_table(judgments, JUDGMENTS), "preferences": to_table(prefs, PREFERENCES)}
        store.write_shard(f"shard{index}", index, tables, {})
    config = {"judging.order_rule": "mean_prob", "judging.jury_rule": "mean_prob", "judging.tie_margin": 0.0,
              "judging.judges.count": 3}
    for i, (judge, weight) in enumerate((("j1", 2.0), ("j2", 1.0), ("j3", 1.0))):
        config.update({f"judging.judges.{i}.id": judge, f"judging.judges.{i}.weight": weight})
    (root / "run.json").write_text(json.dumps({"job": "label", "config": config}))
    (root / "summary.json").write_text(json.dumps({"counts": {"pairs": 10}, "judges": {"j1": {}}}))
    return ids


def names_of(queue_rows, ids) -> list[tuple[str, list[str]]]:
    by_id = {v: k for k, v in ids.items()}
    return [(by_id[r["pair_id"]], r["reasons"]) for r in queue_rows]


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def shown_verdict(row: dict, human: str) -> str:
    """A human verdict in the pair's labels as the reviewer saw it (a/b/tie)."""
    if human == "TIE":
        return "tie"
    return {"A": "b", "B": "a"}[human] if row["swapped"] else human.lower()


def queued(root, tmp_path, n=10) -> dict[str, dict]:
    export_queue(root, n, QueueRules(**OPEN), seed=1)
    return {r["pair_id"]: r for r in read_jsonl(root / "spot_checks" / "queue.jsonl")}


def write_reviews(path, rows) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def figures(report: dict) -> dict:
    pick = ("pairs", "agree", "disagree", "ties", "failed", "human_ties")
    return {k: {name: tuple(t[p] for p in pick) for name, t in report[k].items()}
            for k in ("judges", "jury_rules", "domains", "selection_rules")} | {"run": tuple(report["run"][p] for p in pick)}


def choice_result(choice: str) -> dict:
    return {"from_name": "verdict", "to_name": "prompt", "type": "choices", "value": {"choices": [choice]}}
