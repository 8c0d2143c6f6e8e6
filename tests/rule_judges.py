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


def fails_on_some(prompts, completions, completion_ids, **kwargs) -> list[float | None]:
    """A TRL-signature reward function that gives no reward (None) to completions whose first token id is
    a multiple of 4, and 0 to the rest: a known subset of FAILED verdicts."""
    return [None if ids and ids[0] % 4 == 0 else 0.0 for ids in completion_ids]


def long_prompts(n: int) -> list[dict]:
    """Prompts far longer than a 512-token judge context (their judgments fail as prompt_too_long)."""
    words = "the quick brown fox jumps over the lazy dog while rain falls on the old library".split()
    return [{"prompt": f"Summarise this in one line ({i}): " + " ".join(words[(i + j) % len(words)] for j in range(400)),
             "id": f"long-{i}"} for i in range(n)]


GOOD_WORDS = "please thank you kindly gladly sure happy help".split()
PLAIN_WORDS = "stone grey river cold wind dust iron salt".split()


def rule_pairs(n: int, seed: int = 0) -> list[dict]:
    """n prompt/chosen/rejected rows labelled by a rule: the chosen response is made of polite words, the
    rejected one of plain words (the same length), so a policy can learn the preference and show it on
    held-out prompts."""
    import random
    rng = random.Random(seed)
    topics = "bread sea sunlight France health poems rivers music trains gardens stars tea".split()
    rows = []
    for i in range(n):
        length = rng.randint(4, 9)
        rows.append({"prompt": f"Question {i}: tell me about {rng.choice(topics)} and {rng.choice(topics)}.",
                     "chosen": " ".join(rng.choice(GOOD_WORDS) for _ in range(length)),
                     "rejected": " ".join(rng.choice(PLAIN_WORDS) for _ in range(length))})
    return rows


def please_rate(messages: list[dict], completion: str) -> float:
    """Rewards one fixed word: the share of the completion's words that are "please" (a loop trained on
    this judge collapses onto repeating it)."""
    words = completion.split()
    return sum(w == "please" for w in words) / len(words) if words else 0.0


def word_rows(n: int, seed: int = 0) -> list[dict]:
    """n prompt/completion rows whose completions are random sequences of the polite and plain words (seed
    SFT data: a tiny random policy learns to write words with spaces between them)."""
    import random
    rng = random.Random(seed)
    words = GOOD_WORDS + PLAIN_WORDS
    return [{"prompt": f"Say something ({i}).", "completion": " ".join(rng.choice(words) for _ in range(rng.randint(5, 10)))}
            for i in range(n)]


def constant(messages: list[dict], completion: str) -> float:
    """A neutral judge: every completion scores the same (every pair is a tie)."""
    return 0.0
