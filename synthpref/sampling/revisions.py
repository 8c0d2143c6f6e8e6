"""Critique and revision rounds (constitutional AI's SL phase, Bai et al. 2022, arXiv 2212.08073).

Each round, for every prompt still in play: the policy is shown the conversation, its latest answer and a
critique request from a principle drawn for that prompt and round; it critiques; then, shown its critique
and the principle's revision request, it rewrites the answer. The constitution's few-shot examples, when
used, come first as earlier turns, so the model sees the format. Every round is kept with its principle.
A round whose revision is empty or failed keeps the answer as it was, and says why.
"""
from __future__ import annotations

from dataclasses import dataclass

from synthpref.data.schema import content_id
from synthpref.judging.constitution import Constitution, FewShot, Principle

CRITIQUE_LEAD = "Critique request: "
REVISION_LEAD = "Revision request: "


@dataclass
class Turn:
    """One request to the sampler: an id (its seed derives from it) and the messages."""
    prompt_id: str
    messages: list[dict]


def few_shot_turns(constitution: Constitution, shots: tuple[FewShot, ...]) -> list[dict]:
    """The examples as earlier turns: prompt, answer, critique request, critique, revision request, revision."""
    turns: list[dict] = []
    for shot in shots:
        rule = constitution.by_id(shot.principle)
        turns += [{"role": "user", "content": shot.prompt}, {"role": "assistant", "content": shot.response},
                  {"role": "user", "content": CRITIQUE_LEAD + rule.critique},
                  {"role": "assistant", "content": shot.critique},
                  {"role": "user", "content": REVISION_LEAD + rule.revision},
                  {"role": "assistant", "content": shot.revision}]
    return turns


def critique_messages(prefix: list[dict], conversation: list[dict], answer: str, rule: Principle) -> list[dict]:
    """The examples, the conversation, the answer and the critique request (a system turn stays first)."""
    system = conversation[:1] if conversation and conversation[0]["role"] == "system" else []
    return system + prefix + conversation[len(system):] + [{"role": "assistant", "content": answer},
                                                          {"role": "user", "content": CRITIQUE_LEAD + rule.critique}]


def revision_messages(prefix: list[dict], conversation: list[dict], answer: str, rule: Principle,
                      critique: str) -> list[dict]:
    return critique_messages(prefix, conversation, answer, rule) + [
        {"role": "assistant", "content": critique}, {"role": "user", "content": REVISION_LEAD + rule.revision}]


def principle_for(constitution: Constitution, seed: int, prompt_id: str, round_: int) -> Principle:
    """The principle a prompt's round is critiqued against: drawn at random, the same on every rerun."""
    return constitution.draw(seed, prompt_id, f"round{round_}")


def critique_round(sample, constitution: Constitution, prefix: list[dict], conversations: dict[str, list[dict]],
                   latest: dict[str, str], round_: int, seed: int) -> list[dict]:
    """One critique -> revision round for every prompt in `latest` ({prompt_id: its latest answer}).
    `sample(turns, max_tokens_kind) -> {turn.prompt_id: (text, error)}` runs a batch on the sampler (kind:
    "critique" or "revision"). Returns one row per prompt (data/schema.CRITIQUES)."""
    rules = {pid: principle_for(constitution, seed, pid, round_) for pid in latest}
    asks = [Turn(f"{pid}|round{round_}|critique", critique_messages(prefix, conversations[pid], latest[pid], rules[pid]))
            for pid in latest]
    critiques = sample(asks, "critique")
    revise = []
    for pid in latest:
        text, error = critiques[f"{pid}|round{round_}|critique"]
        if error is None:
            revise.append(Turn(f"{pid}|round{round_}|revision",
                               revision_messages(prefix, conversations[pid], latest[pid], rules[pid], text)))
    revisions = sample(revise, "revision") if revise else {}
    rows = []
    for pid in latest:
        critique, critique_error = critiques[f"{pid}|round{round_}|critique"]
        revision, revision_error = revisions.get(f"{pid}|round{round_}|revision", (None, None))
        reason = (f"critique_failed: {critique_error}" if critique_error else
                  f"revision_failed: {revision_error}" if revision_error else
                  "empty_revision" if not (revision or "").strip() else None)
        rows.append({"prompt_id": pid, "round": round_, "principle": rules[pid].id, "answer_before": latest[pid],
                     "critique": critique, "revision": revision, "kept": reason is None, "reason": reason,
                     "revision_id": content_id(pid, round_, "revision")})
    return rows


def apply_round(latest: dict[str, str], rows: list[dict]) -> dict[str, str]:
    """The latest answers after a round: a kept revision replaces the answer, any other keeps it."""
    out = dict(latest)
    for row in rows:
        if row["kept"]:
            out[row["prompt_id"]] = row["revision"]
    return out
