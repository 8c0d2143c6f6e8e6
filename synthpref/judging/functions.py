"""Ready-made function judges (`type: function`, `function: synthpref.judging.functions:NAME`).

Each takes (prompt messages, completion text) and returns a float; higher is better. They serve
verifiable tasks, tests and sanity checks of a pipeline whose right answer is known.
"""
from __future__ import annotations


def length(messages: list[dict], completion: str) -> float:
    """Prefers the longer response (a deliberately length-biased judge, for tests)."""
    return float(len(completion))


def brevity(messages: list[dict], completion: str) -> float:
    """Prefers the shorter response."""
    return -float(len(completion))


def distinct_words(messages: list[dict], completion: str) -> float:
    """Share of distinct words: penalises degenerate repetition."""
    words = completion.split()
    return len(set(words)) / len(words) if words else 0.0
