"""Rule judges with known right answers, for tests (`type: function`, `function: tests.rule_judges:NAME`)."""


def letter_e_rate(messages: list[dict], completion: str) -> float:
    """Rewards the target token "e": the share of the completion's characters that are "e"."""
    return completion.count("e") / len(completion) if completion else 0.0


def polite(messages: list[dict], completion: str) -> float:
    """1 for a response that says "please", else 0."""
    return 1.0 if "please" in completion.split() else 0.0
