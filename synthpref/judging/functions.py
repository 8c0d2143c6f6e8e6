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


def readable(messages: list[dict], completion: str) -> float:
    """Prefers text made of letters and spaces: ten times the share of such characters (0-10). Over a tiny
    random policy's output this is a rule a reward model can learn, which the demo's jury uses."""
    if not completion:
        return 0.0
    return 10.0 * sum(c.isascii() and (c.isalpha() or c == " ") for c in completion) / len(completion)
