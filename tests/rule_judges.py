"""Rule judges with known right answers, for tests (`type: function`, `function: tests.rule_judges:NAME`)."""


def letter_e_rate(messages: list[dict], completion: str) -> float:
    """Rewards the target token "e": the share of the completion's characters that are "e"."""
    return completion.count("e") / len(completion) if completion else 0.0


def polite(messages: list[dict], completion: str) -> float:
    """1 for a response that says "please", else 0."""
    return 1.0 if "please" in completion.split() else 0.0


def low_id_rate(prompts, completions, completion_ids, **kwargs) -> list[float | None]:
    """A reward function in TRL's signature: the share of the completion's token ids below 128 (about a fifth
    at the start of a tiny random policy; a policy can learn to raise it within a few steps)."""
    return [sum(t < 128 for t in ids) / len(ids) if ids else None for ids in completion_ids]
