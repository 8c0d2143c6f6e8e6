"""Diversity of generated text: the guard against a policy collapsing onto a few outputs."""
from __future__ import annotations


def distinct_n(texts: list[str], n: int = 2) -> float | None:
    """Distinct-n (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural Conversation
    Models"): distinct word n-grams over all n-grams of the texts, in [0, 1]; None when there are none."""
    total, seen = 0, set()
    for text in texts:
        words = text.split()
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else None
