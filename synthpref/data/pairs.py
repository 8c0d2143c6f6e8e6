"""From samples to pairs: ready completions as sample rows, grouping by prompt, pair enumeration."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from synthpref.data.schema import content_id


def given_samples(prompt_id: str, completions: list[str]) -> list[dict]:
    """Ready completions as rows of the samples table (policy "given", no seed)."""
    return [{"prompt_id": prompt_id, "sample_id": content_id(prompt_id, j, text), "policy": "given",
             "text": text, "n_tokens": None, "logprob": None, "finish_reason": "given", "seed": None,
             "dtype": None, "token_ids": None, "token_logprobs": None}
            for j, text in enumerate(completions)]


@dataclass
class Pair:
    pair_id: str
    prompt_id: str
    a: dict                    # sample rows
    b: dict

    @property
    def length_delta(self) -> int:
        """len(a) - len(b) in characters."""
        return len(self.a["text"]) - len(self.b["text"])


def make_pairs(samples_of: dict[str, list[dict]], max_pairs_per_prompt: int | None = None) -> tuple[list[Pair], int]:
    """All unordered pairs (i < j) of each prompt's samples, in sample order, optionally capped.

    Pairs whose two texts are identical cannot express a preference: they are not judged and their
    number is returned so that it is reported."""
    pairs, identical = [], 0
    for prompt_id, samples in samples_of.items():
        made = 0
        for a, b in combinations(samples, 2):
            if max_pairs_per_prompt is not None and made >= max_pairs_per_prompt:
                break
            if a["text"] == b["text"]:
                identical += 1
                continue
            pairs.append(Pair(content_id(prompt_id, a["sample_id"], b["sample_id"]), prompt_id, a, b))
            made += 1
    return pairs, identical


def group_by_prompt(samples: list[dict], prompt_order: list[str]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {pid: [] for pid in prompt_order}
    for s in samples:
        grouped[s["prompt_id"]].append(s)
    return grouped
