"""Direct RLAIF's reward (Lee et al. 2023, arXiv 2309.00267, section 2.3): a judge rates a response on a
numeric scale, and the reward is the expected rating under the judge's next-token distribution over the
rating tokens, rescaled to [-1, 1].

With labels of values v_1..v_n (e.g. "0".."9"), P(label) is the probability mass of the label's tokens
renormalised over the labels (a label the engine returned no probability for counts as 0), the expected
rating is s = sum_i v_i P(i), and the reward is 2 (s - low) / (high - low) - 1, low and high the smallest
and largest values: (s - 4.5) / 4.5 on 0-9, (s - 5.5) / 4.5 on 1-10. A scale of single digits keeps every
rating one token in any tokenizer ("10" is two tokens in many, and shares its first token with "1").
"""
from __future__ import annotations

from synthpref.judging.verdicts import label_probs


def is_rating_scale(choices: tuple | list) -> bool:
    """Whether a template's choices are numeric ratings (more than two, all numbers)."""
    try:
        return len(choices) > 2 and all(float(c) == float(c) for c in choices)
    except ValueError:
        return False


def rescale(score: float, low: float, high: float) -> float:
    """A rating in [low, high] to [-1, 1]."""
    return 2.0 * (score - low) / (high - low) - 1.0


def expected_rating(probs: dict[str, float]) -> float:
    """sum_i v_i P(i) over the labels (probabilities already renormalised over them)."""
    return sum(float(label) * p for label, p in probs.items())


def rating_reward(label_logprobs: dict[str, list[float]]) -> tuple[float, dict[str, float]]:
    """(reward in [-1, 1], the renormalised label probabilities) from each label's token logprobs; a
    ValueError when no label has any probability (the verdict is FAILED)."""
    probs = label_probs(label_logprobs)
    values = [float(label) for label in probs]
    return rescale(expected_rating(probs), min(values), max(values)), probs
