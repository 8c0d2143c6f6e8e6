"""Preference pairs as read from any prompt/chosen/rejected source, and the held-out split by prompt
(shared by the reward-model and DPO jobs)."""
from __future__ import annotations

from synthpref.config import DataConfig
from synthpref.data.prompts import read_rows
from synthpref.data.readers import PromptRow, Quarantined
from synthpref.data.schema import content_id


def read_pairs(data: DataConfig) -> tuple[list[PromptRow], list[dict]]:
    """Rows with exactly two completions, the first preferred; anything else is quarantined with a reason.
    `limit` counts rows read, usable or not (as data.limit does for every job)."""
    pairs, quarantined = [], []
    for item in read_rows(data):
        if isinstance(item, Quarantined):
            quarantined.append(item.to_json())
        elif not item.completions or len(item.completions) != 2:
            quarantined.append({"source": item.source, "reason": "not_a_pair",
                                "detail": "a preference row needs chosen and rejected (or exactly 2 completions)"})
        else:
            pairs.append(item)
    return pairs, quarantined


def held_out_split(pairs: list, fraction: float, seed: int) -> tuple[list, list]:
    """Split items with a `prompt_key` by prompt (all pairs of one conversation on the same side), seeded
    and stable across reruns; tiny sets hold out at least one pair."""
    def held(p) -> bool:
        return int(content_id(seed, p.prompt_key), 16) % 10_000 < fraction * 10_000
    train = [p for p in pairs if not held(p)]
    test = [p for p in pairs if held(p)]
    if not test and len({p.prompt_key for p in train}) > 1:       # the last conversation, all its pairs
        last = train[-1].prompt_key
        test = [p for p in train if p.prompt_key == last]
        train = [p for p in train if p.prompt_key != last]
    return train, test
